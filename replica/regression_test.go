package replica

// Regression tests from a code review: each TestReview* failed on the code
// as reviewed (data never replicating, a cut losing a record, a session
// hanging or refusing for a wrong reason, a large record wedging sync) and
// passes since the fix.

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ferrysync/ferry/policy"
	"github.com/ferrysync/ferry/storage"
	"github.com/ferrysync/ferry/transport"
)

// reviewReplica opens an in-memory replica that is paired with nobody.
func reviewReplica(e *testEnv, name string) *Replica {
	e.t.Helper()
	r, err := Open(context.Background(), "", Options{Passphrase: []byte("pw-" + name), KDF: storage.TestKDF(),
		InMemory: true, Name: name, Now: e.clock.Now, Policies: policy.NewSet(policy.Rule{Policy: policy.Timestamp})})
	if err != nil {
		e.t.Fatalf("open %s: %v", name, err)
	}
	e.t.Cleanup(func() { r.Close() })
	return r
}

func reviewPair(t *testing.T, from, to *Replica, colls ...string) {
	t.Helper()
	if _, err := from.Pair(context.Background(), to.ID(), colls, 0); err != nil {
		t.Fatal(err)
	}
}

// reviewSync runs one session a (dialing) <-> b (accepting) with optional
// wrappers around each side's connection and a deadline.
func reviewSync(e *testEnv, a, b *Replica, d time.Duration, wrapA, wrapB func(transport.Conn) transport.Conn) (error, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	if wrapA == nil {
		wrapA = func(c transport.Conn) transport.Conn { return c }
	}
	if wrapB == nil {
		wrapB = func(c transport.Conn) transport.Conn { return c }
	}
	l, err := e.net.Listen(b.ID(), pub(b))
	if err != nil {
		e.t.Fatal(err)
	}
	defer l.Close()
	var errB error
	done := make(chan struct{})
	go func() {
		defer close(done)
		conn, err := l.Accept(ctx)
		if err != nil {
			errB = err
			return
		}
		defer conn.Close()
		_, errB = b.Sync(ctx, wrapB(conn))
	}()
	conn, err := e.net.Dialer(a.ID(), pub(a)).Dial(ctx, b.ID())
	if err != nil {
		cancel()
		<-done
		return err, errB
	}
	_, errA := a.Sync(ctx, wrapA(conn))
	conn.Close()
	<-done
	return errA, errB
}

// TestReviewNewGrantOldRecordsNeverSync: a collection granted to a peer
// after a first sync never delivers the records written before that sync:
// the peer's cursor already moved past their feed positions (they were
// skipped for lack of consent), and nothing rescans.
func TestReviewNewGrantOldRecordsNeverSync(t *testing.T) {
	e := newEnv(t)
	a, b := reviewReplica(e, "a"), reviewReplica(e, "b")
	reviewPair(t, b, a, "notes", "todo") // b accepts both
	reviewPair(t, a, b, "notes")         // a shares notes only, for now
	mustPut(t, a, "todo", "t1", map[string]any{"title": "written before the grant"})
	mustPut(t, a, "notes", "n1", map[string]any{"title": "shared"})
	e.sync(a, b)
	// The user now shares todo with b too.
	reviewPair(t, a, b, "todo")
	e.sync(a, b)
	e.sync(a, b)
	if _, err := b.Get(context.Background(), "todo", "t1"); err != nil {
		t.Fatalf("todo/t1 never reached b after a granted todo: %v", err)
	}
}

// TestReviewReceiverIgnoredRecordMarkedShared: b ignores a's records in a
// collection b has not granted a, yet acknowledges the batch; a records
// them as held by b and b's cursor moves past them. When b grants the
// collection later, they never arrive.
func TestReviewReceiverIgnoredRecordMarkedShared(t *testing.T) {
	e := newEnv(t)
	a, b := reviewReplica(e, "a"), reviewReplica(e, "b")
	reviewPair(t, a, b, "notes", "todo")
	reviewPair(t, b, a, "notes")
	mustPut(t, a, "todo", "t1", map[string]any{"title": "sent, ignored"})
	e.sync(a, b)
	reviewPair(t, b, a, "todo")
	e.sync(a, b)
	e.sync(a, b)
	if _, err := b.Get(context.Background(), "todo", "t1"); err != nil {
		t.Fatalf("todo/t1 never reached b after b granted todo: %v", err)
	}
}

