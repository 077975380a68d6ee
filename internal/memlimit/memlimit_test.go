package memlimit

import (
	"math"
	"runtime/debug"
	"testing"
)

func TestInForce(t *testing.T) {
	prev := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(prev) })
	debug.SetMemoryLimit(math.MaxInt64)
	if InForce() {
		t.Fatal("InForce without a limit")
	}
	debug.SetMemoryLimit(64 << 20)
	if !InForce() {
		t.Fatal("not InForce under a 64 MiB limit")
	}
}
