package storage

import (
	"path/filepath"
	"sync/atomic"
	"time"
)

// Trimming the store's memory-mapped files (docs/storage.md, "Memory").
//
// Badger memory-maps every table (*.sst), value-log file (*.vlog) and
// write-ahead log (*.mem) and reads and writes them through the
// mapping, so each page the process touches stays in its resident set
// until the file is closed: a store of 180 MiB that is written or
// scanned once holds about 180 MiB of RssFile, and resident memory grows
// with the data rather than with the work. The pages are the kernel's
// page cache, clean or written back, but they count in the process's RSS
// (and in what an out-of-memory killer weighs). Every
// Sizes.MappedTrimInterval the store reads how much of its own mapped
// tables, value-log files and write-ahead logs is resident (Linux:
// /proc/self/maps and /proc/self/pagemap) and, while that is above Sizes.MappedBudget, asks the
// kernel to reclaim pages of those mappings (madvise(MADV_PAGEOUT)),
// largest first, until at most half the budget stays, keeping each
// table's index, which every read of the table consults. MADV_PAGEOUT
// never changes what memory holds, only where: a page read again comes
// back from the file. So a stale range (the file unmapped and the address
// reused by something else between reading the maps and the call) costs
// at most a page-out of that memory, never its contents. Elsewhere the
// trim does nothing.

// trimLoop trims every interval until Badger is closed (stopTrim), not
// only until the store starts closing: Badger's Close writes the
// memtables' tables and finishes compactions through memory maps, and
// those pages would otherwise stay resident until it returns.
func (s *Store) trimLoop(tr *trimmer, interval time.Duration, budget int64) {
	defer s.trimDone.Done()
	trimEvery(tr, interval, budget, s.trimStop)
}

// trimEvery trims with tr every interval until stop is closed.
func trimEvery(tr *trimmer, interval time.Duration, budget int64, stop <-chan struct{}) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			tr.trim(budget)
		}
	}
}

// stopTrim ends trimLoop (once; the caller has closed Badger).
func (s *Store) stopTrim() { s.trimOnce.Do(func() { close(s.trimStop) }) }

// startTrim starts trimLoop for an on-disk store whose interval is
// positive, with tr, the trimmer of the open (openTrim; nil: a new one).
func (s *Store) startTrim(z Sizes, tr *trimmer) {
	if s.inMem || z.MappedTrimInterval <= 0 || !trimSupported {
		return
	}
	if tr == nil {
		tr = newTrimmer(trimDir(s.dir))
	}
	s.trimDone.Add(1)
	go s.trimLoop(tr, z.MappedTrimInterval, z.MappedBudget)
}

// trimDir is dir as /proc/self/maps names the files in it: absolute, with
// symbolic links resolved.
func trimDir(dir string) string {
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs
	}
	if real, err := filepath.EvalSymlinks(dir); err == nil {
		dir = real
	}
	return dir
}

// openTrimInterval is how often the store's mapped files are trimmed while
// Badger opens (openTrim).
const openTrimInterval = 10 * time.Millisecond

// openTrim trims the mapped files of an on-disk store every
// openTrimInterval while Badger opens it, until end. Badger's open reads
// the whole last value-log file to find where its valid entries end (up
// to ValueLogFileSize, 32 MiB by default, through a mapping of twice
// that) and starts the compactions its level-0 tables call for, all
// before Open returns and the store's own trim starts: at 100,000
// records a reopened store held 36-58 MiB of value-log pages 0.3-0.4 s
// after open, against a 16 MiB budget (benchmarks, FERRY_MEM_FILEDIAG).
// The same happens when the store reopens Badger (reopenBadger). Each
// pass reads /proc/self/maps and the store's entries of
// /proc/self/pagemap, about a millisecond for a store of 100,000 records.
type openTrim struct {
	tr   *trimmer
	stop chan struct{}
	done chan struct{}
}

// openTrimsBegun counts the open trims started (tests: which paths start
// one).
var openTrimsBegun atomic.Int64

// beginOpenTrim starts an openTrim for dir, or returns nil where there is
// nothing to trim (an in-memory store, a zero interval, no support).
func beginOpenTrim(dir string, inMem bool, z Sizes) *openTrim {
	if inMem || z.MappedTrimInterval <= 0 || !trimSupported {
		return nil
	}
	openTrimsBegun.Add(1)
	o := &openTrim{tr: newTrimmer(trimDir(dir)), stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(o.done)
		trimEvery(o.tr, openTrimInterval, z.MappedBudget, o.stop)
	}()
	return o
}

// end stops the open's trimming, waits for it, and returns its trimmer
// for the store's trimLoop; nil-safe, and only the first call returns the
// trimmer.
func (o *openTrim) end() *trimmer {
	if o == nil || o.stop == nil {
		return nil
	}
	close(o.stop)
	<-o.done
	o.stop = nil
	return o.tr
}
