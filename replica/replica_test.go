package replica

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/ferrysync/ferry/crdt"
	"github.com/ferrysync/ferry/policy"
	"github.com/ferrysync/ferry/relay"
	"github.com/ferrysync/ferry/storage"
	"github.com/ferrysync/ferry/transport"
)

// fakeClock is a settable time source shared by a test's replicas.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 1, 1, 9, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

type testEnv struct {
	t        testing.TB
	clock    *fakeClock
	net      *transport.MemNetwork
	relay    *relay.MemRelay // the relay env replicas reach at any URL
	replicas []*Replica
	timeout  time.Duration // of one session (2 minutes when zero)
}

// testCollections are the collections env replicas are paired for.
var testCollections = []string{"notes", "items", "b-only", "c", "zq-journal"}

// pairAll grants each replica device-sync with the other for colls.
func pairAll(t interface {
	Helper()
	Fatalf(string, ...any)
}, rs []*Replica, colls ...string) {
	t.Helper()
	for _, a := range rs {
		for _, b := range rs {
			if a != b {
				if _, err := a.Pair(context.Background(), b.ID(), colls, 0); err != nil {
					t.Fatalf("pair: %v", err)
				}
			}
		}
	}
}

func newEnv(t testing.TB) *testEnv {
	seed := time.Now().UnixNano()
	t.Logf("mem network seed %d", seed)
	n := transport.NewMemNetwork(seed, func(string) {})
	t.Cleanup(func() { n.Close() })
	return &testEnv{t: t, clock: newFakeClock(), net: n, relay: relay.NewMemRelay()}
}

func (e *testEnv) replica(name string, mod ...func(*Options)) *Replica {
	e.t.Helper()
	opts := Options{
		Passphrase: []byte("pw-" + name),
		KDF:        storage.TestKDF(),
		InMemory:   true,
		Name:       name,
		Now:        e.clock.Now,
		Policies:   policy.NewSet(policy.Rule{Policy: policy.Timestamp}),
		Relay:      e.memRelay,
	}
	for _, m := range mod {
		m(&opts)
	}
	r, err := Open(context.Background(), "", opts)
	if err != nil {
		e.t.Fatalf("open %s: %v", name, err)
	}
	e.t.Cleanup(func() { r.Close() })
	for _, o := range e.replicas {
		pairAll(e.t, []*Replica{r, o}, testCollections...)
	}
	e.replicas = append(e.replicas, r)
	return r
}

// memRelay is the env's Options.Relay: every URL reaches e.relay.
func (e *testEnv) memRelay(_ string, identity ed25519.PrivateKey) relay.API {
	return e.relay.Client(identity)
}

func pub(r *Replica) ed25519.PublicKey { return r.Identity().Public().(ed25519.PublicKey) }

// sync runs one session between a (dialing) and b (accepting).
func (e *testEnv) sync(a, b *Replica) (SyncStats, SyncStats) {
	e.t.Helper()
	sa, sb, errA, errB := e.trySync(a, b)
	if errA != nil || errB != nil {
		e.t.Fatalf("sync %s<->%s: %v / %v", a.Name(), b.Name(), errA, errB)
	}
	return sa, sb
}

func (e *testEnv) trySync(a, b *Replica) (SyncStats, SyncStats, error, error) {
	timeout := e.timeout
	if timeout == 0 {
		timeout = 2 * time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	l, err := e.net.Listen(b.ID(), pub(b))
	if err != nil {
		e.t.Fatal(err)
	}
	defer l.Close()
	var sb SyncStats
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
		sb, errB = b.Sync(ctx, conn)
	}()
	conn, err := e.net.Dialer(a.ID(), pub(a)).Dial(ctx, b.ID())
	if err != nil {
		cancel()
		<-done
		return SyncStats{}, sb, err, errB
	}
	sa, errA := a.Sync(ctx, conn)
	conn.Close()
	<-done
	return sa, sb, errA, errB
}

func mustPut(t testing.TB, r *Replica, coll, id string, fields map[string]any) {
	t.Helper()
	if err := r.Put(context.Background(), coll, id, fields); err != nil {
		t.Fatalf("put %s/%s: %v", coll, id, err)
	}
}

func mustGet(t testing.TB, r *Replica, coll, id string) map[string]any {
	t.Helper()
	m, err := r.Get(context.Background(), coll, id)
	if err != nil {
		t.Fatalf("get %s/%s on %s: %v", coll, id, r.Name(), err)
	}
	return m
}

