package crdt

import (
	"fmt"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/automerge/automerge-go"
)

// TestClockNotes: a write received beyond the bound is noted once per
// noter; the earliest clamp wins; a note-only change is never noted; a
// replica that doubts its clock (note=false) learns of the write but
// writes nothing; a write within the bound is not noted.
func TestClockNotes(t *testing.T) {
	clk := newTestClock()
	fastClk := &testClock{t: clk.t.Add(24 * time.Hour)}
	fast := mustNew(t, fastClk.actor("fast", 0))
	a := mustNew(t, clk.actor("a", 0))
	b := mustNew(t, clk.actor("b", 0))
	if err := fast.Set("title", "from-fast"); err != nil {
		t.Fatal(err)
	}
	const bound = 5 * time.Minute

	before := a.Heads()
	mustMerge(t, a, fast)
	fws, err := a.NoteFutureWrites(before, clk.now(), bound, true)
	if err != nil || len(fws) != 1 || !fws[0].Noted || fws[0].Write.ReplicaID != "fast" || fws[0].Ahead != 24*time.Hour {
		t.Fatalf("a's future writes %+v %v", fws, err)
	}
	cl, err := a.ClockClamps()
	want := Timestamp{WallMillis: clk.now().Add(bound).UnixMilli()}
	if err != nil || len(cl) != 1 || cl[fws[0].Write] != want {
		t.Fatalf("clamps %v %v", cl, err)
	}
	if _, ok := a.Get("_ferry!clock"); ok == nil {
		t.Fatal("a note is visible to the application")
	}
	if m, _ := a.ToMap(); len(m) != 1 {
		t.Fatalf("ToMap shows hidden keys: %v", m)
	}

	// b receives the write later (a larger clamp: not written) and a's
	// note-only change (never noted, though a's clock is fine).
	clk.tick(time.Minute)
	before = b.Heads()
	mustMerge(t, b, a)
	fws, err = b.NoteFutureWrites(before, clk.now(), bound, true)
	if err != nil || len(fws) != 1 || fws[0].Noted {
		t.Fatalf("b's future writes %+v %v", fws, err)
	}
	if cl, _ := b.ClockClamps(); cl[fws[0].Write] != want {
		t.Fatalf("b clamps %v", cl)
	}
	heads := b.Heads()
	if _, err := b.NoteFutureWrites(before, clk.now(), bound, true); err != nil || !SameHeads(heads, b.Heads()) {
		t.Fatalf("noting again wrote a change (%v)", err)
	}

	// A replica that doubts its own clock writes nothing.
	c := mustNew(t, clk.actor("c", 0))
	before = c.Heads()
	mustMerge(t, c, fast)
	fws, err = c.NoteFutureWrites(before, clk.now(), bound, false)
	if err != nil || len(fws) != 1 || fws[0].Noted || len(c.Heads()) != 1 || c.Heads()[0] != fast.Heads()[0] {
		t.Fatalf("c (note=false): %+v %v heads %v", fws, err, c.Heads())
	}
	if times, err := c.WriterTimes(before); err != nil || times["fast"].WallMillis != fastClk.now().UnixMilli() {
		t.Fatalf("writer times %v %v", times, err)
	}

	// Within the bound: nothing.
	d := mustNew(t, clk.actor("d", 0))
	if err := d.Set("x", 1); err != nil {
		t.Fatal(err)
	}
	e := mustNew(t, clk.actor("e", 0))
	before = e.Heads()
	mustMerge(t, e, d)
	if fws, err := e.NoteFutureWrites(before, clk.now().Add(-4*time.Minute), bound, true); err != nil || len(fws) != 0 {
		t.Fatalf("within the bound: %+v %v", fws, err)
	}
	if _, err := e.NoteFutureWrites(nil, clk.now(), 0, true); err == nil {
		t.Fatal("a zero bound was accepted")
	}
}

