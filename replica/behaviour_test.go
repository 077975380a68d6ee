package replica

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"reflect"
	"testing"
	"time"

	"github.com/ferrysync/ferry/policy"
	"github.com/ferrysync/ferry/transport"
)

// tlsPair starts b serving on loopback TLS, pinned to a, and returns a
// dialer for a pinned to b.
func tlsServe(t *testing.T, b *Replica, pins transport.Pins) (addr string, stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	l, err := transport.ListenTLS(ctx, "127.0.0.1:0", b.Identity(), pins, transport.TLSOptions{})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- b.Serve(ctx, l) }()
	return l.Addr(), func() {
		cancel()
		l.Close()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	}
}

func TestSyncOverTLS(t *testing.T) {
	e := newEnv(t)
	a, b, stranger := e.replica("a"), e.replica("b"), e.replica("stranger")
	addr, stop := tlsServe(t, b, transport.NewPinSet(pub(a)))
	defer stop()
	mustPut(t, a, "notes", "n1", map[string]any{"v": "over tls"})
	ctx := context.Background()

	conn, err := transport.DialTLS(ctx, addr, a.Identity(), transport.NewPinSet(pub(b)), transport.TLSOptions{})
	if err != nil {
		t.Fatal(err)
	}
	st, err := a.Sync(ctx, conn)
	conn.Close()
	if err != nil || st.RecordsSent != 1 {
		t.Fatalf("sync: %+v %v", st, err)
	}
	// b's side of the session may still be finishing; its record is
	// durable before it acknowledged, so a read now must see it.
	if got := mustGet(t, b, "notes", "n1")["v"]; got != "over tls" {
		t.Fatalf("b has %v", got)
	}

	// A peer b does not trust is refused in the handshake.
	if _, err := transport.DialTLS(ctx, addr, stranger.Identity(), transport.NewPinSet(pub(b)), transport.TLSOptions{}); !errors.Is(err, transport.ErrUnknownPeer) {
		t.Fatalf("stranger dial: %v", err)
	}
	// A server presenting another key than the pinned one is refused.
	if _, err := transport.DialTLS(ctx, addr, a.Identity(), transport.NewPinSet(pub(stranger)), transport.TLSOptions{}); !errors.Is(err, transport.ErrUnknownPeer) {
		t.Fatalf("wrong server key: %v", err)
	}
	// Garbage on the port harms nothing: a fresh sync still works.
	raw, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	raw.Write([]byte("GET / HTTP/1.0\r\n\r\n\x00\xff garbage"))
	raw.Close()
	mustPut(t, a, "notes", "n2", map[string]any{"v": "after garbage"})
	conn, err = transport.DialTLS(ctx, addr, a.Identity(), transport.NewPinSet(pub(b)), transport.TLSOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Sync(ctx, conn); err != nil {
		t.Fatal(err)
	}
	conn.Close()
	if got := mustGet(t, b, "notes", "n2")["v"]; got != "after garbage" {
		t.Fatalf("b has %v", got)
	}
}

// TestUserConflictFlow: a user-policy conflict is queued on both replicas
// with the same id and candidates, resolved by the user on one, and the
// resolution closes it on the other; a second conflict left alone is
// decided by the fallback after the deadline.
func TestUserConflictFlow(t *testing.T) {
	e := newEnv(t)
	set := policy.NewSet(policy.Rule{Policy: policy.User, Deadline: policy.Duration(24 * time.Hour)})
	withSet := func(o *Options) { o.Policies = set }
	a, b := e.replica("a", withSet), e.replica("b", withSet)
	ctx := context.Background()
	mustPut(t, a, "notes", "n", map[string]any{"title": "base", "body": "base"})
	e.sync(a, b)
	mustPut(t, a, "notes", "n", map[string]any{"title": "a-title", "body": "a-body"})
	e.clock.Advance(time.Second)
	mustPut(t, b, "notes", "n", map[string]any{"title": "b-title", "body": "b-body"})
	e.sync(a, b)
	e.sync(a, b)

	qa, err := a.Conflicts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	qb, _ := b.Conflicts(ctx)
	if len(qa) != 2 || !reflect.DeepEqual(conflictIDs(qa), conflictIDs(qb)) {
		t.Fatalf("queues differ or wrong size: %v vs %v", conflictIDs(qa), conflictIDs(qb))
	}
	// The provisional winner is the later write, on both.
	for _, r := range []*Replica{a, b} {
		if got := mustGet(t, r, "notes", "n")["title"]; got != "b-title" {
			t.Fatalf("%s provisional title %v", r.Name(), got)
		}
	}
	if _, status := a.Status(ctx); len(status) == 0 || status[0].State != Conflict {
		t.Fatalf("status with open conflicts: %+v", status)
	}
	// The user picks a's title.
	var titleID string
	for _, c := range qa {
		if c.Conflict.Path == "/title" {
			titleID = c.ID()
			for i, cand := range c.Conflict.Candidates {
				if cand.Value == "a-title" {
					if err := a.ResolvePick(ctx, titleID, i); err != nil {
						t.Fatal(err)
					}
				}
			}
		}
	}
	if titleID == "" {
		t.Fatal("no conflict on /title")
	}
	if err := a.ResolvePick(ctx, titleID, 0); !errors.Is(err, ErrNoConflict) {
		t.Fatalf("resolving twice: %v", err)
	}
	e.sync(a, b)
	for _, r := range []*Replica{a, b} {
		if got := mustGet(t, r, "notes", "n")["title"]; got != "a-title" {
			t.Fatalf("%s title after the user's pick: %v", r.Name(), got)
		}
		q, _ := r.Conflicts(ctx)
		if len(q) != 1 || q[0].Conflict.Path != "/body" {
			t.Fatalf("%s queue after pick: %v", r.Name(), conflictIDs(q))
		}
	}
	// Nothing happens before the deadline; after it the fallback decides.
	if n, err := a.SweepConflicts(ctx); err != nil || n != 0 {
		t.Fatalf("early sweep decided %d (%v)", n, err)
	}
	e.clock.Advance(25 * time.Hour)
	if n, err := a.SweepConflicts(ctx); err != nil || n != 1 {
		t.Fatalf("sweep after deadline decided %d (%v)", n, err)
	}
	e.sync(a, b)
	for _, r := range []*Replica{a, b} {
		if q, _ := r.Conflicts(ctx); len(q) != 0 {
			t.Fatalf("%s still has %d open conflicts", r.Name(), len(q))
		}
		if got := mustGet(t, r, "notes", "n")["body"]; got != "b-body" {
			t.Fatalf("%s body after fallback: %v", r.Name(), got)
		}
	}
	trail, err := a.Audit(ctx, policy.Filter{})
	if err != nil || len(trail) < 2 {
		t.Fatalf("audit trail: %d records, %v", len(trail), err)
	}
	bys := map[policy.Decider]bool{}
	for _, rec := range trail {
		bys[rec.By] = true
	}
	if !bys[policy.ByUser] || !bys[policy.ByFallback] {
		t.Fatalf("audit deciders: %v", bys)
	}
}

func conflictIDs(es []policy.Entry) []string {
	out := make([]string, len(es))
	for i := range es {
		out[i] = es[i].ID()
	}
	return out
}

func TestWatchDeliversRecordAndStatusEvents(t *testing.T) {
	e := newEnv(t)
	a, b := e.replica("a"), e.replica("b")
	ctx, cancel := context.WithCancel(context.Background())
	events := b.Watch(ctx)
	mustPut(t, a, "notes", "w", map[string]any{"v": int64(1)})
	e.sync(a, b)
	var gotRecord, gotSyncing, gotDone bool
	for !(gotRecord && gotSyncing && gotDone) {
		ev := <-events
		switch {
		case ev.Kind == EventRecord && ev.ID == "w" && !ev.Local && ev.Peer == a.ID():
			gotRecord = true
		case ev.Kind == EventStatus && ev.Status.State == Syncing:
			gotSyncing = true
		case ev.Kind == EventStatus && ev.Status.State == UpToDate && gotSyncing:
			gotDone = true
		}
	}
	cancel()
	for range events {
		// drains until Watch closes the channel
	}
}

func TestCacheStaysBounded(t *testing.T) {
	e := newEnv(t)
	r := e.replica("a", func(o *Options) { o.CacheSize = 16 })
	for i := range 200 {
		mustPut(t, r, "c", fmt.Sprintf("%d", i), map[string]any{"i": int64(i)})
	}
	for i := range 200 {
		mustGet(t, r, "c", fmt.Sprintf("%d", i))
	}
	if n := r.cache.len(); n > 16 {
		t.Fatalf("cache holds %d documents, bound is 16", n)
	}
}

func TestBackoffSchedule(t *testing.T) {
	b := Backoff{Base: time.Second, Max: 30 * time.Second, Jitter: 0.5}
	cases := []struct {
		attempt int
		u       float64
		want    time.Duration
	}{
		{1, 0, time.Second},
		{2, 0, 2 * time.Second},
		{3, 0, 4 * time.Second},
		{5, 0, 16 * time.Second},
		{6, 0, 30 * time.Second},
		{60, 0, 30 * time.Second},
		{1, 0.999999, 500*time.Millisecond + 1*time.Microsecond},
		{6, 0.5, 22500 * time.Millisecond},
	}
	for _, c := range cases {
		got := b.Delay(c.attempt, c.u)
		if diff := got - c.want; diff < -time.Millisecond || diff > time.Millisecond {
			t.Errorf("Delay(%d, %v) = %v, want %v", c.attempt, c.u, got, c.want)
		}
	}
	// Jitter spreads retries: draws differ, all within [d/2, d].
	rng := rand.New(rand.NewPCG(1, 2))
	seen := map[time.Duration]bool{}
	for range 100 {
		d := b.Delay(3, rng.Float64())
		if d < 2*time.Second || d > 4*time.Second {
			t.Fatalf("jittered delay %v out of [2s,4s]", d)
		}
		seen[d] = true
	}
	if len(seen) < 50 {
		t.Fatalf("jitter produced only %d distinct delays", len(seen))
	}
}

// fakeAfter hands the loop's timers to the test, which fires them.
type fakeAfter struct {
	asked chan time.Duration
	fire  chan chan time.Time
}

func newFakeAfter() *fakeAfter {
	return &fakeAfter{asked: make(chan time.Duration, 16), fire: make(chan chan time.Time, 16)}
}

func (f *fakeAfter) After(d time.Duration) <-chan time.Time {
	ch := make(chan time.Time, 1)
	f.asked <- d
	f.fire <- ch
	return ch
}

// TestLoopRetriesWithBackoffThenSyncs: the loop's first attempts fail
// (the peer refuses), each wait follows the backoff schedule, and once the
// peer accepts, the loop syncs and waits the regular interval.
func TestLoopRetriesWithBackoffThenSyncs(t *testing.T) {
	e := newEnv(t)
	a, b := e.replica("a"), e.replica("b")
	mustPut(t, a, "notes", "loop", map[string]any{"v": "via loop"})
	timers := newFakeAfter()
	for range 2 {
		if err := e.net.Script(transport.Plan{From: a.ID(), To: b.ID(), Refuse: true}); err != nil {
			t.Fatal(err)
		}
	}
	l, err := e.net.Listen(b.ID(), pub(b))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- b.Serve(ctx, l) }()

	bo := Backoff{Base: time.Second, Max: time.Minute, Jitter: 0.5}
	err = a.StartSync(LoopOptions{
		Peers:    []Peer{{ID: b.ID(), Addr: b.ID(), Dialer: e.net.Dialer(a.ID(), pub(a))}},
		Interval: time.Hour, Backoff: bo, After: timers.After,
		Rand: rand.New(rand.NewPCG(7, 7)),
	})
	if err != nil {
		t.Fatal(err)
	}
	check := rand.New(rand.NewPCG(7, 7))
	for attempt := 1; attempt <= 2; attempt++ {
		d := <-timers.asked
		if want := bo.Delay(attempt, check.Float64()); d != want {
			t.Fatalf("wait after failure %d = %v, want %v", attempt, d, want)
		}
		if st := a.status.peer(b.ID()); st.State != Offline || st.Attempt != attempt {
			t.Fatalf("status after failure %d: %+v", attempt, st)
		}
		(<-timers.fire) <- time.Time{}
	}
	if d := <-timers.asked; d != time.Hour {
		t.Fatalf("wait after success = %v, want the interval", d)
	}
	<-timers.fire
	if st := a.status.peer(b.ID()); st.State != UpToDate || st.Attempt != 0 {
		t.Fatalf("status after success: %+v", st)
	}
	if got := mustGet(t, b, "notes", "loop")["v"]; got != "via loop" {
		t.Fatalf("b has %v", got)
	}
	// A local change kicks the loop without waiting for the interval.
	mustPut(t, a, "notes", "kick", map[string]any{"v": "kicked"})
	if d := <-timers.asked; d != time.Hour {
		t.Fatalf("wait after kicked sync = %v", d)
	}
	<-timers.fire
	if got := mustGet(t, b, "notes", "kick")["v"]; got != "kicked" {
		t.Fatalf("b has %v", got)
	}
	a.StopSync()
	cancel()
	l.Close()
	<-served
}

