package crdt

import (
	"github.com/automerge/automerge-go"
)

// The two sides of a merge: each side's changes since the common heads,
// their ancestry, the writes they make and the frontier of latest writes.
// merge.go drives it; detect.go finds conflicts in it.

type chInfo struct {
	m     *chMeta
	hash  automerge.ChangeHash
	ws    *writeSet
	plain bool
	idx   int
	anc   []uint64 // bitset of ancestors within the side
	meta  WriteMeta
}

type write struct {
	ch          *chInfo
	seq         int
	path        string
	op          op
	val         *node // set; edit in three-way mode
	meta        WriteMeta
	plain       bool
	resolves    string
	provisional bool
	frontier    bool
	synthetic   bool // derived by the three-way diff (value read from a fork)
}

type side struct {
	m       *merger
	changes []*chInfo
	byHash  map[automerge.ChangeHash]*chInfo
	heads   []automerge.ChangeHash
	plain   bool
	writes  []*write
	byPath  map[string][]*write
	front   map[string][]*write // frontier writes by path
	view    *automerge.Doc
	viewErr error
	// root is the side's application state, read once by the three-way
	// fallback (which then writes probes into view).
	root *node
}

type merger struct {
	d             *Doc
	res           *MergeResult
	local, remote *side
}

func (m *merger) newSide(chs []*chMeta, heads []automerge.ChangeHash) *side {
	s := &side{m: m, byHash: make(map[automerge.ChangeHash]*chInfo, len(chs)), heads: heads}
	for i, c := range chs {
		ci := &chInfo{m: c, hash: c.hash, idx: i, ws: c.ws, plain: c.plain, meta: c.meta}
		if c.plain {
			s.plain = true
		}
		s.changes = append(s.changes, ci)
		s.byHash[ci.hash] = ci
	}
	return s
}

func plainMeta(c *automerge.Change) WriteMeta {
	// The change's time in its writer's unit (see ChangeTime); 0 when unset.
	ts, _ := rawChangeMillis(c.Timestamp().UnixMilli())
	return WriteMeta{HLC: Timestamp{WallMillis: ts}, ReplicaID: "automerge:" + c.ActorID()}
}

func (m *merger) collectResolutions(c *chInfo) {
	for _, e := range c.ws.E {
		if e.Resolves == "" {
			continue
		}
		rr := RemoteResolution{ConflictID: e.Resolves, Path: e.Path, Provisional: e.Provisional, By: e.By, Change: c.hash,
			Supersedes: e.Supersedes}
		meta := c.ws.M
		if e.Meta != nil {
			meta = *e.Meta
		}
		var n *node
		if e.Op == opSet {
			n, _ = decodeNode(e.Val)
		}
		rr.Winner = candidateFrom(n, e.Op != opSet, meta, c.hash, false, e.Resolves)
		if len(e.Conflict) > 0 {
			var cf Conflict
			if cf.UnmarshalBinary(e.Conflict) == nil {
				rr.Conflict = &cf
			}
		}
		m.res.Resolutions = append(m.res.Resolutions, rr)
	}
}

// ancestry computes, for each change, the set of its ancestors within the
// side (deps outside the side are common history).
func (s *side) ancestry() {
	words := (len(s.changes) + 63) / 64
	done := make([]bool, len(s.changes))
	var visit func(ci *chInfo)
	visit = func(ci *chInfo) {
		if done[ci.idx] {
			return
		}
		done[ci.idx] = true
		ci.anc = make([]uint64, words)
		for _, h := range ci.m.deps {
			dep, ok := s.byHash[h]
			if !ok {
				continue
			}
			visit(dep)
			ci.anc[dep.idx/64] |= 1 << (dep.idx % 64)
			for i, w := range dep.anc {
				ci.anc[i] |= w
			}
		}
	}
	for _, ci := range s.changes {
		visit(ci)
	}
}

// isAncestor reports whether a is a proper ancestor of b.
func isAncestor(a, b *chInfo) bool {
	return b.anc != nil && b.anc[a.idx/64]&(1<<(a.idx%64)) != 0
}

// decodeWrites turns the side's write-sets into writes.
func (s *side) decodeWrites() {
	for _, ci := range s.changes {
		if ci.ws == nil {
			continue
		}
		for i, e := range ci.ws.E {
			w := &write{ch: ci, seq: i, path: e.Path, op: e.Op, meta: ci.ws.M,
				resolves: e.Resolves, provisional: e.Provisional}
			if e.Meta != nil {
				w.meta = *e.Meta
			}
			if e.Op == opSet {
				n, err := decodeNode(e.Val)
				if err != nil || n == nil {
					continue // undecodable value: ignore the entry
				}
				w.val = n
			}
			s.addWrite(w)
		}
	}
}

func (s *side) addWrite(w *write) {
	if s.byPath == nil {
		s.byPath = map[string][]*write{}
	}
	s.writes = append(s.writes, w)
	s.byPath[w.path] = append(s.byPath[w.path], w)
}

// covers reports whether later write f hides earlier write e.
func covers(f, e *write) bool {
	switch f.op {
	case opSet, opDel, opMkMap, opDelRecord:
		return isUnder(e.path, f.path)
	case opEdit:
		return e.op == opEdit && e.path == f.path
	}
	return false
}

// later reports whether f comes causally after e.
func later(f, e *write) bool {
	if f.ch == e.ch {
		return f.seq > e.seq
	}
	return isAncestor(e.ch, f.ch)
}

func (s *side) computeFrontier() {
	if s.byPath == nil {
		s.ancestry()
		s.decodeWrites()
	}
	s.front = map[string][]*write{}
	for _, e := range s.writes {
		e.frontier = true
		for a, more := e.path, true; more; a, more = parentPointer(a), a != "" {
			for _, f := range s.byPath[a] {
				if f != e && later(f, e) && covers(f, e) {
					e.frontier = false
					break
				}
			}
			if !e.frontier {
				break
			}
		}
		if e.frontier {
			s.front[e.path] = append(s.front[e.path], e)
		}
	}
}

// viewDoc forks the side's state (O(history); only for the rare conflicts
// whose candidate values are not in the write-sets).
func (s *side) viewDoc() (*automerge.Doc, error) {
	if s.view == nil && s.viewErr == nil {
		s.view, s.viewErr = s.m.d.forkAt(s.heads)
	}
	return s.view, s.viewErr
}

// viewNode reads the side's value at a field pointer (nil when absent).
func (s *side) viewNode(ptr string) (*node, error) {
	if s.root != nil {
		return nodeAt(s.root, ptr)
	}
	doc, err := s.viewDoc()
	if err != nil {
		return nil, err
	}
	return readPointer(doc, ptr)
}

func readPointer(doc *automerge.Doc, ptr string) (*node, error) {
	keys, err := splitPointer(ptr)
	if err != nil {
		return nil, err
	}
	v := doc.Root()
	for _, k := range keys {
		if v.Kind() != automerge.KindMap {
			return nil, nil
		}
		if v, err = v.Map().Get(k); err != nil {
			return nil, err
		}
	}
	if v.IsVoid() {
		return nil, nil
	}
	return fromAM(v)
}

// ---- detection -------------------------------------------------------------
