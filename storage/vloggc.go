package storage

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// Value-log garbage collection (docs/storage.md, "Value-log garbage
// collection").
//
// Values of at least Sizes.ValueThreshold bytes live in Badger's value log
// (*.vlog files of up to ValueLogFileSize); the LSM tree keeps their keys
// and pointers. Updating or deleting such a value leaves the old bytes in
// their file, and nothing but Badger's RunValueLogGC takes them back. It
// picks the file with the most garbage according to Badger's discard
// statistics and, when at least vlogGCDiscardRatio of the file is garbage,
// writes the file's live entries again (same key, same version: invisible
// to transactions) and deletes the file. The discard statistics are
// gathered by compactions: a superseded or deleted value counts as garbage
// only once a compaction has merged its old version with the newer one (or
// the tombstone) and dropped it. Garbage whose newer version still sits in
// a memtable or a level-0 table not yet compacted is not counted, so it is
// reclaimed after later writes push those tables through compaction (see
// the docs for the bound); the active (newest) file is never rewritten.
//
// Every Sizes.ValueLogGCInterval a goroutine owned by the store runs a
// round: up to vlogGCMaxRewrites calls of RunValueLogGC, stopping at the
// first that rewrites nothing, each preceded by a free-space check (a
// rewrite writes the live entries it moves before deleting the old file).
// It runs only on a writable on-disk store and never during a key rotation
// (moving old-epoch values the rotation is about to delete is wasted
// work; the rotation's deletions become garbage the rounds after it
// reclaim). Close stops it, and waits for a rewrite in progress, before
// Badger closes.

// vlogGCDiscardRatio is the share of a value-log file that must be garbage
// before a round rewrites it: Badger's recommendation, which bounds the
// value log's lifetime write amplification at 2 (1 + 1/2 + 1/4 + ...) and
// its size at about twice the live values plus the files not yet eligible.
const vlogGCDiscardRatio = 0.5

// vlogGCMaxRewrites bounds the value-log files one round rewrites (each
// moves at most half of ValueLogFileSize of live values): a round's work,
// and how long Close may wait, stay bounded however much garbage there is.
const vlogGCMaxRewrites = 8

// vlogGCRound is what one round did.
type vlogGCRound struct {
	rewrites  int   // value-log files rewritten (and deleted)
	compacted bool  // the round compacted the LSM tree to count garbage (compactForGC)
	skipped   error // why the round did nothing (space, read-only, rotating, closing); nil otherwise
	err       error // an error of Badger's other than ErrNoRewrite/ErrRejected
}

// errGCSkipped marks a round (or the rest of one) left out on purpose.
var errGCSkipped = errors.New("storage: value-log GC skipped")

// runValueLogGC runs one round of at most maxRewrites rewrites. It is an
// operation of the store (begin/end), so Close waits for it and Badger is
// not reopened under it; it stops between rewrites once Close has begun.
func (s *Store) runValueLogGC(maxRewrites int) (r vlogGCRound) {
	if s.inMem {
		r.skipped = fmt.Errorf("in-memory store: %w", errGCSkipped)
		return r
	}
	if err := s.begin(); err != nil {
		r.skipped = fmt.Errorf("%w: %w", errGCSkipped, err)
		return r
	}
	defer s.end()
	defer func() {
		// Badger panics on some damaged files: the store reports that on
		// the reads that meet it; the GC only stops this round.
		if p := recover(); p != nil {
			r.err = corruptf("value-log GC")
		}
	}()
	switch {
	case s.readOnly.Load():
		r.skipped = fmt.Errorf("store read-only: %w", errGCSkipped)
		return r
	case s.state.Load().next != nil:
		r.skipped = fmt.Errorf("key rotation in progress: %w", errGCSkipped)
		return r
	}
	if done := s.gcRewriteFiles(&r, maxRewrites); done || r.rewrites > 0 {
		return r
	}
	// Nothing was eligible: the discard statistics may lag behind the
	// garbage (compactForGC).
	if s.compactForGC(&r) {
		s.gcRewriteFiles(&r, maxRewrites)
	}
	return r
}

// gcRewriteFiles calls RunValueLogGC until it rewrites nothing or r holds
// maxRewrites rewrites, checking for Close and free space before each. It
// reports whether the round must stop (closing, no space, an error).
func (s *Store) gcRewriteFiles(r *vlogGCRound, maxRewrites int) (stop bool) {
	for r.rewrites < maxRewrites {
		select {
		case <-s.closing:
			if r.rewrites == 0 {
				r.skipped = fmt.Errorf("%w: %w", errGCSkipped, ErrClosed)
			}
			return true
		default:
		}
		if err := spaceFor(s.dir, s.gcReserve(), "value-log GC"); err != nil {
			r.skipped = fmt.Errorf("%w: %w", errGCSkipped, err)
			return true
		}
		if h := s.gcStep.Load(); h != nil {
			(*h)()
		}
		err := s.db.RunValueLogGC(vlogGCDiscardRatio)
		switch {
		case err == nil:
			r.rewrites++
			s.gcRewrites.Add(1)
		case errors.Is(err, badger.ErrNoRewrite), errors.Is(err, badger.ErrRejected):
			return false
		default:
			r.err = mapBadgerErr("value-log GC", err)
			return true
		}
	}
	return false
}

