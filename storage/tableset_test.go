package storage

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"
)

// settledClock makes precheckTables see every table file as written long
// before the check, for the test's duration.
func settledClock(t *testing.T) {
	t.Helper()
	old := tableCheckNow
	tableCheckNow = func() time.Time { return time.Now().Add(time.Hour) }
	t.Cleanup(func() { tableCheckNow = old })
}

func tableFiles(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".sst") {
			out = append(out, e.Name())
		}
	}
	sort.Strings(out)
	return out
}

// openCounting opens dir and returns the store (or error) and how many
// tables it checked in full.
func openCounting(t *testing.T, dir string) (*Store, int64, error) {
	t.Helper()
	before := tableFullChecks.Load()
	s, err := Open(context.Background(), dir, testOpts())
	return s, tableFullChecks.Load() - before, err
}

// storeWithTables makes a closed store in a fresh directory holding
// records in tables, and returns the directory and the logical content.
func storeWithTables(t *testing.T) (string, logical) {
	t.Helper()
	s, dir := newDiskStore(t)
	populate(t, s, 30)
	good, err := readEverything(s)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if len(tableFiles(t, dir)) == 0 {
		t.Fatal("no table after Close")
	}
	return dir, good
}

func reopenAndRead(t *testing.T, dir string) (logical, int64, error) {
	t.Helper()
	s, full, err := openCounting(t, dir)
	if err != nil {
		return logical{}, full, err
	}
	defer s.Close()
	got, err := readEverything(s)
	return got, full, err
}

// TestTableSetSkipsUnchanged: Close records the tables it leaves (those
// the session's Open checked and those its Badger wrote), so the next
// Open checks none in full and reads the same; so does the one after.
// Before, the first Open after a session that wrote checked every table
// that session's flushes and compactions made, in full.
func TestTableSetSkipsUnchanged(t *testing.T) {
	settledClock(t)
	dir, good := storeWithTables(t)
	for i := range 2 {
		got, full, err := reopenAndRead(t, dir)
		if err != nil || !reflect.DeepEqual(got, good) {
			t.Fatalf("open %d: %v", i+1, err)
		}
		if full != 0 {
			t.Fatalf("open %d checked %d of %d tables in full, want none: Close recorded them", i+1, full, len(tableFiles(t, dir)))
		}
	}
}

// TestTableSetUnsettledAtClose: a table written within tableSetSlack of
// Close (its flush, or any table of a short session) is not recorded
// there ("racily clean"), and the next Open checks it in full and records
// it; the Open after that checks none.
func TestTableSetUnsettledAtClose(t *testing.T) {
	dir, good := storeWithTables(t) // the real clock: every table is fresh
	settledClock(t)
	tables := len(tableFiles(t, dir))
	got, full, err := reopenAndRead(t, dir)
	if err != nil || !reflect.DeepEqual(got, good) {
		t.Fatalf("first open: %v", err)
	}
	if full != int64(tables) {
		t.Fatalf("first open checked %d tables in full, want all %d (none settled at Close)", full, tables)
	}
	if _, full, err = reopenAndRead(t, dir); err != nil || full != 0 {
		t.Fatalf("second open: %v, %d checked in full, want none", err, full)
	}
}

// TestTableSetChangedTable: a bit flipped in a table that an earlier Open
// checked and recorded is found at the next Open (ErrCorrupt, no panic),
// also when the file's modification time is put back: the change time
// and, for a replaced file, the inode differ.
func TestTableSetChangedTable(t *testing.T) {
	settledClock(t)
	for _, how := range []string{"in place", "mtime restored", "replaced by a copy"} {
		t.Run(how, func(t *testing.T) {
			dir, good := storeWithTables(t)
			if _, _, err := reopenAndRead(t, dir); err != nil {
				t.Fatal(err)
			}
			name := tableFiles(t, dir)[0]
			path := filepath.Join(dir, name)
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			b[10] ^= 0x04 // inside the first data block
			switch how {
			case "in place", "mtime restored":
				f, err := os.OpenFile(path, os.O_WRONLY, 0)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := f.WriteAt(b[10:11], 10); err != nil {
					t.Fatal(err)
				}
				f.Close()
				if how == "mtime restored" {
					if err := os.Chtimes(path, fi.ModTime(), fi.ModTime()); err != nil {
						t.Fatal(err)
					}
				}
			case "replaced by a copy":
				tmp := path + ".new"
				if err := os.WriteFile(tmp, b, 0o600); err != nil {
					t.Fatal(err)
				}
				os.Chtimes(tmp, fi.ModTime(), fi.ModTime())
				if err := os.Rename(tmp, path); err != nil {
					t.Fatal(err)
				}
			}
			// Open itself refuses the store (reads would also fail, later,
			// and not always: Badger takes a bad block for absent keys).
			s, _, err := openCounting(t, dir)
			if err == nil {
				s.Close()
			}
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("open after a flip in %s (%s): %v, want ErrCorrupt", name, how, err)
			}
			// Put back, the store opens and reads as before.
			b[10] ^= 0x04
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}
			got, _, err := reopenAndRead(t, dir)
			if err != nil || !reflect.DeepEqual(got, good) {
				t.Fatalf("after restoring the table: %v", err)
			}
		})
	}
}

