package replica

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferrysync/ferry/storage"
	"github.com/ferrysync/ferry/transport"
	"pgregory.net/rapid"
)

// modelHost is a sessionHost over an in-memory model: each record is a
// grow-only set of strings (a CRDT whose merge is union), a "change" is an
// element, and the heads are a digest of the whole set. It keeps a change
// feed, per-peer cursors and shared heads exactly as the real replica does,
// so the session's skipping, deltas and termination are exercised without
// storage or Automerge.
type modelHost struct {
	mu      sync.Mutex
	key     ed25519.PublicKey
	name    string
	policy  string
	records map[string]map[string]bool // "coll/id" -> elements
	feedPos map[string]uint64          // record -> its newest feed position
	seq     uint64
	cursor  map[string]uint64                     // peer -> its feed applied here
	shared  map[string]map[string]map[string]bool // peer -> record -> element hashes it holds
	// dropNext makes apply lose the next record's changes silently,
	// as an Automerge apply with missing dependencies does.
	missing map[string]bool
	// lag hides the feed from position hideFrom on, for that many reads
	// of the feed, while lastSeq already counts it (a commit in flight).
	lag      int
	hideFrom uint64
}

func newModelHost(name string) *modelHost {
	key := keyFor(name)
	return &modelHost{
		key:     key,
		name:    transport.Fingerprint(key),
		policy:  "p1",
		records: map[string]map[string]bool{},
		feedPos: map[string]uint64{},
		cursor:  map[string]uint64{},
		shared:  map[string]map[string]map[string]bool{},
		missing: map[string]bool{},
	}
}

func (h *modelHost) write(key string, elems ...string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	set := h.records[key]
	if set == nil {
		set = map[string]bool{}
		h.records[key] = set
	}
	for _, e := range elems {
		set[e] = true
	}
	h.seq++
	h.feedPos[key] = h.seq
}

// heads lists the hash of every element: the model's "heads" cover the set.
func heads(set map[string]bool) [][]byte {
	out := make([][]byte, 0, len(set))
	for e := range set {
		h := sha256.Sum256([]byte(e))
		out = append(out, h[:])
	}
	sort.Slice(out, func(i, j int) bool { return string(out[i]) < string(out[j]) })
	return out
}

// learn records that peer holds hs for key, and compacts to the record's
// own heads once the peer is known to hold all of them: the rule the
// replica uses.
func (h *modelHost) learn(peer, key string, hs [][]byte) {
	if h.shared[peer] == nil {
		h.shared[peer] = map[string]map[string]bool{}
	}
	known := h.shared[peer][key]
	if known == nil {
		known = map[string]bool{}
	}
	for _, x := range hs {
		known[string(x)] = true
	}
	if h.peerHolds(peer, key, known) {
		known = map[string]bool{}
		for _, x := range heads(h.records[key]) {
			known[string(x)] = true
		}
	}
	h.shared[peer][key] = known
}

func (h *modelHost) peerHolds(_, key string, known map[string]bool) bool {
	for _, x := range heads(h.records[key]) {
		if !known[string(x)] {
			return false
		}
	}
	return true
}

func digest(set map[string]bool) []byte {
	elems := make([]string, 0, len(set))
	for e := range set {
		elems = append(elems, e)
	}
	sort.Strings(elems)
	d := sha256.Sum256([]byte(strings.Join(elems, "\x00")))
	return d[:]
}

func (h *modelHost) snapshot() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	keys := make([]string, 0, len(h.records))
	for k := range h.records {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%x;", k, digest(h.records[k])[:4])
	}
	return b.String()
}

func (h *modelHost) hello(_ context.Context, peer string) (helloMsg, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return helloMsg{Replica: h.name, Policy: h.policy, Cursor: h.cursor[peer], Seq: h.seq}, nil
}

func (h *modelHost) checkPeer(context.Context, string, *helloMsg) error { return nil }

// The model reconciles nothing: its hellos name no collections.
func (h *modelHost) reconSums(context.Context) ([]storage.ReconSum, error) { return nil, nil }
func (h *modelHost) reconItems(context.Context, uint16, uint16) ([]reconItem, error) {
	return nil, nil
}
func (h *modelHost) reconHeads(context.Context, string, string, [][]byte, uint8) (*reconSend, [][]byte, bool, error) {
	return nil, nil, false, nil
}
func (h *modelHost) reconBegin(context.Context, string, []string) (uint64, error) { return 0, nil }
func (h *modelHost) coversAll(string) bool                                        { return false }
func (h *modelHost) orderSends(context.Context, []reconSend) error                { return nil }

