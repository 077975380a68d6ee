package main

// Adversarial end-to-end cases found by trying to break the CLI with
// inputs of the same kinds as issues 11 and 12's examples.

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
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

// TestE2ETrustVerbatimCollections: collection names with a comma or with
// leading and trailing spaces are valid, so they must be grantable. The
// comma-separated --collections trims and splits (" notes " granted
// "notes", another collection, without a word); --collection takes one
// name verbatim, and a record in such a collection syncs.
func TestE2ETrustVerbatimCollections(t *testing.T) {
	a, b := newStore(t, "a", "pass-a"), newStore(t, "b", "pass-b")
	aid, bid := a.id(), b.id()
	names := []string{" notes ", "a,b", "notes"}
	for i, c := range names {
		a.must("put", c, "r", fmt.Sprintf(`{"n":%d}`, i))
	}
	for _, s := range []struct {
		st   *store
		peer string
	}{{a, bid}, {b, aid}} {
		out := s.st.must("trust", s.peer, "--collection", " notes ", "--collection", "a,b")
		for _, want := range []string{": " + " notes " + " to ", ": a,b to "} {
			if !strings.Contains(out, want) {
				t.Fatalf("trust output %q lacks %q", out, want)
			}
		}
	}
	syncTo(t, b, a)
	for i, c := range names[:2] {
		if got := b.get(c, "r"); fmt.Sprint(got["n"]) != fmt.Sprint(i) {
			t.Fatalf("b: %q/r = %v, want n=%d", c, got, i)
		}
	}
	// "notes" was never granted: it must not have synced.
	_, errOut, code := b.ferry("get", "notes", "r")
	assertOneLine(t, errOut, code, exitNotFound, "not found")
}

