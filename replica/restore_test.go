package replica

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/ferrysync/ferry/crdt"
	"github.com/ferrysync/ferry/policy"
	"github.com/ferrysync/ferry/storage"
)

// mixedPolicies: notes under the user policy, everything else by timestamp.
func mixedPolicies(o *Options) {
	s := policy.NewSet(policy.Rule{Policy: policy.Timestamp})
	if err := s.SetCollection("notes", policy.Collection{Rule: policy.Rule{Policy: policy.User, Deadline: policy.Duration(24 * time.Hour)}}); err != nil {
		panic(err)
	}
	o.Policies = s
}

// drain returns the record and conflict events already delivered to ch
// (both Sync and Restore publish before they return), without Peer and Seq.
func drain(ch <-chan Event) []string {
	var out []string
	for {
		select {
		case ev := <-ch:
			if ev.Kind == EventRecord || ev.Kind == EventConflict {
				out = append(out, fmt.Sprintf("%v %s/%s deleted=%v %s", ev.Kind, ev.Collection, ev.ID, ev.Deleted, ev.Reason))
			}
		default:
			slices.Sort(out)
			return out
		}
	}
}

// outcome is what a replica shows after taking in B's data.
type outcome struct {
	Queue  []string
	Get    map[string]any
	List   map[string][]RecordInfo
	Events []string
	Audit  []policy.Record
}

func observe(t *testing.T, r *Replica, ch <-chan Event) outcome {
	t.Helper()
	ctx := context.Background()
	o := outcome{Get: map[string]any{}, List: map[string][]RecordInfo{}, Events: drain(ch)}
	q, err := r.Conflicts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range q {
		var cands []any
		for _, c := range e.Conflict.Candidates {
			cands = append(cands, c.Value)
		}
		o.Queue = append(o.Queue, fmt.Sprintf("%s %s/%s %s provisional=%d %v", e.ID(), e.Collection, e.RecordID, e.Conflict.Path, e.Provisional, cands))
	}
	slices.Sort(o.Queue)
	for _, coll := range []string{"notes", "items"} {
		p, err := r.List(ctx, coll, ListOptions{Deleted: true})
		if err != nil {
			t.Fatal(err)
		}
		o.List[coll] = p.Items
		for _, it := range p.Items {
			if it.Deleted {
				if _, err := r.Get(ctx, coll, it.ID); err == nil {
					t.Fatalf("%s/%s: List says deleted, Get reads it", coll, it.ID)
				}
				continue
			}
			o.Get[coll+"/"+it.ID] = mustGet(t, r, coll, it.ID)
		}
	}
	if o.Audit, err = r.Audit(ctx, policy.Filter{}); err != nil {
		t.Fatal(err)
	}
	return o
}

// TestRestoreMatchesSync is issue 17's "one merge path": a backup restored
// over diverged data gives the same conflicts, resolutions, events, audit
// trail and List/Get agreement as syncing the same data from the peer.
func TestRestoreMatchesSync(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	persist := func(o *Options) { mixedPolicies(o); o.InMemory = false; o.NoSync = true }
	dirA := t.TempDir()
	a := openAt(t, e, dirA, "a", persist)
	b := e.replica("b", mixedPolicies)

	mustPut(t, a, "notes", "n", map[string]any{"title": "base", "body": "base"})
	mustPut(t, a, "items", "i", map[string]any{"qty": 1, "label": "base"})
	mustPut(t, a, "items", "d", map[string]any{"qty": 5})
	e.sync(a, b)

	// Diverge: both edit the same fields under each policy; b deletes one
	// record and creates another.
	e.clock.Advance(time.Second)
	mustPut(t, a, "notes", "n", map[string]any{"title": "from-a", "body": "base"})
	mustPut(t, a, "items", "i", map[string]any{"qty": 2, "label": "base"})
	e.clock.Advance(time.Second)
	mustPut(t, b, "notes", "n", map[string]any{"title": "from-b", "body": "base"})
	mustPut(t, b, "items", "i", map[string]any{"qty": 3, "label": "base"})
	if err := b.Delete(ctx, "items", "d"); err != nil {
		t.Fatal(err)
	}
	mustPut(t, b, "notes", "new", map[string]any{"title": "only-b"})
	e.clock.Advance(time.Second)

	key, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	var backup bytes.Buffer
	if _, err := b.Backup(ctx, &backup, storage.ExportOptions{Recipients: []age.Recipient{key.Recipient()}}); err != nil {
		t.Fatal(err)
	}

	// a2 is a copy of a as it is now.
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	dirA2 := t.TempDir()
	copyDir(t, dirA, dirA2)
	a2 := openAt(t, e, dirA2, "a", persist)
	watch2 := a2.Watch(ctx)
	a = openAt(t, e, dirA, "a", persist)
	watch1 := a.Watch(ctx)

	// Path 1: sync b into a. A session runs both ways: so that b sends
	// only what it holds now (what its backup holds), a shares nothing
	// with b for the session. Path 2: restore b's backup into a2.
	if _, err := a.Unpair(ctx, b.ID()); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Pair(ctx, b.ID(), []string{"c"}, 0); err != nil {
		t.Fatal(err)
	}
	e.sync(a, b)
	st, err := a2.Restore(ctx, &backup, storage.ImportOptions{Identities: []age.Identity{key}})
	if err != nil {
		t.Fatal(err)
	}
	if st.Records != 4 || st.Created != 1 || st.Merged != 3 || st.Conflicts != 2 {
		t.Fatalf("restore stats %+v", st)
	}

	bySync, byRestore := observe(t, a, watch1), observe(t, a2, watch2)
	if len(bySync.Queue) != 1 || len(bySync.Audit) == 0 || len(bySync.Events) == 0 {
		t.Fatalf("the scenario did not diverge as meant: %+v", bySync)
	}
	if !reflect.DeepEqual(bySync, byRestore) {
		t.Fatalf("restore differs from sync:\nsync    %+v\nrestore %+v", bySync, byRestore)
	}
}

