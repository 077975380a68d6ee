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

// TestTableSetSkipsUnchanged: the first Open checks every table in full
// and records them; the next checks in full only the tables it has not
// seen (those the previous session's Close flushed), and reads the same.
func TestTableSetSkipsUnchanged(t *testing.T) {
	settledClock(t)
	dir, good := storeWithTables(t)
	first := tableFiles(t, dir)
	got, full, err := reopenAndRead(t, dir)
	if err != nil || !reflect.DeepEqual(got, good) {
		t.Fatalf("first open: %v", err)
	}
	if full != int64(len(first)) {
		t.Fatalf("first open checked %d tables in full, want all %d", full, len(first))
	}
	second := tableFiles(t, dir)
	got, full, err = reopenAndRead(t, dir)
	if err != nil || !reflect.DeepEqual(got, good) {
		t.Fatalf("second open: %v", err)
	}
	newTables := 0
	for _, n := range second {
		if i := sort.SearchStrings(first, n); i == len(first) || first[i] != n {
			newTables++
		}
	}
	if full != int64(newTables) {
		t.Fatalf("second open checked %d tables in full, want the %d new of %d", full, newTables, len(second))
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
