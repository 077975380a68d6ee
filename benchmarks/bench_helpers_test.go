package benchmarks

import (
	"context"
	"crypto/ed25519"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/automerge/automerge-go"
	"github.com/ferrysync/ferry/replica"
	"github.com/ferrysync/ferry/storage"
	"github.com/ferrysync/ferry/transport"
)

// Helpers of the sync benchmarks (sync_bench_test.go).

// syncBenchN is the number of records of the sync benchmarks: FERRY_BENCH_N,
// 10,000 by default.
func syncBenchN(b *testing.B) int {
	s := os.Getenv("FERRY_BENCH_N")
	if s == "" {
		return 10_000
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 10 {
		b.Fatalf("FERRY_BENCH_N=%q: want an integer >= 10", s)
	}
	return n
}

const syncColl = "customers"

func syncID(i int) string { return fmt.Sprintf("cust-%06d", i) }

// syncFields is record i's content: about 210 bytes as JSON.
func syncFields(i int) map[string]any {
	return map[string]any{
		"name":   fmt.Sprintf("Customer %06d", i),
		"email":  fmt.Sprintf("customer%06d@example.com", i),
		"qty":    int64(i % 1000),
		"price":  float64(i%10000) / 100,
		"active": i%3 != 0,
		"tags":   []any{"retail", fmt.Sprintf("region-%d", i%7)},
		"note":   fmt.Sprintf("order %06d: deliver before noon, ring twice, leave at side door", i),
	}
}

// syncJSONSize is the mean size of the records' content as JSON.
func syncJSONSize(n int) float64 {
	total := 0
	for i := range n {
		j, _ := json.Marshal(syncFields(i))
		total += len(j)
	}
	return float64(total) / float64(n)
}

// syncChanged returns the 10 records the delta benchmarks change, spread
// over the whole id range.
func syncChanged(n int) []int {
	out := make([]int, 10)
	for i := range out {
		out[i] = i*(n/10) + 3%(n/10)
	}
	return out
}

// syncChangedQty is the new qty of a changed record.
func syncChangedQty(i int) int64 { return int64(100_000 + i) }

func openSyncReplica(b *testing.B, dir, name string, noSync bool) *replica.Replica {
	b.Helper()
	r, err := replica.Open(context.Background(), dir, replica.Options{
		Passphrase: []byte("bench-" + name),
		KDF:        storage.TestKDF(),
		Name:       name,
		NoSync:     noSync,
	})
	if err != nil {
		b.Fatalf("open %s: %v", name, err)
	}
	return r
}

// newSyncReplicas returns two on-disk replicas, a holding n records and b
// none, both opened with the default options (SyncWrites on), or with
// NoSync when FERRY_BENCH_NOSYNC=1 (to isolate the cost of fsync). The records
// are written with NoSync (setup only: 10k fsynced transactions would take
// longer than the benchmark), then the store is reopened with the
// defaults, so the sync starts with a cold document cache.
func newSyncReplicas(b *testing.B, n int) (ra, rb *replica.Replica) {
	b.Helper()
	ctx := context.Background()
	dirA, dirB := b.TempDir(), b.TempDir()
	start := time.Now()
	w := openSyncReplica(b, dirA, "a", true)
	for i := range n {
		if err := w.Put(ctx, syncColl, syncID(i), syncFields(i)); err != nil {
			b.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		b.Fatal(err)
	}
	b.Logf("setup: %d puts (NoSync) in %v", n, time.Since(start).Round(time.Millisecond))
	noSync := os.Getenv("FERRY_BENCH_NOSYNC") == "1"
	ra = openSyncReplica(b, dirA, "a", noSync)
	rb = openSyncReplica(b, dirB, "b", noSync)
	b.Cleanup(func() { ra.Close(); rb.Close() })
	// Device sync needs a grant each way.
	if _, err := ra.Pair(ctx, rb.ID(), []string{syncColl}, 0); err != nil {
		b.Fatal(err)
	}
	if _, err := rb.Pair(ctx, ra.ID(), []string{syncColl}, 0); err != nil {
		b.Fatal(err)
	}
	return ra, rb
}

// dialSyncPair connects the identities ka (dialing) and kb (accepting) by
// loopback TCP with TLS 1.3, each pinning the other.
func dialSyncPair(b *testing.B, ka, kb ed25519.PrivateKey) (ca, cb transport.Conn) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pa, pb := ka.Public().(ed25519.PublicKey), kb.Public().(ed25519.PublicKey)
	ln, err := transport.ListenTLS(ctx, "127.0.0.1:0", kb, transport.NewPinSet(pa), transport.TLSOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	var (
		wg     sync.WaitGroup
		accErr error
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		cb, accErr = ln.Accept(ctx)
	}()
	ca, err = transport.DialTLS(ctx, ln.Addr(), ka, transport.NewPinSet(pb), transport.TLSOptions{})
	wg.Wait()
	if err = errors.Join(err, accErr); err != nil {
		b.Fatal(err)
	}
	return ca, cb
}

// wire is what one side of a connection sent and received: frame payload
// bytes (length prefixes and TLS records excluded), the same measure for
// ferry and the baseline.
type wire struct {
	dur                   time.Duration
	framesSent, framesRec uint64
	bytesSent, bytesRecv  uint64
	rounds                int // baseline only: rounds of the pipelined exchange
}

func (w wire) bytes() float64  { return float64(w.bytesSent + w.bytesRecv) }
func (w wire) frames() float64 { return float64(w.framesSent + w.framesRec) }

func wireOf(c transport.Conn, before transport.Stats, d time.Duration) wire {
	s := c.(transport.StatsConn).Stats()
	return wire{
		dur:        d,
		framesSent: s.FramesSent - before.FramesSent, framesRec: s.FramesRecv - before.FramesRecv,
		bytesSent: s.BytesSent - before.BytesSent, bytesRecv: s.BytesRecv - before.BytesRecv,
	}
}

// ferrySync runs one ferry session between ra (dialing) and rb over a new
// TLS connection and returns a's view of the wire and both sides' stats.
// Only the session is measured (the dial is not); if timed, b's timer runs
// during the session, so ns/op is the measured sessions' time.
func ferrySync(b *testing.B, ra, rb *replica.Replica, timed bool) (wire, replica.SyncStats, replica.SyncStats) {
	b.Helper()
	ca, cb := dialSyncPair(b, ra.Identity(), rb.Identity())
	defer ca.Close()
	defer cb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	runtime.GC()
	before := ca.(transport.StatsConn).Stats()
	var (
		wg sync.WaitGroup
		sb replica.SyncStats
		eb error
	)
	if timed {
		b.StartTimer() // reads memory stats: not in the measured time
	}
	now := time.Now()
	wg.Add(1)
	go func() {
		defer wg.Done()
		sb, eb = rb.Sync(ctx, cb)
	}()
	sa, ea := ra.Sync(ctx, ca)
	wg.Wait()
	d := time.Since(now)
	if timed {
		b.StopTimer()
	}
	if err := errors.Join(ea, eb); err != nil {
		b.Fatal(err)
	}
	return wireOf(ca, before, d), sa, sb
}

// rawPeer is one side of the baseline: plain automerge-go documents (no
// ferry metadata, no store: in memory, nothing persisted or fsynced) and
// one sync state per document for the one peer.
type rawPeer struct {
	docs   []*automerge.Doc
	states []*automerge.SyncState
	saved  [][]byte // persisted sync states (rawPeer.persist)
}

// newRawPair returns a with n documents holding the records' content and b
// with n empty documents; both know the document ids (indexes), as an
// automerge-repo peer knows the URLs it syncs.
func newRawPair(b *testing.B, n int) (pa, pb *rawPeer) {
	b.Helper()
	pa, pb = &rawPeer{}, &rawPeer{}
	for i := range n {
		d := automerge.New()
		f := syncFields(i)
		keys := make([]string, 0, len(f))
		for k := range f {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if err := d.RootMap().Set(k, f[k]); err != nil {
				b.Fatal(err)
			}
		}
		if _, err := d.Commit("put"); err != nil {
			b.Fatal(err)
		}
		pa.docs = append(pa.docs, d)
		pb.docs = append(pb.docs, automerge.New())
	}
	for _, p := range []*rawPeer{pa, pb} {
		for _, d := range p.docs {
			p.states = append(p.states, automerge.NewSyncState(d))
		}
	}
	return pa, pb
}

// persist saves every sync state and drops the live ones, as a process
// that stops between two syncs would.
func (p *rawPeer) persist() {
	p.saved = make([][]byte, len(p.states))
	for i, s := range p.states {
		p.saved[i] = s.Save()
		p.states[i] = nil
	}
}

// change sets record i's qty, like the ferry benchmarks' Put.
func (p *rawPeer) change(b *testing.B, i int) {
	if err := p.docs[i].RootMap().Set("qty", syncChangedQty(i)); err != nil {
		b.Fatal(err)
	}
	if _, err := p.docs[i].Commit("put"); err != nil {
		b.Fatal(err)
	}
}

// rawSide runs the baseline protocol for the documents idxs on one side of
// conn. Each round, the side generates a sync message for every document
// (resuming a persisted sync state first if there is no live one) and
// sends each that exists as a frame (uvarint index+1, message), then an
// end-of-round frame (uvarint 0); it then receives the peer's frames of
// the round and feeds each to its document's sync state. The exchange ends
// after a round in which neither side sent a message. A reader goroutine
// drains the connection meanwhile, so neither side's sends can block the
// other's.
func (p *rawPeer) rawSide(ctx context.Context, conn transport.Conn, idxs []int) (int, error) {
	ctx, cancel := context.WithCancel(ctx)
	in := make(chan []byte, 2*(len(idxs)+1)+1)
	readErr := make(chan error, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			f, err := conn.Recv(ctx)
			if err != nil {
				readErr <- err
				return
			}
			select {
			case in <- f:
			case <-ctx.Done():
				return
			}
		}
	}()
	defer wg.Wait()
	defer cancel()

	for _, i := range idxs {
		if p.states[i] == nil {
			s, err := automerge.LoadSyncState(p.docs[i], p.saved[i])
			if err != nil {
				return 0, err
			}
			p.states[i] = s
		}
	}
	var frame []byte
	for round := 1; ; round++ {
		sent := 0
		for _, i := range idxs {
			m, ok := p.states[i].GenerateMessage()
			if !ok {
				continue
			}
			frame = binary.AppendUvarint(frame[:0], uint64(i)+1)
			frame = append(frame, m.Bytes()...)
			if err := conn.Send(ctx, frame); err != nil {
				return 0, err
			}
			sent++
		}
		if err := conn.Send(ctx, binary.AppendUvarint(nil, 0)); err != nil {
			return 0, err
		}
		got := 0
		for {
			var f []byte
			select {
			case f = <-in:
			case err := <-readErr:
				return 0, err
			}
			idx, n := binary.Uvarint(f)
			if n <= 0 || idx > uint64(len(p.docs)) {
				return 0, fmt.Errorf("bad frame")
			}
			if idx == 0 {
				break
			}
			if _, err := p.states[idx-1].ReceiveMessage(f[n:]); err != nil {
				return 0, err
			}
			got++
		}
		if sent == 0 && got == 0 {
			return round, nil
		}
	}
}

// rawSync runs the baseline between pa (dialing) and pb over a new TLS
// connection, for the documents idxs, and returns pa's view of the wire.
func rawSync(b *testing.B, pa, pb *rawPeer, idxs []int) wire {
	b.Helper()
	ka, kb := benchKey(b), benchKey(b)
	ca, cb := dialSyncPair(b, ka, kb)
	defer ca.Close()
	defer cb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	runtime.GC()
	before := ca.(transport.StatsConn).Stats()
	var (
		wg     sync.WaitGroup
		eb     error
		now    = time.Now()
		rounds int
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, eb = pb.rawSide(ctx, cb, idxs)
	}()
	rounds, ea := pa.rawSide(ctx, ca, idxs)
	wg.Wait()
	d := time.Since(now)
	if err := errors.Join(ea, eb); err != nil {
		b.Fatal(err)
	}
	w := wireOf(ca, before, d)
	w.rounds = rounds
	return w
}

func benchKey(b *testing.B) ed25519.PrivateKey {
	_, k, err := ed25519.GenerateKey(nil)
	if err != nil {
		b.Fatal(err)
	}
	return k
}

// checkRawConverged fails unless every document has the same heads on both
// sides.
func checkRawConverged(b *testing.B, pa, pb *rawPeer) {
	b.Helper()
	for i := range pa.docs {
		ha, hb := pa.docs[i].Heads(), pb.docs[i].Heads()
		if fmt.Sprint(ha) != fmt.Sprint(hb) {
			b.Fatalf("baseline doc %d did not converge: %v vs %v", i, ha, hb)
		}
	}
}

func allIdx(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i
	}
	return out
}

// syncResults accumulates the per-iteration figures of a benchmark (b.N is
// 1 with -benchtime 1x) and reports their means.
type syncResults map[string]float64

func (r syncResults) add(k string, v float64) { r[k] += v }

func (r syncResults) report(b *testing.B) {
	keys := make([]string, 0, len(r))
	for k := range r {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		b.ReportMetric(r[k]/float64(b.N), k)
	}
}
