package crdt

import (
	"testing"
	"time"
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
	f.Fuzz(func(t *testing.T, docBytes, changeBytes []byte) {
		actor := Actor{ReplicaID: "fuzz", Clock: NewClock(clk, 0)}
		d, err := Load(docBytes, actor)
		if err != nil {
			d = mustNew(t, actor)
		}
		if _, err := d.ToMap(); err != nil {
			return
		}
		_, _ = d.MergeChanges(changeBytes, nil)
		if _, err := d.ToMap(); err != nil {
			return
		}
		_ = d.Set("fuzz", 1)
		_ = d.Save()
	})
}