// FuzzClockNotes: whatever bytes a peer stores under a clock-note key,
// ClockClamps returns (ignoring what is not a note) and never panics.
func FuzzClockNotes(f *testing.F) {
	clk := newTestClock()
	good, _ := encMode.Marshal(ClockNote{Write: WriteKey{"w", Timestamp{WallMillis: 10}}, Clamp: Timestamp{WallMillis: 5}, Noter: "n"})
	f.Add(good)
	f.Add([]byte{})
	f.Add(good[:len(good)/2])
	f.Add([]byte{0x9f, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		d := mustNew(t, clk.actor("fuzz", 0))
		if err := d.am.RootMap().Set(clockNotePrefix+"x", b); err != nil {
			t.Fatal(err)
		}
		if utf8.Valid(b) { // a note key holding a string, not bytes
			if err := d.am.RootMap().Set(clockNotePrefix+"y", string(b)); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := d.am.Commit("plain"); err != nil {
			t.Fatal(err)
		}
		cl, err := d.ClockClamps()
		if err != nil {
			t.Fatal(err)
		}
		for w, c := range cl {
			if c.Compare(w.HLC) >= 0 {
				t.Fatalf("a clamp %v not before its write %v", c, w.HLC)
			}
		}
	})
}

// TestSupersededPlain: a plain Automerge change made after both candidates
// supersedes the conflict when it changes the field, not when it changes
// another one.
func TestSupersededPlain(t *testing.T) {
	clk := newTestClock()
	a, b := mustNew(t, clk.actor("a", 0)), mustNew(t, clk.actor("b", 0))
	if err := a.Set("title", "base"); err != nil {
		t.Fatal(err)
	}
	mustMerge(t, b, a)
	_ = a.Set("title", "from-a")
	_ = b.Set("title", "from-b")
	r := mustMerge(t, a, b)
	if len(r.Conflicts) != 1 {
		t.Fatalf("conflicts %+v", r.Conflicts)
	}
	c := r.Conflicts[0]
	cands := []automerge.ChangeHash{c.Candidates[0].Change, c.Candidates[1].Change}
	plainEdit := func(key string) *Doc {
		am, err := automerge.Load(a.Save())
		if err != nil {
			t.Fatal(err)
		}
		if err := am.RootMap().Set(key, "plain"); err != nil {
			t.Fatal(err)
		}
		if _, err := am.Commit("plain edit"); err != nil {
			t.Fatal(err)
		}
		d, err := FromAutomerge(am, clk.actor("a", 0))
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	if _, stale, err := plainEdit("body").Superseded(c.Path, c.ID, cands); err != nil || stale {
		t.Fatalf("another field: stale=%v %v", stale, err)
	}
	if h, stale, err := plainEdit("title").Superseded(c.Path, c.ID, cands); err != nil || !stale || h == (automerge.ChangeHash{}) {
		t.Fatalf("the field: stale=%v %v", stale, err)
	}
	if _, stale, err := b.Superseded(c.Path, c.ID, cands); err != nil || stale {
		t.Fatalf("a document lacking a candidate: stale=%v %v", stale, err)
	}
}

// BenchmarkSuperseded: the check a merge or write runs per open conflict
// of its record, with n writes to another field made since the conflict.
func BenchmarkSuperseded(b *testing.B) {
	for _, n := range []int{10, 1000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			clk := newTestClock()
			x, y := mustNew(b, clk.actor("x", 0)), mustNew(b, clk.actor("y", 0))
			_ = x.Set("title", "base")
			mustMerge(b, y, x)
			_ = x.Set("title", "from-x")
			_ = y.Set("title", "from-y")
			r := mustMerge(b, x, y)
			if len(r.Conflicts) != 1 {
				b.Fatal("no conflict")
			}
			c := r.Conflicts[0]
			cands := []automerge.ChangeHash{c.Candidates[0].Change, c.Candidates[1].Change}
			for i := range n {
				_ = x.Set("body", i)
			}
			b.Run("full", func(b *testing.B) {
				for range b.N {
					if _, stale, err := x.Superseded(c.Path, c.ID, cands); err != nil || stale {
						b.Fatal(stale, err)
					}
				}
			})
			before := x.Heads()
			_ = x.Set("body", -1)
			b.Run("local-write", func(b *testing.B) {
				for range b.N {
					if stale, err := x.SupersededLocally(c.Path, c.ID, cands, before); err != nil || stale {
						b.Fatal(stale, err)
					}
				}
			})
		})
	}
}