// compactForGC compacts the whole LSM tree into its last level (Badger's
// Flatten) when the value log has grown by at least the LSM tree's size
// (and 2 x ValueLogFileSize) since the last time, so that the discard
// statistics count the values superseded or deleted since: a compaction
// counts a value as garbage only when it merges the value's old version
// with the newer one, and versions in different levels meet only when the
// upper level is compacted, which with blinded, uniform keys can take
// tens of thousands of writes. The growth condition bounds the cost: the
// LSM tree (keys, value pointers, small values) is rewritten at most once
// per its own size of value-log growth. It needs the LSM tree's size free
// beyond gcReserve, else it waits for a later round. Flatten does nothing
// while every table is in level 0 (a young store: Badger compacts level 0
// once it holds NumLevelZeroTables, 5, tables) and does not see the
// memtables.
func (s *Store) compactForGC(r *vlogGCRound) bool {
	vlog, err := sealedVlogBytes(s.dir)
	if err != nil {
		return false
	}
	var lsm int64
	levels := 0
	for _, l := range s.db.Levels() {
		lsm += l.Size
		if l.NumTables > 0 {
			levels++
		}
	}
	base := s.gcBase.Load()
	if vlog < base {
		// Files were rewritten or deleted since: measure growth from here.
		s.gcBase.Store(vlog)
		return false
	}
	if vlog-base < max(lsm, 2*s.vlogFileSize) || levels < 2 {
		return false
	}
	if err := spaceFor(s.dir, s.gcReserve()+lsm, "value-log GC compaction"); err != nil {
		r.skipped = fmt.Errorf("%w: %w", errGCSkipped, err)
		return false
	}
	if err := s.db.Flatten(1); err != nil {
		r.err = mapBadgerErr("value-log GC compaction", err)
		return false
	}
	r.compacted = true
	s.gcCompactions.Add(1)
	defer func() {
		// The next compaction waits for the value log to grow again from
		// what this round leaves.
		if v, err := sealedVlogBytes(s.dir); err == nil {
			s.gcBase.Store(v)
		}
	}()
	return true
}

// sealedVlogBytes returns the bytes of the store's value-log files but the
// newest (the one Badger writes to, mapped and sparse at twice
// ValueLogFileSize; the others are truncated to their contents).
func sealedVlogBytes(dir string) (int64, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	var total, newest int64
	var newestName string
	for _, e := range ents {
		name := e.Name()
		if !strings.HasSuffix(name, vlogExt) {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			continue // deleted by a rewrite meanwhile
		}
		total += fi.Size()
		// Badger names value-log files by a zero-padded, growing number.
		if len(name) > len(newestName) || (len(name) == len(newestName) && name > newestName) {
			newestName, newest = name, fi.Size()
		}
	}
	return total - newest, nil
}

// gcReserve is the free space one rewrite needs: what a write transaction
// of ValueLogFileSize bytes needs (writeReserve: the reserve, the
// compaction bound measured now, and twice the bytes, for the value log
// and the write-ahead log), since a rewrite moves at most the live part of
// one file (less than half of it at vlogGCDiscardRatio) before it deletes
// the file.
func (s *Store) gcReserve() int64 { return s.writeReserve(s.vlogFileSize) }

// gcLoop runs a round every interval until the store starts closing.
func (s *Store) gcLoop(interval time.Duration) {
	defer s.gcDone.Done()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-s.closing:
			return
		case <-t.C:
			r := s.runValueLogGC(vlogGCMaxRewrites)
			s.gcLast.Store(&r)
			if h := s.gcHook.Load(); h != nil {
				(*h)(r)
			}
		}
	}
}

// startGC starts gcLoop for an on-disk store whose interval is positive.
// A store opened read-only for lack of space gets it too: its rounds skip
// until a write reopens Badger read-write.
func (s *Store) startGC(z Sizes) {
	if s.inMem || z.ValueLogGCInterval <= 0 {
		return
	}
	s.gcDone.Add(1)
	go s.gcLoop(z.ValueLogGCInterval)
}

// stopGC waits for gcLoop to return. The caller has closed s.closing (and
// waited for the operations in flight, a round among them).
func (s *Store) stopGC() { s.gcDone.Wait() }

// gcStats are the GC's counters, for tests and diagnostics.
type gcStats struct {
	gcRewrites    atomic.Uint64                     // value-log files rewritten since open
	gcCompactions atomic.Uint64                     // compactForGC runs since open
	gcBase        atomic.Int64                      // sealed value-log bytes after the last compactForGC (0 at open)
	gcLast        atomic.Pointer[vlogGCRound]       // the ticker's last round
	gcHook        atomic.Pointer[func(vlogGCRound)] // tests: called after each ticker round
	gcStep        atomic.Pointer[func()]            // tests: called before each RunValueLogGC
}
