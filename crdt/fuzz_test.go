package crdt

import (
	"testing"
	"time"

	"github.com/automerge/automerge-go"
)

// FuzzLoadAndMerge feeds outside bytes to Load and MergeChanges: whatever
// they hold, the calls return (an error or a document), never panic, and
// the result stays readable and writable.
func FuzzLoadAndMerge(f *testing.F) {
	clk := func() time.Time { return time.UnixMilli(1_700_000_000_000) }
	base := mustNew(f, Actor{ReplicaID: "seed", Clock: NewClock(clk, 0)})
	_ = base.Put(map[string]any{"a": 1, "m": map[string]any{"b": "x"}, "l": []any{1}})
	doc := base.Save()
	heads := base.Heads()
	_ = base.Set("a", 2)
	delta, _ := base.ChangesSince(heads...)
	f.Add(doc, delta)
	f.Add(doc, []byte{})
	f.Add([]byte{}, delta)
	f.Add(doc[:len(doc)/2], delta[:len(delta)/2])
	// A stored record as a peer sends it whole: a saved document, then a
	// change chunk (protocol 4).
	f.Add([]byte{}, append(append([]byte{}, doc...), delta...))
	f.Add(doc, append(base.Save(), delta...))
	// A plain client's concurrent replacements (the three-way fallback and
	// its identity probe) merged into a document with a ferry edit.
	if p, err := automerge.Load(doc); err == nil && p.SetActorID("00ff") == nil {
		_ = p.RootMap().Set("l", automerge.NewText("t"))
		_ = p.RootMap().Set("m", map[string]any{"c": int64(1)})
		_ = p.RootMap().Set("k", automerge.NewCounter(1))
		when := time.UnixMilli(1_700_000_000)
		if _, err := p.Commit("", automerge.CommitOptions{Time: &when}); err == nil {
			if chs, err := p.Changes(heads...); err == nil {
				f.Add(base.Save(), automerge.SaveChanges(chs))
			}
		}
	}
	f.Fuzz(func(t *testing.T, docBytes, changeBytes []byte) {
		actor := Actor{ReplicaID: "fuzz", Clock: NewClock(clk, 0)}
		d, err := Load(docBytes, actor)
		if err != nil {
			d = mustNew(t, actor)
		}
		if _, err := d.ToMap(); err != nil {
			return
		}
		_ = HoldsDocument(changeBytes)
		_, _ = d.MergeChanges(changeBytes, nil)
		if _, err := d.ToMap(); err != nil {
			return
		}
		_ = d.Set("fuzz", 1)
		_ = d.Save()
	})
}
