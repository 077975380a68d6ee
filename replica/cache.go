package replica

import (
	"container/list"
	"sync"

	"github.com/ferrysync/ferry/crdt"
)

// docCache keeps the most recently used documents loaded, so repeated
// writes and syncs of a hot record do not reload it, while memory stays
// bounded whatever the number of records in the store: by count (max)
// and by the documents' estimated C memory (maxBytes, crdt.Doc.Footprint
// at the time of put). A document evicted, dropped or replaced is
// Released, so its C memory counts toward the next collection
// (crdt/cmem.go); one larger than a quarter of maxBytes is never kept.
// Its mutex guards only the map and list: no I/O happens under it.
type docCache struct {
	mu       sync.Mutex
	max      int
	maxBytes int64
	bytes    int64      // sum of the entries' sizes
	order    *list.List // front = most recent; values are *cacheEntry
	items    map[string]*list.Element
}

type cacheEntry struct {
	key  string
	doc  *crdt.Doc
	size int64
}

func newDocCache(max int, maxBytes int64) *docCache {
	return &docCache{max: max, maxBytes: maxBytes, order: list.New(), items: make(map[string]*list.Element)}
}

func (c *docCache) get(key string) *crdt.Doc {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.items[key]; ok {
		c.order.MoveToFront(e)
		return e.Value.(*cacheEntry).doc
	}
	return nil
}

func (c *docCache) put(key string, d *crdt.Doc) {
	size := d.Footprint()
	var gone []*crdt.Doc
	defer func() {
		// Outside the lock: Release may start a collection.
		for _, g := range gone {
			g.Release()
		}
	}()
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.items[key]; ok {
		ce := e.Value.(*cacheEntry)
		if ce.doc != d {
			gone = append(gone, ce.doc)
		}
		c.order.Remove(e)
		delete(c.items, key)
		c.bytes -= ce.size
	}
	if size > c.maxBytes/4 {
		gone = append(gone, d)
		return
	}
	c.items[key] = c.order.PushFront(&cacheEntry{key: key, doc: d, size: size})
	c.bytes += size
	for c.order.Len() > c.max || c.bytes > c.maxBytes {
		last := c.order.Back()
		ce := last.Value.(*cacheEntry)
		c.order.Remove(last)
		delete(c.items, ce.key)
		c.bytes -= ce.size
		gone = append(gone, ce.doc)
	}
}

func (c *docCache) drop(key string) {
	c.mu.Lock()
	e, ok := c.items[key]
	if ok {
		ce := e.Value.(*cacheEntry)
		c.order.Remove(e)
		delete(c.items, key)
		c.bytes -= ce.size
	}
	c.mu.Unlock()
	if ok {
		e.Value.(*cacheEntry).doc.Release()
	}
}

func (c *docCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.order.Len()
}

// size is the cached documents' estimated C memory, in bytes.
func (c *docCache) size() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.bytes
}

func (c *docCache) clear() {
	c.mu.Lock()
	var gone []*crdt.Doc
	for e := c.order.Front(); e != nil; e = e.Next() {
		gone = append(gone, e.Value.(*cacheEntry).doc)
	}
	c.order.Init()
	c.items = make(map[string]*list.Element)
	c.bytes = 0
	c.mu.Unlock()
	for _, d := range gone {
		d.Release()
	}
}
