package crdt

import (
	"fmt"
	"sort"

	"github.com/automerge/automerge-go"
)

// Object identity for the three-way fallback.
//
// A change from a plain Automerge client that puts a new Text, list, map or
// counter at a field looks, in the values alone, like an in-place edit of
// the old object: both leave an object of the same kind with other
// contents. The difference matters: concurrent edits of one object merge,
// but an object put over the old one hides every concurrent edit of the old
// object and every other new object (Automerge shows one of them), so that
// is a conflict. automerge-go exposes no object or operation ids, so identity is tested by a probe: one change, made on a copy of the
// common ancestor, that adds a key to each map in question and deletes each
// other field in question (a delete removes only the operations it saw: the
// ancestor's value, with the in-place edits made to it, but not a value a
// side put there since). Applied to a side's state, the probe shows at a
// field exactly when that side still has the ancestor's value there: the
// map gains the key, the field is gone.

// probeKey is the key the probe adds to maps (never read back into
// application values: the probed states are thrown away).
const probeKey = "\uffffferry-probe"

// probeReplaced reports, per side, the fields whose object the side
// replaced. anc is a copy of the common ancestor that the probe may write
// into; base is its application state; each side's root is its state and
// its view a copy it may write into. Cost: one small change applied to each
// side, plus reading the probed fields.
func probeReplaced(anc *automerge.Doc, base *node, sides []*side) ([]map[string]bool, error) {
	out := make([]map[string]bool, len(sides))
	for i := range out {
		out[i] = map[string]bool{}
	}
	var paths []string
	collectProbes("", base, sides, &paths)
	if len(paths) == 0 {
		return out, nil
	}
	sort.Strings(paths)
	var ch *automerge.Change
	err := guard(func() error {
		if err := anc.SetActorID(automerge.NewActorID()); err != nil {
			return err
		}
		for _, p := range paths {
			if err := probeAt(anc, p); err != nil {
				return fmt.Errorf("probe %s: %w", p, err)
			}
		}
		h, err := anc.Commit("ferry probe", automerge.CommitOptions{AllowEmpty: true})
		if err != nil {
			return err
		}
		ch, err = anc.Change(h)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("crdt: identity probe: %w", err)
	}
	for i, s := range sides {
		doc, err := s.viewDoc()
		if err != nil {
			return nil, err
		}
		if err := applyChanges(doc, []*automerge.Change{ch}); err != nil {
			return nil, fmt.Errorf("crdt: identity probe: %w", err)
		}
		for _, p := range paths {
			before, _ := nodeAt(s.root, p)
			if before == nil || before.k != kindAt(base, p) {
				continue // gone, or another kind: a set or delete anyway
			}
			after, err := readPointer(doc, p)
			if err != nil {
				return nil, fmt.Errorf("crdt: identity probe: %w", err)
			}
			// The probe missed: not the ancestor's object or value.
			if before.k == KindMap && equalNodes(before, after) || before.k != KindMap && after != nil {
				out[i][p] = true
			}
		}
	}
	return out, nil
}

// collectProbes lists the fields under prefix (a map in base) that still
// hold a value of the same kind on some side and differ from base on some
// side: only there can a replacement matter. Fields under an empty key
// (only foreign documents have them: automerge-go's core refuses to write
// one) cannot be probed and are left out, with what they hold: there a
// replaced object is compared by value, as an in-place edit.
func collectProbes(prefix string, base *node, sides []*side, out *[]string) {
	for _, k := range sortedKeys(base.m) {
		if k == "" {
			continue
		}
		x := base.m[k]
		p := prefix + pointer([]string{k})
		same, changed := false, false
		for _, s := range sides {
			y, _ := nodeAt(s.root, p)
			if y != nil && y.k == x.k {
				same = true
			}
			if !equalNodes(x, y) {
				changed = true
			}
		}
		if !same || !changed {
			continue
		}
		*out = append(*out, p)
		if x.k == KindMap {
			collectProbes(p, x, sides, out)
		}
	}
}

// probeAt marks the field at pointer p of doc (see probeReplaced): a map
// gains probeKey, any other value is deleted. Fields are probed parents
// first, so a map is marked before its fields are deleted.
func probeAt(doc *automerge.Doc, p string) error {
	keys, err := splitPointer(p)
	if err != nil || len(keys) == 0 {
		return fmt.Errorf("%w: %q", ErrBadPath, p)
	}
	parent := doc.Root()
	for _, k := range keys[:len(keys)-1] {
		if parent.Kind() != automerge.KindMap {
			return fmt.Errorf("%w: %q is not a field", ErrBadPath, p)
		}
		if parent, err = parent.Map().Get(k); err != nil {
			return err
		}
	}
	if parent.Kind() != automerge.KindMap {
		return fmt.Errorf("%w: %q is not a field", ErrBadPath, p)
	}
	last := keys[len(keys)-1]
	v, err := parent.Map().Get(last)
	if err != nil {
		return err
	}
	switch v.Kind() {
	case automerge.KindMap:
		return v.Map().Set(probeKey, true)
	case automerge.KindVoid:
		return fmt.Errorf("%w: %q is absent", ErrBadPath, p)
	}
	return parent.Map().Delete(last)
}

// nodeAt returns the value at field pointer p below root (nil when absent).
func nodeAt(root *node, p string) (*node, error) {
	keys, err := splitPointer(p)
	if err != nil {
		return nil, err
	}
	n := root
	for _, k := range keys {
		if n == nil || n.k != KindMap {
			return nil, nil
		}
		n = n.m[k]
	}
	return n, nil
}

func kindAt(root *node, p string) ValueKind {
	n, _ := nodeAt(root, p)
	if n == nil {
		return KindNone
	}
	return n.k
}
