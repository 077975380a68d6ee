package storage

import (
	"fmt"
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

// Reserve returns the free space, in bytes, a store with options o keeps on
// its file system: the write-ahead log of the current memtable growing to
// full size and the next one started (2 x MemTableSize), every memtable
// flushed to a table (NumMemtables x MemTableSize), a compaction's output
// (2 x BaseTableSize) and 1 MiB for the manifest, the discard-stats file and
// file headers. A write transaction needs, in addition, twice its own size
// (its entries go to the write-ahead log and, for large values, to the
// value log). With the default sizes the reserve is 21 MiB.
func Reserve(o Options) int64 {
	z := o.sizes()
	return (int64(z.NumMemtables)+2)*z.MemTableSize + 2*z.BaseTableSize + 1<<20
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
	if s.readOnly {
		return fmt.Errorf("store opened read-only for lack of space; free space and open it again: %w", ErrNoSpace)
	}
	return spaceFor(s.dir, s.reserve+2*size, "write")
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
