package crdt

import (
	"errors"
	"fmt"
	"runtime"
	"sort"

	"github.com/automerge/automerge-go"
)

// MergeResult reports what a merge did.
type MergeResult struct {
	HeadsBefore, HeadsAfter []automerge.ChangeHash
	// Applied counts the changes that were new to this document.
	Applied int
	// Conflicts are the semantic conflicts between the local and remote
	// sides, sorted by path then ID. Resolve them (package policy) to write
	// the resolution changes.
	Conflicts []Conflict
	// Resolutions are resolution entries found in the remote changes:
	// provisional ones announce a conflict queued for a user, final ones
	// close it.
	Resolutions []RemoteResolution
	// Repaired counts writes re-applied because two replicas created the same
	// map concurrently and Automerge kept only one of the two objects.
	Repaired int
	// ClockSkew holds the first remote timestamp the clock refused
	// (ErrClockSkew); the merge itself is complete.
	ClockSkew error
	// Fallback is true when the exact three-way fork diff was used because
	// a change carried no ferry write-set.
	Fallback bool
}

// RemoteResolution is a resolution written by another replica.
type RemoteResolution struct {
	ConflictID  string
	Path        string
	Provisional bool
	By          string
	Change      automerge.ChangeHash
	// Conflict is the full conflict record, carried by provisional
	// resolutions so that every replica can queue it.
	Conflict *Conflict
	Winner   Candidate
	// Supersedes lists earlier conflict ids this resolution also decides.
	Supersedes []string
}

