package replica

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/automerge/automerge-go"
	"github.com/ferrysync/ferry/crdt"
	"github.com/ferrysync/ferry/policy"
	"github.com/ferrysync/ferry/storage"
)

// userSet is the user policy with a 24 h deadline for everything.
func userSet(o *Options) {
	o.Policies = policy.NewSet(policy.Rule{Policy: policy.User, Deadline: policy.Duration(24 * time.Hour)})
}

// titleConflict makes a and b set "title" concurrently and syncs them, so
// that both queue the same conflict; it returns its id.
func titleConflict(t *testing.T, e *testEnv, a, b *Replica) string {
	t.Helper()
	ctx := context.Background()
	mustPut(t, a, "notes", "n", map[string]any{"title": "base"})
	e.sync(a, b)
	mustPut(t, a, "notes", "n", map[string]any{"title": "from-a"})
	e.clock.Advance(time.Second)
	mustPut(t, b, "notes", "n", map[string]any{"title": "from-b"})
	e.sync(a, b)
	e.sync(a, b)
	qa, err := a.Conflicts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	qb, err := b.Conflicts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(qa) != 1 || len(qb) != 1 || qa[0].ID() != qb[0].ID() {
		t.Fatalf("queues: a %v, b %v", conflictIDs(qa), conflictIDs(qb))
	}
	// The queue says what the record shows: the provisional winner.
	if got := mustGet(t, a, "notes", "n")["title"]; qa[0].Conflict.Candidates[qa[0].Provisional].Value != got {
		t.Fatalf("queue shows candidate %d, record shows %v", qa[0].Provisional, got)
	}
	return qa[0].ID()
}

func openConflicts(t *testing.T, r *Replica) int {
	t.Helper()
	q, err := r.Conflicts(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return len(q)
}

func auditedAs(t *testing.T, r *Replica, id string, by policy.Decider) bool {
	t.Helper()
	trail, err := r.Audit(context.Background(), policy.Filter{ConflictID: id})
	if err != nil {
		t.Fatal(err)
	}
	for _, rec := range trail {
		if rec.By == by {
			return true
		}
	}
	return false
}

// TestNewerWriteClosesConflict is issue 11 part 4's example: after the
// conflict is queued, one device sets the title to "final" and syncs. The
// conflict closes on both (audited, announced), and picking an old
// candidate is refused with ErrConflictStale: "final" stays everywhere.
func TestNewerWriteClosesConflict(t *testing.T) {
	e := newEnv(t)
	a, b := e.replica("a", userSet), e.replica("b", userSet)
	ctx := context.Background()
	id := titleConflict(t, e, a, b)
	wa := a.Watch(ctx)
	wb := b.Watch(ctx)

	e.clock.Advance(time.Minute)
	mustPut(t, a, "notes", "n", map[string]any{"title": "final"})
	// Closed at once on the writer, by its local write.
	if n := openConflicts(t, a); n != 0 {
		t.Fatalf("a still lists %d conflicts after a newer write", n)
	}
	waitConflictEvent(t, wa, id, "newer-write")
	e.sync(a, b)
	if n := openConflicts(t, b); n != 0 {
		t.Fatalf("b still lists %d conflicts after receiving the newer write", n)
	}
	waitConflictEvent(t, wb, id, "newer-write")
	for _, r := range []*Replica{a, b} {
		for n := range 2 {
			if err := r.ResolvePick(ctx, id, n); !errors.Is(err, ErrConflictStale) {
				t.Fatalf("%s pick %d of a superseded conflict: %v", r.Name(), n, err)
			}
		}
		if err := r.ResolveValue(ctx, id, "other"); !errors.Is(err, ErrConflictStale) {
			t.Fatalf("%s value for a superseded conflict: %v", r.Name(), err)
		}
		if !auditedAs(t, r, id, policy.ByNewerWrite) {
			t.Fatalf("%s: no audit record for the superseded conflict", r.Name())
		}
	}
	e.sync(a, b)
	for _, r := range []*Replica{a, b} {
		if got := mustGet(t, r, "notes", "n")["title"]; got != "final" {
			t.Fatalf("%s title %v, want final", r.Name(), got)
		}
	}
	// A deadline sweep long after decides nothing and writes nothing.
	e.clock.Advance(48 * time.Hour)
	seq := b.store.LastSeq()
	if n, err := b.SweepConflicts(ctx); err != nil || n != 0 {
		t.Fatalf("sweep of a closed conflict decided %d (%v)", n, err)
	}
	if b.store.LastSeq() != seq {
		t.Fatal("sweep wrote")
	}
}

func waitConflictEvent(t *testing.T, ch <-chan Event, id, reason string) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case ev := <-ch:
			if ev.Kind == EventConflict && ev.ID == id && ev.Reason == reason {
				return
			}
		case <-timeout:
			t.Fatalf("no conflict event %s for %s", reason, id)
		}
	}
}

