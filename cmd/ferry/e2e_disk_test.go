//go:build linux

package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
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
