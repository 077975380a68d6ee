package policy

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ferrysync/ferry/crdt"
)

// queuedTitle makes two replicas with the user policy set "title"
// concurrently and merges b into a: a queues the conflict.
func queuedTitle(t *testing.T) (a, b *replica, e Entry) {
	t.Helper()
	set := NewSet(Rule{Policy: User, Deadline: Duration(time.Hour)})
	base := time.UnixMilli(1_700_000_000_000).UTC()
	a, b = newReplica(t, "a", 0, set, base, nil), newReplica(t, "b", 0, set, base, nil)
	if err := a.doc.Set("title", "base"); err != nil {
		t.Fatal(err)
	}
	syncPair(t, b, a)
	a.clock.advance(time.Second)
	if err := a.doc.Set("title", "from-a"); err != nil {
		t.Fatal(err)
	}
	b.clock.advance(2 * time.Second)
	if err := b.doc.Set("title", "from-b"); err != nil {
		t.Fatal(err)
	}
	syncPair(t, a, b)
	es, err := a.res.Queue.List(context.Background())
	if err != nil || len(es) != 1 {
		t.Fatalf("queue: %v %v", es, err)
	}
	return a, b, es[0]
}

// TestCommitRefusesStale: a queued conflict that a newer write superseded
// (here, one Supersede was never told of) is refused at Commit with
// ErrStale, closed and audited; the newer value stays.
func TestCommitRefusesStale(t *testing.T) {
	ctx := context.Background()
	a, _, e := queuedTitle(t)
	if err := a.doc.Set("title", "final"); err != nil {
		t.Fatal(err)
	}
	for n := range e.Conflict.Candidates {
		p, err := a.res.Queue.ResolvePick(ctx, e.ID(), n)
		if n > 0 {
			if !errors.Is(err, ErrNoEntry) {
				t.Fatalf("second pick after the entry closed: %v", err)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		heads := a.doc.Heads()
		if err := a.res.Commit(ctx, a.doc, p); !errors.Is(err, ErrStale) {
			t.Fatalf("commit of a stale pick: %v", err)
		}
		if !crdt.SameHeads(heads, a.doc.Heads()) {
			t.Fatal("a refused commit wrote")
		}
	}
	if got, _ := a.doc.Get("title"); got != "final" {
		t.Fatalf("title %v", got)
	}
	if by, closed, err := a.res.Queue.ClosedBy(ctx, e.ID()); err != nil || !closed || by != ByNewerWrite {
		t.Fatalf("closed=%v by %q (%v)", closed, by, err)
	}
	recs, err := a.res.Audit.Query(ctx, Filter{ConflictID: e.ID()})
	if err != nil || len(recs) != 1 || recs[0].By != ByNewerWrite {
		t.Fatalf("audit %+v %v", recs, err)
	}
	// A fallback sweep refuses it too (the entry is gone, nothing is due).
	due, err := a.res.Queue.Sweep(ctx, a.clock.now().Add(48*time.Hour))
	if err != nil || len(due) != 0 {
		t.Fatalf("sweep: %v %v", due, err)
	}
}

// TestSupersedeOnlyAfterBothSides: a write made on one side before it
// merged the other (concurrent with the conflict) does not supersede it;
// the same write made after the merge does.
func TestSupersedeOnlyAfterBothSides(t *testing.T) {
	ctx := context.Background()
	a, b, e := queuedTitle(t)
	// b writes again without having merged a: concurrent with a's
	// candidate, so not a newer write. Merged into a it is a new conflict.
	if err := b.doc.Set("title", "b-again"); err != nil {
		t.Fatal(err)
	}
	if _, stale, err := b.doc.Superseded(e.Conflict.Path, e.ID(), candidateChanges(e.Conflict)); err != nil || stale {
		t.Fatalf("b lacks a's candidate: stale=%v %v", stale, err)
	}
	closed, err := a.res.Supersede(ctx, coll, "rec", a.doc)
	if err != nil || len(closed) != 0 {
		t.Fatalf("nothing new on a: closed %v %v", closed, err)
	}
	if err := a.doc.Set("body", "x"); err != nil {
		t.Fatal(err)
	}
	if closed, _ := a.res.Supersede(ctx, coll, "rec", a.doc); len(closed) != 0 {
		t.Fatalf("another field closed it: %v", closed)
	}
	if err := a.doc.Set("title", "final"); err != nil {
		t.Fatal(err)
	}
	if closed, _ := a.res.Supersede(ctx, coll, "rec", a.doc); len(closed) != 1 || closed[0] != e.ID() {
		t.Fatalf("newer write: closed %v", closed)
	}
}

// TestClampedPick: a candidate whose write a replica received before its
// time counts as made at its clamp, so a truly later edit wins; without
// the clamp the future stamp wins. Deadlines shrink likewise.
func TestClampedPick(t *testing.T) {
	fast := cand("fast", 1_000+24*3600_000, 0, "fast", 0, 1)
	late := cand("late", 1_000+3600_000, 0, "late", 0, 2)
	c := crdt.Conflict{ID: "c", Path: "/f", Candidates: []crdt.Candidate{fast, late}, CRDTWinner: -1}
	if got := Pick(Timestamp, "", c); got != 0 {
		t.Fatalf("unclamped pick %d", got)
	}
	cl := Clamps{{ReplicaID: "fast", HLC: fast.HLC}: {WallMillis: 1_000 + 5*60_000}}
	for _, k := range []Kind{Timestamp, User, Priority} {
		if got := PickClamped(k, "", c, cl); got != 1 {
			t.Fatalf("%s clamped pick %d", k, got)
		}
	}
	// A clamp later than the write's own time changes nothing.
	if got := PickClamped(Timestamp, "", c, Clamps{{ReplicaID: "fast", HLC: fast.HLC}: {WallMillis: 1 << 50}}); got != 0 {
		t.Fatalf("late clamp pick %d", got)
	}
	e := Entry{Conflict: c, Deadline: fast.HLC.Time().Add(24 * time.Hour)}
	if got, want := EffectiveDeadline(e, cl), late.HLC.Time().Add(24*time.Hour); !got.Equal(want) {
		t.Fatalf("clamped deadline %v, want %v", got, want)
	}
	if got := EffectiveDeadline(e, nil); !got.Equal(e.Deadline) {
		t.Fatalf("unclamped deadline %v", got)
	}
}
