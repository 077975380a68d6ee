package replica

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"

	"github.com/ferrysync/ferry/crdt"
	"github.com/ferrysync/ferry/storage"
)

// premadeMin is the fewest records new to the store for which apply makes
// their documents in parallel (premakeNew): fewer are not worth the
// goroutines.
var premadeMin = 8 // a variable for tests

// premade is the document of a record new to the store, made from the
// bytes that arrived (crdt.MergeNew) before apply's loop reaches it.
type premade struct {
	d   *crdt.Doc
	mr  *crdt.MergeResult
	err error
}

// premakeNew makes, in parallel on up to GOMAXPROCS goroutines, the
// documents of the records in recs that are new to the store: a record
// received whole (not in parts, not an import), whose key appears once in
// recs, that neither the cache nor the store holds. The caller holds the
// records' locks, so none of them can come into being meanwhile. Making a
// document is the strict load of a peer's bytes (automerge-go's Load:
// the receiver's largest cost per new record at a first meeting); each
// is independent C work. It returns, by index into recs, what MergeNew
// returned, or nil when there are fewer than premadeMin such records (the
// loop then makes them one by one). Every document made is also in the
// returned slice for the caller to release. Errors: the store's, ctx's.
func (r *Replica) premakeNew(ctx context.Context, recs []recordChanges) (map[int]*premade, error) {
	seen := make(map[string]int, len(recs))
	for _, rc := range recs {
		seen[recordKey(rc.Collection, rc.ID)]++
	}
	var idx []int
	for i, rc := range recs {
		if rc.doc != nil || rc.Partial || rc.Off > 0 || len(rc.Changes) == 0 {
			continue
		}
		key := recordKey(rc.Collection, rc.ID)
		if seen[key] != 1 || r.cache.get(key) != nil {
			continue
		}
		if !validRecord(rc.Collection, rc.ID) {
			continue // the loop reports it
		}
		if _, err := crdt.HeadsFromBytes(rc.Heads); err != nil {
			continue // the loop reports it
		}
		_, err := r.store.Meta(ctx, rc.Collection, rc.ID)
		if err == nil {
			continue
		}
		if !errors.Is(err, storage.ErrNotFound) {
			return nil, fmt.Errorf("replica: load %s/%s: %w", rc.Collection, rc.ID, err)
		}
		idx = append(idx, i)
	}
	if len(idx) < premadeMin {
		return nil, nil
	}
	out := make(map[int]*premade, len(idx))
	made := make([]premade, len(idx))
	for j, i := range idx {
		out[i] = &made[j]
	}
	workers := min(runtime.GOMAXPROCS(0), len(idx))
	var next int
	var mu sync.Mutex
	var wg sync.WaitGroup
	actor := r.actor()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				j := next
				next++
				mu.Unlock()
				if j >= len(idx) || ctx.Err() != nil {
					return
				}
				rc := &recs[idx[j]]
				heads, _ := crdt.HeadsFromBytes(rc.Heads) // checked above
				made[j].d, made[j].mr, made[j].err = crdt.MergeNew(rc.Changes, heads, actor)
			}
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		for _, p := range made {
			if p.d != nil {
				p.d.Release()
			}
		}
		return nil, err
	}
	return out, nil
}
