package crdt

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/automerge/automerge-go"
	"pgregory.net/rapid"
)

// mergeHistory draws a record's history: ferry writes by two or three
// replicas (one whose clock runs two hours ahead), field and record
// deletions, text and list edits, merges between them with their
// conflicts resolved (some provisionally), and plain Automerge changes
// (no write-set). It returns every writer's document, the first holding
// what it merged.
func mergeHistory(t *rapid.T, clk *testClock) []*Doc {
	ahead := Actor{ReplicaID: "ahead", Clock: NewClock(func() time.Time { return clk.now().Add(2 * time.Hour) }, 0)}
	ws := []*Doc{newDocT(t, clk.actor("a", 0)), newDocT(t, clk.actor("b", 1))}
	if rapid.Bool().Draw(t, "third") {
		ws = append(ws, newDocT(t, ahead))
	}
	keys := rapid.SampledFrom([]string{"k", "n", "title", "x\u00e9"})
	steps := rapid.IntRange(1, 14).Draw(t, "steps")
	for i := range steps {
		clk.tick(time.Second)
		w := ws[rapid.IntRange(0, len(ws)-1).Draw(t, "writer")]
		k := keys.Draw(t, "key")
		switch rapid.IntRange(0, 6).Draw(t, "op") {
		case 0, 1:
			_ = w.Put(map[string]any{k: rapid.OneOf(
				rapid.Map(rapid.Int64(), func(n int64) any { return n }),
				rapid.Map(rapid.StringN(0, 12, -1), func(s string) any { return s }),
				rapid.Just[any](map[string]any{"in": []any{1, "two"}}),
			).Draw(t, "value")})
		case 2:
			_ = w.Delete(k)
		case 3:
			_ = w.DeleteRecord()
		case 4:
			if err := w.NewText("text", "hello"); err == nil {
				_ = w.SpliceText("text", 1, 2, "EY")
			}
			_ = w.ListAppend("list", i)
		case 5: // a merge, its conflicts resolved
			from := ws[rapid.IntRange(0, len(ws)-1).Draw(t, "from")]
			if from == w {
				continue
			}
			res, err := w.MergeFrom(from)
			if err != nil {
				t.Fatalf("merge: %v", err)
			}
			var rs []Resolution
			for _, c := range res.Conflicts {
				rs = append(rs, Resolution{Conflict: c, Winner: 0, Provisional: rapid.Bool().Draw(t, "provisional"), By: "test"})
			}
			if len(rs) > 0 {
				_ = w.Resolve(rs...)
			}
		case 6: // a plain Automerge change
			am := w.Automerge()
			if err := am.RootMap().Set("plain", int64(i)); err != nil {
				t.Fatal(err)
			}
			if _, err := am.Commit("", automerge.CommitOptions{AllowEmpty: true, Time: ptr(clk.now())}); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, w := range ws[1:] {
		if rapid.Bool().Draw(t, "gather") {
			if _, err := ws[0].MergeFrom(w); err != nil {
				t.Fatalf("merge: %v", err)
			}
		}
	}
	return ws
}

// errClass names the error kinds the apply path tells apart.
func errClass(err error) string {
	switch {
	case err == nil:
		return "nil"
	case errors.Is(err, ErrMissingDeps):
		return "missing deps"
	case errors.Is(err, ErrActorClash):
		return "actor clash"
	case errors.Is(err, ErrBadDocument):
		return "bad document"
	}
	return "other: " + err.Error()
}

// TestPropertyMergeNewMatchesMergeIntoEmpty: for a record this replica
// does not have, MergeNew (no empty document first) and MergeChanges
// into an empty document (changes' metadata read from their bytes) give
// what MergeChanges gave with every change's metadata read through
// automerge-go: the same error class, heads, values, deletion, merge
// result, writer times (also as a document loaded afresh reads them),
// and the same bytes for a write made next. Inputs: histories drawn by
// mergeHistory as change chunks (in order, shuffled, repeated), saved
// documents alone or followed by change chunks, chunks left out (missing
// dependencies), and damaged bytes; with and without the remote heads.
func TestPropertyMergeNewMatchesMergeIntoEmpty(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		clk := newTestClock()
		ws := mergeHistory(t, clk)
		src := ws[0]
		all, err := src.ChangesSince()
		if err != nil {
			t.Fatal(err)
		}
		chunks := splitChunks(all)
		var raw []byte
		form := rapid.IntRange(0, 5).Draw(t, "form")
		if len(chunks) == 0 {
			form = 0 // nothing written: no bytes at all
		}
		switch form {
		case 0: // the changes, dependencies first
			raw = all
		case 1: // shuffled, some twice
			for _, i := range rapid.Permutation(chunksIdx(len(chunks))).Draw(t, "order") {
				raw = append(raw, chunks[i]...)
				if rapid.IntRange(0, 3).Draw(t, "again") == 0 {
					raw = append(raw, chunks[i]...)
				}
			}
		case 2: // a saved document
			raw = src.Save()
		case 3: // a saved document of the first changes, then the rest as chunks
			cut := rapid.IntRange(1, len(chunks)).Draw(t, "cut")
			var first []byte
			for _, c := range chunks[:cut] {
				first = append(first, c...)
			}
			am, err := automerge.Load(first)
			if err != nil {
				t.Fatal(err)
			}
			raw = am.Save()
			for _, c := range chunks[cut:] {
				raw = append(raw, c...)
			}
		case 4: // some changes left out
			for i, c := range chunks {
				if i == 0 || rapid.IntRange(0, 2).Draw(t, "keep") > 0 {
					raw = append(raw, c...)
				}
			}
		case 5: // damaged
			raw = bytes.Clone(all)
			at := rapid.IntRange(0, len(raw)-1).Draw(t, "at")
			raw[at] ^= byte(rapid.IntRange(1, 255).Draw(t, "flip"))
		}
		var remote []automerge.ChangeHash
		if rapid.Bool().Draw(t, "remote heads") {
			remote = src.Heads()
		}
		actor := func() Actor { return clk.actor("r", 0) }

		sureMetas = true
		want := newDocT(t, actor())
		wres, werr := want.MergeChanges(raw, remote)
		sureMetas = false
		into := newDocT(t, actor())
		ires, ierr := into.MergeChanges(raw, remote)
		got, gres, gerr := MergeNew(raw, remote, actor())

		if errClass(gerr) != errClass(werr) || errClass(ierr) != errClass(werr) {
			t.Fatalf("form %d: errors: MergeNew %v, into empty %v, want %v", form, gerr, ierr, werr)
		}
		if got == nil {
			if !errors.Is(werr, ErrBadDocument) || len(want.Heads()) > 0 {
				t.Fatalf("form %d: MergeNew returned no document; the sure way: %v, heads %v", form, werr, want.Heads())
			}
			return
		}
		for name, d := range map[string]*Doc{"MergeNew": got, "into empty": into} {
			if !d.Heads().Equal(want.Heads()) {
				t.Fatalf("form %d: %s heads %v, want %v", form, name, d.Heads(), want.Heads())
			}
			if d.Saved() || d.Deleted() != want.Deleted() {
				t.Fatalf("form %d: %s saved %v deleted %v, want false and %v", form, name, d.Saved(), d.Deleted(), want.Deleted())
			}
			gm, gerr := d.ToMap()
			wm, werr := want.ToMap()
			if !reflect.DeepEqual(gm, wm) || errClass(gerr) != errClass(werr) {
				t.Fatalf("form %d: %s reads %v (%v), want %v (%v)", form, name, gm, gerr, wm, werr)
			}
		}
		if werr != nil {
			return
		}
		for name, res := range map[string]*MergeResult{"MergeNew": gres, "into empty": ires} {
			if len(res.HeadsBefore) != 0 || !Heads(res.HeadsAfter).Equal(wres.HeadsAfter) || res.Applied != wres.Applied ||
				len(res.Conflicts) != len(wres.Conflicts) || res.Repaired != wres.Repaired || res.Fallback != wres.Fallback ||
				fmt.Sprint(res.ClockSkew) != fmt.Sprint(wres.ClockSkew) || !reflect.DeepEqual(res.Resolutions, wres.Resolutions) {
				t.Fatalf("form %d: %s result %+v, want %+v", form, name, res, wres)
			}
		}
		wt, err := want.WriterTimes(nil)
		if err != nil {
			t.Fatal(err)
		}
		fresh, err := Load(want.Automerge().Save(), actor()) // not want.Save: that moves SaveIncremental on
		if err != nil {
			t.Fatal(err)
		}
		ft, err := fresh.WriterTimes(nil)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(ft, wt) {
			t.Fatalf("form %d: writer times %v, loaded afresh %v", form, wt, ft)
		}
		for name, d := range map[string]*Doc{"MergeNew": got, "into empty": into} {
			if gt, err := d.WriterTimes(nil); err != nil || !reflect.DeepEqual(gt, wt) {
				t.Fatalf("form %d: %s writer times %v (%v), want %v", form, name, gt, err, wt)
			}
		}
		clk.tick(time.Second)
		for _, d := range []*Doc{want, got, into} {
			if err := d.Set("after", "merge"); err != nil {
				t.Fatal(err)
			}
		}
		next := want.SaveIncremental()
		if g, i := got.SaveIncremental(), into.SaveIncremental(); !bytes.Equal(g, next) || !bytes.Equal(i, next) {
			t.Fatalf("form %d: the next write saves %d and %d bytes, want the sure way's %d", form, len(g), len(i), len(next))
		}
		if wt2, _ := want.WriterTimes(nil); !reflect.DeepEqual(wt2, wt) {
			t.Fatalf("form %d: writer times after a local write %v, want %v", form, wt2, wt)
		}
		if gt2, _ := got.WriterTimes(nil); !reflect.DeepEqual(gt2, wt) {
			t.Fatalf("form %d: MergeNew's writer times after a local write %v, want %v", form, gt2, wt)
		}
	})
}

