package crdt

import (
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ferrysync/ferry/internal/memlimit"

	"github.com/automerge/automerge-go"
)

// automerge-go keeps every document, and every result a call returns
// (saved bytes, heads, values, changes), in C memory that only a Go
// finalizer frees. Finalizers run after a Go garbage collection, and the
// Go collector paces itself by the Go heap alone: it does not see C
// memory. A process that loads and drops many documents, or reads many
// values, allocates C memory far faster than Go memory, and the garbage
// waits, unfreed, until the small Go heap happens to double. Measured
// (docs/crdt.md, "Memory"; record of 7 fields, ~750 bytes saved): loaded
// it holds ~14 KB of C memory; writing its 7 fields allocates ~41 KB
// (live and garbage), ToMap ~18 KB, Load ~16 KB, SaveIncremental ~4.3 KB,
// Save ~3.7 KB, Heads ~0.1 KB.
//
// This file keeps an estimate of that garbage (the bytes of C memory
// that are unreachable but not yet freed) and runs a Go collection whenever it passes a threshold, so the
// finalizers free it. The estimates are coarse (calibrated on records of
// a few hundred bytes); what matters is that the collections follow the
// C allocations at all.

// DefaultCollectEvery is the estimated C garbage, in bytes, after which
// a collection runs where a Go memory limit is in force (GOMEMLIMIT,
// runtime/debug.SetMemoryLimit, replica.Options.MemoryLimit: the
// application asked for a small footprint).
const DefaultCollectEvery = 4 << 20

// unlimitedCollectEvery is the threshold where no memory limit is in
// force. Each collection blocks the goroutine that crossed the threshold
// for about a millisecond per 10 MB of live Go heap: on the initial sync
// of 100,000 records (two stores in one process, no limit), the receiving
// side spent 8-13 s of a 26-35 s session in 659 collections at 4 MiB, and
// the session took 23.2 and 24.8 s at 16 MiB against 25.9-31.1 s
// (docs/benchmarks.md, ninth session). Larger thresholds gained no more
// and gave short syncs right after bulk work a tail (the finalizers of a
// large collection run beside them).
const unlimitedCollectEvery = 16 << 20

var cmem struct {
	pending     atomic.Int64 // estimated C bytes unreachable, not yet collected
	every       atomic.Int64 // threshold set by SetCollectEvery; 0: the default
	limited     atomic.Bool  // a memory limit was in force at the last check
	collections atomic.Int64 // collections started by the pacer
	running     atomic.Bool  // a collection is under way
	released    atomic.Int64 // total estimated bytes noted, for MemStats
}

// SetCollectEvery sets the estimated C garbage, in bytes, after which
// the package runs a Go collection so automerge-go's finalizers free it
// (process-wide: C memory is the process's), with or without a memory
// limit. Zero or less restores the default: DefaultCollectEvery (4 MiB)
// where a Go memory limit is in force, 16 MiB where none is. Smaller
// means a lower peak and more collections (each costs about a
// millisecond per 10 MB of live Go heap).
func SetCollectEvery(bytes int64) {
	if bytes <= 0 {
		bytes = 0
	}
	cmem.every.Store(bytes)
}

// MemStats are the pacer's counters.
type MemStats struct {
	// Pending is the estimated C garbage not yet collected, in bytes.
	Pending int64
	// Noted is the total estimated C garbage noted since the process
	// started, in bytes.
	Noted int64
	// Collections is how many collections the pacer started.
	Collections int64
	// Every is the threshold in force, in bytes (SetCollectEvery's, or
	// the default as of the last check of the memory limit).
	Every int64
}

// ReadMemStats returns the pacer's counters.
func ReadMemStats() MemStats {
	return MemStats{Pending: cmem.pending.Load(), Noted: cmem.released.Load(), Collections: cmem.collections.Load(), Every: threshold()}
}

// threshold is the collection threshold in force.
func threshold() int64 {
	if e := cmem.every.Load(); e > 0 {
		return e
	}
	if cmem.limited.Load() {
		return DefaultCollectEvery
	}
	return unlimitedCollectEvery
}

// noteGarbage adds n estimated bytes of C garbage and starts a
// collection when the total passes the threshold. Whether a memory limit
// is in force is checked each time the total passes a multiple of
// DefaultCollectEvery, so a limit set after the process started is
// followed within 4 MiB of garbage.
func noteGarbage(n int64) {
	if n <= 0 {
		return
	}
	cmem.released.Add(n)
	p := cmem.pending.Add(n)
	if p >= DefaultCollectEvery && (p-n)/DefaultCollectEvery != p/DefaultCollectEvery {
		cmem.limited.Store(memlimit.InForce())
	}
	if p < threshold() || !cmem.running.CompareAndSwap(false, true) {
		return
	}
	// On the caller's goroutine: a collection elsewhere may wait for a
	// busy processor while garbage keeps coming. Callers that cross the
	// threshold while it runs go on.
	defer cmem.running.Store(false)
	cmem.pending.Store(0)
	cmem.collections.Add(1)
	runtime.GC()
}

