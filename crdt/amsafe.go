package crdt

import (
	"sort"

	"github.com/automerge/automerge-go"
)

// automerge-go builds the C argument of Apply, Changes(since...) and
// Fork(asOf...) by concatenating one C result per item in a loop, and an
// intermediate result can be freed by its finalizer while the next
// concatenation still reads it (seen as heap corruption under GC pressure).
// With at most two items no intermediate result exists. The helpers below
// keep every call within that bound.

const safeItems = 2

// applyChanges applies changes by their bytes (LoadIncremental), which
// also applies exactly the given changes (Apply would apply every change in
// the C result each one came from).
func applyChanges(doc *automerge.Doc, chs []*automerge.Change) error {
	if len(chs) == 0 {
		return nil
	}
	return guard(func() error { return doc.LoadIncremental(automerge.SaveChanges(chs)) })
}

// changesSince returns the changes of doc not reachable from since, with
// dependencies before dependents. d.mu is held.
func (d *Doc) changesSince(since []automerge.ChangeHash) ([]*automerge.Change, error) {
	if len(since) == 0 {
		var out []*automerge.Change
		err := guard(func() error {
			var err error
			out, err = d.am.Changes()
			return err
		})
		noteGarbage(changeGarbage * int64(len(out)))
		return out, err
	}
	if len(since) <= safeItems {
		var out []*automerge.Change
		err := guard(func() error {
			var err error
			out, err = d.am.Changes(since...)
			return err
		})
		noteGarbage(changeGarbage * int64(len(out)))
		return out, err
	}
	metas, err := d.localOnly(d.am.Heads(), since)
	if err != nil {
		return nil, err
	}
	sort.SliceStable(metas, func(i, j int) bool { return metas[i].gen < metas[j].gen })
	out := make([]*automerge.Change, 0, len(metas))
	for _, m := range metas {
		c, err := d.changeByHash(m.hash)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

// forkAt returns a copy of the document as of heads. d.mu is held.
func (d *Doc) forkAt(heads []automerge.ChangeHash) (*automerge.Doc, error) {
	// Every fork is a temporary copy, garbage once its caller is done.
	noteGarbage(d.size.Load())
	var out *automerge.Doc
	err := guard(func() error {
		var err error
		switch {
		case len(heads) == 0:
			out = automerge.New()
		case len(heads) <= safeItems:
			out, err = d.am.Fork(heads...)
		default:
			// Rebuild from the changes reachable from heads.
			var all []*automerge.Change
			if all, err = d.am.Changes(); err != nil {
				return err
			}
			want := map[automerge.ChangeHash]bool{}
			stack := append([]automerge.ChangeHash(nil), heads...)
			byHash := make(map[automerge.ChangeHash]*automerge.Change, len(all))
			for _, c := range all {
				byHash[c.Hash()] = c
			}
			for len(stack) > 0 {
				h := stack[len(stack)-1]
				stack = stack[:len(stack)-1]
				c, ok := byHash[h]
				if !ok || want[h] {
					continue
				}
				want[h] = true
				stack = append(stack, c.Dependencies()...)
			}
			var keep []*automerge.Change
			for _, c := range all {
				if want[c.Hash()] {
					keep = append(keep, c)
				}
			}
			out = automerge.New()
			err = out.LoadIncremental(automerge.SaveChanges(keep))
		}
		return err
	})
	return out, err
}
