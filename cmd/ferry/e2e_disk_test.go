//go:build linux

package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/ferrysync/ferry/replica"
)

// Disk full through the real binary, on a real 40 MB tmpfs: ferry put on a
// full disk says so in one line and exits 8, get still works, and once
// space is freed put works again with nothing lost.

// mountTmpfs mounts a tmpfs of size MiB on a fresh directory, unmounted at
// cleanup; it skips the test when mounting is impossible (not root).
func mountTmpfs(t *testing.T, mib int) string {
	t.Helper()
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("size=%dm", mib)); err != nil {
		t.Skipf("cannot mount a tmpfs on %s (%v): needs root or CAP_SYS_ADMIN", dir, err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

// fillDisk allocates a file at path taking all the free space of its file
// system (fallocate: the blocks are really taken).
func fillDisk(t *testing.T, path string) {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(filepath.Dir(path), &st); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for n := int64(st.Bavail) * st.Bsize; n > 0; n -= 4096 {
		err = syscall.Fallocate(int(f.Fd()), 0, 0, n)
		if !errors.Is(err, syscall.ENOSPC) {
			break
		}
	}
	if err != nil {
		t.Fatalf("fallocate: %v", err)
	}
}

func TestE2EDiskFull(t *testing.T) {
	mnt := mountTmpfs(t, 40)
	s := &store{t: t, name: "a", dir: filepath.Join(mnt, "store"), pass: "disk full pass"}
	s.must("init", "--name", "a")
	s.must("put", "notes", "n1", `{"title":"before"}`)

	// Another program takes every free block.
	filler := filepath.Join(mnt, "filler")
	fillDisk(t, filler)
	_, stderr, code := s.ferry("put", "notes", "n2", `{"title":"refused"}`)
	assertFailure(t, stderr, code, exitNoSpace, "no space left on device")
	t.Logf("stderr: %s", stderr)
	if got := s.get("notes", "n1"); got["title"] != "before" {
		t.Fatalf("get on a full disk: %v", got)
	}
	if _, _, code := s.ferry("get", "notes", "n2"); code != exitNotFound {
		t.Fatalf("the refused put left a record (get exit %d)", code)
	}

	// Space freed: writes work again, nothing lost.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	s.must("put", "notes", "n2", `{"title":"after"}`)
	if got := s.get("notes", "n1"); got["title"] != "before" {
		t.Fatalf("n1 after freeing space: %v", got)
	}
	if got := s.get("notes", "n2"); got["title"] != "after" {
		t.Fatalf("n2 after freeing space: %v", got)
	}
	if out := s.must("list", "notes"); !strings.Contains(out, "n1") || !strings.Contains(out, "n2") {
		t.Fatalf("list: %q", out)
	}
}

// copySparse copies the files of src into a new directory, keeping
// Badger's sparse logs sparse.
func copySparse(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	ents, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dst, e.Name())
		if err := os.WriteFile(p, bytes.TrimRight(b, "\x00"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(p, int64(len(b))); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// TestE2EDamagedLog: a store copied while open (as a crash leaves it: the
// last writes only in Badger's write-ahead log) opens; with one bit flipped
// in the middle of that log, ferry refuses it with exit 5 and one line that
// names the remedy, instead of silently opening with fewer records.
func TestE2EDamagedLog(t *testing.T) {
	s := newStore(t, "a", "damaged log pass")
	ctx := context.Background()
	r, err := replica.OpenExisting(ctx, s.dir, replica.Options{Passphrase: []byte(s.pass)})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 50; i++ {
		if err := r.Put(ctx, "notes", fmt.Sprintf("n%d", i), map[string]any{"i": int64(i)}); err != nil {
			t.Fatal(err)
		}
	}
	crashed := copySparse(t, s.dir)
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	var wal string
	var walLen int
	ents, _ := os.ReadDir(crashed)
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".mem") {
			continue
		}
		b, _ := os.ReadFile(filepath.Join(crashed, e.Name()))
		if n := len(bytes.TrimRight(b, "\x00")); n > walLen {
			wal, walLen = e.Name(), n
		}
	}
	if walLen < 4096 {
		t.Fatalf("no write-ahead log with data in the copy (%q, %d bytes)", wal, walLen)
	}
	damaged := copySparse(t, crashed)
	p := filepath.Join(damaged, wal)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b[walLen/2] ^= 0x08
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}

	intact := &store{t: t, name: "intact", dir: crashed, pass: s.pass}
	if got := intact.get("notes", "n49"); fmt.Sprint(got["i"]) != "49" {
		t.Fatalf("the undamaged copy: n49 = %v", got)
	}
	bad := &store{t: t, name: "damaged", dir: damaged, pass: s.pass}
	_, stderr, code := bad.ferry("get", "notes", "n49")
	assertFailure(t, stderr, code, exitCorrupt, "ferry import")
	t.Logf("stderr: %s", stderr)
	if !strings.Contains(stderr, "peer") {
		t.Fatalf("stderr does not mention syncing from a peer: %s", stderr)
	}
}
