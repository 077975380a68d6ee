package crdt

import (
	"math"
	"runtime"
	"runtime/debug"
	"testing"
)

// pacerState saves the pacer's settings and the process's memory limit
// and restores them when the test ends.
func pacerState(t *testing.T) {
	t.Helper()
	limit := debug.SetMemoryLimit(-1)
	every := cmem.every.Load()
	t.Cleanup(func() {
		debug.SetMemoryLimit(limit)
		cmem.every.Store(every)
		cmem.threshold.Store(0)
		cmem.pending.Store(0)
	})
	cmem.threshold.Store(0)
	cmem.pending.Store(0)
}

// noteUntilCollection notes garbage in 64 KiB steps, at most max bytes,
// and returns how much it had noted when the pacer started a collection
// (0: none).
func noteUntilCollection(max int64) int64 {
	const step = 64 << 10
	start := cmem.collections.Load()
	for noted := int64(step); noted <= max; noted += step {
		noteGarbage(step)
		if cmem.collections.Load() != start {
			return noted
		}
	}
	return 0
}

// TestPacerThresholdFollowsMemoryLimit: under a Go memory limit a
// collection runs after DefaultCollectEvery of C garbage; without one,
// after half the live Go heap; SetCollectEvery overrides both.
func TestPacerThresholdFollowsMemoryLimit(t *testing.T) {
	pacerState(t)
	// A live heap of 96 MiB: without a limit, at least 48 MiB of garbage
	// before a collection.
	ballast := make([]byte, 96<<20)
	for i := range ballast {
		ballast[i] = 1
	}
	runtime.GC()

	debug.SetMemoryLimit(1 << 40)
	if at := noteUntilCollection(64 << 20); at != DefaultCollectEvery {
		t.Fatalf("under a memory limit: collection after %d bytes of garbage, want %d", at, DefaultCollectEvery)
	}
	if e := ReadMemStats().Every; e != DefaultCollectEvery {
		t.Fatalf("under a memory limit: Every %d, want %d", e, DefaultCollectEvery)
	}

	debug.SetMemoryLimit(math.MaxInt64)
	at := noteUntilCollection(256 << 20)
	if at < 48<<20 || at > 128<<20 {
		t.Fatalf("without a memory limit, a live heap of 96 MiB: collection after %d bytes of garbage, want 48-128 MiB", at)
	}
	if e := ReadMemStats().Every; e < 48<<20 {
		t.Fatalf("without a memory limit: Every %d, want at least 48 MiB", e)
	}

	// The limit set again is followed within DefaultCollectEvery.
	debug.SetMemoryLimit(1 << 40)
	if at := noteUntilCollection(64 << 20); at != DefaultCollectEvery {
		t.Fatalf("limit set again: collection after %d bytes, want %d", at, DefaultCollectEvery)
	}

	debug.SetMemoryLimit(math.MaxInt64)
	SetCollectEvery(1 << 20)
	if at := noteUntilCollection(64 << 20); at != 1<<20 {
		t.Fatalf("SetCollectEvery(1 MiB) without a limit: collection after %d bytes, want 1 MiB", at)
	}
	runtime.KeepAlive(ballast)
}