// TestRestoreRefusesBadDocumentWhole: a backup holding one record whose
// bytes are not an Automerge document (storage keeps documents as opaque
// bytes, so it cannot tell) is refused before anything is written, even
// the good records ahead of it.
func TestRestoreRefusesBadDocumentWhole(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	a, b := e.replica("a"), e.replica("b")
	mustPut(t, b, "notes", "a-good", map[string]any{"title": "good"})
	if _, err := b.store.Write(ctx, storage.Batch{Records: []storage.RecordWrite{{Collection: "notes", ID: "z-bad", Changes: []byte("not automerge")}}}); err != nil {
		t.Fatal(err)
	}
	key, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	var backup bytes.Buffer
	if _, err := b.Backup(ctx, &backup, storage.ExportOptions{Recipients: []age.Recipient{key.Recipient()}}); err != nil {
		t.Fatal(err)
	}
	seq := a.store.LastSeq()
	watch := a.Watch(ctx)
	_, err = a.Restore(ctx, &backup, storage.ImportOptions{Identities: []age.Identity{key}})
	if !errors.Is(err, storage.ErrBadBackup) || !errors.Is(err, crdt.ErrBadDocument) {
		t.Fatalf("restore of a bad document: %v, want ErrBadBackup and crdt.ErrBadDocument", err)
	}
	if a.store.LastSeq() != seq {
		t.Fatal("a refused restore wrote records")
	}
	if _, err := a.Get(ctx, "notes", "a-good"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("good record of a refused backup: %v", err)
	}
	if evs := drain(watch); len(evs) != 0 {
		t.Fatalf("a refused restore announced %v", evs)
	}
}

// TestRestoreLargeRecords: records whose documents together exceed what one
// Badger transaction takes (1.2 MiB with the default sizes) restore in
// several batches.
func TestRestoreLargeRecords(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	a, b := e.replica("a"), e.replica("b")
	const n = 24
	for i := range n {
		big := make([]byte, 60<<10)
		if _, err := rand.Read(big); err != nil {
			t.Fatal(err)
		}
		mustPut(t, b, "notes", fmt.Sprintf("big%02d", i), map[string]any{"blob": fmt.Sprintf("%x", big)})
	}
	key, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	var backup bytes.Buffer
	if _, err := b.Backup(ctx, &backup, storage.ExportOptions{Recipients: []age.Recipient{key.Recipient()}}); err != nil {
		t.Fatal(err)
	}
	st, err := a.Restore(ctx, &backup, storage.ImportOptions{Identities: []age.Identity{key}})
	if err != nil || st.Created != n {
		t.Fatalf("restore of %d large records: %+v %v", n, st, err)
	}
	for i := range n {
		id := fmt.Sprintf("big%02d", i)
		if !reflect.DeepEqual(mustGet(t, a, "notes", id), mustGet(t, b, "notes", id)) {
			t.Fatalf("%s differs after the restore", id)
		}
	}
}
