package replica

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"

	"github.com/ferrysync/ferry/internal/memlimit"

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
// returned, or nil when there are fewer than premadeMin such records or
// the batch is mostly of records the store holds (findNew; the loop then
// makes them one by one). Every document made is also in the
// returned slice for the caller to release. Errors: the store's, ctx's.
//
// A process with a memory limit in force (replica.Options.MemoryLimit,
// GOMEMLIMIT) makes them one by one: parallel loads make automerge-go's C
// allocations on several threads, and glibc's per-thread arenas keep what
// they freed (measured, a receiver of 10,000 records: 126-143 MiB peak RSS
// with the parallel loads against 107-109 with MALLOC_ARENA_MAX=1; 222
// against ~118-156 at 100,000).
func (r *Replica) premakeNew(ctx context.Context, recs []recordChanges) (map[int]*premade, error) {
	if memlimit.InForce() {
		return nil, nil
	}
	idx, _, err := r.findNew(ctx, recs)
	if err != nil || len(idx) < premadeMin {
		return nil, err
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

// findNew returns the indexes of the records of recs premakeNew makes,
// and how many metas it read to find them. It gives up (nil) once the
// records the store holds outnumber the new ones by premadeMin: a delta
// sync's batch is of records the receiver holds, for which the pass would
// only add a Meta read each to apply's own Load (measured by
// BenchmarkPremakePrepass: ~11% of applying 100 such records).
func (r *Replica) findNew(ctx context.Context, recs []recordChanges) (idx []int, reads int, err error) {
	if len(recs) < premadeMin {
		return nil, 0, nil
	}
	seen := make(map[string]int, len(recs))
	for _, rc := range recs {
		seen[recordKey(rc.Collection, rc.ID)]++
	}
	held := 0
	for i, rc := range recs {
		if rc.doc != nil || rc.Partial || rc.Off > 0 || len(rc.Changes) == 0 {
			continue
		}
		key := recordKey(rc.Collection, rc.ID)
		if seen[key] != 1 {
			continue
		}
		if r.cache.get(key) != nil {
			held++
			continue
		}
		if !validRecord(rc.Collection, rc.ID) {
			continue // the loop reports it
		}
		if _, err := crdt.HeadsFromBytes(rc.Heads); err != nil {
			continue // the loop reports it
		}
		if held > len(idx)+premadeMin {
			return nil, reads, nil
		}
		reads++
		_, err := r.store.Meta(ctx, rc.Collection, rc.ID)
		if err == nil {
			held++
			continue
		}
		if !errors.Is(err, storage.ErrNotFound) {
			return nil, reads, fmt.Errorf("replica: load %s/%s: %w", rc.Collection, rc.ID, err)
		}
		idx = append(idx, i)
	}
	return idx, reads, nil
}