// dump returns every live record of a collection as JSON-like maps.
func dump(t testing.TB, r *Replica, coll string) map[string]map[string]any {
	t.Helper()
	ctx := context.Background()
	out := map[string]map[string]any{}
	page, err := r.List(ctx, coll, ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, it := range page.Items {
		out[it.ID] = mustGet(t, r, coll, it.ID)
	}
	return out
}

func TestPutGetDelete(t *testing.T) {
	e := newEnv(t)
	r := e.replica("a")
	ctx := context.Background()
	mustPut(t, r, "notes", "n1", map[string]any{"title": "hello", "tags": []any{"x"}})
	mustPut(t, r, "notes", "n1", map[string]any{"body": "world"})
	got := mustGet(t, r, "notes", "n1")
	want := map[string]any{"title": "hello", "tags": []any{"x"}, "body": "world"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("get = %#v, want %#v", got, want)
	}
	if err := r.Delete(ctx, "notes", "n1"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Get(ctx, "notes", "n1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("get after delete: %v", err)
	}
	if err := r.Delete(ctx, "notes", "n1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
	if _, err := r.Get(ctx, "notes", "missing"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("get missing: %v", err)
	}
	if err := r.Put(ctx, "", "x", nil); !errors.Is(err, ErrInvalid) {
		t.Fatalf("empty collection: %v", err)
	}
	if err := r.Put(ctx, "notes", "n2", map[string]any{"bad": make(chan int)}); !errors.Is(err, crdt.ErrUnsupportedValue) {
		t.Fatalf("unsupported value: %v", err)
	}
	if _, err := r.Get(ctx, "notes", "n2"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("failed put left a record: %v", err)
	}
}

func TestSyncTwoReplicas(t *testing.T) {
	e := newEnv(t)
	a, b := e.replica("a"), e.replica("b")
	for i := range 20 {
		mustPut(t, a, "notes", fmt.Sprintf("a%d", i), map[string]any{"n": int64(i), "by": "a"})
		mustPut(t, b, "notes", fmt.Sprintf("b%d", i), map[string]any{"n": int64(i), "by": "b"})
	}
	sa, sb := e.sync(a, b)
	if sa.RecordsSent != 20 || sb.RecordsSent != 20 {
		t.Fatalf("sent %d / %d records, want 20 each", sa.RecordsSent, sb.RecordsSent)
	}
	da, db := dump(t, a, "notes"), dump(t, b, "notes")
	if len(da) != 40 || !reflect.DeepEqual(da, db) {
		t.Fatalf("diverged: %d vs %d records", len(da), len(db))
	}
	// An idle resync moves no record.
	sa, sb = e.sync(a, b)
	if sa.RecordsSent+sb.RecordsSent != 0 {
		t.Fatalf("idle resync sent %d records", sa.RecordsSent+sb.RecordsSent)
	}
	if sa.FramesSent > 3 || sb.FramesSent > 3 {
		t.Fatalf("idle resync took %d+%d frames", sa.FramesSent, sb.FramesSent)
	}
}

func TestSyncConflictTimestamp(t *testing.T) {
	e := newEnv(t)
	a, b := e.replica("a"), e.replica("b")
	mustPut(t, a, "notes", "n", map[string]any{"title": "base"})
	e.sync(a, b)
	mustPut(t, a, "notes", "n", map[string]any{"title": "from a"})
	e.clock.Advance(time.Second)
	mustPut(t, b, "notes", "n", map[string]any{"title": "from b (later)"})
	sa, sb := e.sync(a, b)
	if sa.Conflicts+sb.Conflicts == 0 {
		t.Fatal("no conflict reported")
	}
	for _, r := range []*Replica{a, b} {
		if got := mustGet(t, r, "notes", "n")["title"]; got != "from b (later)" {
			t.Fatalf("%s: title = %v, want the later write", r.Name(), got)
		}
	}
	// Quiescence: one more exchange sends nothing.
	sa, sb = e.sync(a, b)
	if sa.RecordsSent+sb.RecordsSent != 0 {
		t.Fatalf("quiescent round sent %d records", sa.RecordsSent+sb.RecordsSent)
	}
}

func TestSyncMultiHop(t *testing.T) {
	e := newEnv(t)
	a, b, c := e.replica("a"), e.replica("b"), e.replica("c")
	mustPut(t, a, "notes", "hop", map[string]any{"v": "from a"})
	e.sync(a, b)
	e.sync(b, c)
	if got := mustGet(t, c, "notes", "hop")["v"]; got != "from a" {
		t.Fatalf("c has %v", got)
	}
	mustPut(t, c, "notes", "hop", map[string]any{"w": "from c"})
	e.sync(c, b)
	e.sync(b, a)
	if got := mustGet(t, a, "notes", "hop"); got["w"] != "from c" || got["v"] != "from a" {
		t.Fatalf("a has %v", got)
	}
}

func TestSyncPolicyMismatch(t *testing.T) {
	e := newEnv(t)
	a := e.replica("a")
	b := e.replica("b", func(o *Options) { o.Policies = policy.NewSet(policy.Rule{Policy: policy.Merge}) })
	_, _, errA, errB := e.trySync(a, b)
	if !errors.Is(errA, ErrPolicyMismatch) && !errors.Is(errA, ErrPeerError) {
		t.Fatalf("a: %v", errA)
	}
	if !errors.Is(errB, ErrPolicyMismatch) && !errors.Is(errB, ErrPeerError) {
		t.Fatalf("b: %v", errB)
	}
}
