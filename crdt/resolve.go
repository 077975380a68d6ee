package crdt

import (
	"errors"
	"fmt"

	"github.com/automerge/automerge-go"
)

// Resolution is a decision about one conflict, written by Doc.Resolve.
type Resolution struct {
	Conflict Conflict
	// Winner indexes Conflict.Candidates; -1 writes Value (or deletes the
	// field when Delete is set) as a new write by this replica.
	Winner int
	Value  any
	Delete bool
	// Provisional marks a provisional winner (the user policy): the
	// resolution carries the whole conflict so every replica can queue it.
	Provisional bool
	// By records who decided, e.g. "policy:timestamp", "user",
	// "fallback:timestamp".
	By string
}

// Resolve writes resolutions in one change. Each writes the winning value
// (only when the document does not already show it) and, always, the
// field's metadata and a write-set entry naming the conflict. A winning
// candidate's own metadata (HLC, replica, priority) is carried over, so two
// replicas resolving the same conflict the same way write equal entries and
// do not start another round.
func (d *Doc) Resolve(rs ...Resolution) error {
	type prepared struct {
		ptr   string
		val   *node
		meta  *WriteMeta
		entry wsEntry
		// cands is set when the field lies under an empty key, which
		// automerge-go cannot write (see pinShown).
		cands []Candidate
	}
	var ps []prepared
	for _, r := range rs {
		c := r.Conflict
		if _, err := splitPointer(c.Path); err != nil || c.Path == "" {
			return fmt.Errorf("%w: conflict path %q", ErrBadPath, c.Path)
		}
		p := prepared{ptr: c.Path, entry: wsEntry{Resolves: c.ID, Provisional: r.Provisional, By: r.By, Supersedes: c.Supersedes()}}
		if keys, _ := splitPointer(c.Path); hasEmptyKey(keys) {
			if r.Winner < 0 {
				return fmt.Errorf("%w: resolve %s: %s lies under an empty key, which ferry cannot write; pick a candidate", ErrUnsupportedValue, c.ID, c.Path)
			}
			p.cands = c.Candidates
		}
		switch {
		case r.Winner >= 0:
			if r.Winner >= len(c.Candidates) {
				return fmt.Errorf("crdt: resolve %s: winner %d of %d candidates", c.ID, r.Winner, len(c.Candidates))
			}
			cd := c.Candidates[r.Winner]
			meta := cd.Meta()
			p.meta = &meta
			if !cd.Deleted {
				n := cd.node
				if n == nil {
					var err error
					if n, err = fromGo(cd.Value); err != nil {
						return err
					}
				}
				p.val = n
			}
		case !r.Delete:
			n, err := fromGo(r.Value)
			if err != nil {
				return err
			}
			p.val = n
		}
		if r.Provisional {
			b, err := c.MarshalBinary()
			if err != nil {
				return err
			}
			p.entry.Conflict = b
		}
		ps = append(ps, p)
	}
	return d.write(func(t *tx) error {
		var errs []error
		for _, p := range ps {
			if p.cands != nil {
				if err := t.pinShown(p.ptr, &p.val, &p.meta, p.cands); err != nil {
					errs = append(errs, err)
					continue
				}
			}
			if err := t.forceWrite(p.ptr, p.val, true, p.meta, p.entry); err != nil {
				errs = append(errs, err)
			}
		}
		return errors.Join(errs...)
	})
}

func hasEmptyKey(keys []string) bool {
	for _, k := range keys {
		if k == "" {
			return true
		}
	}
	return false
}

// pinShown handles a resolution of a field under an empty map key (foreign
// documents may have them; automerge-go's core refuses to write them). The
// document cannot be made to show another value, so the candidate it shows
// (Automerge's own deterministic winner, the same on every replica that
// merged the same changes) wins: *val and *meta become that candidate's.
// If no candidate is shown the field cannot be resolved.
func (t *tx) pinShown(ptr string, val **node, meta **WriteMeta, cands []Candidate) error {
	keys, err := splitPointer(ptr)
	if err != nil || len(keys) == 0 {
		return fmt.Errorf("%w: %q", ErrBadPath, ptr)
	}
	var cur *node
	parent, err := mapAt(t.d.am, keys[:len(keys)-1])
	if err != nil {
		return err
	}
	if parent != nil {
		v, err := parent.Get(keys[len(keys)-1])
		if err != nil {
			return err
		}
		if cur, err = fromAM(v); err != nil {
			return err
		}
	}
	shows := func(n *node) bool {
		if n == nil || cur == nil {
			return n == nil && cur == nil
		}
		return equalNodes(n, cur)
	}
	if shows(*val) {
		return nil
	}
	for i := range cands {
		cd := &cands[i]
		n := cd.node
		if cd.Deleted {
			n = nil
		} else if n == nil {
			continue
		}
		if shows(n) {
			m := cd.Meta()
			*val, *meta = n, &m
			return nil
		}
	}
	return fmt.Errorf("%w: %s lies under an empty key, which ferry cannot write, and the document shows none of the candidates", ErrUnsupportedValue, ptr)
}

// forceWrite makes the field at ptr hold val (nil deletes it), creating or
// replacing parents as needed, and records one covering entry (set or del)
// with meta and the extra fields of e.
func (t *tx) forceWrite(ptr string, val *node, replace bool, meta *WriteMeta, e wsEntry) error {
	keys, err := splitPointer(ptr)
	if err != nil || len(keys) == 0 {
		return fmt.Errorf("%w: %q", ErrBadPath, ptr)
	}
	if isReserved(keys[0]) {
		return fmt.Errorf("%w: %q is reserved", ErrBadPath, keys[0])
	}
	p := make(Path, len(keys))
	for i, k := range keys {
		p[i] = k
	}
	e.Path = ptr
	if val == nil {
		e.Op = opDel
		parent, err := mapAt(t.d.am, keys[:len(keys)-1])
		if err != nil {
			return err
		}
		if parent != nil {
			cur, err := parent.Get(keys[len(keys)-1])
			if err != nil {
				return err
			}
			if !cur.IsVoid() {
				if err := parent.Delete(keys[len(keys)-1]); err != nil {
					return err
				}
				t.touched = true
			}
		}
		t.record(e, meta)
		return nil
	}
	t.touch()
	e.Op, e.Val = opSet, val.encode()
	tg, err := t.locate(p, true, true, meta)
	if err != nil {
		return err
	}
	m := tg.parent.Map()
	key := keys[len(keys)-1]
	curV, err := m.Get(key)
	if err != nil {
		return err
	}
	cur, err := fromAM(curV)
	if err != nil {
		return err
	}
	switch {
	case equalNodes(cur, val):
	case val.k == KindMap:
		if err := t.assign(m, key, keys, val, replace, meta); err != nil {
			return err
		}
	default:
		if err := putNew(m, key, val); err != nil {
			return err
		}
		t.touched = true
	}
	t.record(e, meta)
	return nil
}

// mapAt returns the map at keys, or nil when the path does not lead to one.
func mapAt(doc *automerge.Doc, keys []string) (*automerge.Map, error) {
	v := doc.Root()
	for _, k := range keys {
		if v.Kind() != automerge.KindMap {
			return nil, nil
		}
		var err error
		if v, err = v.Map().Get(k); err != nil {
			return nil, err
		}
	}
	if v.Kind() != automerge.KindMap {
		return nil, nil
	}
	return v.Map(), nil
}