// TestNewerWriteKinds: every kind of newer write closes the conflict on
// the replica that makes it and on the one that receives it: a delete of
// the field, of the whole record, a Put of a parent, an Update edit, and
// an edit by a plain Automerge application imported as a document.
func TestNewerWriteKinds(t *testing.T) {
	ctx := context.Background()
	cases := map[string]func(t *testing.T, w *Replica){
		"delete field": func(t *testing.T, w *Replica) {
			if err := w.Update(ctx, "notes", "n", func(d *crdt.Doc) error { return d.Delete("title") }); err != nil {
				t.Fatal(err)
			}
		},
		"delete record": func(t *testing.T, w *Replica) {
			if err := w.Delete(ctx, "notes", "n"); err != nil {
				t.Fatal(err)
			}
		},
		"same value as a candidate": func(t *testing.T, w *Replica) {
			mustPut(t, w, "notes", "n", map[string]any{"title": "from-a"})
		},
		"plain automerge client": func(t *testing.T, w *Replica) {
			raw, err := w.ExportDoc(ctx, "notes", "n")
			if err != nil {
				t.Fatal(err)
			}
			doc, err := automerge.Load(raw)
			if err != nil {
				t.Fatal(err)
			}
			if err := doc.RootMap().Set("title", "from-js"); err != nil {
				t.Fatal(err)
			}
			if _, err := doc.Commit("plain edit"); err != nil {
				t.Fatal(err)
			}
			if _, err := w.ImportDoc(ctx, "notes", "n", doc.Save()); err != nil {
				t.Fatal(err)
			}
		},
	}
	for name, write := range cases {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t)
			a, b := e.replica("a", userSet), e.replica("b", userSet)
			id := titleConflict(t, e, a, b)
			e.clock.Advance(time.Minute)
			write(t, a)
			if n := openConflicts(t, a); n != 0 {
				t.Fatalf("writer lists %d conflicts", n)
			}
			e.sync(a, b)
			if n := openConflicts(t, b); n != 0 {
				t.Fatalf("receiver lists %d conflicts", n)
			}
			if err := b.ResolvePick(ctx, id, 0); !errors.Is(err, ErrConflictStale) {
				t.Fatalf("stale pick: %v", err)
			}
		})
	}
}

// TestUnrelatedWriteKeepsConflict: a write to another field, or made
// concurrently with the conflict rather than after it, does not close it.
func TestUnrelatedWriteKeepsConflict(t *testing.T) {
	e := newEnv(t)
	a, b := e.replica("a", userSet), e.replica("b", userSet)
	ctx := context.Background()
	id := titleConflict(t, e, a, b)
	mustPut(t, a, "notes", "n", map[string]any{"body": "more"})
	e.sync(a, b)
	for _, r := range []*Replica{a, b} {
		if n := openConflicts(t, r); n != 1 {
			t.Fatalf("%s lists %d conflicts after an unrelated write", r.Name(), n)
		}
	}
	if err := b.ResolvePick(ctx, id, 0); err != nil {
		t.Fatal(err)
	}
}

// TestConflictArrivesSuperseded: a third replica that receives the
// conflict's provisional resolution together with the newer write never
// lists it.
func TestConflictArrivesSuperseded(t *testing.T) {
	e := newEnv(t)
	a, b, c := e.replica("a", userSet), e.replica("b", userSet), e.replica("c", userSet)
	ctx := context.Background()
	id := titleConflict(t, e, a, b)
	mustPut(t, a, "notes", "n", map[string]any{"title": "final"})
	e.sync(c, a)
	if n := openConflicts(t, c); n != 0 {
		t.Fatalf("c lists %d conflicts", n)
	}
	if err := c.ResolvePick(ctx, id, 0); !errors.Is(err, ErrConflictStale) {
		t.Fatalf("c pick: %v", err)
	}
	if got := mustGet(t, c, "notes", "n")["title"]; got != "final" {
		t.Fatalf("c title %v", got)
	}
}

