package replica

import (
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
	var all []RecordInfo
	err := r.store.List(ctx, collection, func(m storage.RecordMeta) error {
		if m.Deleted && !opts.Deleted {
			return nil
		}
		all = append(all, RecordInfo{ID: m.ID, Created: m.Created, Updated: m.Updated, Deleted: m.Deleted})
		return nil
	})
	if err != nil {
		return Page{}, fmt.Errorf("replica: list %s: %w", collection, err)
	}
	if nameErr != nil && len(all) == 0 {
		// A collection name outside the rule lists only what a store
		// written before the rule holds under it.
		return Page{}, nameErr
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
	sort.Slice(all, func(i, j int) bool { return less(all[i], all[j]) })
	start := 0
	if opts.After != "" {
		after, err := decodeCursor(opts.After)
		if err != nil {
			return Page{}, err
		}
		start = sort.Search(len(all), func(i int) bool { return less(after, all[i]) })
	}
	items := all[start:]
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