// needCutConn fails (and closes the connection) when its side sends a
// Need: a cut right after the Ack that precedes it.
type needCutConn struct{ transport.Conn }

func (c needCutConn) Send(ctx context.Context, b []byte) error {
	if m, err := decodeMsg(b); err == nil && m.T == msgAck && len(m.Ack.Need) > 0 {
		c.Conn.Close()
		return transport.ErrCut
	}
	return c.Conn.Send(ctx, b)
}

// forgeShared makes a believe b holds the record at a's current heads (the
// state after b's directory was rolled back to an older copy).
func forgeShared(t *testing.T, a, b *Replica, coll, id string) {
	t.Helper()
	ctx := context.Background()
	m, err := a.store.Meta(ctx, coll, id)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.store.Write(ctx, storage.Batch{Slots: []storage.SlotWrite{headsWrite(b.ID(), coll, id, m.Heads, m.Heads)}}); err != nil {
		t.Fatal(err)
	}
}

// TestReviewNeedCutLosesRecord: b cannot apply a's delta (missing deps) and
// asks for the record in full, but its apply already wrote the cursor past
// that record in the same transaction, and a records the sent heads as
// shared on the Ack that precedes the Need. A cut before the full resend
// arrives loses the record for good: later sessions never send it.
func TestReviewNeedCutLosesRecord(t *testing.T) {
	e := newEnv(t)
	a, b := reviewReplica(e, "a"), reviewReplica(e, "b")
	pairAll(t, []*Replica{a, b}, "notes")
	mustPut(t, a, "notes", "x", map[string]any{"v": 1})
	e.sync(a, b)
	mustPut(t, a, "notes", "x", map[string]any{"v": 2})
	forgeShared(t, a, b, "notes", "x") // b lacks v:2, a thinks it has it
	mustPut(t, a, "notes", "x", map[string]any{"w": 3})
	errA, errB := reviewSync(e, a, b, 30*time.Second, nil, func(c transport.Conn) transport.Conn { return needCutConn{c} })
	if errA == nil && errB == nil {
		t.Fatal("expected the first session to be cut")
	}
	if !errors.Is(errB, transport.ErrCut) {
		t.Fatalf("first session did not end at the Need: %v / %v", errA, errB)
	}
	for range 2 {
		if errA, errB := reviewSync(e, a, b, 30*time.Second, nil, nil); errA != nil || errB != nil {
			t.Fatalf("resync: %v / %v", errA, errB)
		}
	}
	got := mustGet(t, b, "notes", "x")
	if got["w"] == nil {
		t.Fatalf("b never received a's latest change to notes/x after the cut: %v", got)
	}
}

// revokeAfterConn runs fn once, after the n-th frame this side sent.
type revokeAfterConn struct {
	transport.Conn
	n    *int
	at   int
	fn   func()
	done *bool
}

func (c revokeAfterConn) Send(ctx context.Context, b []byte) error {
	if err := c.Conn.Send(ctx, b); err != nil {
		return err
	}
	*c.n++
	if *c.n == c.at && !*c.done {
		*c.done = true
		c.fn()
	}
	return nil
}

// TestReviewNeedUnservedHangs: when the record a peer asked for in full can
// no longer be served (the grant was revoked after the batch went out),
// full() returns nothing, nothing tells the asker, and both sides wait for
// each other until the deadline.
func TestReviewNeedUnservedHangs(t *testing.T) {
	e := newEnv(t)
	a, b := reviewReplica(e, "a"), reviewReplica(e, "b")
	pairAll(t, []*Replica{a, b}, "notes", "other")
	mustPut(t, a, "notes", "x", map[string]any{"v": 1})
	e.sync(a, b)
	mustPut(t, a, "notes", "x", map[string]any{"v": 2})
	forgeShared(t, a, b, "notes", "x")
	mustPut(t, a, "notes", "x", map[string]any{"w": 3})
	n, done := 0, false
	revoke := func() {
		g, ok := a.Consent().Allowed(b.ID(), "notes", "device-sync")
		if !ok {
			t.Error("no grant to revoke")
			return
		}
		if err := a.Consent().Revoke(context.Background(), g.ID, "user stops sharing notes"); err != nil {
			t.Error(err)
		}
	}
	// a's frames: hello (1), batch (2): revoke notes right after the batch.
	errA, errB := reviewSync(e, a, b, 5*time.Second,
		func(c transport.Conn) transport.Conn {
			return revokeAfterConn{Conn: c, n: &n, at: 2, fn: revoke, done: &done}
		}, nil)
	if errA != nil || errB != nil {
		t.Fatalf("session did not end cleanly after an unservable Need: %v / %v", errA, errB)
	}
}