// TestRestoreSupersedes: a restored backup that holds a newer write to a
// conflict's field closes the conflict.
func TestRestoreSupersedes(t *testing.T) {
	e := newEnv(t)
	a, b := e.replica("a", userSet), e.replica("b", userSet)
	ctx := context.Background()
	id := titleConflict(t, e, a, b)
	mustPut(t, b, "notes", "n", map[string]any{"title": "final"})
	var buf bytes.Buffer
	key, err := age.GenerateX25519Identity() // scrypt passphrases take seconds
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Backup(ctx, &buf, storage.ExportOptions{Recipients: []age.Recipient{key.Recipient()}}); err != nil {
		t.Fatal(err)
	}
	if n := openConflicts(t, a); n != 1 {
		t.Fatalf("a lists %d before the restore", n)
	}
	if _, err := a.Restore(ctx, &buf, storage.ImportOptions{Identities: []age.Identity{key}}); err != nil {
		t.Fatal(err)
	}
	if closed, _, _ := a.queue.ClosedBy(ctx, id); closed != policy.ByNewerWrite {
		t.Fatalf("a: conflict closed by %q after the restore", closed)
	}
	if got := mustGet(t, a, "notes", "n")["title"]; got != "final" {
		t.Fatalf("a title %v", got)
	}
}

// TestSweepRunsAtOpen: a conflict whose deadline passed while the replica
// was closed is decided when it opens, with no call to SweepConflicts.
func TestSweepRunsAtOpen(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	opts := func(o *Options) {
		userSet(o)
		o.InMemory = false
		o.NoSync = true
	}
	a := openAt(t, e, dir, "a", opts)
	b := e.replica("b", userSet)
	id := titleConflict(t, e, a, b)
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(25 * time.Hour)
	a = openAt(t, e, dir, "a", opts)
	if n := openConflicts(t, a); n != 0 {
		t.Fatalf("%d conflicts open after reopening past the deadline", n)
	}
	if !auditedAs(t, a, id, policy.ByFallback) {
		t.Fatal("no fallback decision in the audit trail")
	}
}

