package storage

import (
	"encoding/binary"
	"errors"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
	"github.com/dgraph-io/badger/v4/table"
	"github.com/dgraph-io/ristretto/v2/z"
)

// precheckTables verifies every Badger table file before Badger opens it:
// the footer's length fields (Badger reads them with a helper that calls
// log.Fatal when they point outside the file), then the index and every block
// checksum, in this goroutine with panics recovered. This is needed because
// Badger v4.9.6 cannot be trusted with a corrupted table: its own open-time
// verification dereferences nil on some block errors (in a goroutine, killing
// the process), and on reads it treats an unreadable block as absent keys.
//
// With setKey (the verified-table set's MAC key, tableset.go), a table whose
// file is unchanged since an earlier Open checked it in full gets only the
// footer check; the others are checked in full and, if writeSet, the set is
// rewritten. Without setKey (Create, and a store that has no keys yet) every
// table is checked in full. The cost of a full check is one sequential read
// of the table.
func precheckTables(dir string, setKey []byte, writeSet bool) error {
	start := tableCheckNow()
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var known tableSet
	if setKey != nil {
		known = readTableSet(dir, setKey)
	}
	next := make(tableSet, len(known))
	var buf []byte
	live := manifestTables(dir)
	for _, e := range entries {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".sst") {
			continue
		}
		id, ok := table.ParseFileID(e.Name())
		if ok && live != nil && !live[id] {
			// Not in the manifest: the output of a flush or compaction cut
			// short by a crash, which Badger deletes on open. Reading it
			// could fault (a hole in a file on a full tmpfs).
			continue
		}
		path := filepath.Join(dir, e.Name())
		full := true
		var stamp tableStamp
		var stamped bool
		if fi, err := os.Stat(path); err == nil && ok {
			stamp, stamped = stampOf(id, fi)
			if k, in := known[id]; stamped && in && k == stamp {
				full = false
			}
		}
		if buf, err = precheckTable(path, full, buf); err != nil {
			return err
		}
		if stamped && stamp.settled(start) {
			next[id] = stamp
		}
	}
	if writeSet && setKey != nil && !maps.Equal(known, next) {
		writeTableSet(dir, next, setKey)
	}
	return nil
}

// manifestTables returns the ids of the tables the manifest references, or
// nil if it cannot be read (then every table is checked, and Badger reports
// the manifest).
func manifestTables(dir string) (ids map[uint64]bool) {
	f, err := os.Open(filepath.Join(dir, "MANIFEST"))
	if err != nil {
		return nil
	}
	defer f.Close()
	defer func() {
		if recover() != nil {
			ids = nil
		}
	}()
	m, _, err := badger.ReplayManifestFile(f, 0, badger.DefaultOptions(dir).WithLogger(nil))
	if err != nil {
		return nil
	}
	ids = make(map[uint64]bool, len(m.Tables))
	for id := range m.Tables {
		ids[id] = true
	}
	return ids
}

// precheckTable checks the footer of the table at path and, if full, its
// index and every block; buf is a reusable read buffer, returned grown.
func precheckTable(path string, full bool, buf []byte) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return buf, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return buf, err
	}
	size := fi.Size()
	if size < 8 {
		return buf, corruptf("table file")
	}
	var b [4]byte
	if _, err := f.ReadAt(b[:], size-4); err != nil {
		return buf, corruptf("table file")
	}
	ckLen := int64(binary.BigEndian.Uint32(b[:]))
	if ckLen > size-8 {
		return buf, corruptf("table file")
	}
	if _, err := f.ReadAt(b[:], size-8-ckLen); err != nil && !errors.Is(err, io.EOF) {
		return buf, corruptf("table file")
	}
	idxLen := int64(binary.BigEndian.Uint32(b[:]))
	if idxLen > size-8-ckLen {
		return buf, corruptf("table file")
	}
	if !full {
		return buf, nil
	}
	tableFullChecks.Add(1)
	if size > maxReadVerify {
		return buf, verifyTable(path)
	}
	// Reading the file into a buffer costs less than faulting in a memory
	// map of it page by page, and a hole reads as zeros (which fail the
	// checksums) rather than raising SIGBUS.
	if int64(cap(buf)) < size {
		buf = make([]byte, size)
	}
	buf = buf[:size]
	if _, err := f.ReadAt(buf, 0); err != nil {
		return buf, corruptf("table file")
	}
	id, _ := table.ParseFileID(filepath.Base(path))
	return buf, verifyTableBytes(buf, id)
}

// tableFullChecks counts tables checked in full (for tests).
var tableFullChecks atomic.Int64

// tableCheckNow is the clock precheckTables compares file times with
// (tests move it).
var tableCheckNow = time.Now

// maxReadVerify: a larger table is checked through a memory map rather
// than read into a buffer of its size.
const maxReadVerify = 64 << 20

func verifyTableBytes(data []byte, id uint64) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = corruptf("table file")
		}
	}()
	t, err := table.OpenInMemoryTable(data, id, &table.Options{ChkMode: options.NoVerification, Compression: options.None})
	if err != nil {
		return corruptf("table file")
	}
	if err := t.VerifyChecksum(); err != nil {
		return corruptf("table file")
	}
	return nil
}

func verifyTable(path string) (err error) {
	// A page that cannot be read (a hole on a full tmpfs, an I/O error)
	// raises SIGBUS: in this goroutine that becomes a panic, recovered below.
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	mf, err := z.OpenMmapFile(path, os.O_RDONLY, 0)
	if err != nil {
		return corruptf("table file")
	}
	var t *table.Table
	defer func() {
		if r := recover(); r != nil {
			err = corruptf("table file")
		}
		if t == nil {
			mf.Close(-1)
		}
	}()
	t, err = table.OpenTable(mf, table.Options{ChkMode: options.NoVerification, Compression: options.None})
	if err != nil {
		t = nil
		return corruptf("table file")
	}
	defer t.MmapFile.Close(-1)
	if err := t.VerifyChecksum(); err != nil {
		return corruptf("table file")
	}
	return nil
}
