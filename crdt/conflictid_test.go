package crdt

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/automerge/automerge-go"
)

// oldConflictID is the id formula of earlier versions, which documents
// name in their resolutions.
func oldConflictID(path string, hs []string) string {
	sum := sha256.Sum256([]byte("ferry-conflict/1\n" + path + "\n" + strings.Join(hs, "\n")))
	return hex.EncodeToString(sum[:16])
}

// TestConflictIDUnambiguous: two conflicts at different paths, or over
// different changes, never share an id, even when a map key holds a
// newline (the separator of the id's input). Ids of paths without a
// newline keep their old value: resolutions stored in documents name them.
func TestConflictIDUnambiguous(t *testing.T) {
	h1, h2 := automerge.ChangeHash{1}, automerge.ChangeHash{2}
	if a, b := conflictID("/x\n"+h1.String(), []automerge.ChangeHash{h2}), conflictID("/x", []automerge.ChangeHash{h1, h2}); a == b {
		t.Fatal("a path holding a newline and a hash shares an id with a shorter path")
	}
	if a, b := conflictID("/x\n", nil), conflictID("/x", []automerge.ChangeHash{}); a == b {
		t.Fatal("trailing newline")
	}
	for _, p := range []string{"/title", "/a/b", "/with space/é", "/"} {
		if got, want := conflictID(p, []automerge.ChangeHash{h2, h1, h2}), oldConflictID(p, []string{h1.String(), h2.String()}); got != want {
			t.Fatalf("id of %q changed: %s, was %s", p, got, want)
		}
	}
}