func (h *modelHost) reconBatch(context.Context, string, []reconSend, int, int) ([]recordChanges, int, error) {
	return nil, 0, nil
}

// feedNotify: while a commit is in flight (lag) it completes at once, as a
// store wakes its waiters when the write has committed; otherwise no
// write happens during a session.
func (h *modelHost) feedNotify() <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.lag > 0 {
		c := make(chan struct{})
		close(c)
		return c
	}
	return nil
}

func (h *modelHost) lastSeq() uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.seq
}

func encodeElems(set map[string]bool, except map[string]bool) []byte {
	var out []string
	for e := range set {
		if !except[e] {
			out = append(out, e)
		}
	}
	sort.Strings(out)
	return []byte(strings.Join(out, "\x00"))
}

func (h *modelHost) nextBatch(_ context.Context, peer string, after uint64, maxRecords, maxBytes int) ([]recordChanges, uint64, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	hide := uint64(0)
	if h.lag > 0 {
		h.lag--
		hide = h.hideFrom
	}
	type ent struct {
		key string
		pos uint64
	}
	var feed []ent
	for k, p := range h.feedPos {
		if p > after && (hide == 0 || p < hide) {
			feed = append(feed, ent{k, p})
		}
	}
	sort.Slice(feed, func(i, j int) bool { return feed[i].pos < feed[j].pos })
	var out []recordChanges
	upTo, size := after, 0
	for _, e := range feed {
		if len(out) >= maxRecords || size >= maxBytes {
			break
		}
		upTo = e.pos
		known := h.shared[peer][e.key]
		if h.peerHolds(peer, e.key, known) {
			continue
		}
		coll, id, _ := strings.Cut(e.key, "/")
		var except map[string]bool
		if known != nil {
			except = map[string]bool{}
			for el := range h.records[e.key] {
				sum := sha256.Sum256([]byte(el))
				if known[string(sum[:])] {
					except[el] = true
				}
			}
		}
		changes := encodeElems(h.records[e.key], except)
		size += len(changes)
		out = append(out, recordChanges{Collection: coll, ID: id, Heads: heads(h.records[e.key]), Changes: changes})
	}
	return out, upTo, nil
}

func (h *modelHost) full(_ context.Context, _, coll, id string) ([]recordChanges, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	set := h.records[coll+"/"+id]
	return []recordChanges{{Collection: coll, ID: id, Heads: heads(set), Changes: encodeElems(set, nil)}}, nil
}

func (h *modelHost) apply(_ context.Context, peer string, recs []recordChanges, upTo uint64) ([]needMsg, int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var needs []needMsg
	for _, rc := range recs {
		key := rc.Collection + "/" + rc.ID
		if h.missing[key] {
			delete(h.missing, key)
			needs = append(needs, needMsg{Collection: rc.Collection, ID: rc.ID})
			continue
		}
		set := h.records[key]
		if set == nil {
			set = map[string]bool{}
			h.records[key] = set
		}
		before := digest(set)
		for _, e := range strings.Split(string(rc.Changes), "\x00") {
			if e != "" {
				set[e] = true
			}
		}
		if string(before) != string(digest(set)) || h.feedPos[key] == 0 {
			h.seq++
			h.feedPos[key] = h.seq
		}
		h.learn(peer, key, rc.Heads)
	}
	if upTo > h.cursor[peer] {
		h.cursor[peer] = upTo
	}
	return needs, 0, nil
}

func (h *modelHost) acked(_ context.Context, peer string, recs []recordChanges) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, rc := range recs {
		h.learn(peer, rc.Collection+"/"+rc.ID, rc.Heads)
	}
	return nil
}

func (h *modelHost) startFor(_ context.Context, _ string, c uint64) (uint64, error) {
	if c > h.lastSeq() {
		return 0, nil
	}
	return c, nil
}

func (h *modelHost) finished(context.Context, string, uint64) error { return nil }

func (h *modelHost) cursorMoved(_ context.Context, peer string, c uint64) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.cursor[peer] = c
	return nil
}

// pipeConn is a minimal in-process transport.Conn for session tests.
type pipeConn struct {
	in, out chan []byte
	closed  chan struct{}
	once    *sync.Once
	remote  ed25519.PublicKey
}