// MergeChanges merges concatenated change bytes (ChangesSince output, or
// any sequence of Automerge change chunks); see MergeRemote. Bytes that are
// not well-formed change chunks give ErrBadDocument; changes whose
// dependencies are missing give ErrMissingDeps. remoteHeads nil means the
// heads of the new changes.
func (d *Doc) MergeChanges(raw []byte, remoteHeads []automerge.ChangeHash) (*MergeResult, error) {
	hashes, err := changeChunks(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: changes: %w", ErrBadDocument, err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	before := d.am.Heads()
	known := map[automerge.ChangeHash]bool{}
	for _, h := range hashes {
		if d.hasChange(h) {
			known[h] = true
		}
	}
	if err := guard(func() error { return d.am.LoadIncremental(raw) }); err != nil {
		return nil, fmt.Errorf("%w: changes: %w", ErrBadDocument, err)
	}
	compressed := len(hashes) == 0 && len(raw) > 0
	var remoteOnly []*chMeta
	seen := map[automerge.ChangeHash]bool{}
	for _, h := range hashes {
		m := d.metaOf(h)
		if m == nil {
			return &MergeResult{HeadsBefore: before, HeadsAfter: d.am.Heads()}, fmt.Errorf("%w: change %s", ErrMissingDeps, h)
		}
		if !seen[h] && !known[h] {
			seen[h] = true
			remoteOnly = append(remoteOnly, m)
		}
	}
	if compressed {
		remoteOnly = nil // unknown: recomputed from the heads
	}
	return d.merge(before, remoteHeads, remoteOnly, compressed)
}

// MergeFrom merges everything other has that d lacks, with other's heads as
// the remote heads. Convenient for tests and local copies.
func (d *Doc) MergeFrom(other *Doc) (*MergeResult, error) {
	d.mu.Lock()
	mine := d.am.Heads()
	d.mu.Unlock()
	other.mu.Lock()
	var known []automerge.ChangeHash
	for _, h := range mine {
		if other.hasChange(h) {
			known = append(known, h)
		}
	}
	var chs []*automerge.Change
	var err error
	if len(known) == len(mine) || len(mine) == 0 {
		chs, err = other.changesSince(known)
	} else {
		chs, err = other.changesSince(nil)
	}
	heads := other.am.Heads()
	other.mu.Unlock()
	if err != nil {
		return nil, err
	}
	res, err := d.MergeRemote(chs, heads)
	// automerge-go's changes borrow from the document that produced them:
	// keep it alive until they are applied.
	runtime.KeepAlive(other)
	return res, err
}

// MergeRemote applies remote changes and reports the semantic conflicts
// between what this document had (the local side) and what the remote had
// (remoteHeads: the remote document's heads after the changes; nil derives
// them from the changes). The cost is proportional to the changes exchanged:
// the remote-only changes are Changes(since local heads before), the
// local-only ones Changes(since remoteHeads), and their write-sets are
// compared. Only changes without a ferry write-set (plain Automerge clients)
// fall back to the exact three-way fork diff, which is proportional to the
// history.
func (d *Doc) MergeRemote(changes []*automerge.Change, remoteHeads []automerge.ChangeHash) (*MergeResult, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	before := d.am.Heads()
	var fresh []*automerge.Change
	var metas []*chMeta
	seen := map[automerge.ChangeHash]bool{}
	for _, c := range changes {
		if c == nil {
			return nil, fmt.Errorf("%w: nil change", ErrBadDocument)
		}
		h := c.Hash()
		if seen[h] {
			continue
		}
		seen[h] = true
		if _, cached := d.cache.m[h]; cached || d.hasChange(h) {
			continue
		}
		fresh = append(fresh, c)
		metas = append(metas, metaFrom(c))
	}
	if remoteHeads == nil {
		remoteHeads = headsOfMetas(metas)
	}
	if len(fresh) > 0 {
		if err := applyChanges(d.am, fresh); err != nil {
			return nil, fmt.Errorf("%w: apply: %w", ErrBadDocument, err)
		}
	}
	if len(fresh) > 0 {
		// Apply queues changes whose dependencies are missing: only those
		// whose dependencies are all present were applied.
		isFresh := make(map[automerge.ChangeHash]bool, len(metas))
		for _, m := range metas {
			isFresh[m.hash] = true
		}
		present := map[automerge.ChangeHash]bool{}
		known := func(h automerge.ChangeHash) bool {
			if v, ok := present[h]; ok {
				return v
			}
			_, v := d.cache.m[h]
			v = v || d.hasChange(h)
			present[h] = v
			return v
		}
		applied := map[automerge.ChangeHash]bool{}
		for progress := true; progress; {
			progress = false
			for _, m := range metas {
				if applied[m.hash] {
					continue
				}
				ok := true
				for _, dep := range m.deps {
					if isFresh[dep] && !applied[dep] || !isFresh[dep] && !known(dep) {
						ok = false
						break
					}
				}
				if ok {
					applied[m.hash], progress = true, true
				}
			}
		}
		kept := metas[:0]
		for _, m := range metas {
			if applied[m.hash] {
				d.cache.put(m)
				kept = append(kept, m)
			}
		}
		metas = kept
	}
	return d.merge(before, remoteHeads, metas, false)
}

func (d *Doc) changeByHash(h automerge.ChangeHash) (*automerge.Change, error) {
	var c *automerge.Change
	err := guard(func() error {
		var err error
		c, err = d.am.Change(h)
		return err
	})
	return c, err
}

// merge runs detection after the remote changes were applied; remoteOnly
// are the changes that were new (recomputed from the heads when scan is
// set). d.mu is held.
func (d *Doc) merge(before, remoteHeads []automerge.ChangeHash, remoteOnly []*chMeta, scan bool) (*MergeResult, error) {
	res := &MergeResult{HeadsBefore: before, HeadsAfter: d.am.Heads()}
	if SameHeads(res.HeadsBefore, res.HeadsAfter) {
		for _, h := range remoteHeads {
			if !d.hasChange(h) {
				return res, fmt.Errorf("%w: remote head %s", ErrMissingDeps, h)
			}
		}
		return res, nil // nothing new
	}
	if scan {
		chs, err := d.changesSince(res.HeadsBefore)
		if err != nil {
			return res, fmt.Errorf("crdt: merge: %w", err)
		}
		for _, c := range chs {
			m := metaFrom(c)
			d.cache.put(m)
			remoteOnly = append(remoteOnly, m)
		}
	}
	if remoteHeads == nil {
		remoteHeads = headsOfMetas(remoteOnly)
	}
	for _, h := range remoteHeads {
		if _, ok := d.cache.m[h]; !ok && !d.hasChange(h) {
			return res, fmt.Errorf("%w: remote head %s", ErrMissingDeps, h)
		}
	}
	var localOnly []*chMeta
	if !SameHeads(res.HeadsAfter, remoteHeads) && len(res.HeadsBefore) > 0 {
		inRemote := make(map[automerge.ChangeHash]bool, len(remoteOnly))
		for _, c := range remoteOnly {
			inRemote[c.hash] = true
		}
		var common []automerge.ChangeHash
		for _, h := range remoteHeads {
			if !inRemote[h] {
				common = append(common, h)
			}
		}
		for _, c := range remoteOnly {
			for _, h := range c.deps {
				if !inRemote[h] {
					common = append(common, h)
				}
			}
		}
		var err error
		if localOnly, err = d.localOnly(res.HeadsBefore, common); err != nil {
			return res, fmt.Errorf("crdt: merge: %w", err)
		}
	}
	res.Applied = len(remoteOnly)
	m := &merger{d: d, res: res}
	m.remote = m.newSide(remoteOnly, remoteHeads)
	for _, c := range m.remote.changes {
		if c.ws == nil {
			continue
		}
		if err := d.clock.Observe(c.ws.M.HLC); err != nil && res.ClockSkew == nil {
			res.ClockSkew = err
		}
		m.collectResolutions(c)
	}
	if len(localOnly) == 0 || len(remoteOnly) == 0 {
		return res, nil
	}
	m.local = m.newSide(localOnly, res.HeadsBefore)
	if m.local.plain || m.remote.plain {
		res.Fallback = true
		if err := m.threeWay(); err != nil {
			return res, err
		}
	} else {
		m.local.computeFrontier()
		m.remote.computeFrontier()
	}
	if err := guard(m.detect); err != nil {
		return res, err
	}
	if err := guard(m.repairClashes); err != nil {
		return res, err
	}
	res.HeadsAfter = d.am.Heads()
	return res, nil
}

func headsOfMetas(chs []*chMeta) []automerge.ChangeHash {
	isDep := map[automerge.ChangeHash]bool{}
	for _, c := range chs {
		for _, h := range c.deps {
			isDep[h] = true
		}
	}
	out := []automerge.ChangeHash{}
	seen := map[automerge.ChangeHash]bool{}
	for _, c := range chs {
		h := c.hash
		if !isDep[h] && !seen[h] {
			seen[h] = true
			out = append(out, h)
		}
	}
	return out
}

// SameHeads reports whether two head lists hold the same hashes
// (Heads.Equal).
func SameHeads(a, b []automerge.ChangeHash) bool { return Heads(a).Equal(b) }

// ---- sides -----------------------------------------------------------------

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