// TestReviewStopSyncHangsWithWatch: StopSync waits on r.wg, which also
// counts every Watch goroutine; with a watcher open it never returns.
func TestReviewStopSyncHangsWithWatch(t *testing.T) {
	e := newEnv(t)
	r := reviewReplica(e, "a")
	_ = r.Watch(context.Background()) // a UI watching for the app's lifetime
	never := func(time.Duration) <-chan time.Time { return nil }
	if err := r.StartSync(LoopOptions{Peers: []Peer{{Addr: "nobody", Dialer: e.net.Dialer(r.ID(), pub(r))}}, After: never}); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { r.StopSync(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("StopSync did not return while a Watch is open")
	}
}

// TestReviewPeerRefusalLosesClass: when the other side refuses for lack of
// consent, this side gets ErrPeerError only (the errMsg code is dropped),
// so errors.Is(err, ErrNoConsent) is false and the CLI/status misclassify.
func TestReviewPeerRefusalLosesClass(t *testing.T) {
	e := newEnv(t)
	a, b := reviewReplica(e, "a"), reviewReplica(e, "b")
	reviewPair(t, a, b, "notes") // b grants a nothing
	errA, errB := reviewSync(e, a, b, 10*time.Second, nil, nil)
	if !errors.Is(errB, ErrNoConsent) {
		t.Fatalf("b: %v", errB)
	}
	if !errors.Is(errA, ErrNoConsent) {
		t.Fatalf("a was refused for consent but its error does not say so: %v", errA)
	}
}

func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o700)
		}
		in, err := os.Open(p)
		if err != nil {
			return err
		}
		defer in.Close()
		out, err := os.Create(target)
		if err != nil {
			return err
		}
		if _, err := io.Copy(out, in); err != nil {
			out.Close()
			return err
		}
		return out.Close()
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestReviewRolledBackPeerWritesNeverSent: a's store directory is restored
// from an older copy (a's feed restarts below the cursor b holds for it).
// a's hello receives b's cursor > a's LastSeq; sentUpTo starts there, so
// a's new writes, at feed positions <= that cursor, are never sent.
func TestReviewRolledBackPeerWritesNeverSent(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	root := t.TempDir()
	dirA, saved := filepath.Join(root, "a"), filepath.Join(root, "a-copy")
	optsA := diskOptions("a")
	optsA.Now = e.clock.Now
	optsA.NoSync = true
	optsA.Policies = policy.NewSet(policy.Rule{Policy: policy.Timestamp})
	a, err := Open(ctx, dirA, optsA)
	if err != nil {
		t.Fatal(err)
	}
	b := reviewReplica(e, "b")
	pairAll(t, []*Replica{a, b}, "notes")
	mustPut(t, a, "notes", "x0", map[string]any{"v": 0})
	a.Close()
	copyDir(t, dirA, saved) // the user's file-level backup
	if a, err = Open(ctx, dirA, optsA); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"x1", "x2", "x3", "x4", "x5"} {
		mustPut(t, a, "notes", id, map[string]any{"v": id})
	}
	e.sync(a, b)
	a.Close()
	os.RemoveAll(dirA)
	copyDir(t, saved, dirA) // restore the laptop from the backup
	if a, err = Open(ctx, dirA, optsA); err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	mustPut(t, a, "notes", "new-after-restore", map[string]any{"v": "important"})
	var errs []error
	for range 2 {
		_, _, errA, errB := e.trySync(a, b)
		errs = append(errs, errA, errB)
	}
	if _, err := b.Get(ctx, "notes", "new-after-restore"); err != nil {
		t.Fatalf("a's write after its restore never reached b: %v (session errors a/b, a/b: %v)", err, errs)
	}
}