// TestTableSetFileUntrusted: a set file that is damaged, truncated, from
// another store or replaced by garbage is ignored: every table is checked
// in full, the store reads as before, and the set is rewritten.
func TestTableSetFileUntrusted(t *testing.T) {
	settledClock(t)
	other, _ := storeWithTables(t)
	if _, _, err := reopenAndRead(t, other); err != nil {
		t.Fatal(err)
	}
	foreign, err := os.ReadFile(filepath.Join(other, tableSetFile))
	if err != nil {
		t.Fatal(err)
	}
	dir, good := storeWithTables(t)
	if _, _, err := reopenAndRead(t, dir); err != nil {
		t.Fatal(err)
	}
	setPath := filepath.Join(dir, tableSetFile)
	valid, err := os.ReadFile(setPath)
	if err != nil {
		t.Fatal(err)
	}
	for name, content := range map[string][]byte{
		"flipped":   flip(valid, len(valid)/2),
		"truncated": valid[:len(valid)-1],
		"empty":     {},
		"foreign":   foreign,
		"garbage":   bytes.Repeat([]byte{0xff}, 300),
	} {
		if err := os.WriteFile(setPath, content, 0o600); err != nil {
			t.Fatal(err)
		}
		n := len(tableFiles(t, dir))
		got, full, err := reopenAndRead(t, dir)
		if err != nil || !reflect.DeepEqual(got, good) {
			t.Fatalf("%s set file: %v", name, err)
		}
		if full != int64(n) {
			t.Fatalf("%s set file: %d of %d tables checked in full", name, full, n)
		}
		if b, err := os.ReadFile(setPath); err != nil || bytes.Equal(b, content) {
			t.Fatalf("%s: set not rewritten: %v", name, err)
		}
	}
}

// TestTableSetRacilyClean: a table whose times are not older than the
// check by tableSetSlack is checked but not recorded, so a later change in
// the same clock tick cannot go unseen.
func TestTableSetRacilyClean(t *testing.T) {
	dir, _ := storeWithTables(t)
	old := tableCheckNow
	defer func() { tableCheckNow = old }()
	// The check happens right when the tables were written.
	newest := time.Time{}
	for _, n := range tableFiles(t, dir) {
		fi, err := os.Stat(filepath.Join(dir, n))
		if err != nil {
			t.Fatal(err)
		}
		if fi.ModTime().After(newest) {
			newest = fi.ModTime()
		}
	}
	tableCheckNow = func() time.Time { return newest }
	if _, _, err := reopenAndRead(t, dir); err != nil {
		t.Fatal(err)
	}
	tableCheckNow = func() time.Time { return newest.Add(time.Hour) }
	n := len(tableFiles(t, dir))
	_, full, err := reopenAndRead(t, dir)
	if err != nil {
		t.Fatal(err)
	}
	if full != int64(n) {
		t.Fatalf("%d of %d tables checked in full after a racy check, want all", full, n)
	}
}

func TestTableSetRoundTrip(t *testing.T) {
	key := bytes.Repeat([]byte{7}, keySize)
	for _, set := range []tableSet{
		{},
		{1: {id: 1, size: 2, ino: 3, dev: 4, mtime: -5, ctime: 6}},
		{1: {id: 1}, 1 << 63: {id: 1 << 63, size: 1<<64 - 1, mtime: 1<<63 - 1, ctime: -1 << 63}},
	} {
		b := encodeTableSet(set, key)
		if got := decodeTableSet(b, key); !reflect.DeepEqual(got, set) {
			t.Fatalf("round trip: %v, want %v", got, set)
		}
		if decodeTableSet(b, bytes.Repeat([]byte{8}, keySize)) != nil {
			t.Fatal("accepted under another key")
		}
		for i := range b {
			if decodeTableSet(flip(b, i), key) != nil {
				t.Fatalf("flip at %d accepted", i)
			}
		}
	}
}

// FuzzTableSet: the set file is outside bytes. Its body (what the MAC
// covers; random bytes never pass the MAC) decodes without panicking, and
// whatever it accepts re-encodes to the same set.
func FuzzTableSet(f *testing.F) {
	key := bytes.Repeat([]byte{7}, keySize)
	body := func(set tableSet) []byte { b := encodeTableSet(set, key); return b[:len(b)-sha256.Size] }
	f.Add(body(tableSet{}))
	f.Add(body(tableSet{9: {id: 9, size: 100, ino: 5, dev: 1, mtime: 1, ctime: 2}}))
	f.Add(body(tableSet{1: {id: 1}, 2: {id: 2}, 3: {id: 3}}))
	f.Add([]byte{1, 200, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		set := decodeTableSetBody(b)
		if set == nil {
			return
		}
		if again := decodeTableSetBody(body(set)); !reflect.DeepEqual(again, set) {
			t.Fatalf("accepted %x as %v, its encoding decodes as %v", b, set, again)
		}
		if got := decodeTableSet(encodeTableSet(set, key), key); !reflect.DeepEqual(got, set) {
			t.Fatalf("round trip: %v, want %v", got, set)
		}
	})
}

// TestTableSetReadOnlyCloseWritesNothing: a store opened read-only (the
// disk below the reserve) neither writes the set at Open nor at Close, so
// a table it never checked is never recorded by it.
func TestTableSetReadOnlyCloseWritesNothing(t *testing.T) {
	dir, _ := storeWithTables(t) // the real clock: Close recorded nothing settled
	if err := os.Remove(filepath.Join(dir, tableSetFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	settledClock(t)
	free := Reserve(testOpts()) - 1
	withFree(t, &free)
	s, err := Open(context.Background(), dir, testOpts())
	if err != nil || !s.readOnly.Load() {
		t.Fatalf("read-only open: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, tableSetFile)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("set file after a read-only session: %v, want none", err)
	}
}
