package replica

import (
	"context"
	"errors"
	"math"
	"runtime/debug"
	"testing"

	"github.com/ferrysync/ferry/storage"
)

// TestMemoryLimitLowestWins: Options.MemoryLimit lowers the process's
// soft memory limit when it is lower than the one in force, never raises
// it, leaves it alone at zero, and an invalid one is refused before
// anything is set.
func TestMemoryLimitLowestWins(t *testing.T) {
	old := debug.SetMemoryLimit(math.MaxInt64)
	t.Cleanup(func() { debug.SetMemoryLimit(old) })
	ctx := context.Background()
	open := func(limit int64) error {
		r, err := Open(ctx, "", Options{Passphrase: []byte("pw"), KDF: storage.TestKDF(), InMemory: true, MemoryLimit: limit})
		if err != nil {
			return err
		}
		return r.Close()
	}
	for _, c := range []struct {
		limit, want int64
	}{
		{0, math.MaxInt64},     // zero: the runtime is left alone
		{1 << 30, 1 << 30},     // lower than the limit in force: set
		{2 << 30, 1 << 30},     // higher: kept
		{512 << 20, 512 << 20}, // lower again: set
		{0, 512 << 20},         // zero: kept
	} {
		if err := open(c.limit); err != nil {
			t.Fatalf("MemoryLimit %d: %v", c.limit, err)
		}
		if got := debug.SetMemoryLimit(-1); got != c.want {
			t.Fatalf("after MemoryLimit %d: limit in force %d, want %d", c.limit, got, c.want)
		}
	}
	for _, bad := range []int64{-1, 1, MinMemoryLimit - 1} {
		if err := open(bad); !errors.Is(err, ErrInvalid) {
			t.Fatalf("MemoryLimit %d: %v, want ErrInvalid", bad, err)
		}
		if got := debug.SetMemoryLimit(-1); got != 512<<20 {
			t.Fatalf("a refused MemoryLimit %d changed the limit to %d", bad, got)
		}
	}
	// Create and OpenExisting apply it too.
	dir := t.TempDir()
	r, err := Create(ctx, dir, Options{Passphrase: []byte("pw"), KDF: storage.TestKDF(), MemoryLimit: 384 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if got := debug.SetMemoryLimit(-1); got != 384<<20 {
		t.Fatalf("Create: limit %d, want %d", got, 384<<20)
	}
	r, err = OpenExisting(ctx, dir, Options{Passphrase: []byte("pw"), MemoryLimit: 256 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if got := debug.SetMemoryLimit(-1); got != 256<<20 {
		t.Fatalf("OpenExisting: limit %d, want %d", got, 256<<20)
	}
}
