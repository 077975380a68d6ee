package storage

import (
	"encoding/binary"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"

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
// The cost is one sequential read of every table per Open.
func precheckTables(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	live := manifestTables(dir)
	for _, e := range entries {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".sst") {
			continue
		}
		if id, ok := table.ParseFileID(e.Name()); ok && live != nil && !live[id] {
			// Not in the manifest: the output of a flush or compaction cut
			// short by a crash, which Badger deletes on open. Reading it
			// could fault (a hole in a file on a full tmpfs).
			continue
		}
		if err := precheckTable(filepath.Join(dir, e.Name())); err != nil {
			return err
		}
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

func precheckTable(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	size := fi.Size()
	if size < 8 {
		return corruptf("table file")
	}
	var b [4]byte
	if _, err := f.ReadAt(b[:], size-4); err != nil {
		return corruptf("table file")
	}
	ckLen := int64(binary.BigEndian.Uint32(b[:]))
	if ckLen > size-8 {
		return corruptf("table file")
	}
	if _, err := f.ReadAt(b[:], size-8-ckLen); err != nil && !errors.Is(err, io.EOF) {
		return corruptf("table file")
	}
	idxLen := int64(binary.BigEndian.Uint32(b[:]))
	if idxLen > size-8-ckLen {
		return corruptf("table file")
	}
	return verifyTable(path)
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
