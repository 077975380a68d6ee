package crdt

import (
	"fmt"

	"github.com/automerge/automerge-go"
)

// Superseded reports whether the document holds a newer write to a
// conflict's field: a change that has every one of the conflict's
// candidate changes in its history (it was made after the conflict, by a
// replica that saw both sides) and that wrote the field at ptr, one of its
// parents (a parent map replaced or deleted, the record deleted) or
// something inside it. The conflict's own resolutions (entries resolving
// conflictID) and map-clash repairs, which re-apply old writes, do not
// count. Deciding such a conflict afterwards would overwrite the newer
// write, so the conflict is stale.
//
// The answer depends only on the document's history and grows with it
// (once true, it stays true), so every replica that holds the newer write
// answers alike. It costs O(changes made after the candidates): write-sets
// are read from the change cache; a change without a write-set (a plain
// Automerge client) counts when the value at ptr differs between the state
// before it and the state after it, which forks the document twice
// (O(history), only for plain changes made after an open conflict).
//
// It returns the hash of the first newer change found. A document that
// lacks a candidate change holds no write made after all of them: false.
func (d *Doc) Superseded(ptr, conflictID string, candidates []automerge.ChangeHash) (automerge.ChangeHash, bool, error) {
	var zero automerge.ChangeHash
	if len(candidates) == 0 {
		return zero, false, nil
	}
	if _, err := splitPointer(ptr); err != nil {
		return zero, false, fmt.Errorf("%w: %q", ErrBadPath, ptr)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	bit := map[automerge.ChangeHash]int{}
	for _, h := range candidates {
		if _, dup := bit[h]; dup {
			continue
		}
		if !d.hasChange(h) {
			return zero, false, nil
		}
		bit[h] = len(bit)
	}
	words := (len(bit) + 63) / 64
	chs, err := d.changesSince(candidates)
	if err != nil {
		return zero, false, fmt.Errorf("crdt: superseded: %w", err)
	}
	// reach[h]: which candidates h has in its history. changesSince lists
	// dependencies before dependents, and every change it lists descends
	// from nothing outside itself but the candidates' history.
	reach := make(map[automerge.ChangeHash][]uint64, len(chs))
	full := func(set []uint64) bool {
		n := 0
		for _, w := range set {
			for ; w != 0; w &= w - 1 {
				n++
			}
		}
		return n == len(bit)
	}
	for _, c := range chs {
		m := d.metaOf(c.Hash())
		if m == nil {
			continue
		}
		set := make([]uint64, words)
		for _, dep := range m.deps {
			if i, ok := bit[dep]; ok {
				set[i/64] |= 1 << (i % 64)
			}
			for i, w := range reach[dep] {
				set[i] |= w
			}
		}
		reach[m.hash] = set
		if !full(set) {
			continue
		}
		newer, err := d.writesField(m, ptr, conflictID)
		if err != nil {
			return zero, false, err
		}
		if newer {
			return m.hash, true, nil
		}
	}
	return zero, false, nil
}

// writesField reports whether change m wrote the field at ptr (or a
// parent, or inside it), resolutions of conflictID and repairs aside.
// d.mu is held.
func (d *Doc) writesField(m *chMeta, ptr, conflictID string) (bool, error) {
	if m.ws != nil {
		for _, e := range m.ws.E {
			if e.Resolves == conflictID && conflictID != "" || e.Repair || e.Meta != nil && e.Resolves == "" {
				continue
			}
			if isUnder(ptr, e.Path) || isUnder(e.Path, ptr) {
				return true, nil
			}
		}
		return false, nil
	}
	before, err := d.forkAt(m.deps)
	if err != nil {
		return false, err
	}
	after, err := d.forkAt([]automerge.ChangeHash{m.hash})
	if err != nil {
		return false, err
	}
	var a, b *node
	if err := guard(func() error {
		var err error
		if a, err = readPointer(before, ptr); err != nil {
			return err
		}
		b, err = readPointer(after, ptr)
		return err
	}); err != nil {
		return false, err
	}
	return !equalNodes(a, b), nil
}

// SupersededLocally is Superseded for the changes this replica just wrote
// on top of the state with heads before (a local write): they follow
// everything that state held, so when it held every candidate only the new
// changes need reading: O(new changes), whatever the history since the
// conflict. It falls back to Superseded when a candidate is among the new
// changes, and returns false when before is empty.
func (d *Doc) SupersededLocally(ptr, conflictID string, candidates, before []automerge.ChangeHash) (bool, error) {
	if len(candidates) == 0 || len(before) == 0 {
		return false, nil
	}
	if _, err := splitPointer(ptr); err != nil {
		return false, fmt.Errorf("%w: %q", ErrBadPath, ptr)
	}
	d.mu.Lock()
	chs, err := d.changesSince(before)
	if err != nil {
		d.mu.Unlock()
		return false, fmt.Errorf("crdt: superseded: %w", err)
	}
	fresh := map[automerge.ChangeHash]*chMeta{}
	var order []*chMeta
	for _, c := range chs {
		if m := d.metaOf(c.Hash()); m != nil {
			fresh[m.hash] = m
			order = append(order, m)
		}
	}
	for _, h := range candidates {
		if _, isNew := fresh[h]; isNew || !d.hasChange(h) {
			d.mu.Unlock()
			_, stale, err := d.Superseded(ptr, conflictID, candidates)
			return stale, err
		}
	}
	defer d.mu.Unlock()
	// A new change follows every candidate when its history holds every
	// head of before (that state held them all). Exact for local writes;
	// a change merged in by the caller that does not is skipped (the full
	// Superseded, at listing and decision time, still sees it).
	heads := map[automerge.ChangeHash]int{}
	for _, h := range before {
		if _, dup := heads[h]; !dup {
			heads[h] = len(heads)
		}
	}
	words := (len(heads) + 63) / 64
	covered := map[automerge.ChangeHash][]uint64{}
	for _, m := range order {
		set := make([]uint64, words)
		for _, dep := range m.deps {
			if i, ok := heads[dep]; ok {
				set[i/64] |= 1 << (i % 64)
			}
			for i, w := range covered[dep] {
				set[i] |= w
			}
		}
		covered[m.hash] = set
		n := 0
		for _, w := range set {
			for ; w != 0; w &= w - 1 {
				n++
			}
		}
		if n != len(heads) {
			continue
		}
		newer, err := d.writesField(m, ptr, conflictID)
		if err != nil || newer {
			return newer, err
		}
	}
	return false, nil
}
