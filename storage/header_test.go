package storage

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func testHeader(t testing.TB, rotating bool) *header {
	o := testOpts()
	h := &header{gen: 3, curEpoch: 5}
	kek, err := newHeaderParams(h, &o)
	if err != nil {
		t.Fatal(err)
	}
	if rotating {
		h.rotating, h.nextEpoch = true, 6
	}
	if err := h.wrapKeys(kek, randomKey(), randomKey()); err != nil {
		t.Fatal(err)
	}
	return h
}

func TestHeaderRoundTrip(t *testing.T) {
	for _, rot := range []bool{false, true} {
		h := testHeader(t, rot)
		b := h.encode()
		if len(b) != headerLen {
			t.Fatalf("header is %d bytes", len(b))
		}
		got, err := decodeHeader(b)
		if err != nil || !headerEqual(got, h) {
			t.Fatalf("round trip (rotating=%v): %v", rot, err)
		}
		o := testOpts()
		if _, _, next, _, err := got.unlock(&o); err != nil || (next != nil) != rot {
			t.Fatalf("unlock: %v", err)
		}
		for i := 0; i < len(b); i++ {
			if _, err := decodeHeader(b[:i]); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("truncated header at %d: %v", i, err)
			}
		}
	}
}

// FuzzHeader decodes arbitrary bytes as a store header: never a panic, and
// anything accepted re-encodes to the same bytes.
func FuzzHeader(f *testing.F) {
	f.Add(testHeader(f, false).encode())
	f.Add(testHeader(f, true).encode())
	f.Add([]byte(headerMagic))
	f.Add(legacyHeader(f, []byte("cafe\u0301"), randomKey(), nil).encode())
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := decodeHeader(b)
		if err != nil {
			newer := len(b) == headerLen && b[8] > headerVersion && errors.Is(err, ErrNewerStore)
			if !errors.Is(err, ErrCorrupt) && !newer {
				t.Fatalf("error not ErrCorrupt (nor ErrNewerStore of a newer version): %v", err)
			}
			return
		}
		if !bytes.Equal(h.encode(), b) {
			t.Fatal("accepted header does not re-encode to itself")
		}
		o := Options{Passphrase: []byte("x")}
		if (h.mode == modePassphrase || h.mode == modePassphraseNFC) && h.kdf.MemoryKiB > 1<<12 {
			return // too slow to derive in a fuzz loop
		}
		h.unlock(&o) // must not panic
	})
}

// setHeaderVersion rewrites the header of the closed store in dir with
// format version v, as a build of that version would have written it (the
// master keys rewrapped: the version is in their associated data).
func setHeaderVersion(t *testing.T, dir string, o Options, v byte) {
	t.Helper()
	h, err := readHeaderFile(dir)
	if err != nil {
		t.Fatal(err)
	}
	kek, cur, next, _, err := h.unlock(&o)
	if err != nil {
		t.Fatal(err)
	}
	h.version = v
	h.gen++
	if err := h.wrapKeys(kek, cur, next); err != nil {
		t.Fatal(err)
	}
	b := h.encode() // writeHeaderFile's bytes; decodeHeader would refuse v > headerVersion
	if err := os.WriteFile(filepath.Join(dir, headerFile), b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// headerVersionOnDisk is byte 8 of dir's header file: what an older build
// compares with the only version it knows.
func headerVersionOnDisk(t *testing.T, dir string) byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, headerFile))
	if err != nil || len(b) != headerLen {
		t.Fatalf("read header: %v (%d bytes)", err, len(b))
	}
	return b[8]
}