// TestReviewRelayInviteeStuck: after a invites b, c pushes a delta of an
// old record before a's next (full) push. b's first pull meets c's delta,
// whose dependencies sit in bundles before b's start position: the pull
// fails with relay.ErrMissing, the verifier resets to before that bundle,
// and the push is skipped. Every later SyncRelay of b fails the same way,
// even after a's full push is on the relay.
func TestReviewRelayInviteeStuck(t *testing.T) {
	e := newEnv(t)
	a, c, b := e.replica("a"), e.replica("c"), e.replica("b")
	coll := "zq-journal"
	space := joinAll(t, memRelayURL, coll, a, c)
	mustPut(t, a, coll, "x", map[string]any{"v": "base"})
	relaySync(t, a, space)
	relaySync(t, c, space)

	code, _ := b.JoinCode()
	inv, err := a.Invite(context.Background(), space, code)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.JoinSpace(context.Background(), inv, []string{coll}); err != nil {
		t.Fatal(err)
	}
	mustPut(t, c, coll, "x", map[string]any{"w": "c's edit"})
	relaySync(t, c, space) // a delta: x's history is in bundles before b's start
	relaySync(t, a, space) // a's full push
	var last error
	for range 3 {
		_, last = b.SyncRelay(context.Background(), space)
	}
	if last != nil {
		t.Fatalf("b (invited) can never sync through the relay: %v", last)
	}
	if got := mustGet(t, b, coll, "x"); got["w"] != "c's edit" {
		t.Fatalf("b: %v", got)
	}
}

// TestReviewDeltaForAbsentRecordIsProtocolError: the Need repair (sync.md,
// "Faults") does not cover a peer that lacks the record entirely (rolled
// back to before it existed): MergeChanges into a new document fails with
// crdt.ErrBadDocument ("change's deps should already be in the document"),
// applyRecords turns that into ErrProtocol and the session dies, every
// time, since the sender's shared heads never change.
func TestReviewDeltaForAbsentRecordIsProtocolError(t *testing.T) {
	e := newEnv(t)
	a, b := reviewReplica(e, "a"), reviewReplica(e, "b")
	pairAll(t, []*Replica{a, b}, "notes")
	mustPut(t, a, "notes", "x", map[string]any{"v": 1})
	forgeShared(t, a, b, "notes", "x") // b's copy was lost in a rollback
	mustPut(t, a, "notes", "x", map[string]any{"w": 2})
	for range 2 {
		if _, _, errA, errB := e.trySync(a, b); errA != nil || errB != nil {
			t.Fatalf("sync fails instead of asking for the record in full: %v / %v", errA, errB)
		}
	}
	if got := mustGet(t, b, "notes", "x"); got["w"] == nil {
		t.Fatalf("b: %v", got)
	}
}

// TestReviewLargeRecordWedgesSync: a record larger than a frame syncs in
// parts and does not block the records after it; a single change too large
// for any frame is refused when it is written, so it can never wedge sync.
func TestReviewLargeRecordWedgesSync(t *testing.T) {
	e := newEnv(t)
	disk := func(name string) *Replica {
		o := diskOptions(name)
		o.Now, o.NoSync = e.clock.Now, true
		o.Policies = policy.NewSet(policy.Rule{Policy: policy.Timestamp})
		r, err := Open(context.Background(), filepath.Join(t.TempDir(), name), o)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		return r
	}
	a, b := disk("a"), disk("b")
	pairAll(t, []*Replica{a, b}, "notes")
	random := func(n int) string {
		raw := make([]byte, n)
		if _, err := rand.Read(raw); err != nil {
			t.Fatal(err)
		}
		return base64.StdEncoding.EncodeToString(raw)
	}
	err := a.Put(context.Background(), "notes", "huge", map[string]any{"data": random(6 << 20)})
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("a single 8 MB change: %v", err)
	}
	if _, err := a.Get(context.Background(), "notes", "huge"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("the refused write left a record: %v", err)
	}
	for i := range 8 {
		mustPut(t, a, "notes", "attachment", map[string]any{fmt.Sprintf("part%d", i): random(600 << 10)})
	}
	mustPut(t, a, "notes", "small", map[string]any{"title": "written after"})
	for range 2 {
		if _, _, errA, errB := e.trySync(a, b); errA != nil || errB != nil {
			t.Fatalf("sync: %v / %v", errA, errB)
		}
	}
	mustGet(t, b, "notes", "small")
	if got := mustGet(t, b, "notes", "attachment"); len(got) != 8 {
		t.Fatalf("b holds %d parts of the attachment", len(got))
	}
}