// TestE2ECommandLineErrorsOneLine: every command-line error is one line on
// stderr with exit 2: a global flag whose name holds a newline (it was
// printed raw, two lines), and help for a command that does not exist (it
// printed the overview and exited 0, as if the command had been found).
func TestE2ECommandLineErrorsOneLine(t *testing.T) {
	env := baseEnv(t)
	for _, c := range []struct {
		name     string
		args     []string
		contains string
	}{
		{"global flag with a newline", []string{"--bo\ngus", "get", "c", "r"}, "flag provided but not defined"},
		{"help for an unknown command", []string{"help", "frobnicate"}, `unknown command "frobnicate"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			out, errOut, code := runFerry(t, env, c.args...)
			assertOneLine(t, errOut, code, exitUsage, c.contains)
			if out != "" {
				t.Fatalf("stdout %q, want nothing", out)
			}
		})
	}
}

// TestE2EShareRulesErrorsOneLine: a share rules file that is bad, or names
// no rules for the collection, is bad input found in a file, not a bad
// command line: one line naming the file, exit 2, no synopsis (as for
// ferry-policy.json). An invalid collection name is reported as such, not
// as a rules file lacking rules for it.
func TestE2EShareRulesErrorsOneLine(t *testing.T) {
	a := newStore(t, "a", "pass-a")
	rules := filepath.Join(t.TempDir(), "rules.json")
	bad := filepath.Join(t.TempDir(), "bad.json")
	for f, body := range map[string]string{rules: "[]", bad: "{"} {
		if err := os.WriteFile(f, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		name     string
		args     []string
		contains string
	}{
		{"no rules for the collection", []string{"share", "usage", "--to", "http://127.0.0.1:1/", "--rules", rules}, "share rules " + rules + " name no rules"},
		{"rules not JSON", []string{"share", "usage", "--to", "http://127.0.0.1:1/", "--rules", bad}, "share rules " + bad},
		{"invalid collection", []string{"share", "a\tb", "--to", "http://127.0.0.1:1/", "--rules", rules}, "control character U+0009"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, errOut, code := a.ferry(c.args...)
			assertOneLine(t, errOut, code, exitUsage, c.contains)
		})
	}
}

// TestE2EMalformedAddressIsInput: a malformed address (no port, a port
// out of range, a URL scheme ferry does not speak) is invalid input, exit
// 2; it used to exit 6 because *net.AddrError is a net.Error. An address
// that is well formed but unreachable stays a network failure.
func TestE2EMalformedAddressIsInput(t *testing.T) {
	a := newStore(t, "a", "pass-a")
	for _, c := range []struct {
		args     []string
		contains string
	}{
		{[]string{"sync", "127.0.0.1"}, "missing port"},
		{[]string{"sync", "127.0.0.1:99999"}, "invalid port"},
		{[]string{"sync", "ftp://127.0.0.1:1"}, "too many colons"},
		{[]string{"serve", "--listen", "nope"}, "missing port"},
	} {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			_, errOut, code := a.ferry(c.args...)
			assertOneLine(t, errOut, code, exitUsage, c.contains)
		})
	}
	_, errOut, code := runFerry(t, baseEnv(t), "relay", "--listen", "nope", "--dir", t.TempDir())
	assertOneLine(t, errOut, code, exitUsage, "missing port")
}

// TestE2EResolveBadPick: a candidate index out of range, or a --value
// ferry cannot store, is invalid input (exit 2, one line), and the
// conflict stays open.
func TestE2EResolveBadPick(t *testing.T) {
	a, _, _ := conflictPair(t, `{"version":1,"default":{"policy":"user","deadline":"24h"}}`, nil, nil)
	cs := a.conflicts()
	if len(cs) != 1 {
		t.Fatalf("%d conflicts, want 1", len(cs))
	}
	id := cs[0].ID
	for _, c := range []struct {
		args     []string
		contains string
	}{
		{[]string{"resolve", id, "--pick", "2"}, "candidates"},
		{[]string{"resolve", id, "--pick", "99999999999999999999"}, "pick"},
		{[]string{"resolve", id, "--value", `{"$float":"NaN"}`}, "non-finite"},
	} {
		t.Run(strings.Join(c.args[2:], " "), func(t *testing.T) {
			_, errOut, code := a.ferry(c.args...)
			assertFailure(t, errOut, code, exitUsage, c.contains)
		})
	}
	if n := len(a.conflicts()); n != 1 {
		t.Fatalf("%d conflicts open after refused decisions, want 1", n)
	}
}

// TestE2ENegativeExpiryRefused: a grant asked to lapse after a negative
// duration (a typo, "-1h") was recorded as a grant until revoked: more
// consent than the user gave. It is invalid input, and nothing is granted.
func TestE2ENegativeExpiryRefused(t *testing.T) {
	a, b := newStore(t, "a", "pass-a"), newStore(t, "b", "pass-b")
	for _, c := range []struct {
		args     []string
		contains string
	}{
		{[]string{"trust", b.id(), "--collections", "notes", "--expires", "-5m"}, "negative"},
		{[]string{"consent", "grant", "usage", "--to", "http://127.0.0.1:1/", "--purpose", "improve-model-quality", "--expires", "-1h"}, "negative"},
	} {
		t.Run(c.args[0], func(t *testing.T) {
			_, errOut, code := a.ferry(c.args...)
			assertFailure(t, errOut, code, exitUsage, c.contains)
		})
	}
	if out := a.must("consent", "list", "--json"); strings.TrimSpace(out) != "[]" && strings.TrimSpace(out) != "null" {
		t.Fatalf("grants recorded after refused requests: %s", out)
	}
}

// TestE2ENonPositiveDurations: sync --timeout 0 failed at once as a
// network failure (exit 6) without trying, and serve --relay --interval 0
// synced in a loop without pause, hammering the relay. Both are invalid
// input.
func TestE2ENonPositiveDurations(t *testing.T) {
	a := newStore(t, "a", "pass-a")
	for _, args := range [][]string{
		{"sync", "127.0.0.1:1", "--timeout", "0s"},
		{"sync", "127.0.0.1:1", "--timeout", "-1s"},
		{"serve", "--relay", "http://127.0.0.1:1", "--interval", "0s"},
		{"serve", "--relay", "http://127.0.0.1:1", "--interval", "-1m"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			_, errOut, code := a.ferry(args...)
			assertFailure(t, errOut, code, exitUsage, "positive duration")
		})
	}
}
