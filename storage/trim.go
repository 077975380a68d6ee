package storage

import (
	"path/filepath"
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
func (s *Store) trimLoop(interval time.Duration, budget int64) {
	defer s.trimDone.Done()
	// /proc/self/maps names files by their absolute, resolved path.
	dir := s.dir
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs
	}
	if real, err := filepath.EvalSymlinks(dir); err == nil {
		dir = real
	}
	tr := newTrimmer(dir)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-s.trimStop:
			return
		case <-t.C:
			tr.trim(budget)
		}
	}
}

// stopTrim ends trimLoop (once; the caller has closed Badger).
func (s *Store) stopTrim() { s.trimOnce.Do(func() { close(s.trimStop) }) }

// startTrim starts trimLoop for an on-disk store whose interval is
// positive.
func (s *Store) startTrim(z Sizes) {
	if s.inMem || z.MappedTrimInterval <= 0 || !trimSupported {
		return
	}
	s.trimDone.Add(1)
	go s.trimLoop(z.MappedTrimInterval, z.MappedBudget)
}
