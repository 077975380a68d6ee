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
// their file, and only Badger's RunValueLogGC takes them back: it picks
// the file with the most garbage according to Badger's discard statistics
// and, when at least vlogGCDiscardRatio of the file is garbage, writes the
// file's live entries again (same key, same version) and deletes the file.
// The active (newest) file is never picked.
//
// Two facts of Badger v4.9.6 shape the rounds:
//   - the discard statistics are gathered by compactions: a superseded or
//     deleted value counts as garbage only once a compaction has merged
//     its old version with the newer one (or the tombstone) and dropped
//     it. Without a compaction of the whole tree, most garbage of a
//     store rewritten by ferry (blinded, uniform keys; a few flushes per
//     level-0 compaction) was never counted (TestValueLogGCReclaims: 20
//     MiB left instead of 1);
//   - the rewrite keeps every entry whose exact version the tree still
//     holds, without looking for a newer version or tombstone, and
//     writes it back on top of the tree: a stale version still in the
//     tree comes back to life once a compaction drops the tombstone and
//     the original below it (TestValueLogGCResurrectsNothing).
//
// So a round with work to do (this process's writes have deleted at least
// 2 x ValueLogFileSize of value-log values since the last finished round,
// gcGarbage; or a key rotation has finished) holds the store exclusively
// (operations in flight finish, new ones wait), closes and reopens Badger
// (the close flushes the memtables), compacts the whole tree into its last
// level (Flatten: no stale version or tombstone is left, and the discard
// statistics count all garbage), and only then rewrites up to
// vlogGCMaxRewrites files. Every Sizes.ValueLogGCInterval a goroutine owned
// by the store runs a round; it skips on a read-only or in-memory store,
// during a key rotation (the rotation's deletions are collected by the
// round after it), and without free space for the compaction and a
// rewrite. Close waits for a round in progress, which stops before its
// next rewrite, and for the goroutine, before Badger closes.

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
	compacted bool  // the round compacted the tree (Flatten)
	finished  bool  // no file was left to rewrite (or the tree is only level 0): wait for more garbage
	skipped   error // why the round did nothing, or stopped (space, read-only, rotating, closing)
	err       error // an error of Badger's other than ErrNoRewrite/ErrRejected
}

// errGCSkipped marks a round (or the rest of one) left out on purpose.
var errGCSkipped = errors.New("storage: value-log GC skipped")

// runValueLogGC runs one round of at most maxRewrites rewrites (tests call
// it directly; gcLoop calls it every interval). A round with work to do
// holds the store exclusively (exclusive): Close waits for it, and stops
// it between rewrites.
func (s *Store) runValueLogGC(maxRewrites int) (r vlogGCRound) {
	if s.inMem {
		r.skipped = fmt.Errorf("in-memory store: %w", errGCSkipped)
		return r
	}
	switch {
	case s.isClosed():
		r.skipped = fmt.Errorf("%w: %w", errGCSkipped, ErrClosed)
		return r
	case s.readOnly.Load():
		r.skipped = fmt.Errorf("store read-only: %w", errGCSkipped)
		return r
	case s.state.Load().next != nil:
		r.skipped = fmt.Errorf("key rotation in progress: %w", errGCSkipped)
		return r
	}
	vlog, err := sealedVlogBytes(s.dir)
	if err != nil {
		r.err = fmt.Errorf("value-log GC: %w", err)
		return r
	}
	var lsm int64
	for _, l := range s.db.Levels() {
		lsm += l.Size
	}
	garbage := s.gcGarbage.Load()
	force := s.gcForce.Load()
	if vlog == 0 || (!force && garbage < 2*s.vlogFileSize) {
		return r // not worth a compaction of the tree yet
	}
	// The compaction writes the tree anew before it deletes the old tables.
	if err := spaceFor(s.dir, s.gcReserve()+lsm, "value-log GC"); err != nil {
		r.skipped = fmt.Errorf("%w: %w", errGCSkipped, err)
		return r
	}
	ran, ok := s.exclusive(func() bool { return s.gcExclusive(&r, maxRewrites) })
	switch {
	case !ok:
		r.err = fmt.Errorf("value-log GC: reopen database failed: %w", ErrClosed)
	case !ran:
		r.skipped = fmt.Errorf("operations in flight: %w", errGCSkipped)
	case r.finished:
		// The next round waits for as much garbage again; one cut short
		// by maxRewrites or space goes on next time.
		s.gcGarbage.Add(-garbage)
		if force {
			s.gcForce.CompareAndSwap(true, false)
		}
	}
	return r
}

