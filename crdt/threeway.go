package crdt

import (
	"sort"

	"github.com/automerge/automerge-go"
)

// threeWay replaces both sides' writes by ones derived from an exact
// three-way diff (common ancestor, local, remote), for merges that include
// changes without a ferry write-set. Each derived write is attributed to the
// side's ferry write at the same field when there is one, else to the plain
// change that last changed the field (lastWriters; the side's latest plain
// change when it has only one, or when none visibly did). A plain change's
// time (ChangeTime) and actor stand in for HLC and replica.
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
	replays := 0
	for _, s := range sides {
		// A side's state is the ancestor plus the side's own changes: a
		// copy of the ancestor with them applied costs a clone and the
		// delta, where a fork at the side's heads replays the history.
		if s.view, err = m.d.extend(ancDoc, s); err != nil {
			return err
		}
		if s.root, err = m.d.rootNode(s.view); err != nil {
			return err
		}
		nPlain := 0
		for _, ci := range s.changes {
			if ci.plain {
				nPlain++
			}
		}
		if nPlain > 1 && nPlain <= maxReplay {
			replays++
		}
	}
	// lastWriters replays onto copies of the ancestor as it is now (the
	// probe writes into ancDoc).
	var replayBase *automerge.Doc
	if replays > 0 {
		if replayBase, err = cloneDoc(ancDoc); err != nil {
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
	type derived struct {
		path string
		op   op
		val  *node
	}
	diffs := make([][]derived, len(sides))
	for i, s := range sides {
		diffNodes("", base, s.root, replaced[i], func(path string, o op, val *node) {
			diffs[i] = append(diffs[i], derived{path, o, val})
		})
	}
	for i, s := range sides {
		s.computeFrontier() // ferry writes, for attribution
		ferry := s.front
		var latestPlain, latest *chInfo
		nPlain := 0
		for _, ci := range s.changes {
			if ci.plain {
				nPlain++
			}
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
		var writer map[string]*chInfo
		if nPlain > 1 && nPlain <= maxReplay {
			// Only fields the other side also wrote (at, above or below)
			// can become conflict candidates: only they need their writer.
			var contested []string
			for _, dw := range diffs[i] {
				if len(ferry[dw.path]) > 0 {
					continue
				}
				for _, o := range diffs[1-i] {
					if isUnder(dw.path, o.path) || isUnder(o.path, dw.path) {
						contested = append(contested, dw.path)
						break
					}
				}
			}
			if len(contested) > 0 {
				if writer, err = m.lastWriters(s, replayBase, base, contested); err != nil {
					return err
				}
			}
		}
		s.writes, s.byPath, s.front = nil, nil, map[string][]*write{}
		for seq, dw := range diffs[i] {
			w := &write{path: dw.path, op: dw.op, val: dw.val, frontier: true, seq: seq, synthetic: true}
			var best *write
			for _, f := range ferry[dw.path] {
				if best == nil || f.meta.HLC.Compare(best.meta.HLC) > 0 {
					best = f
				}
			}
			switch ci := writer[dw.path]; {
			case best != nil:
				w.ch, w.meta, w.resolves = best.ch, best.meta, best.resolves
			case ci != nil:
				w.ch, w.meta, w.plain = ci, ci.meta, ci.plain
			default:
				w.ch, w.meta, w.plain = latestPlain, latestPlain.meta, latestPlain.plain
			}
			s.addWrite(w)
			s.front[dw.path] = append(s.front[dw.path], w)
		}
	}
	return nil
}

// maxReplay bounds the plain changes lastWriters replays; a side with more
// attributes its fields to its latest plain change.
const maxReplay = 1000

// lastWriters finds, for each field, the side's change that last changed
// its value: the side's changes are replayed one by one, in causal order
// (ties by hash), onto a copy of the ancestor anc (whose state is base).
// A clone plus O(changes x fields) reads; only for sides with several
// plain changes. A field whose value no single change
// visibly changed (an object replaced by an equal one) has no entry.
func (m *merger) lastWriters(s *side, anc *automerge.Doc, base *node, paths []string) (map[string]*chInfo, error) {
	doc, err := cloneDoc(anc)
	if err != nil {
		return nil, err
	}
	prev := make(map[string]*node, len(paths))
	for _, p := range paths {
		if prev[p], err = nodeAt(base, p); err != nil {
			return nil, err
		}
	}
	out := map[string]*chInfo{}
	for _, ci := range causalOrder(s) {
		c, err := m.d.changeByHash(ci.hash)
		if err != nil {
			return nil, err
		}
		if err := applyChanges(doc, []*automerge.Change{c}); err != nil {
			return nil, err
		}
		for _, p := range paths {
			cur, err := readPointer(doc, p)
			if err != nil {
				return nil, err
			}
			if !equalNodes(cur, prev[p]) {
				out[p], prev[p] = ci, cur
			}
		}
	}
	return out, nil
}

// causalOrder returns the side's changes with every change after its
// dependencies within the side; among changes ready together, the smaller
// hash first (so every replica replays in the same order).
func causalOrder(s *side) []*chInfo {
	waiting := make(map[automerge.ChangeHash]int, len(s.changes))
	next := map[automerge.ChangeHash][]*chInfo{}
	var ready []*chInfo
	for _, ci := range s.changes {
		n := 0
		for _, h := range ci.m.deps {
			if s.byHash[h] != nil {
				n++
				next[h] = append(next[h], ci)
			}
		}
		waiting[ci.hash] = n
		if n == 0 {
			ready = append(ready, ci)
		}
	}
	out := make([]*chInfo, 0, len(s.changes))
	for len(ready) > 0 {
		sort.Slice(ready, func(i, j int) bool { return string(ready[i].hash[:]) < string(ready[j].hash[:]) })
		ci := ready[0]
		ready = ready[1:]
		out = append(out, ci)
		for _, d := range next[ci.hash] {
			if waiting[d.hash]--; waiting[d.hash] == 0 {
				ready = append(ready, d)
			}
		}
	}
	return out
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

// extend returns a copy of anc (the common ancestor) with the side's
// changes applied, which is the side's state: the side's history is the
// common history plus its own changes. If the result does not have the
// side's heads (it always should), it falls back to a fork at them.
func (d *Doc) extend(anc *automerge.Doc, s *side) (*automerge.Doc, error) {
	v, err := cloneDoc(anc)
	if err != nil {
		return nil, err
	}
	order := causalOrder(s)
	chs := make([]*automerge.Change, 0, len(order))
	for _, ci := range order {
		c, err := d.changeByHash(ci.hash)
		if err != nil {
			return nil, err
		}
		chs = append(chs, c)
	}
	if err := applyChanges(v, chs); err != nil {
		return nil, err
	}
	if SameHeads(v.Heads(), s.heads) {
		return v, nil
	}
	return d.forkAt(s.heads)
}

// cloneDoc returns an independent copy of doc (all of its changes).
func cloneDoc(doc *automerge.Doc) (*automerge.Doc, error) {
	var out *automerge.Doc
	err := guard(func() error {
		var err error
		out, err = doc.Fork()
		return err
	})
	return out, err
}