func openAt(t *testing.T, e *testEnv, dir, name string, mod ...func(*Options)) *Replica {
	t.Helper()
	opts := Options{Passphrase: []byte("pw-" + name), KDF: storage.TestKDF(), Name: name, Now: e.clock.Now}
	for _, m := range mod {
		m(&opts)
	}
	r, err := Open(context.Background(), dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	for _, o := range e.replicas {
		if o.ID() != r.ID() {
			pairAll(t, []*Replica{r, o}, testCollections...)
		}
	}
	found := false
	for i, o := range e.replicas {
		if o.ID() == r.ID() {
			e.replicas[i], found = r, true
		}
	}
	if !found {
		e.replicas = append(e.replicas, r)
	}
	return r
}

// TestLoopSweeps: the background loop decides an expired conflict by
// itself (fake clock, fake sweep timer; no SweepConflicts call).
func TestLoopSweeps(t *testing.T) {
	e := newEnv(t)
	a, b := e.replica("a", userSet), e.replica("b", userSet)
	ctx := context.Background()
	id := titleConflict(t, e, a, b)
	events := a.Watch(ctx)
	fire := make(chan time.Time)
	asked := make(chan time.Duration, 16)
	after := func(d time.Duration) <-chan time.Time { asked <- d; return fire }
	if err := a.StartSync(LoopOptions{SweepInterval: time.Minute, SweepAfter: after}); err != nil {
		t.Fatal(err)
	}
	defer a.StopSync()
	<-asked // the sweep at start ran: nothing was due
	if n := openConflicts(t, a); n != 1 {
		t.Fatalf("%d open before the deadline", n)
	}
	e.clock.Advance(25 * time.Hour)
	fire <- time.Time{}
	waitConflictEvent(t, events, id, "fallback")
	if d := <-asked; d != time.Minute {
		t.Fatalf("sweep interval %v", d)
	}
	if n := openConflicts(t, a); n != 0 {
		t.Fatalf("%d open after the loop's sweep", n)
	}
}

// offsetClock reads a shared fake clock shifted by off: a device whose
// clock is wrong by off.
type offsetClock struct {
	base *fakeClock
	off  time.Duration
}

func (c offsetClock) Now() time.Time { return c.base.Now().Add(c.off) }

// TestClockAheadDoesNotWinConflicts is issue 11 part 6's example: a device
// whose clock runs 24 h ahead writes a title; an hour later (real time)
// another device, which has not seen it, writes the title too. Under the
// timestamp policy the later edit wins on every replica, the fast device
// included, and the skew is reported in SyncStats, Status and Watch.
func TestClockAheadDoesNotWinConflicts(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	a := e.replica("a")
	fast := e.replica("fast", func(o *Options) { o.Now = offsetClock{e.clock, 24 * time.Hour}.Now })
	late := e.replica("late")
	mustPut(t, a, "notes", "n", map[string]any{"title": "base"})
	e.sync(a, fast)
	e.sync(a, late)
	watch := a.Watch(ctx)

	mustPut(t, fast, "notes", "n", map[string]any{"title": "from-fast"})
	e.clock.Advance(time.Minute)
	sa, _ := e.sync(a, fast) // a receives the fast write a minute after it was made
	if len(sa.ClockSkew) != 1 || sa.ClockSkew[0].Replica != fast.ID() ||
		sa.ClockSkew[0].Ahead < 23*time.Hour || sa.ClockSkew[0].Ahead > 24*time.Hour {
		t.Fatalf("SyncStats.ClockSkew = %+v", sa.ClockSkew)
	}
	select {
	case ev := <-watch:
		for ev.Kind != EventClockSkew {
			ev = <-watch
		}
		if ev.Skew == nil || ev.Skew.Replica != fast.ID() || ev.Peer != fast.ID() {
			t.Fatalf("skew event %+v", ev)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no EventClockSkew")
	}
	all, peers := a.Status(ctx)
	if len(all.ClockSkews) != 1 || all.ClockSkews[0].Replica != fast.ID() {
		t.Fatalf("Status().ClockSkews = %+v", all.ClockSkews)
	}
	for _, p := range peers {
		if (p.ClockSkew != nil) != (p.Peer == fast.ID()) {
			t.Fatalf("peer %s skew %+v", p.Peer, p.ClockSkew)
		}
	}

	e.clock.Advance(time.Hour)
	mustPut(t, late, "notes", "n", map[string]any{"title": "from-late"})
	for range 2 {
		e.sync(a, late)
		e.sync(a, fast)
		e.sync(late, fast)
	}
	for _, r := range []*Replica{a, fast, late} {
		if got := mustGet(t, r, "notes", "n")["title"]; got != "from-late" {
			t.Fatalf("%s title %v: the fast clock won", r.Name(), got)
		}
	}
	// Quiescence: one more exchange writes nothing.
	seqs := []uint64{a.store.LastSeq(), fast.store.LastSeq(), late.store.LastSeq()}
	e.sync(a, late)
	e.sync(a, fast)
	e.sync(late, fast)
	for i, r := range []*Replica{a, fast, late} {
		if r.store.LastSeq() != seqs[i] {
			t.Fatalf("%s wrote during a quiescent exchange", r.Name())
		}
	}
	// The report survives a restart of the status (persisted).
	a.status.mu.Lock()
	a.status.clocks = nil
	a.status.mu.Unlock()
	if err := a.loadSkews(ctx); err != nil {
		t.Fatal(err)
	}
	if all, _ := a.Status(ctx); len(all.ClockSkews) != 1 {
		t.Fatalf("skews after reload: %+v", all.ClockSkews)
	}
}

// TestClockAheadWithinBound: a clock a minute ahead is within the default
// bound: nothing is clamped or reported, and its later write wins.
func TestClockAheadWithinBound(t *testing.T) {
	e := newEnv(t)
	a := e.replica("a")
	fast := e.replica("fast", func(o *Options) { o.Now = offsetClock{e.clock, time.Minute}.Now })
	mustPut(t, a, "notes", "n", map[string]any{"title": "base"})
	e.sync(a, fast)
	mustPut(t, fast, "notes", "n", map[string]any{"title": "from-fast"})
	mustPut(t, a, "notes", "n", map[string]any{"title": "from-a"})
	sa, _ := e.sync(a, fast)
	if len(sa.ClockSkew) != 0 {
		t.Fatalf("skew reported within the bound: %+v", sa.ClockSkew)
	}
	for _, r := range []*Replica{a, fast} {
		if got := mustGet(t, r, "notes", "n")["title"]; got != "from-fast" {
			t.Fatalf("%s title %v", r.Name(), got)
		}
	}
}

// TestSlowClockDoesNotClamp: a device whose clock runs a day behind sees
// every other writer ahead. It reports its own clock as behind and writes
// no clock notes, so the records it passes on keep the order the right
// clocks gave them: the later of two concurrent titles still wins.
func TestSlowClockDoesNotClamp(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	h1, h2 := e.replica("h1"), e.replica("h2")
	slow := e.replica("slow", func(o *Options) { o.Now = offsetClock{e.clock, -24 * time.Hour}.Now })
	mustPut(t, h1, "notes", "n", map[string]any{"title": "base"})
	e.sync(h1, h2)
	e.sync(h2, slow)
	mustPut(t, h2, "notes", "other", map[string]any{"v": 1})
	e.sync(h2, slow) // slow now sees h1 and h2 ahead
	notes := func() int {
		unlock := slow.lockRecords(recordKey("notes", "n"))
		defer unlock()
		d, _, err := slow.loadDoc(ctx, "notes", "n")
		if err != nil {
			t.Fatal(err)
		}
		cl, err := d.ClockClamps()
		if err != nil {
			t.Fatal(err)
		}
		return len(cl)
	}
	// With one writer ahead and itself, it could not tell whose clock is
	// wrong and noted h1's first write (harmless between two devices).
	early := notes()
	e.clock.Advance(time.Minute)
	mustPut(t, h1, "notes", "n", map[string]any{"title": "earlier"})
	e.clock.Advance(time.Minute)
	mustPut(t, h2, "notes", "n", map[string]any{"title": "later"})
	e.sync(h2, slow) // slow receives the later title, a day "ahead" of it
	e.clock.Advance(time.Minute)
	e.sync(slow, h1) // and the earlier one a minute after, from h1
	e.sync(h1, h2)
	e.sync(slow, h2)
	for _, r := range []*Replica{h1, h2, slow} {
		if got := mustGet(t, r, "notes", "n")["title"]; got != "later" {
			t.Fatalf("%s title %v, want the later write", r.Name(), got)
		}
	}
	all, _ := slow.Status(ctx)
	if !all.ClockBehind || len(all.ClockSkews) != 2 {
		t.Fatalf("slow status: behind=%v skews=%+v", all.ClockBehind, all.ClockSkews)
	}
	for _, r := range []*Replica{h1, h2} {
		if all, _ := r.Status(ctx); all.ClockBehind || len(all.ClockSkews) != 0 {
			t.Fatalf("%s status: behind=%v skews=%+v", r.Name(), all.ClockBehind, all.ClockSkews)
		}
	}
	if n := notes(); n != early {
		t.Fatalf("slow wrote %d clock notes once its clock looked behind", n-early)
	}
}

// TestApplyBatchesClockNotes: the clock observations a sync teaches (one
// per writer whose newest write arrives) are written with the batch of
// records, not in a transaction (and fsync) of their own per record:
// records written one after another by one writer each advance its clock,
// and the initial sync of 100,000 such records on disk took 9 minutes.
func TestApplyBatchesClockNotes(t *testing.T) {
	e := newEnv(t)
	a, b := e.replica("a"), e.replica("b")
	const n = 300
	for i := range n {
		e.clock.Advance(time.Millisecond)
		mustPut(t, a, "notes", fmt.Sprintf("n%d", i), map[string]any{"i": int64(i)})
	}
	before := b.store.Commits()
	_, sb := e.sync(a, b)
	if sb.RecordsReceived != n {
		t.Fatalf("b received %d records, want %d", sb.RecordsReceived, n)
	}
	// One batch of records (512 per batch), plus the session's own few
	// writes (reconciliation marker, cursor, status).
	got := b.store.Commits() - before
	t.Logf("%d write transactions on b for %d records", got, n)
	if got > 8 {
		t.Fatalf("the sync committed %d write transactions on b for %d records in one batch", got, n)
	}
	ctx := context.Background()
	b.status.mu.Lock()
	b.status.clocks = nil
	b.status.mu.Unlock()
	if err := b.loadSkews(ctx); err != nil {
		t.Fatal(err)
	}
	b.status.mu.Lock()
	c := b.status.clocks[a.ID()]
	b.status.mu.Unlock()
	if c == nil || c.Latest.IsZero() {
		t.Fatalf("a's clock observation not persisted with the batch: %+v", c)
	}
}