// TestHeaderNewerVersion: a store whose header carries a format version
// above this build's (written by a newer ferry) is refused with
// ErrNewerStore, of kind "protocol violation", naming both versions,
// before Badger opens: no file of the store changes, and the newer build
// still opens it.
// closedStoreWithOneRecord creates a store holding one record, closes it
// and returns its directory and options.
func closedStoreWithOneRecord(t *testing.T) (string, Options) {
	t.Helper()
	dir, o := t.TempDir(), testOpts()
	s, err := Create(context.Background(), dir, o)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Write(context.Background(), Batch{Records: []RecordWrite{{Collection: "c", ID: "a", Changes: []byte("x")}}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return dir, o
}

func TestHeaderNewerVersion(t *testing.T) {
	ctx := context.Background()
	dir, o := closedStoreWithOneRecord(t)
	if v := headerVersionOnDisk(t, dir); v != headerVersion {
		t.Fatalf("Create wrote format version %d, want %d", v, headerVersion)
	}
	current, err := os.ReadFile(filepath.Join(dir, headerFile))
	if err != nil {
		t.Fatal(err)
	}
	setHeaderVersion(t, dir, o, headerVersion+1)
	before := dirSnapshot(t, dir)
	_, err = Open(ctx, dir, o)
	if !errors.Is(err, ErrNewerStore) || errors.Is(err, ErrCorrupt) {
		t.Fatalf("Open of a newer store: %v, want ErrNewerStore", err)
	}
	var kd interface{ ErrorKind() string }
	if !errors.As(err, &kd) || kd.ErrorKind() != "protocol violation" {
		t.Fatalf("kind of %v: want protocol violation", err)
	}
	msg := err.Error()
	for _, want := range []string{"newer version of ferry", fmt.Sprintf("version %d", headerVersion+1), fmt.Sprintf("up to %d", headerVersion)} {
		if !strings.Contains(msg, want) {
			t.Fatalf("error %q does not say %q", msg, want)
		}
	}
	if after := dirSnapshot(t, dir); after != before {
		t.Fatalf("refused Open changed the store's files:\n%s\n%s", before, after)
	}
	// The build of that version (here: the header as it was) opens it.
	if err := os.WriteFile(filepath.Join(dir, headerFile), current, 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := Open(ctx, dir, o)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, _, err := s.Load(ctx, "c", "a"); err != nil {
		t.Fatal(err)
	}
}

// TestHeaderVersionBumped: a store with a version-1 header (written by a
// build that knows only record layout 1) and no layout-1 entries (empty,
// or written by this build under the old header) is marked version 2 by
// a writable Open, before it writes; opened read-only (no space) it keeps
// version 1 and stays read-only, even when space comes back, until
// opened again.
func TestHeaderVersionBumped(t *testing.T) {
	ctx := context.Background()
	dir, o := closedStoreWithOneRecord(t)
	setHeaderVersion(t, dir, o, headerLayout1)

	free := Reserve(o) - 1
	withFree(t, &free)
	s, err := Open(ctx, dir, o)
	if err != nil {
		t.Fatal(err)
	}
	if v := headerVersionOnDisk(t, dir); v != headerLayout1 {
		t.Fatalf("read-only Open wrote format version %d", v)
	}
	if _, _, err := s.Load(ctx, "c", "a"); err != nil {
		t.Fatal(err)
	}
	free = 1 << 40
	if _, err := s.Write(ctx, Batch{Records: []RecordWrite{{Collection: "c", ID: "b", Changes: []byte("y")}}}); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("Write to a read-only store of the old format: %v, want ErrNoSpace", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if v := headerVersionOnDisk(t, dir); v != headerLayout1 {
		t.Fatalf("format version %d after a read-only session", v)
	}

	s, err = Open(ctx, dir, o)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if v := headerVersionOnDisk(t, dir); v != headerVersion {
		t.Fatalf("writable Open left format version %d, want %d", v, headerVersion)
	}
	if _, err := s.Write(ctx, Batch{Records: []RecordWrite{{Collection: "c", ID: "b", Changes: []byte("y")}}}); err != nil {
		t.Fatal(err)
	}
	o2 := o
	o2.Passphrase = []byte("another")
	if err := s.ChangePassphrase(ctx, o2); err != nil {
		t.Fatal(err)
	}
	if v := headerVersionOnDisk(t, dir); v != headerVersion {
		t.Fatalf("passphrase change wrote format version %d", v)
	}
}

// dirSnapshot lists dir's files with sizes and modification times.
func dirSnapshot(t *testing.T, dir string) string {
	t.Helper()
	var sb strings.Builder
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		fmt.Fprintf(&sb, "%s %d %s\n", p, fi.Size(), fi.ModTime())
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return sb.String()
}

// TestInlineDocumentsOfVersion3: a record whose first document is at
// most inlineWrite is kept inside its meta, with no chunk entry; a larger
// one gets its chunk; both load as written. (Version 3 metas may hold up
// to inlineMax, 2 KiB; since the 1 KiB value threshold ferry writes
// documents of up to 512 bytes inline, so its metas stay in the LSM tree.)
// A version-2 store (inline documents up to 1 KiB) opened writable is
// marked version 3 before anything is written, so a version-2 build
// refuses it rather than failing on a meta it cannot decode.
func TestInlineDocumentsOfVersion3(t *testing.T) {
	ctx := context.Background()
	dir, o := closedStoreWithOneRecord(t)
	setHeaderVersion(t, dir, o, 2)
	s, err := Open(ctx, dir, o)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if v := headerVersionOnDisk(t, dir); v != headerVersion {
		t.Fatalf("writable Open of a version-2 store left version %d, want %d", v, headerVersion)
	}
	small := bytes.Repeat([]byte{'s'}, inlineWrite)
	large := bytes.Repeat([]byte{'l'}, inlineWrite+1)
	if _, err := s.Write(ctx, Batch{Records: []RecordWrite{
		{Collection: "c", ID: "small", Changes: small},
		{Collection: "c", ID: "large", Changes: large},
	}}); err != nil {
		t.Fatal(err)
	}
	chunks := 0
	for k := range rawDump(t, s) {
		kb, _ := hex.DecodeString(k)
		if len(kb) > prefixLen && kb[0] == keyData && kb[prefixLen-1] == kindChunk {
			chunks++
		}
	}
	if chunks != 1 {
		t.Fatalf("%d chunk entries, want 1 (the %d-byte document's; the %d-byte one inline)", chunks, len(large), len(small))
	}
	for id, want := range map[string][]byte{"small": small, "large": large, "a": []byte("x")} {
		got, _, err := s.Load(ctx, "c", id)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("load %s: %d bytes, %v; want %d bytes", id, len(got), err, len(want))
		}
	}
}
