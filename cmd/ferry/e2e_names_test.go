package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestE2EInvalidNames: a collection name or record id outside the naming
// rule (docs/replica.md) exits 2 with one line on stderr, on every command
// that takes one, and changes nothing; valid names with spaces, '/', ':'
// and non-ASCII letters work. (A NUL cannot reach the binary: argv strings
// end at NUL.)
func TestE2EInvalidNames(t *testing.T) {
	a := newStore(t, "a", "pass-a")
	a.must("put", "notes", "n1", `{"title":"x"}`)
	doc := filepath.Join(t.TempDir(), "n1.automerge")
	a.must("doc", "export", "notes", "n1", doc)
	peer := newStore(t, "b", "pass-b").id()
	long := strings.Repeat("x", 1025)
	bads := []string{"bad\tid", "two\nlines", "\x1b[31mred", "next\u0085line", "bad\xffbyte", long}
	cases := [][]string{}
	for _, bad := range bads { // every kind of invalid name, as a record id
		cases = append(cases, []string{"put", "notes", bad, `{"v":1}`})
	}
	for i, args := range [][]string{ // every command that takes a name, each with one kind
		{"put", "%s", "n2", `{"v":1}`},
		{"get", "notes", "%s"},
		{"del", "notes", "%s"},
		{"list", "%s"},
		{"doc", "import", "notes", "%s", doc},
		{"doc", "export", "%s", "n1", filepath.Join(t.TempDir(), "x.automerge")},
		{"trust", peer, "--collections", "notes,%s"},
	} {
		bad := bads[i%len(bads)]
		for j := range args {
			args[j] = strings.Replace(args[j], "%s", bad, 1)
		}
		cases = append(cases, args)
	}
	for i, args := range cases {
		t.Run(fmt.Sprintf("%d-%s", i, args[0]), func(t *testing.T) {
			out, errOut, code := a.ferry(args...)
			assertFailure(t, errOut, code, exitUsage, "invalid")
			if out != "" {
				t.Fatalf("stdout on failure: %q", out)
			}
		})
	}
	// Nothing was written: one record, no grant to the peer.
	if out := a.must("list", "notes"); len(strings.Split(strings.TrimSpace(out), "\n")) != 1 || !strings.HasPrefix(out, "n1\t") {
		t.Fatalf("list notes: %q", out)
	}
	if out := a.must("consent", "list"); strings.Contains(out, peer) {
		t.Fatalf("a grant was recorded: %s", out)
	}
	// Valid names of every kind work.
	for _, id := range []string{"with spaces", "a/b:c", "Ünïcödé 日本 😀", " padded "} {
		a.must("put", "notes", id, `{"v":1}`)
		if got := a.get("notes", id); fmt.Sprint(got["v"]) != "1" {
			t.Fatalf("get %q: %v", id, got)
		}
	}
	if _, err := os.Stat(doc); err != nil {
		t.Fatal(err)
	}
}
