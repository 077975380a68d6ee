package replica

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ferrysync/ferry/crdt"
	"pgregory.net/rapid"
)

// TestListPagesProperty: paging with any Limit (the bounded heap keeps
// only a page) gives exactly the records of one List without a Limit, in
// the same order, for both orders, with and without deleted records,
// including equal update times (ties broken by id); Scan visits the same
// set.
func TestListPagesProperty(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		e := newEnv(t)
		r := e.replica("a")
		ctx := context.Background()
		n := rapid.IntRange(0, 30).Draw(rt, "n")
		for i := range n {
			id := rapid.StringMatching(`[a-z0-9][a-z0-9-]{0,6}`).Draw(rt, fmt.Sprint("id", i))
			mustPut(t, r, "items", id, map[string]any{"i": int64(i)})
			if rapid.Bool().Draw(rt, fmt.Sprint("tick", i)) {
				e.clock.Advance(time.Millisecond)
			}
			if rapid.IntRange(0, 4).Draw(rt, fmt.Sprint("del", i)) == 0 {
				if err := r.Delete(ctx, "items", id); err != nil && !errors.Is(err, ErrNotFound) {
					t.Fatal(err)
				}
			}
		}
		opts := ListOptions{
			Order:   Order(rapid.IntRange(0, 1).Draw(rt, "order")),
			Deleted: rapid.Bool().Draw(rt, "deleted"),
		}
		full, err := r.List(ctx, "items", opts)
		if err != nil {
			t.Fatal(err)
		}
		if full.Next != "" {
			t.Fatalf("List without a Limit gave a cursor")
		}
		opts.Limit = rapid.IntRange(1, 7).Draw(rt, "limit")
		var paged []RecordInfo
		for pages := 0; ; pages++ {
			if pages > n+1 {
				t.Fatalf("paging does not end")
			}
			p, err := r.List(ctx, "items", opts)
			if err != nil {
				t.Fatal(err)
			}
			if len(p.Items) > opts.Limit {
				t.Fatalf("page of %d items, limit %d", len(p.Items), opts.Limit)
			}
			paged = append(paged, p.Items...)
			if p.Next == "" {
				break
			}
			opts.After = p.Next
		}
		ids := func(its []RecordInfo) []string {
			var out []string
			for _, it := range its {
				out = append(out, it.ID)
			}
			return out
		}
		if !slices.Equal(ids(paged), ids(full.Items)) {
			t.Fatalf("pages %v, whole list %v", ids(paged), ids(full.Items))
		}
		var scanned []string
		if err := r.Scan(ctx, "items", opts.Deleted, func(it RecordInfo) error {
			scanned = append(scanned, it.ID)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		slices.Sort(scanned)
		want := ids(full.Items)
		slices.Sort(want)
		if !slices.Equal(scanned, want) {
			t.Fatalf("scan %v, list %v", scanned, want)
		}
	})
}

// TestScanStopsAndChecksNames: an error from fn ends the scan and comes
// back as is; a name outside the rule is ErrInvalid; a closed replica is
// ErrClosed.
func TestScanStopsAndChecksNames(t *testing.T) {
	e := newEnv(t)
	r := e.replica("a")
	ctx := context.Background()
	for i := range 5 {
		mustPut(t, r, "items", fmt.Sprint("r", i), map[string]any{"i": int64(i)})
	}
	stop := errors.New("stop")
	calls := 0
	err := r.Scan(ctx, "items", false, func(RecordInfo) error { calls++; return stop })
	if !errors.Is(err, stop) || calls != 1 {
		t.Fatalf("scan: %v after %d calls, want stop after 1", err, calls)
	}
	for _, bad := range []string{"", "a\x00b", strings.Repeat("x", 10000)} {
		_, lerr := r.List(ctx, bad, ListOptions{})
		serr := r.Scan(ctx, bad, false, func(RecordInfo) error { return nil })
		if !errors.Is(serr, ErrInvalid) || !errors.Is(lerr, ErrInvalid) {
			t.Fatalf("collection %q: scan %v, list %v; want ErrInvalid", bad, serr, lerr)
		}
	}
	r.Close()
	if err := r.Scan(ctx, "items", false, func(RecordInfo) error { return nil }); !errors.Is(err, ErrClosed) {
		t.Fatalf("closed: %v", err)
	}
}

// TestDocCacheBoundedByBytes: the cache keeps the sum of its documents'
// footprints under maxBytes (evicting the least recently used), never
// keeps a document over a quarter of it, and counts what it evicts,
// drops or replaces as garbage for the collection pacer.
func TestDocCacheBoundedByBytes(t *testing.T) {
	actor := crdt.Actor{ReplicaID: "cache-test"}
	doc := func(fields int) *crdt.Doc {
		d, err := crdt.New(actor)
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]any{}
		for i := range fields {
			m[fmt.Sprint("f", i)] = int64(i)
		}
		if err := d.Put(m); err != nil {
			t.Fatal(err)
		}
		return d
	}
	small := doc(2)
	per := small.Footprint()
	c := newDocCache(1000, 8*per)
	noted := crdt.ReadMemStats().Noted
	for i := range 20 {
		c.put(fmt.Sprint("k", i), doc(2))
		if c.size() > 8*per {
			t.Fatalf("after %d puts: %d bytes cached, bound %d", i+1, c.size(), 8*per)
		}
	}
	if c.len() != 8 || c.get("k19") == nil || c.get("k11") != nil {
		t.Fatalf("cache holds %d docs (k19 %v, k11 %v), want the 8 most recent", c.len(), c.get("k19") != nil, c.get("k11") != nil)
	}
	if got := crdt.ReadMemStats().Noted - noted; got < 12*per {
		t.Fatalf("12 evictions noted %d bytes of garbage, want >= %d", got, 12*per)
	}
	big := doc(200)
	if big.Footprint() <= 2*per {
		t.Fatalf("footprint does not grow with the fields written: %d vs %d", big.Footprint(), per)
	}
	c.put("big", big)
	if c.get("big") != nil {
		t.Fatalf("a document of %d bytes was cached under a bound of %d", big.Footprint(), 8*per)
	}
	c.drop("k19")
	c.put("k18", doc(2)) // replaces
	if c.len() != 7 {
		t.Fatalf("after a drop and a replace: %d docs, want 7", c.len())
	}
	c.clear()
	if c.len() != 0 || c.size() != 0 {
		t.Fatalf("after clear: %d docs, %d bytes", c.len(), c.size())
	}
}