// newDocT is mustNew for property tests.
func newDocT(t interface{ Fatal(...any) }, a Actor) *Doc {
	d, err := New(a)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func chunksIdx(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i
	}
	return out
}

// TestMergeNewMissingDependencies: change chunks whose dependencies are
// not among them are not taken for a whole record: MergeNew reports what
// merging them into an empty document reports (the shortcut that reads
// their metadata from the bytes checks that the document applied them).
func TestMergeNewMissingDependencies(t *testing.T) {
	clk := newTestClock()
	a := newDocT(t, clk.actor("a", 0))
	if err := a.Put(map[string]any{"k": 1}); err != nil {
		t.Fatal(err)
	}
	first := a.Heads()
	clk.tick(time.Second)
	if err := a.Put(map[string]any{"k": 2}); err != nil {
		t.Fatal(err)
	}
	later, err := a.ChangesSince(first...)
	if err != nil {
		t.Fatal(err)
	}
	sureMetas = true
	want := newDocT(t, clk.actor("r", 0))
	_, werr := want.MergeChanges(later, nil)
	sureMetas = false
	if werr == nil {
		t.Fatal("a change without its dependency merged into an empty document")
	}
	d, _, err := MergeNew(later, nil, clk.actor("r", 0))
	if errClass(err) != errClass(werr) {
		t.Fatalf("MergeNew: %v, want %v", err, werr)
	}
	if d != nil && len(d.Heads()) != 0 && !d.Heads().Equal(want.Heads()) {
		t.Fatalf("MergeNew kept heads %v, want %v", d.Heads(), want.Heads())
	}
}
