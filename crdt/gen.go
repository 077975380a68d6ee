package crdt

import (
	"container/heap"

	"github.com/automerge/automerge-go"
)

// chMeta is what merges need to know about a change, cached per Doc so
// that the merge path makes few cgo calls: its dependencies, generation
// (1 + the largest generation of the dependencies) and decoded write-set.
type chMeta struct {
	hash  automerge.ChangeHash
	deps  []automerge.ChangeHash
	gen   uint64 // 0: not known yet
	ws    *writeSet
	plain bool
	meta  WriteMeta // the write-set's meta, or the plain change's stand-in
}

// changeCache holds chMeta by hash. It is cleared when it grows past
// maxCached entries; everything in it can be recomputed.
type changeCache struct {
	m       map[automerge.ChangeHash]*chMeta
	scanned bool
	// whole, when not nil, are the document's heads at a moment m held
	// every change of its history (LoadNew): while the heads are still
	// these, m is the whole history (see historyMetas).
	whole []automerge.ChangeHash
}

const maxCached = 1 << 16

func newChangeCache() *changeCache { return &changeCache{m: map[automerge.ChangeHash]*chMeta{}} }

func (c *changeCache) put(m *chMeta) {
	if len(c.m) >= maxCached {
		c.m = map[automerge.ChangeHash]*chMeta{}
		c.scanned = false
		c.whole = nil
	}
	c.m[m.hash] = m
}

// metaFrom decodes a change's metadata (a few cgo calls).
func metaFrom(c *automerge.Change) *chMeta {
	m := &chMeta{hash: c.Hash(), deps: c.Dependencies()}
	ws, ok, err := decodeWriteSet(c.Message())
	if ok && err == nil {
		m.ws, m.meta, m.gen = ws, ws.M, ws.G
	} else {
		// No write-set, or a malformed one: a plain change.
		m.plain, m.meta = true, plainMeta(c)
	}
	return m
}

// metaOf returns the metadata of a change in the document, or nil if the
// document lacks it. d.mu is held.
func (d *Doc) metaOf(h automerge.ChangeHash) *chMeta {
	if m, ok := d.cache.m[h]; ok {
		return m
	}
	var c *automerge.Change
	_ = guard(func() error {
		var err error
		c, err = d.am.Change(h)
		return err
	})
	noteGarbage(changeGarbage)
	if c == nil {
		return nil
	}
	m := metaFrom(c)
	d.cache.put(m)
	return m
}

// genOf returns the generation of a change in the document (0 if absent).
func (d *Doc) genOf(h automerge.ChangeHash) uint64 {
	m := d.metaOf(h)
	if m == nil {
		return 0
	}
	if m.gen == 0 {
		d.scanGens()
		if m2, ok := d.cache.m[h]; ok {
			return m2.gen
		}
	}
	return m.gen
}

// scanGens numbers every change by walking the whole history once; only
// documents with changes that carry no generation (plain Automerge clients)
// ever need it.
func (d *Doc) scanGens() {
	if d.cache.scanned {
		return
	}
	var all []*automerge.Change
	if guard(func() error {
		var err error
		all, err = d.am.Changes()
		return err
	}) != nil {
		return
	}
	d.cache.scanned = true
	noteGarbage(changeGarbage * int64(len(all)))
	gens := make(map[automerge.ChangeHash]uint64, len(all))
	// Changes come in an order where dependencies precede dependents.
	for _, c := range all {
		h := c.Hash()
		m, ok := d.cache.m[h]
		if !ok {
			m = metaFrom(c)
		}
		var g uint64
		for _, dep := range m.deps {
			if dg := gens[dep]; dg > g {
				g = dg
			}
		}
		gens[h] = g + 1
		if m.gen == 0 {
			m.gen = g + 1
		}
		d.cache.put(m)
	}
}

// nextGen is the generation of a change committed on heads.
func (d *Doc) nextGen(heads []automerge.ChangeHash) uint64 {
	var g uint64
	for _, h := range heads {
		if hg := d.genOf(h); hg > g {
			g = hg
		}
	}
	return g + 1
}

// localOnly returns the changes reachable from local (the local heads
// before a merge) but not from common (hashes known to be in both
// histories: the remote heads and the dependencies of the remote-only
// changes). It walks both frontiers in decreasing generation order and
// stops as soon as no local-only change can remain, so its cost follows
// the divergence, not the history.
func (d *Doc) localOnly(local, common []automerge.ChangeHash) ([]*chMeta, error) {
	const (
		fromLocal  = 1
		fromCommon = 2
		processed  = 4
	)
	flags := map[automerge.ChangeHash]uint8{}
	q := &genHeap{}
	pending := 0 // queued nodes flagged local only
	mark := func(h automerge.ChangeHash, f uint8) {
		old, seen := flags[h]
		if old&processed != 0 {
			return
		}
		nf := old | f
		if seen && nf == old {
			return
		}
		flags[h] = nf
		if old == fromLocal {
			pending--
		}
		if nf == fromLocal {
			pending++
		}
		if !seen {
			heap.Push(q, genItem{h: h, g: d.genOf(h)})
		}
	}
	for _, h := range common {
		mark(h, fromCommon)
	}
	for _, h := range local {
		mark(h, fromLocal)
	}
	var out []*chMeta
	for pending > 0 && q.Len() > 0 {
		it := heap.Pop(q).(genItem)
		f := flags[it.h]
		if f&processed != 0 {
			continue
		}
		if f == fromLocal {
			pending--
		}
		flags[it.h] = f | processed
		m := d.metaOf(it.h)
		if m == nil {
			return nil, ErrMissingDeps
		}
		if f == fromLocal {
			out = append(out, m)
		}
		for _, dep := range m.deps {
			mark(dep, f&(fromLocal|fromCommon))
		}
	}
	return out, nil
}

type genItem struct {
	h automerge.ChangeHash
	g uint64
}

type genHeap []genItem

func (h genHeap) Len() int { return len(h) }
func (h genHeap) Less(i, j int) bool {
	if h[i].g != h[j].g {
		return h[i].g > h[j].g
	}
	return string(h[i].h[:]) > string(h[j].h[:])
}
func (h genHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *genHeap) Push(x any)   { *h = append(*h, x.(genItem)) }
func (h *genHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// historyMetas returns the metadata of every change of the document when
// the cache holds them all (the heads are those LoadNew left), without a
// call into automerge-go per change; ok is false otherwise. d.mu is held.
func (d *Doc) historyMetas() (out []*chMeta, ok bool) {
	if d.cache.whole == nil || !SameHeads(d.cache.whole, d.am.Heads()) {
		return nil, false
	}
	out = make([]*chMeta, 0, len(d.cache.m))
	for _, m := range d.cache.m {
		out = append(out, m)
	}
	return out, true
}
