package replica

import (
	"container/list"
	"sync"

	"github.com/ferrysync/ferry/crdt"
)

// docCache keeps the most recently used documents loaded, so repeated
// writes and syncs of a hot record do not reload it, while memory stays
// bounded whatever the number of records in the store. Its mutex guards
// only the map and list: no I/O happens under it.
type docCache struct {
	mu    sync.Mutex
	max   int
	order *list.List // front = most recent; values are *cacheEntry
	items map[string]*list.Element
}

type cacheEntry struct {
	key string
	doc *crdt.Doc
}

func newDocCache(max int) *docCache {
	return &docCache{max: max, order: list.New(), items: make(map[string]*list.Element)}
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
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.items[key]; ok {
		e.Value.(*cacheEntry).doc = d
		c.order.MoveToFront(e)
		return
	}
	c.items[key] = c.order.PushFront(&cacheEntry{key: key, doc: d})
	for c.order.Len() > c.max {
		last := c.order.Back()
		c.order.Remove(last)
		delete(c.items, last.Value.(*cacheEntry).key)
	}
}

func (c *docCache) drop(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.items[key]; ok {
		c.order.Remove(e)
		delete(c.items, key)
	}
}

func (c *docCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.order.Len()
}

func (c *docCache) clear() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.order.Init()
	c.items = make(map[string]*list.Element)
}
