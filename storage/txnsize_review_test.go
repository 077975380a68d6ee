package storage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
)

// TestRotateKeyWithSmallMemtables (h3-review): Sizes allows memtables of
// 1 MiB, where Badger refuses a transaction over ~157 KB (15%); a key
// rotation moves up to 256 records per transaction (rotateBatchItems,
// rotateBatchBytes 4 MiB), each with its data (inline documents of up to
// 2 KiB since format version 3, or a chunk), and must still finish.
func TestRotateKeyWithSmallMemtables(t *testing.T) {
	ctx := context.Background()
	s, _ := smallMemtableStore(t, t.TempDir())
	defer s.Close()
	doc := bytes.Repeat([]byte{'x'}, 1900)
	for b := 0; b < 300; b += 50 {
		var ws []RecordWrite
		for i := b; i < b+50; i++ {
			ws = append(ws, RecordWrite{Collection: "c", ID: fmt.Sprintf("r%04d", i), Changes: doc})
		}
		if _, err := s.Write(ctx, Batch{Records: ws}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.RotateKey(ctx, nil); err != nil {
		t.Fatalf("rotate: %v", err)
	}
	for i := 0; i < 300; i += 37 {
		got, _, err := s.Load(ctx, "c", fmt.Sprintf("r%04d", i))
		if err != nil || !bytes.Equal(got, doc) {
			t.Fatalf("r%04d after rotation: %d bytes, %v", i, len(got), err)
		}
	}
}

// TestRotateKeyWithLargeRecords (h3-review): with DefaultSizes (8 MiB
// memtables: Badger refuses a transaction over ~1.26 MB), a rotation of
// 20 records of 100 KB (chunks in the LSM tree: under the 1 MiB
// ValueThreshold the test sets; the default, 1 KiB, sends them to the
// value log, where a transaction counts only their pointers)
// moves them all in one transaction (rotateBatchBytes counts the metas'
// bytes, not the chunks moveRecord re-seals), which Badger refuses; the
// store is left mid-rotation and Open, which resumes it, fails the same
// way.
func TestRotateKeyWithLargeRecords(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	o := testOpts()
	o.Sizes.ValueThreshold = 1 << 20
	s, err := Create(ctx, dir, o)
	if err != nil {
		t.Fatal(err)
	}
	doc := bytes.Repeat([]byte{'y'}, 100<<10)
	for i := 0; i < 20; i++ {
		if _, err := s.Write(ctx, Batch{Records: []RecordWrite{{Collection: "c", ID: fmt.Sprintf("r%02d", i), Changes: doc}}}); err != nil {
			t.Fatal(err)
		}
	}
	rerr := s.RotateKey(ctx, nil)
	s.Close()
	s, err = Open(ctx, dir, o)
	if err != nil {
		t.Fatalf("rotate: %v; then open: %v", rerr, err)
	}
	defer s.Close()
	if rerr != nil {
		t.Fatalf("rotate: %v", rerr)
	}
}

// TestRotationOfARecordTooLargeForATransaction: a record whose chunks do
// not fit in one Badger transaction (1 MiB memtables: ~157 KB) cannot be
// moved by a rotation; RotateKey says so (ErrInvalid), and the store still
// opens (the rotation stays pending, both epochs readable) with every
// record as written, where Open used to resume the rotation and fail for
// ever.
func TestRotationOfARecordTooLargeForATransaction(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, o := smallMemtableStore(t, dir)
	snap := bytes.Repeat([]byte{'s'}, 90<<10)
	inc := bytes.Repeat([]byte{'i'}, 90<<10)
	small := []byte("small")
	for _, w := range []RecordWrite{
		{Collection: "c", ID: "big", Changes: snap},
		{Collection: "c", ID: "big", Changes: inc},
		{Collection: "c", ID: "small", Changes: small},
	} {
		if _, err := s.Write(ctx, Batch{Records: []RecordWrite{w}}); err != nil {
			t.Fatal(err)
		}
	}
	rerr := s.RotateKey(ctx, nil)
	if !errors.Is(rerr, ErrInvalid) {
		t.Fatalf("rotate with a record over a transaction: %v, want ErrInvalid", rerr)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err := Open(ctx, dir, o)
	if err != nil {
		t.Fatalf("open after the rotation stopped (%v): %v", rerr, err)
	}
	defer s.Close()
	want := map[string][]byte{"big": append(slices.Clone(snap), inc...), "small": small}
	for id, w := range want {
		got, _, err := s.Load(ctx, "c", id)
		if err != nil || !bytes.Equal(got, w) {
			t.Fatalf("%s after the stopped rotation: %d bytes, %v", id, len(got), err)
		}
	}
	if _, err := s.Write(ctx, Batch{Records: []RecordWrite{{Collection: "c", ID: "new", Changes: small}}}); err != nil {
		t.Fatalf("write during the pending rotation: %v", err)
	}
}
