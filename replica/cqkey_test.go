package replica

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/ferrysync/ferry/internal/amjs"
	"github.com/ferrysync/ferry/policy"
)

// sharedHistoryJS makes two documents from one base (title "t0"): one
// changed to "from a" by actor 0a, one to "from b" by actor 0b, every
// change stamped 2020-09-13 (JS Automerge times are seconds).
const sharedHistoryJS = `
import * as A from "@automerge/automerge"
const base = A.change(A.init({actor: "00000000000000000000000000000001"}), {time: 1600000000}, d => { d.title = "t0" })
const a = A.change(A.clone(base, {actor: "0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a"}), {time: 1600000001}, d => { d.title = "from a" })
const b = A.change(A.clone(base, {actor: "0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b"}), {time: 1600000002}, d => { d.title = "from b" })
process.stdout.write(JSON.stringify({a: Buffer.from(A.save(a)).toString("base64"), b: Buffer.from(A.save(b)).toString("base64")}))
`

// importSharedHistory imports the two documents of sharedHistoryJS into
// notes/x and notes/y of a replica under the user policy (24h deadline),
// so both records meet the same conflict (same conflict id).
func importSharedHistory(t *testing.T, e *testEnv) *Replica {
	t.Helper()
	var docs struct{ A, B string }
	if err := json.Unmarshal(amjs.Run(t, sharedHistoryJS), &docs); err != nil {
		t.Fatal(err)
	}
	a, _ := base64.StdEncoding.DecodeString(docs.A)
	b, _ := base64.StdEncoding.DecodeString(docs.B)
	r := e.replica("r", func(o *Options) {
		o.Policies = policy.NewSet(policy.Rule{Policy: policy.User, Deadline: policy.Duration(24 * time.Hour)})
	})
	ctx := context.Background()
	for _, id := range []string{"x", "y"} {
		if _, err := r.ImportDoc(ctx, "notes", id, a); err != nil {
			t.Fatal(err)
		}
		if n, err := r.ImportDoc(ctx, "notes", id, b); err != nil || n != 1 {
			t.Fatalf("import b into %s: %d conflicts, %v", id, n, err)
		}
	}
	return r
}

// TestConflictsOfRecordsSharingHistory: two records holding the same
// history and the same concurrent edits meet the same conflict id; each
// is queued, listed and resolved on its own (the queue used to be keyed
// by the conflict id alone: the second was dropped, and closing the first
// closed it for good).
func TestConflictsOfRecordsSharingHistory(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	r := importSharedHistory(t, e)
	list, err := r.Conflicts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 {
		t.Fatalf("%d conflicts listed, want notes/x and notes/y: %+v", len(list), list)
	}
	byRecord := map[string]policy.Entry{}
	for _, en := range list {
		byRecord[en.RecordID] = en
	}
	x, y := byRecord["x"], byRecord["y"]
	if x.Conflict.ID != y.Conflict.ID {
		t.Fatalf("conflict ids differ (%s, %s): the test no longer makes records share history", x.Conflict.ID, y.Conflict.ID)
	}
	if x.ID() == y.ID() || x.ID() == "" || y.ID() == "" {
		t.Fatalf("entry ids %q %q", x.ID(), y.ID())
	}
	pick := func(en policy.Entry, want string) int {
		for i, cd := range en.Conflict.Candidates {
			if cd.Value == want {
				return i
			}
		}
		t.Fatalf("no candidate %q in %+v", want, en.Conflict.Candidates)
		return -1
	}
	if err := r.ResolvePick(ctx, x.ID(), pick(x, "from a")); err != nil {
		t.Fatal(err)
	}
	if got := mustGet(t, r, "notes", "x")["title"]; got != "from a" {
		t.Fatalf("x title %v", got)
	}
	list, err = r.Conflicts(ctx)
	if err != nil || len(list) != 1 || list[0].RecordID != "y" || list[0].ID() != y.ID() {
		t.Fatalf("after resolving x: %+v %v", list, err)
	}
	if err := r.ResolvePick(ctx, x.ID(), 0); !errors.Is(err, ErrNoConflict) {
		t.Fatalf("x resolved twice: %v", err)
	}
	if err := r.ResolveValue(ctx, y.ID(), "mine"); err != nil {
		t.Fatal(err)
	}
	if got := mustGet(t, r, "notes", "y")["title"]; got != "mine" {
		t.Fatalf("y title %v", got)
	}
	if got := mustGet(t, r, "notes", "x")["title"]; got != "from a" {
		t.Fatalf("x title changed to %v by y's decision", got)
	}
	if n := openConflicts(t, r); n != 0 {
		t.Fatalf("%d conflicts open", n)
	}
	// The audit trail finds each record's decision by its entry id.
	for _, en := range []policy.Entry{x, y} {
		recs, err := r.Audit(ctx, policy.Filter{ConflictID: en.ID()})
		if err != nil || len(recs) != 1 || recs[0].RecordID != en.RecordID {
			t.Fatalf("audit of %s: %+v %v", en.RecordID, recs, err)
		}
	}
}

// TestImportedConflictDeadline: a conflict between changes made long ago
// (here imported from JS documents of 2020) gets the rule's whole window
// from when this replica detected it, not from the changes' times, so the
// fallback does not decide it at once.
func TestImportedConflictDeadline(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	detected := e.clock.Now()
	r := importSharedHistory(t, e)
	list, err := r.Conflicts(ctx)
	if err != nil || len(list) != 2 {
		t.Fatalf("%+v %v", list, err)
	}
	for _, en := range list {
		if want := detected.Add(24 * time.Hour); en.Deadline.Before(want) {
			t.Fatalf("%s: deadline %v, want from detection (%v) + 24h = %v", en.RecordID, en.Deadline, detected, want)
		}
	}
	if n, err := r.SweepConflicts(ctx); err != nil || n != 0 {
		t.Fatalf("sweep right after import decided %d (%v)", n, err)
	}
	e.clock.Advance(23 * time.Hour)
	if n, err := r.SweepConflicts(ctx); err != nil || n != 0 {
		t.Fatalf("sweep before the deadline decided %d (%v)", n, err)
	}
	e.clock.Advance(2 * time.Hour)
	if n, err := r.SweepConflicts(ctx); err != nil || n != 2 {
		t.Fatalf("sweep after the deadline decided %d (%v)", n, err)
	}
	// The fallback (timestamp) picks the newer JS edit in both records.
	for _, id := range []string{"x", "y"} {
		if got := mustGet(t, r, "notes", id)["title"]; got != "from b" {
			t.Fatalf("%s title %v", id, got)
		}
	}
}
