package storage

import (
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"
	"os"
	"path/filepath"
	"strings"
)

// Disk space. Badger writes its write-ahead logs (*.mem), value log
// (*.vlog) and tables (*.sst) through memory maps of sparse files: on a full
// file system, the first touch of a page that has no block behind it raises
// SIGBUS, which kills the process (it is not an error Badger could return,
// and debug.SetPanicOnFault only covers the calling goroutine, not Badger's
// flush and compaction goroutines). So the store never lets Badger reach a
// full disk: it keeps Reserve bytes free, checked with statfs before every
// write transaction, before a read-write open and before Close (which
// flushes the memtable), and it opens a store read-only when less than that
// is free, so reads keep working on a full disk.

// Reserve returns the free space, in bytes, a store with options o needs
// before it opens read-write: what Close needs (closeReserve), plus
// 2 x BaseTableSize for a first compaction. With DefaultSizes it is
// 15 MiB. An open store asks for more before each write: see writeReserve.
func Reserve(o Options) int64 {
	return closeReserve(o) + 2*o.sizes().BaseTableSize
}

// closeReserve is the free space Close (or an open replaying a write-ahead
// log) needs to flush memtables: Badger flushes one at a time and deletes
// its log once its table is written, so one table of at most 1.25 x
// MemTableSize at a time, plus 1 MiB for the manifest, the discard-stats
// file and file headers; with DefaultSizes, 11 MiB. It is less than what a
// write needs, so a store that refused a write still closes.
func closeReserve(o Options) int64 {
	z := o.sizes()
	return z.MemTableSize + z.MemTableSize/4 + 1<<20
}

// writeReserve is the free space a write transaction of size bytes needs:
// Reserve, with the compaction part measured on the store's levels now
// (compactionNeed), plus twice the transaction (its entries go to the
// write-ahead log and, for large values, to the value log).
func (s *Store) writeReserve(size int64) int64 {
	need := compactionNeed(s.db.Levels())
	return s.reserve + max(need-2*s.baseTable, 0) + 2*size
}

// compactionNeed bounds the space Badger's compactions may take before they
// free their inputs, from the current level sizes. Keys are blinded (uniform
// over the key space), so a level-0 compaction rewrites level 0 and all of
// the level it merges into, and a table of level i overlaps the fraction
// tableSize/size(i) of level i+1 (plus a table at each edge). Two
// compactions run at once (NumCompactors 2): the two largest needs count.
func compactionNeed(lv []badger.LevelInfo) int64 {
	var a, b int64 // the two largest needs
	add := func(n int64) {
		switch {
		case n > a:
			a, b = n, a
		case n > b:
			b = n
		}
	}
	for i, l := range lv {
		if l.NumTables == 0 {
			continue
		}
		var next *badger.LevelInfo
		for j := i + 1; j < len(lv); j++ {
			if lv[j].NumTables > 0 || lv[j].IsBaseLevel {
				next = &lv[j]
				break
			}
		}
		t := max(l.TargetFileSize, l.Size/int64(l.NumTables))
		switch {
		case i == 0:
			n := l.Size
			if next != nil {
				n += next.Size
			}
			add(n)
		case next == nil:
			add(2 * t) // the last level rewrites a table to drop old versions
		default:
			add(t + next.Size*t/max(l.Size, t) + 2*next.TargetFileSize)
		}
	}
	return a + b
}

// statFree returns the bytes available to this process on the file system
// holding dir. Tests replace it.
var statFree = freeSpace

// spaceFor reports ErrNoSpace when fewer than need bytes are free at dir.
// When free space cannot be measured (statfs unsupported), it lets the
// write go ahead: Badger's own errors are then the only guard.
func spaceFor(dir string, need int64, what string) error {
	free, err := statFree(dir)
	if err != nil || free >= need {
		return nil
	}
	return fmt.Errorf("%s: %d bytes free, %d needed: %w", what, free, need, ErrNoSpace)
}

// checkSpace is run before each write transaction of size bytes.
func (s *Store) checkSpace(size int64) error {
	if s.inMem {
		return nil
	}
	if s.readOnly.Load() {
		return fmt.Errorf("store opened read-only for lack of space: %w", ErrNoSpace)
	}
	return spaceFor(s.dir, s.writeReserve(size), "write")
}

