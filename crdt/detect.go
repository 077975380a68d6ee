package crdt

import (
	"errors"
	"fmt"
	"sort"

	"github.com/automerge/automerge-go"
)

// Conflict detection over the two sides built in history.go: candidates per
// path, direct and inherited, the conflicts they form, and the repair of
// clashes between a subtree's deletion and edits inside it.

type cand struct {
	w       *write
	s       *side
	viewed  bool // value read from the side's state
	deleted bool
	val     *node
	known   bool
	mk      bool
	edit    bool
}

// direct returns the side's frontier writes exactly at p as candidates.
func (s *side) direct(p string) []*cand {
	ws := s.front[p]
	if len(ws) == 0 {
		return nil
	}
	var out []*cand
	var set, edit *write
	for _, w := range ws {
		switch w.op {
		case opSet:
			set = w
		case opEdit:
			edit = w
		}
	}
	if set != nil && edit != nil && len(ws) == 2 {
		// Created and then edited in place: one candidate whose value is
		// the side's current value.
		w := edit
		if set.meta.HLC.Compare(edit.meta.HLC) > 0 {
			w = set
		}
		return []*cand{{w: w, s: s, edit: true}}
	}
	for _, w := range ws {
		c := &cand{w: w, s: s}
		switch w.op {
		case opSet:
			c.val, c.known = w.val, true
		case opDel, opDelRecord:
			c.deleted, c.known = true, true
		case opMkMap:
			c.mk = true
		case opEdit:
			c.edit = true
			if w.val != nil {
				c.val, c.known = w.val, true
			}
		}
		out = append(out, c)
	}
	return out
}

// inherited returns the side's candidate for p implied by a write at an
// ancestor, or the ancestor at which the side replaced a map by a non-map
// (a type conflict there). clash reports a concurrent map creation at the
// ancestor on both sides (the maps' keys are unioned, no conflict).
func (s *side) inherited(p string, other *side) (c *cand, replacedAt string, clash bool) {
	for a := parentPointer(p); ; a = parentPointer(a) {
		ws := s.front[a]
		for _, w := range ws {
			switch w.op {
			case opDel, opDelRecord:
				return &cand{w: w, s: s, deleted: true, known: true}, "", false
			case opSet:
				if w.val != nil && w.val.k == KindMap {
					rel, _ := splitPointer(p[len(a):])
					n := w.val
					for _, k := range rel {
						if n == nil || n.k != KindMap {
							n = nil
							break
						}
						n = n.m[k]
					}
					return &cand{w: w, s: s, val: n, deleted: n == nil, known: true}, "", false
				}
				return nil, a, false
			case opMkMap:
				for _, o := range other.front[a] {
					if o.op == opMkMap {
						return nil, "", true
					}
				}
				return &cand{w: w, s: s, deleted: true, known: true}, "", false
			}
		}
		if a == "" {
			return nil, "", false
		}
	}
}

func (m *merger) resolveValue(c *cand, p string) error {
	if c.known {
		return nil
	}
	n, err := c.s.viewNode(p)
	if err != nil {
		return err
	}
	c.val, c.deleted, c.known, c.viewed = n, n == nil, true, true
	return nil
}

