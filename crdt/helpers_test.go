package crdt

import (
	"github.com/automerge/automerge-go"
	"testing"
	"time"
)

// testClock is a manually advanced time source shared by a test's replicas.
type testClock struct{ t time.Time }

func newTestClock() *testClock { return &testClock{t: time.UnixMilli(1_700_000_000_000).UTC()} }

func (c *testClock) now() time.Time       { return c.t }
func (c *testClock) tick(d time.Duration) { c.t = c.t.Add(d) }
func (c *testClock) actor(id string, prio int) Actor {
	return Actor{ReplicaID: id, Priority: prio, Clock: NewClock(c.now, 0)}
}

func mustNew(t testing.TB, a Actor) *Doc {
	t.Helper()
	d, err := New(a)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// copyDoc returns an independent copy of d for the same actor (a snapshot
// of the replica's state at this point).
func copyDoc(t testing.TB, d *Doc) *Doc {
	t.Helper()
	c, err := Load(d.Save(), d.Actor())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func mustMerge(t testing.TB, dst, src *Doc) *MergeResult {
	t.Helper()
	r, err := dst.MergeFrom(src)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// detectBoth merges b into a and (a's state before that) into b, checks that
// both sides report the same conflicts, and returns a's result.
func detectBoth(t testing.TB, a, b *Doc) *MergeResult {
	t.Helper()
	a0 := copyDoc(t, a)
	ra := mustMerge(t, a, b)
	rb := mustMerge(t, b, a0)
	if len(ra.Conflicts) != len(rb.Conflicts) {
		t.Fatalf("sides disagree: %d vs %d conflicts\n%+v\n%+v", len(ra.Conflicts), len(rb.Conflicts), ra.Conflicts, rb.Conflicts)
	}
	for i := range ra.Conflicts {
		x, y := ra.Conflicts[i], rb.Conflicts[i]
		if x.ID != y.ID || x.Path != y.Path || x.Kind != y.Kind || len(x.Candidates) != len(y.Candidates) {
			t.Fatalf("sides disagree on conflict %d:\n%+v\n%+v", i, x, y)
		}
	}
	return ra
}

type (
	ChangeHashAlias = automerge.ChangeHash
	ChangeAlias     = automerge.Change
)
