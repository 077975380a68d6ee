package main

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/automerge/automerge-go"
)

// foreignDoc writes a document of a plain Automerge application that
// uses one actor id for all its documents (base, when not nil, is the
// history to continue) with field k set to v, and returns its file.
func foreignDoc(t *testing.T, base []byte, k, v string) (string, []byte) {
	t.Helper()
	d := automerge.New()
	if base != nil {
		var err error
		if d, err = automerge.Load(base); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.SetActorID("a11ce0a11ce0a11ce0a11ce0"); err != nil {
		t.Fatal(err)
	}
	if err := d.Path(k).Set(v); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Commit("edit " + k); err != nil {
		t.Fatal(err)
	}
	b := d.Save()
	f := filepath.Join(t.TempDir(), k+"-"+v+".automerge")
	if err := os.WriteFile(f, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return f, b
}

// TestE2EImportRecordIntoAnother: two records whose histories one actor
// wrote independently (here: two documents of one foreign application,
// imported as two records); `ferry doc import` of one's export into the
// other merges both (it failed with exit 9, "duplicate seq"), and a
// second import of the same file changes nothing. Two versions of one
// document that continue the same history differently under that actor
// cannot merge: exit 2, saying why, the record unchanged.
func TestE2EImportRecordIntoAnother(t *testing.T) {
	a := newStore(t, "a", "pass-a")
	one, base := foreignDoc(t, nil, "x", "1")
	two, _ := foreignDoc(t, nil, "y", "2")
	a.must("doc", "import", "notes", "src", one)
	a.must("doc", "import", "notes", "dst", two)
	doc := filepath.Join(t.TempDir(), "src.automerge")
	a.must("doc", "export", "notes", "src", doc)
	a.must("doc", "import", "notes", "dst", doc)
	got := a.get("notes", "dst")
	if fmt.Sprint(got["x"]) != "1" || fmt.Sprint(got["y"]) != "2" {
		t.Fatalf("after the import: %v", got)
	}
	a.must("doc", "import", "notes", "dst", doc)
	if again := a.get("notes", "dst"); fmt.Sprint(again) != fmt.Sprint(got) {
		t.Fatalf("after importing again: %v, before %v", again, got)
	}

	v1, _ := foreignDoc(t, base, "z", "first")
	v2, _ := foreignDoc(t, base, "z", "second")
	a.must("doc", "import", "notes", "src", v1)
	before := a.get("notes", "src")
	out, errOut, code := a.ferry("doc", "import", "notes", "src", v2)
	assertFailure(t, errOut, code, exitUsage, "share")
	if out != "" {
		t.Fatalf("stdout on failure: %q", out)
	}
	if after := a.get("notes", "src"); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatalf("a refused import changed the record: %v, before %v", after, before)
	}
}
