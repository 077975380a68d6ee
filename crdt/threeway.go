package crdt

import (
	"github.com/automerge/automerge-go"
)

// threeWay replaces both sides' writes by ones derived from an exact
// three-way diff (common ancestor, local, remote), for merges that include
// changes without a ferry write-set. Each derived write is attributed to the
// side's ferry write at the same field when there is one, else to the side's
// latest plain change (its timestamp and actor stand in for HLC and
// replica).
func (m *merger) threeWay() error {
	anc := map[automerge.ChangeHash]bool{}
	for _, s := range []*side{m.local, m.remote} {
		for _, ci := range s.changes {
			for _, h := range ci.m.deps {
				if m.local.byHash[h] == nil && m.remote.byHash[h] == nil {
					anc[h] = true
				}
			}
		}
		for _, h := range s.heads {
			if s.byHash[h] == nil {
				anc[h] = true
			}
		}
	}
	heads := make([]automerge.ChangeHash, 0, len(anc))
	for h := range anc {
		heads = append(heads, h)
	}
	ancDoc, err := m.d.forkAt(heads)
	if err != nil {
		return err
	}
	base, err := m.d.rootNode(ancDoc)
	if err != nil {
		return err
	}
	sides := []*side{m.local, m.remote}
	for _, s := range sides {
		doc, err := s.viewDoc()
		if err != nil {
			return err
		}
		if s.root, err = m.d.rootNode(doc); err != nil {
			return err
		}
	}
	// Which objects each side replaced (rather than edited in place): the
	// values alone cannot tell a new Text, list, map or counter from an
	// edited one. The probe writes into ancDoc and the side views, which is
	// why every value was read first.
	replaced, err := probeReplaced(ancDoc, base, sides)
	if err != nil {
		return err
	}
	for i, s := range sides {
		mine := s.root
		s.computeFrontier() // ferry writes, for attribution
		ferry := s.front
		var latestPlain, latest *chInfo
		for _, ci := range s.changes {
			if ci.plain && (latestPlain == nil || newer(ci, latestPlain)) {
				latestPlain = ci
			}
			if latest == nil || newer(ci, latest) {
				latest = ci
			}
		}
		if latestPlain == nil {
			latestPlain = latest
		}
		s.writes, s.byPath, s.front = nil, nil, map[string][]*write{}
		seq := 0
		emit := func(path string, o op, val *node) {
			w := &write{path: path, op: o, val: val, frontier: true, seq: seq, synthetic: true}
			seq++
			var best *write
			for _, f := range ferry[path] {
				if best == nil || f.meta.HLC.Compare(best.meta.HLC) > 0 {
					best = f
				}
			}
			if best != nil {
				w.ch, w.meta, w.resolves = best.ch, best.meta, best.resolves
			} else {
				w.ch, w.meta, w.plain = latestPlain, latestPlain.meta, latestPlain.plain
			}
			s.addWrite(w)
			s.front[path] = append(s.front[path], w)
		}
		diffNodes("", base, mine, replaced[i], emit)
	}
	return nil
}

func newer(a, b *chInfo) bool {
	if c := a.meta.HLC.Compare(b.meta.HLC); c != 0 {
		return c > 0
	}
	return string(a.hash[:]) > string(b.hash[:])
}

// diffNodes emits the writes that turn map a into map b (both maps).
// replaced holds the fields where b's object (map, list, text, counter) is
// not a's object but a new one put there: a set, not an edit.
func diffNodes(prefix string, a, b *node, replaced map[string]bool, emit func(string, op, *node)) {
	keys := map[string]bool{}
	for k := range a.m {
		keys[k] = true
	}
	for k := range b.m {
		keys[k] = true
	}
	for _, k := range sortedKeys(keys) {
		p := prefix + pointer([]string{k})
		x, y := a.m[k], b.m[k]
		switch {
		case y == nil:
			emit(p, opDel, nil)
		case x == nil || x.k != y.k:
			if y.k == KindMap {
				emit(p, opMkMap, nil)
				diffNodes(p, &node{k: KindMap}, y, replaced, emit)
			} else {
				emit(p, opSet, y)
			}
		case replaced[p]:
			// A new object over the old one: whatever the other side did
			// to the old object is hidden by Automerge, so this is a set
			// (the whole value), even when the contents are equal.
			emit(p, opSet, y)
		case y.k == KindMap:
			diffNodes(p, x, y, replaced, emit)
		case equalNodes(x, y):
		case y.k == KindList || y.k == KindText || y.k == KindCounter:
			emit(p, opEdit, y)
		default:
			emit(p, opSet, y)
		}
	}
}
