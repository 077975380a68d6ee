package replica

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/ferrysync/ferry/storage"
)

// TestChangePassphrase: after ChangePassphrase the replica keeps working,
// the old passphrase no longer opens the store and the new one opens it
// with every record; an invalid secret changes nothing.
func TestChangePassphrase(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	opts := diskOptions("a")
	r, err := Open(ctx, dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Put(ctx, "notes", "n1", map[string]any{"title": "kept"}); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []Secret{{}, {Passphrase: []byte("x"), Key: make([]byte, 32)}} {
		if err := r.ChangePassphrase(ctx, bad); !errors.Is(err, ErrInvalid) {
			t.Fatalf("ChangePassphrase(%+v) = %v, want ErrInvalid", bad, err)
		}
	}
	if err := r.ChangePassphrase(ctx, Secret{Key: make([]byte, 7)}); !errors.Is(err, storage.ErrInvalid) {
		t.Fatalf("7-byte key: %v, want storage.ErrInvalid", err)
	}
	if err := r.ChangePassphrase(ctx, Secret{Passphrase: []byte("new secret"), KDF: storage.TestKDF()}); err != nil {
		t.Fatal(err)
	}
	if err := r.Put(ctx, "notes", "n2", map[string]any{"title": "after"}); err != nil {
		t.Fatalf("replica unusable after ChangePassphrase: %v", err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(ctx, dir, opts); !errors.Is(err, storage.ErrWrongKey) {
		t.Fatalf("old passphrase: %v, want storage.ErrWrongKey", err)
	}
	opts.Passphrase = []byte("new secret")
	r, err = Open(ctx, dir, opts)
	if err != nil {
		t.Fatalf("new passphrase: %v", err)
	}
	defer r.Close()
	for id, want := range map[string]string{"n1": "kept", "n2": "after"} {
		got, err := r.Get(ctx, "notes", id)
		if err != nil || got["title"] != want {
			t.Fatalf("Get %s = %v, %v; want title %q", id, got, err, want)
		}
	}
}

// TestRotateKey: RotateKey reports progress up to the total and every
// record reads back, also after a reopen.
func TestRotateKey(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	opts := diskOptions("a")
	r, err := Open(ctx, dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"a", "b", "c"} {
		if err := r.Put(ctx, "notes", id, map[string]any{"v": id}); err != nil {
			t.Fatal(err)
		}
	}
	var lastDone, lastTotal, calls int
	if err := r.RotateKey(ctx, func(done, total int) { lastDone, lastTotal, calls = done, total, calls+1 }); err != nil {
		t.Fatal(err)
	}
	if calls == 0 || lastTotal == 0 || lastDone != lastTotal {
		t.Fatalf("progress: %d calls, last %d/%d", calls, lastDone, lastTotal)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.RotateKey(ctx, nil); !errors.Is(err, storage.ErrClosed) {
		t.Fatalf("RotateKey on a closed replica: %v, want storage.ErrClosed", err)
	}
	r, err = Open(ctx, dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for _, id := range []string{"a", "b", "c"} {
		got, err := r.Get(ctx, "notes", id)
		if err != nil || got["v"] != id {
			t.Fatalf("Get %s after rotation = %v, %v", id, got, err)
		}
	}
}

// TestCollectionsAndLastSeq: Collections lists every collection written,
// sorted, including one whose records were deleted; LastSeq moves with
// every write and not with a read.
func TestCollectionsAndLastSeq(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	r := e.replica("a")
	if cols, err := r.Collections(ctx); err != nil || len(cols) != 0 {
		t.Fatalf("empty replica: %v, %v", cols, err)
	}
	if r.LastSeq() != 0 {
		t.Fatalf("empty replica LastSeq = %d", r.LastSeq())
	}
	for _, c := range []string{"zq-journal", "items", "notes"} {
		if err := r.Put(ctx, c, "x", map[string]any{"v": 1.0}); err != nil {
			t.Fatal(err)
		}
	}
	before := r.LastSeq()
	if before == 0 {
		t.Fatal("LastSeq did not move with writes")
	}
	if _, err := r.Get(ctx, "notes", "x"); err != nil {
		t.Fatal(err)
	}
	if r.LastSeq() != before {
		t.Fatalf("a read moved LastSeq %d -> %d", before, r.LastSeq())
	}
	if err := r.Delete(ctx, "items", "x"); err != nil {
		t.Fatal(err)
	}
	if r.LastSeq() <= before {
		t.Fatalf("a delete did not move LastSeq (%d)", r.LastSeq())
	}
	cols, err := r.Collections(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"items", "notes", "zq-journal"}; !slices.Equal(cols, want) {
		t.Fatalf("Collections = %v, want %v", cols, want)
	}
}