func pipePair(a, b ed25519.PublicKey) (*pipeConn, *pipeConn) {
	ab, ba := make(chan []byte, 1024), make(chan []byte, 1024)
	closed := make(chan struct{})
	once := &sync.Once{}
	return &pipeConn{in: ba, out: ab, closed: closed, once: once, remote: b},
		&pipeConn{in: ab, out: ba, closed: closed, once: once, remote: a}
}

func (c *pipeConn) Send(ctx context.Context, b []byte) error {
	select {
	case c.out <- append([]byte(nil), b...):
		return nil
	case <-c.closed:
		return transport.ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *pipeConn) Recv(ctx context.Context) ([]byte, error) {
	// Frames sent before a close are delivered, as on a real connection.
	select {
	case b := <-c.in:
		return b, nil
	default:
	}
	select {
	case b := <-c.in:
		return b, nil
	case <-c.closed:
		return nil, transport.ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (c *pipeConn) Close() error                      { c.once.Do(func() { close(c.closed) }); return nil }
func (c *pipeConn) RemoteIdentity() ed25519.PublicKey { return c.remote }

func keyFor(name string) ed25519.PublicKey {
	seed := sha256.Sum256([]byte(name))
	return ed25519.NewKeyFromSeed(seed[:]).Public().(ed25519.PublicKey)
}

// syncModel runs one session between two model hosts and returns both
// sides' stats.
func syncModel(t interface {
	Helper()
	Fatalf(string, ...any)
}, a, b *modelHost, cfg sessionConfig) (SyncStats, SyncStats) {
	t.Helper()
	ca, cb := pipePair(a.key, b.key)
	defer func() { ca.Close() }()
	var sb SyncStats
	var errB error
	done := make(chan struct{})
	go func() {
		defer close(done)
		sb, errB = runSession(context.Background(), cb, b, cfg)
	}()
	sa, errA := runSession(context.Background(), ca, a, cfg)
	<-done
	if errA != nil || errB != nil {
		t.Fatalf("session: A %v, B %v", errA, errB)
	}
	return sa, sb
}

func TestSessionConvergesAndResyncIsIdle(t *testing.T) {
	a, b := newModelHost("a"), newModelHost("b")
	for i := range 50 {
		a.write(fmt.Sprintf("notes/%d", i), fmt.Sprintf("a%d", i))
	}
	for i := 50; i < 100; i++ {
		b.write(fmt.Sprintf("notes/%d", i), fmt.Sprintf("b%d", i))
	}
	sa, sb := syncModel(t, a, b, sessionConfig{maxRecords: 8})
	if a.snapshot() != b.snapshot() {
		t.Fatalf("diverged:\nA %s\nB %s", a.snapshot(), b.snapshot())
	}
	if sa.RecordsSent != 50 || sb.RecordsSent != 50 {
		t.Fatalf("records sent A %d B %d, want 50 each", sa.RecordsSent, sb.RecordsSent)
	}
	// A second session moves no record: hello and idle each way, at most
	// one more idle each once the cursors settle.
	sa, sb = syncModel(t, a, b, sessionConfig{})
	if sa.RecordsSent+sb.RecordsSent != 0 || sa.FramesSent > 3 || sb.FramesSent > 3 {
		t.Fatalf("idle resync moved records %d/%d in %d/%d frames", sa.RecordsSent, sb.RecordsSent, sa.FramesSent, sb.FramesSent)
	}
	// A changes 3 records: only those move.
	for i := range 3 {
		a.write(fmt.Sprintf("notes/%d", i*20), "late")
	}
	sa, sb = syncModel(t, a, b, sessionConfig{})
	if sa.RecordsSent != 3 || sb.RecordsSent != 0 {
		t.Fatalf("delta sync sent A %d B %d, want 3 and 0", sa.RecordsSent, sb.RecordsSent)
	}
	if a.snapshot() != b.snapshot() {
		t.Fatal("diverged after delta")
	}
}

// TestSessionOverlapSendsEachSideOnce: records edited on both sides are
// sent by each side once; the merged state is recognised as shared, not
// sent back, once each side knows the peer holds both halves.
func TestSessionOverlapSendsEachSideOnce(t *testing.T) {
	a, b := newModelHost("a"), newModelHost("b")
	for i := range 40 {
		a.write(fmt.Sprintf("notes/%d", i), fmt.Sprintf("a%d", i))
		b.write(fmt.Sprintf("notes/%d", i), fmt.Sprintf("b%d", i))
	}
	sa, sb := syncModel(t, a, b, sessionConfig{maxRecords: 8})
	if a.snapshot() != b.snapshot() {
		t.Fatal("diverged")
	}
	// Each side sends its 40; a record may go back once more only when its
	// feed entry was read before the acknowledgement that makes it shared.
	if sa.RecordsSent < 40 || sb.RecordsSent < 40 || sa.RecordsSent+sb.RecordsSent > 80+2*8*4 {
		t.Fatalf("records sent A %d B %d", sa.RecordsSent, sb.RecordsSent)
	}
	sa, sb = syncModel(t, a, b, sessionConfig{})
	if sa.RecordsSent+sb.RecordsSent != 0 {
		t.Fatalf("resync after overlap moved %d records", sa.RecordsSent+sb.RecordsSent)
	}
}

func TestSessionNeedResendsFull(t *testing.T) {
	a, b := newModelHost("a"), newModelHost("b")
	a.write("c/x", "1")
	b.missing["c/x"] = true // B "loses" the first delivery
	syncModel(t, a, b, sessionConfig{})
	if a.snapshot() != b.snapshot() {
		t.Fatalf("need did not repair: A %s B %s", a.snapshot(), b.snapshot())
	}
}

func TestSessionPolicyMismatchRefused(t *testing.T) {
	a, b := newModelHost("a"), newModelHost("b")
	b.policy = "other"
	ca, cb := pipePair(a.key, b.key)
	errc := make(chan error, 1)
	go func() { _, err := runSession(context.Background(), cb, b, sessionConfig{}); errc <- err }()
	_, err := runSession(context.Background(), ca, a, sessionConfig{})
	if !errors.Is(err, ErrPolicyMismatch) {
		t.Fatalf("A: %v", err)
	}
	if err := <-errc; !errors.Is(err, ErrPolicyMismatch) && !errors.Is(err, ErrPeerError) {
		t.Fatalf("B: %v", err)
	}
}

// TestSessionModelConverges: random writes on 2-4 model hosts and random
// sessions between them; after a final round every host holds the same
// records, and one more round moves nothing.
func TestSessionModelConverges(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		n := rapid.IntRange(2, 4).Draw(rt, "hosts")
		hosts := make([]*modelHost, n)
		for i := range hosts {
			hosts[i] = newModelHost(fmt.Sprintf("h%d", i))
		}
		steps := rapid.IntRange(1, 30).Draw(rt, "steps")
		for s := range steps {
			if rapid.Bool().Draw(rt, "write") {
				h := hosts[rapid.IntRange(0, n-1).Draw(rt, "who")]
				h.write(fmt.Sprintf("c/%d", rapid.IntRange(0, 5).Draw(rt, "rec")), fmt.Sprintf("e%d", s))
				continue
			}
			i := rapid.IntRange(0, n-1).Draw(rt, "a")
			j := rapid.IntRange(0, n-1).Draw(rt, "b")
			if i != j {
				syncModel(rt, hosts[i], hosts[j], sessionConfig{maxRecords: rapid.IntRange(1, 4).Draw(rt, "batch"), window: rapid.IntRange(1, 3).Draw(rt, "window")})
			}
		}
		for round := 0; round < 2; round++ {
			for i := 1; i < n; i++ {
				syncModel(rt, hosts[0], hosts[i], sessionConfig{})
			}
		}
		for i := 1; i < n; i++ {
			if hosts[i].snapshot() != hosts[0].snapshot() {
				rt.Fatalf("host %d diverged", i)
			}
		}
		for i := 1; i < n; i++ {
			sa, sb := syncModel(rt, hosts[0], hosts[i], sessionConfig{})
			if sa.RecordsSent+sb.RecordsSent != 0 {
				rt.Fatalf("quiescent round moved %d records", sa.RecordsSent+sb.RecordsSent)
			}
		}
	})
}

// TestSessionFeedLagDoesNotStall: a side whose LastSeq runs ahead of what
// its feed shows (a concurrent commit not yet visible) while the peer has
// nothing more to say must look at its feed again by itself: waiting only
// for the peer's frames would stall both sides for ever.
func TestSessionFeedLagDoesNotStall(t *testing.T) {
	a, b := newModelHost("a"), newModelHost("b")
	a.write("c/x", "1")
	a.write("c/y", "2")
	a.lag, a.hideFrom = 20, a.seq // c/y's commit is still in flight
	ca, cb := pipePair(a.key, b.key)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	errB := make(chan error, 1)
	go func() { _, err := runSession(ctx, cb, b, sessionConfig{}); errB <- err }()
	_, errA := runSession(ctx, ca, a, sessionConfig{})
	err := <-errB
	ca.Close()
	if errA != nil {
		t.Fatalf("a: %v", errA)
	}
	if err != nil {
		t.Fatalf("b: %v", err)
	}
	if a.snapshot() != b.snapshot() {
		t.Fatal("diverged")
	}
}

// growOnCursor is a model host whose feed grows, by a write that commits
// at once, while the session persists its cursor: a concurrent write
// that committed before the session's next turn took the store's
// notification, so no notification will come for it.
type growOnCursor struct {
	*modelHost
	once bool
}

func (h *growOnCursor) cursorMoved(ctx context.Context, peer string, c uint64) error {
	if !h.once {
		h.once = true
		h.write("c/late", "written during the session")
	}
	return h.modelHost.cursorMoved(ctx, peer, c)
}

// TestSessionSeesFeedGrownBeforeTurn is the lost wake-up that hung
// TestServeManyPeersAtOnce now and then: a write that committed after the
// session last looked at its feed's end but before it took the store's
// notification. The runner used to learn of it only after its feed reads,
// then wait for the notification (already spent) instead of reading: both
// sides waited for each other for ever. Each turn now tells the core the
// feed's end after taking the notification, so the session sends the
// write at once.
func TestSessionSeesFeedGrownBeforeTurn(t *testing.T) {
	a, b := &growOnCursor{modelHost: newModelHost("a")}, newModelHost("b")
	a.write("c/x", "1")
	ca, cb := pipePair(a.key, b.key)
	defer ca.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cfg := sessionConfig{}
	errB := make(chan error, 1)
	go func() { _, err := runSession(ctx, cb, b, cfg); errB <- err }()
	_, errA := runSession(ctx, ca, a, cfg)
	if err := <-errB; errA != nil || err != nil {
		t.Fatalf("a: %v, b: %v", errA, err)
	}
	if !a.once {
		t.Fatal("the write during the session did not happen")
	}
	if a.snapshot() != b.snapshot() {
		t.Fatalf("the write during the session did not go: a %s, b %s", a.snapshot(), b.snapshot())
	}
}

// TestSessionSendWorkReadsGrownFeed: a turn that starts with a stale view
// of the feed's end (writes committed after the previous turn, whose
// notification fired on a channel no longer waited on) must read and send
// them in that turn. Leaving them for "the next turn" made the runner wait
// on a fresh notification that no write would ever fire, with nothing to
// come from the peer: TestServeManyPeersAtOnce hung about 1 run in 40.
// Here through the core: the turn's event carries the feed's end, and the
// Ready that follows reads the feed and sends the batch.
func TestSessionSendWorkReadsGrownFeed(t *testing.T) {
	a := newModelHost("a")
	peer := transport.Fingerprint(keyFor("b"))
	s := &session{host: a, peer: peer}
	mine, _ := a.hello(context.Background(), peer)
	c := newSyncCore(sessionConfig{}, peer, mine)
	drive := func(ev coreEvent) (sent []*wireMsg) {
		t.Helper()
		if err := c.Step(ev); err != nil {
			t.Fatal(err)
		}
		for c.HasReady() {
			rd := c.Ready()
			for _, f := range rd.Frames {
				sent = append(sent, f.m)
			}
			c.Advance()
			if rd.Done {
				t.Fatalf("the session ended: %v", rd.Err)
			}
			if rd.Req != nil {
				if err := c.Step(s.perform(context.Background(), rd.Req)); err != nil {
					t.Fatal(err)
				}
			}
		}
		return sent
	}
	hello, err := encodeMsg(&wireMsg{T: msgHello, Hello: &helloMsg{Replica: peer, Policy: a.policy}})
	if err != nil {
		t.Fatal(err)
	}
	drive(coreEvent{kind: evFrame, frame: hello})
	drive(coreEvent{kind: evTurn, lastSeq: a.lastSeq()}) // everything sent: nothing yet
	a.write("c/x", "1")
	a.write("c/y", "1") // committed after that turn, before the next
	sent := drive(coreEvent{kind: evTurn, lastSeq: a.lastSeq()})
	if c.p.sentUpTo != a.lastSeq() {
		t.Fatalf("the turn sent the feed up to %d of %d, leaving the rest to a wake-up that never comes", c.p.sentUpTo, a.lastSeq())
	}
	if len(sent) != 1 || sent[0].T != msgBatch || len(sent[0].Batch.Records) != 2 {
		t.Fatalf("sent %v for the grown feed, want 1 batch of 2 records", sent)
	}
}
