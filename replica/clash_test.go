package replica

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"filippo.io/age"
	"github.com/automerge/automerge-go"
	"github.com/ferrysync/ferry/crdt"
	"github.com/ferrysync/ferry/errkind"
	"github.com/ferrysync/ferry/storage"
)

// TestImportRecordIntoAnotherOfTheSameReplica: one replica wrote two
// records independently (one Automerge actor, two histories with the same
// sequence numbers: Automerge refuses to merge them, "duplicate seq");
// importing one's export into the other merges it as a fork under fresh
// actors: both sides' values are kept, importing again changes nothing,
// and the merged record syncs to a peer.
func TestImportRecordIntoAnotherOfTheSameReplica(t *testing.T) {
	e := newEnv(t)
	r, peer := e.replica("a"), e.replica("b")
	ctx := context.Background()
	mustPut(t, r, "notes", "src", map[string]any{"x": 1, "title": "src"})
	mustPut(t, r, "notes", "src", map[string]any{"more": "m"})
	mustPut(t, r, "notes", "dst", map[string]any{"y": 2, "title": "dst"})
	doc, err := r.ExportDoc(ctx, "notes", "src")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.ImportDoc(ctx, "notes", "dst", doc); err != nil {
		t.Fatalf("import into another record of the same replica: %v", err)
	}
	got := mustGet(t, r, "notes", "dst")
	if got["x"] != int64(1) || got["more"] != "m" || got["y"] != int64(2) || got["title"] == nil {
		t.Fatalf("after the import: %#v", got)
	}
	m1, err := r.store.Meta(ctx, "notes", "dst")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.ImportDoc(ctx, "notes", "dst", doc); err != nil {
		t.Fatalf("importing the same document again: %v", err)
	}
	if m2, _ := r.store.Meta(ctx, "notes", "dst"); m2.Seq != m1.Seq {
		t.Fatalf("importing the same document again wrote the record (seq %d -> %d)", m1.Seq, m2.Seq)
	}
	e.sync(r, peer)
	if pg := mustGet(t, peer, "notes", "dst"); pg["x"] != got["x"] || pg["y"] != got["y"] || pg["title"] != got["title"] {
		t.Fatalf("the peer holds %#v, want %#v", pg, got)
	}
}

// TestImportRefusesADivergedSharedHistory: a record copied into another
// (same history), then both edited by the same actor: their histories
// share the actor's first changes and then differ. Importing one into the
// other is refused with ErrInvalid (crdt.ErrActorClash) that says why,
// and nothing is written.
func TestImportRefusesADivergedSharedHistory(t *testing.T) {
	e := newEnv(t)
	r := e.replica("a")
	ctx := context.Background()
	mustPut(t, r, "notes", "src", map[string]any{"x": 1})
	doc, err := r.ExportDoc(ctx, "notes", "src")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.ImportDoc(ctx, "notes", "copy", doc); err != nil {
		t.Fatal(err)
	}
	mustPut(t, r, "notes", "src", map[string]any{"x": 2})
	mustPut(t, r, "notes", "copy", map[string]any{"x": 3})
	doc, err = r.ExportDoc(ctx, "notes", "src")
	if err != nil {
		t.Fatal(err)
	}
	before, _ := r.ExportDoc(ctx, "notes", "copy")
	_, err = r.ImportDoc(ctx, "notes", "copy", doc)
	if !errors.Is(err, ErrInvalid) || !errors.Is(err, crdt.ErrActorClash) || !errors.Is(err, errkind.Invalid) {
		t.Fatalf("import of a diverged history: %v, want ErrInvalid (crdt.ErrActorClash)", err)
	}
	after, _ := r.ExportDoc(ctx, "notes", "copy")
	if !bytes.Equal(before, after) {
		t.Fatal("a refused import changed the record")
	}
	if got := mustGet(t, r, "notes", "copy"); got["x"] != int64(3) {
		t.Fatalf("after a refused import: %#v", got)
	}
}

// TestRestoreClashingRecordForks: a backup holding a record whose history
// one actor also wrote differently in the restoring replica (the record
// came to the backed-up replica as an import of the restoring replica's
// other record) restores as a fork, keeping both.
func TestRestoreClashingRecordForks(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	target, other := e.replica("t"), e.replica("o")
	mustPut(t, target, "notes", "m", map[string]any{"from": "m"})
	mustPut(t, target, "notes", "n", map[string]any{"own": "n"})
	doc, err := target.ExportDoc(ctx, "notes", "m")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.ImportDoc(ctx, "notes", "n", doc); err != nil {
		t.Fatal(err)
	}
	key, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	var backup bytes.Buffer
	if _, err := other.Backup(ctx, &backup, storage.ExportOptions{Recipients: []age.Recipient{key.Recipient()}}); err != nil {
		t.Fatal(err)
	}
	st, err := target.Restore(ctx, &backup, storage.ImportOptions{Identities: []age.Identity{key}})
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	if got := mustGet(t, target, "notes", "n"); got["own"] != "n" || got["from"] != "m" || st.Merged != 1 {
		t.Fatalf("after the restore (%+v): %#v", st, got)
	}
}

// TestSyncOfClashingForeignHistoriesIsRefusedClearly: two replicas each
// import into the same record a different document of one foreign
// Automerge actor (an application that uses one actor per device). The
// histories cannot merge: the session fails with ErrActorClash (an
// invalid-input error naming the record), not a protocol violation, and
// neither record changes.
func TestSyncOfClashingForeignHistoriesIsRefusedClearly(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	a, b := e.replica("a"), e.replica("b")
	foreign := func(v string) []byte {
		d := automerge.New()
		if err := d.SetActorID("0f0f0f0f0f0f0f0f"); err != nil {
			t.Fatal(err)
		}
		if err := d.Path("v").Set(v); err != nil {
			t.Fatal(err)
		}
		if _, err := d.Commit("edit"); err != nil {
			t.Fatal(err)
		}
		return d.Save()
	}
	if _, err := a.ImportDoc(ctx, "notes", "r", foreign("one")); err != nil {
		t.Fatal(err)
	}
	if _, err := b.ImportDoc(ctx, "notes", "r", foreign("two")); err != nil {
		t.Fatal(err)
	}
	_, _, errA, errB := e.trySync(a, b)
	var clash error
	for _, err := range []error{errA, errB} {
		if errors.Is(err, crdt.ErrActorClash) {
			clash = err
		}
		if errors.Is(err, ErrProtocol) {
			t.Fatalf("a clash of histories reported as a protocol violation: %v", err)
		}
	}
	if clash == nil || !errors.Is(clash, errkind.Invalid) {
		t.Fatalf("sync of clashing histories: %v / %v, want crdt.ErrActorClash", errA, errB)
	}
	if ga, gb := mustGet(t, a, "notes", "r"), mustGet(t, b, "notes", "r"); ga["v"] != "one" || gb["v"] != "two" {
		t.Fatalf("after the refused merge: %#v / %#v", ga, gb)
	}
}