func (m *merger) detect() error {
	paths := map[string]bool{}
	for p := range m.local.front {
		paths[p] = true
	}
	for p := range m.remote.front {
		paths[p] = true
	}
	delete(paths, "")
	conflicts := map[string]*Conflict{} // by path
	typeAt := map[string]bool{}
	for _, p := range sortedKeys(paths) {
		dl, dr := m.local.direct(p), m.remote.direct(p)
		if len(dl) == 0 && len(dr) == 0 {
			continue
		}
		cl, cr := dl, dr
		if len(cl) == 0 {
			c, repl, _ := m.local.inherited(p, m.remote)
			if repl != "" {
				typeAt[repl] = true
				continue
			}
			if c != nil {
				cl = []*cand{c}
			}
		}
		if len(cr) == 0 {
			c, repl, _ := m.remote.inherited(p, m.local)
			if repl != "" {
				typeAt[repl] = true
				continue
			}
			if c != nil {
				cr = []*cand{c}
			}
		}
		if len(cl) == 0 || len(cr) == 0 {
			continue
		}
		cf, err := m.evaluate(p, append(cl, cr...))
		if err != nil {
			return err
		}
		if cf != nil {
			conflicts[p] = cf
		}
	}
	for _, a := range sortedKeys(typeAt) {
		if _, done := conflicts[a]; done {
			continue
		}
		cf, err := m.typeConflictAt(a)
		if err != nil {
			return err
		}
		if cf != nil {
			conflicts[a] = cf
		}
	}
	for _, p := range sortedKeys(conflicts) {
		m.res.Conflicts = append(m.res.Conflicts, *conflicts[p])
	}
	return nil
}

// evaluate decides whether the candidates at p conflict.
func (m *merger) evaluate(p string, cs []*cand) (*Conflict, error) {
	allEdit, allDel, allMk := true, true, true
	for _, c := range cs {
		allEdit = allEdit && c.edit
		allDel = allDel && c.deleted
		allMk = allMk && c.mk
	}
	if allEdit || allDel || allMk {
		return nil, nil
	}
	for _, c := range cs {
		if err := m.resolveValue(c, p); err != nil {
			return nil, err
		}
	}
	distinct := map[string]bool{}
	for _, c := range cs {
		if c.deleted || c.val == nil {
			distinct["-"] = true
		} else {
			distinct[string(c.val.encode())] = true
		}
	}
	if len(distinct) < 2 {
		return nil, nil
	}
	cf := &Conflict{Path: p, CRDTWinner: -1}
	seen := map[automerge.ChangeHash]bool{}
	for _, c := range cs {
		if seen[c.w.ch.hash] {
			continue
		}
		seen[c.w.ch.hash] = true
		cd := candidateFrom(c.val, c.deleted, c.w.meta, c.w.ch.hash, c.w.plain || c.w.ch.plain, c.w.resolves)
		if c.viewed || c.w.synthetic {
			cd.contrib = c.s.heads
		}
		cf.Candidates = append(cf.Candidates, cd)
	}
	if len(cf.Candidates) < 2 {
		return nil, nil
	}
	cf.finish()
	return cf, nil
}

// typeConflictAt builds the conflict for a field one side replaced with a
// non-map while the other edited inside it.
func (m *merger) typeConflictAt(a string) (*Conflict, error) {
	cf := &Conflict{Path: a, CRDTWinner: -1}
	for _, s := range []*side{m.local, m.remote} {
		if ws := s.front[a]; len(ws) > 0 {
			for _, w := range ws {
				if w.op == opSet {
					cd := candidateFrom(w.val, false, w.meta, w.ch.hash, w.plain || w.ch.plain, w.resolves)
					if w.synthetic {
						cd.contrib = s.heads
					}
					cf.Candidates = append(cf.Candidates, cd)
				}
			}
			continue
		}
		// The side edited below a: its candidate is its whole value at a,
		// attributed to its latest write there.
		var best *write
		for p, ws := range s.front {
			if !strictlyUnder(p, a) {
				continue
			}
			for _, w := range ws {
				if best == nil || w.meta.HLC.Compare(best.meta.HLC) > 0 ||
					w.meta.HLC == best.meta.HLC && string(w.ch.hash[:]) > string(best.ch.hash[:]) {
					best = w
				}
			}
		}
		if best == nil {
			continue
		}
		n, err := s.viewNode(a)
		if err != nil {
			return nil, err
		}
		cd := candidateFrom(n, n == nil, best.meta, best.ch.hash, best.plain || best.ch.plain, "")
		cd.contrib = s.heads
		cf.Candidates = append(cf.Candidates, cd)
	}
	if len(cf.Candidates) < 2 {
		return nil, nil
	}
	distinct := map[string]bool{}
	for _, c := range cf.Candidates {
		if c.Deleted {
			distinct["-"] = true
		} else {
			distinct[string(c.node.encode())] = true
		}
	}
	if len(distinct) < 2 {
		return nil, nil
	}
	cf.finish()
	return cf, nil
}