// gcExclusive is a round's work, run with no other operation in flight:
//
//  1. close Badger and open it again: the close flushes the memtables to
//     level-0 tables;
//  2. compact the whole tree into its last level (Flatten): every version
//     a newer one supersedes, and every tombstone with the versions it
//     deletes, is dropped, and the discard statistics count their values;
//  3. only if the tree is then one level below level 0 (Flatten leaves a
//     tree that is only level 0 as it is), rewrite value-log files.
//
// Step 3 needs 1 and 2: Badger's rewrite keeps every entry whose exact
// version the tree still holds, without looking for a newer version or a
// tombstone, and writes it on top of the tree; a compaction that later
// drops the tombstone with the old version at the last level would leave
// the copy above it live, and a deleted key would come back
// (TestValueLogGCResurrectsNothing). With no stale version left in the
// tree, a rewrite copies only live values, and a later delete is written
// above the copy. It reports false if Badger could not be reopened at all
// (the store is then closed).
func (s *Store) gcExclusive(r *vlogGCRound, maxRewrites int) bool {
	s.readOnly.Store(true) // reopenBadger sets it back once read-write
	if !s.reopenBadger() {
		return false
	}
	if s.readOnly.Load() {
		r.err = fmt.Errorf("value-log GC: reopened read-only: %w", ErrNoSpace)
		return true
	}
	if err := s.db.Flatten(1); err != nil {
		r.err = mapBadgerErr("value-log GC compaction", err)
		return true
	}
	r.compacted = true
	s.gcCompactions.Add(1)
	levels, l0 := 0, false
	for i, l := range s.db.Levels() {
		if l.NumTables > 0 {
			levels++
			l0 = l0 || i == 0
		}
	}
	if levels != 1 || l0 {
		r.skipped = fmt.Errorf("tree not compacted below level 0 yet: %w", errGCSkipped)
		r.finished = true
		return true
	}
	for r.rewrites < maxRewrites {
		if s.isClosed() {
			return true
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
		case errors.Is(err, badger.ErrNoRewrite):
			r.finished = true
			return true
		case errors.Is(err, badger.ErrRejected):
			return true
		default:
			r.err = mapBadgerErr("value-log GC", err)
			return true
		}
	}
	return true
}

// isClosed reports whether Close has begun.
func (s *Store) isClosed() bool {
	select {
	case <-s.closing:
		return true
	default:
		return false
	}
}

// exclusive runs fn while no other operation is in flight: new operations
// wait (in begin) and those in flight get drainWait to finish, else fn does
// not run (ran false). If fn reports false (Badger could not be reopened),
// the store is closed (ok false). Close waits for it.
func (s *Store) exclusive(fn func() bool) (ran, ok bool) {
	s.lifeMu.Lock()
	if s.closed || s.reopen != nil {
		s.lifeMu.Unlock()
		return false, true
	}
	done := make(chan struct{})
	s.reopen = done
	var idle chan struct{}
	if s.active > 0 {
		idle = make(chan struct{})
		s.idle = idle
	}
	s.lifeMu.Unlock()

	ok, ran = true, true
	if idle != nil {
		t := time.NewTimer(drainWait)
		select {
		case <-idle:
		case <-t.C:
			ran = false
		}
		t.Stop()
	}
	if ran {
		ok = s.recoverGC(fn)
	}

	s.endExclusive(ok, done)
	return ran, ok
}

// recoverGC runs fn, turning a panic (Badger panics on some damaged files;
// the reads that meet them report it) into giving up the round: the store
// stays open if Badger is.
func (s *Store) recoverGC(fn func() bool) (ok bool) {
	defer func() {
		if p := recover(); p != nil {
			ok = !s.db.IsClosed()
		}
	}()
	return fn()
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

// stopGC waits for gcLoop to return. The caller (Close) has closed
// s.closing and waited for a round's exclusive part (s.reopen): a round
// that had not reached it finds the store closed and returns, so Badger's
// Close never races one.
func (s *Store) stopGC() { s.gcDone.Wait() }

// gcStats are the GC's counters, for tests and diagnostics.
type gcStats struct {
	gcRewrites    atomic.Uint64 // value-log files rewritten since open
	gcCompactions atomic.Uint64 // rounds that compacted the tree (Flatten) since open
	// gcGarbage counts the bytes of value-log values this process's
	// writes deleted (record chunks of at least ValueThreshold replaced
	// by a snapshot) since the last finished round.
	gcGarbage atomic.Int64
	gcForce   atomic.Bool                       // a key rotation finished: the next round runs whatever the garbage
	gcLast    atomic.Pointer[vlogGCRound]       // the ticker's last round
	gcHook    atomic.Pointer[func(vlogGCRound)] // tests: called after each ticker round
	gcStep    atomic.Pointer[func()]            // tests: called before each RunValueLogGC
}
