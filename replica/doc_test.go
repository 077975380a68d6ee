package replica

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/automerge/automerge-go"
	"github.com/ferrysync/ferry/crdt"
)

// TestDocExportImportWithPlainAutomerge: records move to and from other
// Automerge applications as standard documents, both ways, and an import
// merges with what the record already holds.
func TestDocExportImportWithPlainAutomerge(t *testing.T) {
	e := newEnv(t)
	r := e.replica("a")
	ctx := context.Background()

	// A document written by a plain Automerge application.
	plain := automerge.New()
	if err := plain.Path("title").Set("from another app"); err != nil {
		t.Fatal(err)
	}
	if err := plain.Path("tags").Set([]any{"x", "y"}); err != nil {
		t.Fatal(err)
	}
	if _, err := plain.Commit("plain edit"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.ImportDoc(ctx, "notes", "shared", plain.Save()); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"title": "from another app", "tags": []any{"x", "y"}}
	if got := mustGet(t, r, "notes", "shared"); !reflect.DeepEqual(got, want) {
		t.Fatalf("imported %#v, want %#v", got, want)
	}

	// ferry edits it; the other app loads ferry's export and sees the edit.
	mustPut(t, r, "notes", "shared", map[string]any{"done": true})
	exported, err := r.ExportDoc(ctx, "notes", "shared")
	if err != nil {
		t.Fatal(err)
	}
	back, err := automerge.Load(exported)
	if err != nil {
		t.Fatal(err)
	}
	if v, err := back.Path("done").Get(); err != nil || v.Kind() != automerge.KindBool || !v.Bool() {
		t.Fatalf("the other app reads done = %v (%v)", v, err)
	}

	// Meanwhile the other app edited its copy: importing merges, losing
	// neither side.
	if err := plain.Path("title").Set("renamed elsewhere"); err != nil {
		t.Fatal(err)
	}
	if _, err := plain.Commit("plain rename"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.ImportDoc(ctx, "notes", "shared", plain.Save()); err != nil {
		t.Fatal(err)
	}
	got := mustGet(t, r, "notes", "shared")
	if got["title"] != "renamed elsewhere" || got["done"] != true {
		t.Fatalf("after merging the other app's edit: %#v", got)
	}

	// Garbage is refused with a clear error and changes nothing.
	if _, err := r.ImportDoc(ctx, "notes", "shared", []byte("not an automerge document")); !errors.Is(err, crdt.ErrBadDocument) {
		t.Fatalf("garbage import: %v", err)
	}
	if _, err := r.ExportDoc(ctx, "notes", "missing"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("export of a missing record: %v", err)
	}
	if after := mustGet(t, r, "notes", "shared"); !reflect.DeepEqual(after, got) {
		t.Fatalf("a refused import changed the record: %#v", after)
	}
}

// TestListOrderAndPages: List sorts by id or by update time (newest
// first), pages with a limit and a cursor without gaps or repeats, and
// leaves deleted records out unless asked.
func TestListOrderAndPages(t *testing.T) {
	e := newEnv(t)
	r := e.replica("a")
	ctx := context.Background()
	for _, id := range []string{"c", "a", "e", "b", "d"} {
		mustPut(t, r, "notes", id, map[string]any{"v": id})
		e.clock.Advance(time.Minute)
	}
	mustPut(t, r, "notes", "a", map[string]any{"v": "touched last"})
	if err := r.Delete(ctx, "notes", "e"); err != nil {
		t.Fatal(err)
	}
	ids := func(p Page) (out []string) {
		for _, it := range p.Items {
			out = append(out, it.ID)
		}
		return out
	}
	all, err := r.List(ctx, "notes", ListOptions{})
	if err != nil || !reflect.DeepEqual(ids(all), []string{"a", "b", "c", "d"}) {
		t.Fatalf("by id: %v %v", ids(all), err)
	}
	withDeleted, _ := r.List(ctx, "notes", ListOptions{Deleted: true})
	if len(withDeleted.Items) != 5 {
		t.Fatalf("with deleted: %v", ids(withDeleted))
	}
	// By update time, newest first, two at a time.
	var seen []string
	opts := ListOptions{Order: ByUpdated, Limit: 2}
	for {
		p, err := r.List(ctx, "notes", opts)
		if err != nil {
			t.Fatal(err)
		}
		seen = append(seen, ids(p)...)
		if p.Next == "" {
			break
		}
		opts.After = p.Next
	}
	if want := []string{"a", "d", "b", "c"}; !reflect.DeepEqual(seen, want) {
		t.Fatalf("pages by update time: %v, want %v", seen, want)
	}
	if _, err := r.List(ctx, "notes", ListOptions{After: "%%%"}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad cursor: %v", err)
	}
}