// Collect runs a Go collection now, so the finalizers free the C memory
// of every document and result no longer referenced, and waits (at most
// wait) until the finalizers queued by it have run. Call it after
// dropping a large document, before building another.
func Collect(wait time.Duration) {
	cmem.pending.Store(0)
	done := make(chan struct{})
	var once sync.Once
	// A sentinel found unreachable by the same collection as the
	// documents: finalizers run one at a time, so when its own has run,
	// those queued before it have too (in practice: the runtime gives no
	// ordering promise, hence the bound).
	s := new([32]byte)
	runtime.SetFinalizer(s, func(*[32]byte) { once.Do(func() { close(done) }) })
	s = nil
	_ = s
	runtime.GC()
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	}
}

// Estimates of C memory, in bytes (see the measurements above).
const (
	docBase       = 4 << 10 // an empty document
	docPerByte    = 16      // per byte of saved or applied changes
	resultGarbage = 256     // any call's result (heads, a scalar value)
	valueGarbage  = 2 << 10 // per value read by ToMap
	perSavedByte  = 4       // Save/SaveIncremental garbage per byte returned
	opLive        = 1 << 10 // live memory per value or metadata key written
	opGarbage     = 3 << 10 // garbage per value or metadata key written
	changeGarbage = 1 << 10 // per change read (its hash, deps, message)
)

// Footprint is an estimate of the C memory the document holds, in bytes:
// a base plus 16 bytes per byte loaded or merged, plus 1 KiB per value
// or metadata key written locally. It underestimates documents whose saved form compresses very
// well (a long text inserted in one change: ~500 bytes of C memory per
// character in the 2023 core automerge-go ships).
func (d *Doc) Footprint() int64 { return d.size.Load() }

// Release tells the pacer that the caller will not use d again, so its
// C memory (Footprint) is garbage once unreachable. It frees nothing
// itself (automerge-go has no explicit free); using d afterwards is
// allowed but keeps the memory. Releasing twice counts once.
func (d *Doc) Release() {
	if d.released.CompareAndSwap(false, true) {
		noteGarbage(d.size.Load())
	}
}

// count is n's weight in values read, for the garbage estimate: one per
// node, plus one per KiB of string or bytes.
func (n *node) count() int64 {
	if n == nil {
		return 0
	}
	c := 1 + int64(len(n.s)+len(n.y))/valueGarbage
	for _, e := range n.m {
		c += e.count()
	}
	for _, e := range n.l {
		c += e.count()
	}
	return c
}

// DocChanges loads a whole saved document (Save output, optionally
// followed by more chunks) and returns its history as concatenated change
// chunks, dependencies first (the form MergeChanges takes), and its heads,
// without keeping the document. Right after a Load, automerge-go's own
// SaveIncremental returns exactly that, as one result: measured on a
// 20,000-change document, 2 MB of C memory where Changes and SaveChanges
// take 35 MB (one result per change). Bytes that do not load give
// ErrBadDocument.
func DocChanges(b []byte) ([]byte, Heads, error) {
	am, raw, heads, err := loadWithChanges(b)
	if err != nil {
		return nil, nil, err
	}
	if _, cerr := changeChunks(raw); cerr != nil {
		// Not the change chunks expected: the slow, sure way.
		err = guard(func() error {
			chs, err := am.Changes()
			if err == nil {
				raw = automerge.SaveChanges(chs)
			}
			return err
		})
		if err != nil {
			return nil, nil, fmt.Errorf("%w: changes: %w", ErrBadDocument, err)
		}
	}
	noteGarbage(docPerByte*int64(len(b)) + int64(len(raw)))
	return raw, heads, nil
}

// loadWithChanges loads a whole saved document and, right after the Load,
// takes its history as automerge-go's SaveIncremental returns it (one
// result: the change chunks, or compressed chunks for some documents) and
// its heads. Bytes that do not load give ErrBadDocument.
func loadWithChanges(b []byte) (am *automerge.Doc, raw []byte, heads []automerge.ChangeHash, err error) {
	err = guard(func() error {
		var err error
		if am, err = automerge.Load(b); err != nil {
			return err
		}
		raw = am.SaveIncremental()
		heads = am.Heads()
		return nil
	})
	if err != nil {
		return nil, nil, nil, fmt.Errorf("%w: load: %w", ErrBadDocument, err)
	}
	return am, raw, heads, nil
}