// FillCRDTWinner sets c.CRDTWinner to the candidate Automerge shows in the
// state made of exactly the candidates' changes (and their history): a
// deterministic choice, the same on every replica. It forks the document,
// so it costs O(history).
func (d *Doc) FillCRDTWinner(c *Conflict) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	c.CRDTWinner = -1
	heads := make([]automerge.ChangeHash, 0, len(c.Candidates))
	for _, cd := range c.Candidates {
		if !d.hasChange(cd.Change) {
			return fmt.Errorf("%w: candidate change %s", ErrNotFound, cd.Change)
		}
		heads = append(heads, cd.Change)
	}
	f, err := d.forkAt(heads)
	if err != nil {
		return err
	}
	cur, err := readPointer(f, c.Path)
	if err != nil {
		return err
	}
	for i, cd := range c.Candidates {
		if cur == nil && cd.Deleted || cur != nil && !cd.Deleted && equalNodes(cur, cd.node) {
			c.CRDTWinner = i
			return nil
		}
	}
	return nil
}

// ---- map clashes -------------------------------------------------------------

// repairClashes re-applies writes lost when both sides created a map at the
// same field: Automerge keeps one of the two map objects, ferry copies the
// other side's fields into it (with their original metadata), so maps with
// different keys merge as the application expects.
func (m *merger) repairClashes() error {
	var clashes []string
	for p, ws := range m.local.front {
		for _, w := range ws {
			if w.op != opMkMap {
				continue
			}
			for _, o := range m.remote.front[p] {
				if o.op == opMkMap {
					clashes = append(clashes, p)
				}
			}
		}
	}
	if len(clashes) == 0 {
		return nil
	}
	sort.Strings(clashes)
	inConflict := func(p string) bool {
		for _, c := range m.res.Conflicts {
			if isUnder(p, c.Path) || isUnder(c.Path, p) {
				return true
			}
		}
		return false
	}
	type fix struct {
		path string
		val  *node
		meta WriteMeta
	}
	var fixes []fix
	seen := map[string]bool{}
	for _, a := range clashes {
		for _, s := range []*side{m.local, m.remote} {
			other := m.remote
			if s == m.remote {
				other = m.local
			}
			for _, p := range sortedKeys(s.front) {
				if !strictlyUnder(p, a) || seen[p] || inConflict(p) || len(other.front[p]) > 0 {
					continue
				}
				for _, w := range s.front[p] {
					var want *node
					switch w.op {
					case opSet:
						want = w.val
					case opMkMap:
						want = &node{k: KindMap, m: map[string]*node{}}
					case opEdit:
						n, err := s.viewNode(p)
						if err != nil {
							return err
						}
						want = n
					default:
						continue
					}
					if want == nil {
						continue
					}
					cur, err := readPointer(m.d.am, p)
					if err != nil {
						return err
					}
					if want.k == KindMap && cur != nil && cur.k == KindMap || equalNodes(cur, want) {
						continue
					}
					seen[p] = true
					fixes = append(fixes, fix{path: p, val: want, meta: w.meta})
					break
				}
			}
		}
	}
	if len(fixes) == 0 {
		return nil
	}
	t := m.d.newTx(WriteMeta{HLC: m.d.clock.Now(), ReplicaID: m.d.actor.ReplicaID, Priority: m.d.actor.Priority})
	var errs []error
	for _, f := range fixes {
		if err := t.forceWrite(f.path, f.val, false, &f.meta, wsEntry{}); err != nil {
			errs = append(errs, err)
		}
	}
	m.res.Repaired = len(fixes)
	errs = append(errs, t.commit())
	return errors.Join(errs...)
}
