package main

// Adversarial end-to-end cases found by trying to break the CLI with
// inputs of the same kinds as issues 11 and 12's examples.

import (
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestE2EFileSystemErrorsAreNotNetwork: a file system error is not a
// network failure. syscall.Errno implements net.Error, so an EISDIR or
// ENOTDIR from opening a file used to exit 6 ("network failure").
func TestE2EFileSystemErrorsAreNotNetwork(t *testing.T) {
	a := newStore(t, "a", "pass-a")
	a.must("put", "notes", "n1", `{"a":1}`)
	dir := t.TempDir()
	notDir := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(notDir, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name     string
		args     []string
		want     int
		contains string
	}{
		{"passphrase file is a directory", []string{"--dir", a.dir, "--passphrase-file", dir, "get", "notes", "n1"}, exitUsage, "is a directory"},
		{"doc import of a directory", []string{"--dir", a.dir, "doc", "import", "notes", "n2", dir}, exitUsage, "is a directory"},
		{"store dir is a file", []string{"--dir", notDir, "get", "notes", "n1"}, exitNotFound, "not a directory"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, errOut, code := runFerry(t, a.env(), c.args...)
			assertOneLine(t, errOut, code, c.want, c.contains)
		})
	}
}

func TestIsNetErrFileSystem(t *testing.T) {
	for _, errno := range []syscall.Errno{syscall.EISDIR, syscall.ENOTDIR, syscall.EACCES, syscall.EIO, syscall.EEXIST} {
		err := &fs.PathError{Op: "open", Path: "x", Err: errno}
		if isNetErr(err) {
			t.Errorf("%v counted as a network failure", err)
		}
		if exitCode(err) == exitNetwork {
			t.Errorf("%v exits %d (network)", err, exitNetwork)
		}
	}
	if !isNetErr(&os.SyscallError{Syscall: "connect", Err: syscall.ECONNREFUSED}) {
		t.Error("ECONNREFUSED is a network failure")
	}
}