// trimTornTails truncates each write-ahead log to the end of its last
// complete transaction, as Badger does itself on a read-write open; Badger
// refuses to open read-only a log that needs it. Only logs that checkLogs
// found torn (not damaged) are passed here. Shrinking a file frees space
// and maps nothing.
func trimTornTails(dir string, ends map[string]int64) error {
	for name, end := range ends {
		if !strings.HasSuffix(name, memExt) {
			continue
		}
		p := filepath.Join(dir, name)
		fi, err := os.Stat(p)
		if err != nil {
			return fmt.Errorf("trim write-ahead log: %w", err)
		}
		if fi.Size() == end {
			continue
		}
		if err := os.Truncate(p, end); err != nil {
			return fmt.Errorf("trim write-ahead log: %w", err)
		}
	}
	return nil
}

// tryWritable reopens Badger read-write when the store was opened
// read-only for lack of space and there is now enough (Reserve). It runs
// before a write begins: new operations wait while the ones in flight
// finish (at most drainWait: a write inside a List callback, or beside a
// long Export, then stays refused with ErrNoSpace and a later write tries
// again). If the read-write open fails, Badger is reopened read-only; if
// that fails too, the store is closed (ErrClosed).
func (s *Store) tryWritable() {
	// A layout-1 store, or one whose header is of an older format, stays
	// read-only: its upgrade runs in Open.
	if !s.readOnly.Load() || s.legacy.Load() || s.oldHeader.Load() || spaceFor(s.dir, s.reserve, "reopen") != nil {
		return
	}
	s.lifeMu.Lock()
	if s.closed || s.reopen != nil || !s.readOnly.Load() {
		s.lifeMu.Unlock()
		return
	}
	done := make(chan struct{})
	s.reopen = done
	var idle chan struct{}
	if s.active > 0 {
		idle = make(chan struct{})
		s.idle = idle
	}
	s.lifeMu.Unlock()

	ok, drained := true, true
	if idle != nil {
		t := time.NewTimer(drainWait)
		select {
		case <-idle:
		case <-t.C:
			drained = false
		}
		t.Stop()
	}
	if drained {
		ok = s.reopenBadger()
	}

	s.endExclusive(ok, done)
}

// drainWait bounds how long tryWritable holds new operations back.
const drainWait = time.Second

// reopenBadger swaps the read-only Badger for a read-write one (or, failing
// that, a new read-only one). No operation is in flight.
func (s *Store) reopenBadger() bool {
	if err := s.db.Close(); err != nil {
		return false
	}
	defer beginOpenTrim(s.dir, s.inMem, s.bopts.sizes()).end()
	var setKey []byte
	if st := s.state.Load(); st != nil {
		setKey, _ = tableSetKey(st.cur.master, st.cur.epoch) // nil on error: check every table
		defer wipe(setKey)
	}
	if _, err := checkLogs(s.dir); err == nil {
		if db, err := openBadger(s.dir, &s.bopts, false, setKey); err == nil {
			s.db = db
			s.readOnly.Store(false)
			return true
		}
	}
	ends, err := checkLogs(s.dir)
	if err != nil || trimTornTails(s.dir, ends) != nil {
		return false
	}
	db, err := openBadger(s.dir, &s.bopts, true, setKey)
	if err != nil {
		return false
	}
	s.db = db
	return true
}

// endExclusive ends a section that held the store exclusively (the space
// recovery's reopen, a value-log GC round): operations may start again,
// and a store whose Badger could not be reopened (ok false) is closed,
// its keys wiped. done is the section's channel, closed last.
func (s *Store) endExclusive(ok bool, done chan struct{}) {
	s.lifeMu.Lock()
	s.reopen, s.idle = nil, nil
	broken := !ok && !s.closed
	if broken {
		s.closed, s.dbState = true, dbClosed
		close(s.closing)
		s.stopTrim()
	}
	s.lifeMu.Unlock()
	if broken {
		s.wipeKeys()
	}
	close(done)
}