// TestServeManyPeersAtOnce: one replica serves several peers whose
// sessions run at the same time; afterwards each peer holds everything
// the server had and the server holds everything from every peer.
func TestServeManyPeersAtOnce(t *testing.T) {
	e := newEnv(t)
	hub := e.replica("hub")
	peers := []*Replica{e.replica("p1"), e.replica("p2"), e.replica("p3")}
	for i := range 30 {
		mustPut(t, hub, "notes", fmt.Sprintf("hub-%d", i), map[string]any{"i": int64(i)})
	}
	for j, p := range peers {
		for i := range 20 {
			mustPut(t, p, "notes", fmt.Sprintf("p%d-%d", j, i), map[string]any{"i": int64(i)})
		}
	}
	l, err := e.net.Listen(hub.ID(), pub(hub))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- hub.Serve(ctx, l) }()
	errs := make(chan error, len(peers))
	for _, p := range peers {
		go func() {
			conn, err := e.net.Dialer(p.ID(), pub(p)).Dial(ctx, hub.ID())
			if err != nil {
				errs <- err
				return
			}
			defer conn.Close()
			_, err = p.Sync(ctx, conn)
			errs <- err
		}()
	}
	for range peers {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	cancel()
	l.Close()
	if err := <-served; err != nil {
		t.Fatal(err)
	}
	if n := len(dump(t, hub, "notes")); n != 30+3*20 {
		t.Fatalf("hub holds %d records, want 90", n)
	}
	for _, p := range peers {
		if n := len(dump(t, p, "notes")); n < 30+20 {
			t.Fatalf("%s holds %d records, want at least the hub's 30 and its own 20", p.Name(), n)
		}
	}
	// One more round through the hub brings everyone to the same state.
	for _, p := range peers {
		e.sync(p, hub)
	}
	for _, p := range peers {
		e.sync(p, hub)
		if !reflect.DeepEqual(dump(t, p, "notes"), dump(t, hub, "notes")) {
			t.Fatalf("%s differs from the hub", p.Name())
		}
	}
}
