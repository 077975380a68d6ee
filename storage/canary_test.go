package storage

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/automerge/automerge-go"
	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
)

// Distinctive strings that must never appear in any file of a store.
var canaries = []string{
	"CanaryCollectionQ7Z", "CanaryRecordIdQ7Z", "CanaryFieldNameQ7Z", "CanaryFieldValueQ7Z",
	"CanaryNamespaceQ7Z", "CanarySlotKeyQ7Z", "CanarySlotValueQ7Z", "CanaryLogEntryQ7Z",
	"CanaryAttrsQ7Z", "CanaryPassphraseQ7Z",
}

// scanDir reports which needles occur in any file under dir (raw bytes,
// case-insensitively, and as UTF-16LE). Badger preallocates large sparse
// files (WAL, value log): only their data regions are read (SEEK_DATA).
func scanDir(t *testing.T, dir string, needles []string) map[string]string {
	t.Helper()
	var pats [][]byte
	maxLen := 0
	for _, n := range needles {
		var u16 []byte
		for _, r := range strings.ToLower(n) {
			u16 = append(u16, byte(r), 0)
		}
		pats = append(pats, []byte(strings.ToLower(n)), u16)
		maxLen = max(maxLen, len(u16))
	}
	found := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		fi, err := f.Stat()
		if err != nil {
			return err
		}
		size := fi.Size()
		buf := make([]byte, 1<<20)
		for off := int64(0); off < size; {
			data, err := f.Seek(off, seekData)
			if err != nil {
				break // no more data
			}
			hole, err := f.Seek(data, seekHole)
			if err != nil {
				hole = size
			}
			for pos := data; pos < hole; {
				n, err := f.ReadAt(buf[:min(int64(len(buf)), hole-pos)], pos)
				if n == 0 {
					if err != nil && err != io.EOF {
						return err
					}
					break
				}
				chunk := bytes.ToLower(buf[:n])
				for i, pat := range pats {
					if bytes.Contains(chunk, pat) {
						found[needles[i/2]] = filepath.Base(p)
					}
				}
				if pos+int64(n) >= hole {
					break
				}
				pos += int64(n) - int64(maxLen) // overlap so no match straddles a boundary
			}
			off = hole
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

const (
	seekData = 3 // SEEK_DATA
	seekHole = 4 // SEEK_HOLE
)

func canaryDoc(t *testing.T) *automerge.Doc {
	d := automerge.New()
	if err := d.RootMap().Set("CanaryFieldNameQ7Z", "CanaryFieldValueQ7Z"); err != nil {
		t.Fatal(err)
	}
	d.Commit("c")
	return d
}

func TestCanary(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	pass := []byte("CanaryPassphraseQ7Z")
	s, err := Create(ctx, dir, Options{Passphrase: pass, KDF: TestKDF()})
	if err != nil {
		t.Fatal(err)
	}
	d := canaryDoc(t)
	rw := RecordWrite{Collection: "CanaryCollectionQ7Z", ID: "CanaryRecordIdQ7Z", Changes: d.SaveIncremental(),
		Snapshot: func() ([]byte, error) { return d.Save(), nil }, Heads: amHeads(d.Heads()), Attrs: []byte("CanaryAttrsQ7Z")}
	_, err = s.Write(ctx, Batch{Records: []RecordWrite{rw},
		Slots: []SlotWrite{{Namespace: "CanaryNamespaceQ7Z", Key: "CanarySlotKeyQ7Z", Value: []byte("CanarySlotValueQ7Z")}}})
	if err != nil {
		t.Fatal(err)
	}
	// Incremental chunks and a compaction, too.
	for i := 0; i < 5; i++ {
		d.RootMap().Set("CanaryFieldNameQ7Z", "CanaryFieldValueQ7Z"+string(rune('a'+i)))
		d.Commit("c")
		mustWrite(t, s, RecordWrite{Collection: "CanaryCollectionQ7Z", ID: "CanaryRecordIdQ7Z", Changes: d.SaveIncremental(),
			Snapshot: func() ([]byte, error) { return d.Save(), nil }, Heads: amHeads(d.Heads()), Attrs: []byte("CanaryAttrsQ7Z")})
	}
	if _, err := s.Append(ctx, "CanaryNamespaceQ7Z", []byte("CanaryLogEntryQ7Z")); err != nil {
		t.Fatal(err)
	}
	// Check while open (WAL / memtable files), then after Close (tables).
	if found := scanDir(t, dir, canaries); len(found) > 0 {
		t.Fatalf("canaries on disk while open: %v", found)
	}
	s.Close()
	if found := scanDir(t, dir, canaries); len(found) > 0 {
		t.Fatalf("canaries on disk after close: %v", found)
	}
	// Still readable, so the test wrote what it claims.
	s, err = Open(ctx, dir, Options{Passphrase: pass})
	if err != nil {
		t.Fatal(err)
	}
	if got := field(t, s, "CanaryCollectionQ7Z", "CanaryRecordIdQ7Z", "CanaryFieldNameQ7Z"); got != "CanaryFieldValueQ7Ze" {
		t.Fatalf("got %q", got)
	}
	s.Close()
	if found := scanDir(t, dir, canaries); len(found) > 0 {
		t.Fatalf("canaries on disk after reopen: %v", found)
	}
}

// TestCanaryControl shows the scanner finds the canaries when they are on
// disk: the same document, names and slot written raw into Badger with the
// store's settings (no compression, which could split a needle).
func TestCanaryControl(t *testing.T) {
	dir := t.TempDir()
	db, err := badger.Open(badger.DefaultOptions(dir).WithLogger(nil).WithCompression(options.None))
	if err != nil {
		t.Fatal(err)
	}
	d := canaryDoc(t)
	err = db.Update(func(txn *badger.Txn) error {
		// Keys start differently: Badger prefix-compresses keys in tables.
		if err := txn.Set([]byte("1CanaryCollectionQ7Z/CanaryRecordIdQ7Z"), d.Save()); err != nil {
			return err
		}
		return txn.Set([]byte("2CanaryNamespaceQ7Z/CanarySlotKeyQ7Z"), []byte("CanarySlotValueQ7Z"))
	})
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	found := scanDir(t, dir, canaries)
	for _, c := range []string{"CanaryCollectionQ7Z", "CanaryRecordIdQ7Z", "CanaryFieldNameQ7Z", "CanaryFieldValueQ7Z",
		"CanaryNamespaceQ7Z", "CanarySlotKeyQ7Z", "CanarySlotValueQ7Z"} {
		if _, ok := found[c]; !ok {
			t.Errorf("control: scanner did not find %s (found %v)", c, found)
		}
	}
}
