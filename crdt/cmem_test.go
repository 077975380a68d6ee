package crdt

import (
	"math"
	"runtime/debug"
	"testing"
)

// pacerState saves the pacer's settings and the process's memory limit
// and restores them when the test ends.
func pacerState(t *testing.T) {
	t.Helper()
	limit := debug.SetMemoryLimit(-1)
	every := cmem.every.Load()
	limited := cmem.limited.Load()
	t.Cleanup(func() {
		debug.SetMemoryLimit(limit)
		cmem.every.Store(every)
		cmem.limited.Store(limited)
		cmem.pending.Store(0)
	})
	cmem.every.Store(0)
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

// TestPacerThresholdFollowsMemoryLimit: a collection runs after
// DefaultCollectEvery of C garbage under a Go memory limit, after
// unlimitedCollectEvery without one, and after SetCollectEvery's
// threshold with or without one.
func TestPacerThresholdFollowsMemoryLimit(t *testing.T) {
	pacerState(t)
	for _, c := range []struct {
		name  string
		limit int64
		every int64
		want  int64
	}{
		{"limit", 1 << 40, 0, DefaultCollectEvery},
		{"no limit", math.MaxInt64, 0, unlimitedCollectEvery},
		{"limit set again", 1 << 40, 0, DefaultCollectEvery},
		{"SetCollectEvery, no limit", math.MaxInt64, 1 << 20, 1 << 20},
		{"SetCollectEvery, limit", 1 << 40, 1 << 20, 1 << 20},
	} {
		debug.SetMemoryLimit(c.limit)
		SetCollectEvery(c.every)
		if at := noteUntilCollection(64 << 20); at != c.want {
			t.Fatalf("%s: collection after %d bytes of garbage, want %d", c.name, at, c.want)
		}
		if e := ReadMemStats().Every; e != c.want {
			t.Fatalf("%s: Every %d, want %d", c.name, e, c.want)
		}
	}
}
