package replica

import (
	"container/heap"
	"context"
	"encoding/base64"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/ferrysync/ferry/internal/names"
	"github.com/ferrysync/ferry/storage"
)

// Order is how List sorts records.
type Order int

const (
	// ByID sorts by record id, ascending.
	ByID Order = iota
	// ByUpdated sorts by last update, newest first; ties by id.
	ByUpdated
)

// ListOptions select and page a collection's records.
type ListOptions struct {
	Order Order
	// Limit caps the items returned (all when zero).
	Limit int
	// After is the Next cursor of the previous page.
	After string
	// Deleted includes deleted records.
	Deleted bool
}

// RecordInfo describes one record without loading its document.
type RecordInfo struct {
	ID      string    `json:"id"`
	Created time.Time `json:"created"`
	Updated time.Time `json:"updated"`
	Deleted bool      `json:"deleted,omitempty"`
}

// Page is one page of List.
type Page struct {
	Items []RecordInfo `json:"items"`
	// Next is the cursor for the following page; empty on the last.
	Next string `json:"next,omitempty"`
}

// List returns a collection's records in the requested order. It reads
// only the records' sealed metadata, never their documents. A collection
// name outside the naming rule is ErrInvalid unless a store written
// before the rule holds records under it.
func (r *Replica) List(ctx context.Context, collection string, opts ListOptions) (Page, error) {
	nameErr := checkCollection(collection)
	if nameErr != nil && !names.Fits(collection) {
		return Page{}, nameErr
	}
	if r.isClosed() {
		return Page{}, ErrClosed
	}
	less := func(a, b RecordInfo) bool { return a.ID < b.ID }
	if opts.Order == ByUpdated {
		less = func(a, b RecordInfo) bool {
			if !a.Updated.Equal(b.Updated) {
				return a.Updated.After(b.Updated)
			}
			return a.ID < b.ID
		}
	}
	var after *RecordInfo
	if opts.After != "" {
		a, err := decodeCursor(opts.After)
		if err != nil {
			return Page{}, err
		}
		after = &a
	}
	// With a Limit, only the first Limit+1 records after the cursor are
	// kept (a bounded max-heap), so a page costs memory for the page, not
	// the collection.
	top := &infoHeap{less: less}
	found := 0
	err := r.store.List(ctx, collection, func(m storage.RecordMeta) error {
		if m.Deleted && !opts.Deleted {
			return nil
		}
		found++
		it := RecordInfo{ID: m.ID, Created: m.Created, Updated: m.Updated, Deleted: m.Deleted}
		if after != nil && !less(*after, it) {
			return nil
		}
		switch {
		case opts.Limit <= 0:
			top.items = append(top.items, it)
		case top.Len() <= opts.Limit:
			heap.Push(top, it)
		case less(it, top.items[0]):
			top.items[0] = it
			heap.Fix(top, 0)
		}
		return nil
	})
	if err != nil {
		return Page{}, fmt.Errorf("replica: list %s: %w", collection, err)
	}
	if nameErr != nil && found == 0 {
		// A collection name outside the rule lists only what a store
		// written before the rule holds under it.
		return Page{}, nameErr
	}
	all := top.items
	sort.Slice(all, func(i, j int) bool { return less(all[i], all[j]) })
	items := all
	var next string
	if opts.Limit > 0 && len(items) > opts.Limit {
		items = items[:opts.Limit]
		next = encodeCursor(items[len(items)-1])
	}
	return Page{Items: items, Next: next}, nil
}

func encodeCursor(it RecordInfo) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(it.Updated.UnixNano(), 10) + ":" + it.ID))
}

func decodeCursor(s string) (RecordInfo, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return RecordInfo{}, fmt.Errorf("%w: bad cursor", ErrInvalid)
	}
	ns, id, ok := strings.Cut(string(b), ":")
	n, err := strconv.ParseInt(ns, 10, 64)
	if !ok || err != nil {
		return RecordInfo{}, fmt.Errorf("%w: bad cursor", ErrInvalid)
	}
	return RecordInfo{ID: id, Updated: time.Unix(0, n)}, nil
}

// infoHeap is a max-heap of records by less: its root is the last of the
// records kept.
type infoHeap struct {
	items []RecordInfo
	less  func(a, b RecordInfo) bool
}

func (h *infoHeap) Len() int           { return len(h.items) }
func (h *infoHeap) Less(i, j int) bool { return h.less(h.items[j], h.items[i]) }
func (h *infoHeap) Swap(i, j int)      { h.items[i], h.items[j] = h.items[j], h.items[i] }
func (h *infoHeap) Push(x any)         { h.items = append(h.items, x.(RecordInfo)) }
func (h *infoHeap) Pop() any {
	x := h.items[len(h.items)-1]
	h.items = h.items[:len(h.items)-1]
	return x
}

// Scan calls fn with every record of the collection (deleted ones too
// when deleted is true) in no particular order, reading only sealed
// metadata and holding none of it: its memory does not grow with the
// collection, unlike List, which sorts (and, without a Limit, returns)
// them all. fn may read and write records (Get, Put); an error from fn
// stops the scan and is returned as is. A record written during the scan
// may or may not be visited; one visited twice is possible only while a
// key rotation runs. Names are checked as by List.
func (r *Replica) Scan(ctx context.Context, collection string, deleted bool, fn func(RecordInfo) error) error {
	nameErr := checkCollection(collection)
	if nameErr != nil && !names.Fits(collection) {
		return nameErr
	}
	if r.isClosed() {
		return ErrClosed
	}
	var fnErr error
	found := 0
	err := r.store.List(ctx, collection, func(m storage.RecordMeta) error {
		if m.Deleted && !deleted {
			return nil
		}
		found++
		if err := fn(RecordInfo{ID: m.ID, Created: m.Created, Updated: m.Updated, Deleted: m.Deleted}); err != nil {
			fnErr = err
			return err
		}
		return nil
	})
	if fnErr != nil {
		return fnErr
	}
	if err != nil {
		return fmt.Errorf("replica: scan %s: %w", collection, err)
	}
	if nameErr != nil && found == 0 {
		return nameErr
	}
	return nil
}
