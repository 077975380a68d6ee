package benchmarks

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/automerge/automerge-go"
	"github.com/ferrysync/ferry/replica"
	"github.com/ferrysync/ferry/transport"
)

// The reconciliation benchmarks (issue 13): devices that meet without a
// trustworthy cursor. Replicas are on disk (SyncWrites on, the default,
// for every measured session; setup runs with NoSync) and sync over
// loopback TCP with TLS 1.3, like sync_bench_test.go.
//
//	BenchmarkReconFirstMeeting/same    a and c hold the same N records
//	                                   (c got them from b, b from a) and
//	                                   meet for the first time
//	BenchmarkReconFirstMeeting/k=K     the same, a having changed K of
//	                                   them after c got its copy
//	BenchmarkReconHealRestored         b's store is replaced by a copy 1,000
//	                                   records old; one session heals it
//	BenchmarkSyncInitialGate           the initial sync of FERRY_BENCH_N
//	                                   records against the 30 s quality gate
//	                                   (runs only when FERRY_BENCH_N is set)
//
// Metrics (ns/op is ferry's measured session alone):
//
//	ferry-s, raw-s         seconds of the session (both sides done)
//	ferry-B, raw-B         frame payload bytes, both directions
//	time-ratio, bytes-ratio  ferry / raw (the raw Automerge sync protocol,
//	                       fresh sync states, every document, in memory)
//	ferry-rtt              round trips after the handshake on the longest
//	                       causal chain of frames (see legLink: exact for
//	                       a conversation of few frames, an upper bound
//	                       when both sides stream many frames at once)
//	ferry-frames           frames, both directions
//	raw-rounds             the baseline's rounds (one round trip each: every
//	                       document's messages of a round are pipelined)
//	ferry-records          records the session moved, both directions
//	cpu-s                  (SyncInitialGate) process CPU seconds, user +
//	                       system, every thread, during the session
//	cursor-B/diff          bytes per changed record of the cursor fast path
//	                       (a and b, who met before, syncing the same
//	                       changes): the cost of the changes themselves
//	ferry-B/diff           the same for a and c's first meeting
//	excess-B/diff          (ferry-B - cursor-B) / K: what reconciliation
//	                       adds per differing record (target <= 2048)

// legLink measures round trips on one connection whose two ends are both
// in this process. Every frame gets a depth: one more than the deepest
// frame its sender had received when sending it (a Lamport clock over the
// two ends). The deepest frame is the longest chain of one-way trips the
// session had to wait for; a frame sent without waiting for anything
// (pipelined) does not lengthen it. Frames received by a reader goroutine
// ahead of need count as received, so the figure is an upper bound.
type legLink struct {
	mu       sync.Mutex
	inflight [2][]int // depths of frames sent by each side, not yet received
	seen     [2]int   // the deepest frame each side received
	first    [2]int   // the depth of each side's first frame (its hello)
	deepest  int
}

// legConn is one end of a legLink.
type legConn struct {
	transport.Conn
	l    *legLink
	side int
}

func newLegPair(ca, cb transport.Conn) (*legConn, *legConn, *legLink) {
	l := &legLink{}
	return &legConn{Conn: ca, l: l, side: 0}, &legConn{Conn: cb, l: l, side: 1}, l
}

func (c *legConn) Send(ctx context.Context, frame []byte) error {
	l := c.l
	l.mu.Lock()
	d := l.seen[c.side] + 1
	l.inflight[c.side] = append(l.inflight[c.side], d)
	if l.first[c.side] == 0 {
		l.first[c.side] = d
	}
	l.deepest = max(l.deepest, d)
	l.mu.Unlock()
	return c.Conn.Send(ctx, frame)
}

func (c *legConn) Recv(ctx context.Context) ([]byte, error) {
	f, err := c.Conn.Recv(ctx)
	if err != nil {
		return f, err
	}
	l := c.l
	l.mu.Lock()
	if q := l.inflight[1-c.side]; len(q) > 0 {
		l.seen[c.side] = max(l.seen[c.side], q[0])
		l.inflight[1-c.side] = q[1:]
	}
	l.mu.Unlock()
	return f, nil
}

func (c *legConn) Stats() transport.Stats { return c.Conn.(transport.StatsConn).Stats() }

var _ transport.StatsConn = (*legConn)(nil)

// rttAfterHandshake is the number of round trips on the longest chain
// after the handshake (both sides' first frames).
func (l *legLink) rttAfterHandshake() float64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return float64(l.deepest-max(l.first[0], l.first[1])) / 2
}

// session is one measured session: the wire seen from the dialing side,
// round trips, and both sides' stats.
type session struct {
	wire
	rtt    float64
	sa, sb replica.SyncStats
	cpu    time.Duration // process CPU (user+sys, every thread) during the session
}

func (s session) moved() int {
	return s.sa.RecordsSent + s.sa.RecordsReceived
}

// measuredSync runs one ferry session between ra (dialing) and rb over a
// new TLS connection wrapped in a legLink; timed runs b's timer during it.
func measuredSync(b *testing.B, ra, rb *replica.Replica, timed bool) session {
	b.Helper()
	ta, tb := dialSyncPair(b, ra.Identity(), rb.Identity())
	defer ta.Close()
	defer tb.Close()
	ca, cb, link := newLegPair(ta, tb)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	runtime.GC()
	before := ta.(transport.StatsConn).Stats()
	var (
		wg sync.WaitGroup
		sb replica.SyncStats
		eb error
	)
	if timed {
		b.StartTimer()
	}
	stopProfile := startSessionProfile(b)
	now, cpu0 := time.Now(), processCPU(b)
	wg.Add(1)
	go func() {
		defer wg.Done()
		sb, eb = rb.Sync(ctx, cb)
	}()
	sa, ea := ra.Sync(ctx, ca)
	wg.Wait()
	d, cpu := time.Since(now), processCPU(b)-cpu0
	stopProfile()
	if timed {
		b.StopTimer()
	}
	if err := errors.Join(ea, eb); err != nil {
		b.Fatal(err)
	}
	return session{wire: wireOf(ta, before, d), rtt: link.rttAfterHandshake(), sa: sa, sb: sb, cpu: cpu}
}

// startSessionProfile starts a CPU profile of one measured session when
// FERRY_SESSION_CPUPROFILE names a file (the benchmark's own -cpuprofile
// would include writing the records); it returns the function that stops it.
func startSessionProfile(b *testing.B) func() {
	path := os.Getenv("FERRY_SESSION_CPUPROFILE")
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		b.Fatal(err)
	}
	return func() {
		pprof.StopCPUProfile()
		if err := f.Close(); err != nil {
			b.Fatal(err)
		}
	}
}

// processCPU returns the CPU time (user + system) this process has used so
// far. A session's share of it is what the session costs on a machine too
// busy for its wall time to mean much: wall time on this 2-core machine is
// at least half of it.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// rawCopies returns two raw peers holding the same n documents (the
// second loaded from the first's saves) with fresh sync states: two
// devices that hold the same data and never synced with each other.
func rawCopies(b *testing.B, n int) (pa, pb *rawPeer) {
	b.Helper()
	pa, _ = newRawPair(b, n)
	pb = &rawPeer{}
	for _, d := range pa.docs {
		c, err := automerge.Load(d.Save())
		if err != nil {
			b.Fatal(err)
		}
		pb.docs = append(pb.docs, c)
		pb.states = append(pb.states, automerge.NewSyncState(c))
	}
	return pa, pb
}

// reconFixture is a (holding N records) and b (synced with a), on disk.
type reconFixture struct {
	n       int
	dirA    string
	dirB    string
	ra, rb  *replica.Replica
	changes int // change rounds made, so every change sets a new value
	devices int // c devices made
}

// newReconFixture writes n records on a and syncs them to b, both opened
// with NoSync for the setup, then reopens both with the defaults.
func newReconFixture(b *testing.B, n int) *reconFixture {
	b.Helper()
	ctx := context.Background()
	f := &reconFixture{n: n, dirA: b.TempDir(), dirB: b.TempDir()}
	start := time.Now()
	wa := openSyncReplica(b, f.dirA, "a", true)
	for i := range n {
		if err := wa.Put(ctx, syncColl, syncID(i), syncFields(i)); err != nil {
			b.Fatal(err)
		}
	}
	wb := openSyncReplica(b, f.dirB, "b", true)
	pairReplicas(b, wa, wb)
	if s := measuredSync(b, wa, wb, false); s.sa.RecordsSent != n {
		b.Fatalf("setup a->b sent %d records, want %d", s.sa.RecordsSent, n)
	}
	closeAll(b, wa, wb)
	f.ra, f.rb = openSyncReplica(b, f.dirA, "a", false), openSyncReplica(b, f.dirB, "b", false)
	b.Cleanup(func() { closeAll(b, f.ra, f.rb) })
	b.Logf("setup: %d records on a, synced to b, in %v", n, time.Since(start).Round(time.Millisecond))
	return f
}

func pairReplicas(b *testing.B, rs ...*replica.Replica) {
	b.Helper()
	for _, x := range rs {
		for _, y := range rs {
			if x != y {
				if _, err := x.Pair(context.Background(), y.ID(), []string{syncColl}, 0); err != nil {
					b.Fatal(err)
				}
			}
		}
	}
}

func closeAll(b *testing.B, rs ...*replica.Replica) {
	b.Helper()
	for _, r := range rs {
		if err := r.Close(); err != nil {
			b.Fatal(err)
		}
	}
}

// newDevice returns a new device c that got every record from b (and never
// met a), reopened with the defaults.
func (f *reconFixture) newDevice(b *testing.B) *replica.Replica {
	b.Helper()
	f.devices++
	name := fmt.Sprintf("c%d", f.devices)
	dir := b.TempDir()
	w := openSyncReplica(b, dir, name, true)
	pairReplicas(b, f.ra, w)
	pairReplicas(b, f.rb, w)
	if s := measuredSync(b, w, f.rb, false); s.sa.RecordsReceived != f.n {
		b.Fatalf("setup %s<-b received %d records, want %d", name, s.sa.RecordsReceived, f.n)
	}
	closeAll(b, w)
	c := openSyncReplica(b, dir, name, false)
	b.Cleanup(func() { c.Close() })
	return c
}

// change sets a new qty on k of a's records, spread over the id range,
// and returns their indexes.
func (f *reconFixture) change(b *testing.B, k int) []int {
	b.Helper()
	f.changes++
	idx := make([]int, k)
	for j := range idx {
		idx[j] = j * (f.n / k)
		if err := f.ra.Put(context.Background(), syncColl, syncID(idx[j]), map[string]any{"qty": int64(f.changes*1_000_000 + idx[j])}); err != nil {
			b.Fatal(err)
		}
	}
	return idx
}

// BenchmarkReconFirstMeeting: a syncs with b, b with c; then a and c meet
// for the first time, holding the same N records ("same") or after a
// changed K of them ("k=K"). Targets (issue 13): same: at most 2 round
// trips after the handshake, 4 KiB, under 1% of the raw protocol's bytes
// and 5% of its time; k=K: round trips growing with log N, bytes at most
// the changes plus 2 KiB per differing record.
func BenchmarkReconFirstMeeting(b *testing.B) {
	n := syncBenchN(b)
	f := newReconFixture(b, n)
	for _, k := range []int{0, 1, 10, 1000} {
		name := "same"
		if k > 0 {
			name = fmt.Sprintf("k=%d", k)
		}
		if k > n {
			continue
		}
		b.Run(name, func(b *testing.B) {
			res := syncResults{}
			b.StopTimer()
			for range b.N {
				c := f.newDevice(b)
				var cursor session
				var changed []int
				if k > 0 {
					changed = f.change(b, k)
					cursor = measuredSync(b, f.ra, f.rb, false) // b met a: the cursor fast path
					if cursor.sa.RecordsSent != k {
						b.Fatalf("cursor delta a->b sent %d records, want %d", cursor.sa.RecordsSent, k)
					}
				}
				s := measuredSync(b, f.ra, c, true)
				if want := k; s.moved() != want || s.sb.RecordsReceived+s.sb.RecordsSent != want {
					b.Logf("a<->c first meeting moved %d records (a: sent %d received %d; c: sent %d received %d), want %d",
						s.moved(), s.sa.RecordsSent, s.sa.RecordsReceived, s.sb.RecordsSent, s.sb.RecordsReceived, want)
				}
				for _, i := range changed {
					checkFerryRecord(b, c, i, int64(f.changes*1_000_000+i))
				}

				pa, pb := rawCopies(b, n)
				for _, i := range changed {
					pa.change(b, i)
				}
				rw := rawSync(b, pa, pb, allIdx(n))
				checkRawConverged(b, pa, pb)

				res.add("ferry-s", s.dur.Seconds())
				res.add("raw-s", rw.dur.Seconds())
				res.add("time-ratio", s.dur.Seconds()/rw.dur.Seconds())
				res.add("ferry-B", s.bytes())
				res.add("raw-B", rw.bytes())
				res.add("bytes-ratio", s.bytes()/rw.bytes())
				res.add("ferry-rtt", s.rtt)
				res.add("ferry-frames", s.frames())
				res.add("raw-rounds", float64(rw.rounds))
				res.add("ferry-records", float64(s.moved()))
				if k > 0 {
					res.add("cursor-B/diff", cursor.bytes()/float64(k))
					res.add("ferry-B/diff", s.bytes()/float64(k))
					res.add("excess-B/diff", (s.bytes()-cursor.bytes())/float64(k))
				}
				b.Logf("n=%d k=%d ferry %v %d B %.1f rtt %d frames %d records | raw %v %d B %d rounds | cursor path %d B",
					n, k, s.dur, int(s.bytes()), s.rtt, int(s.frames()), s.moved(), rw.dur, int(rw.bytes()), rw.rounds, int(cursor.bytes()))
			}
			res.report(b)
		})
	}
}

// copyStore copies the files of a closed store's directory (recursively).
func copyStore(b *testing.B, src, dst string) {
	b.Helper()
	err := filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o700)
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), data, 0o600)
	})
	if err != nil {
		b.Fatal(err)
	}
}

// healLost is the number of records the restored copy lacks.
const healLost = 1000

// BenchmarkReconHealRestored: a and b hold N records in sync; b's store is
// copied (closed); a writes 1,000 new records and syncs them to b (the
// cursor delta: the baseline); b's store is replaced by the copy. The
// measured session heals b: it must move about those 1,000 records, and
// b then holds all N+1,000. Ratios are against the delta session that
// first brought the same records to b.
func BenchmarkReconHealRestored(b *testing.B) {
	n := syncBenchN(b)
	res := syncResults{}
	b.StopTimer()
	ctx := context.Background()
	for range b.N {
		f := newReconFixture(b, n)
		closeAll(b, f.rb)
		snap := filepath.Join(b.TempDir(), "b.snap")
		copyStore(b, f.dirB, snap)
		f.rb = openSyncReplica(b, f.dirB, "b", false)
		for i := n; i < n+healLost; i++ {
			if err := f.ra.Put(ctx, syncColl, syncID(i), syncFields(i)); err != nil {
				b.Fatal(err)
			}
		}
		delta := measuredSync(b, f.ra, f.rb, false)
		if delta.sa.RecordsSent != healLost {
			b.Fatalf("delta a->b sent %d records, want %d", delta.sa.RecordsSent, healLost)
		}
		closeAll(b, f.rb)
		if err := os.RemoveAll(f.dirB); err != nil {
			b.Fatal(err)
		}
		copyStore(b, snap, f.dirB)
		f.rb = openSyncReplica(b, f.dirB, "b", false)
		if _, err := f.rb.Get(ctx, syncColl, syncID(n)); err == nil {
			b.Fatal("the restored copy already holds the later records")
		}

		s := measuredSync(b, f.ra, f.rb, true)
		page, err := f.rb.List(ctx, syncColl, replica.ListOptions{})
		if err != nil {
			b.Fatal(err)
		}
		if len(page.Items) != n+healLost {
			b.Fatalf("after the healing session b holds %d records, want %d", len(page.Items), n+healLost)
		}
		checkFerryRecord(b, f.rb, n+healLost-1, int64((n+healLost-1)%1000))
		again := measuredSync(b, f.rb, f.ra, false)

		res.add("ferry-s", s.dur.Seconds())
		res.add("delta-s", delta.dur.Seconds())
		res.add("time-ratio", s.dur.Seconds()/delta.dur.Seconds())
		res.add("ferry-B", s.bytes())
		res.add("delta-B", delta.bytes())
		res.add("bytes-ratio", s.bytes()/delta.bytes())
		res.add("ferry-records", float64(s.moved()))
		res.add("ferry-rtt", s.rtt)
		res.add("after-records", float64(again.moved()))
		b.Logf("n=%d lost=%d heal %v %d B %d records %.1f rtt | delta %v %d B | next session %d records",
			n, healLost, s.dur, int(s.bytes()), s.moved(), s.rtt, delta.dur, int(delta.bytes()), again.moved())
	}
	res.report(b)
}

// syncGate is the seed's quality gate: an initial sync of 100,000 records
// completes within 30 seconds.
const syncGate = 30 * time.Second

// BenchmarkSyncInitialGate: the initial sync of FERRY_BENCH_N records
// (100,000 for the gate) between two on-disk replicas with fsync (the
// default, whatever FERRY_BENCH_NOSYNC says) over loopback TLS; reports
// seconds and the ratio to the 30 s gate. It runs only when FERRY_BENCH_N
// is set, so the default `make bench` stays quick.
func BenchmarkSyncInitialGate(b *testing.B) {
	if os.Getenv("FERRY_BENCH_N") == "" {
		b.Skip("set FERRY_BENCH_N (100000 for the 30 s gate)")
	}
	n := syncBenchN(b)
	ctx := context.Background()
	res := syncResults{}
	b.StopTimer()
	for range b.N {
		dirA, dirB := b.TempDir(), b.TempDir()
		w := openSyncReplica(b, dirA, "a", true)
		for i := range n {
			if err := w.Put(ctx, syncColl, syncID(i), syncFields(i)); err != nil {
				b.Fatal(err)
			}
		}
		closeAll(b, w)
		// The writer ran without fsync: write its pages back now, so the
		// kernel's writeback of the set-up does not run inside the
		// measured session (it made runs of one build vary by 5 s).
		syscall.Sync()
		ra, rb := openSyncReplica(b, dirA, "a", false), openSyncReplica(b, dirB, "b", false)
		pairReplicas(b, ra, rb)
		s := measuredSync(b, ra, rb, true)
		if s.sa.RecordsSent != n || s.sb.RecordsReceived != n {
			b.Fatalf("initial sync moved %d/%d records, want %d", s.sa.RecordsSent, s.sb.RecordsReceived, n)
		}
		checkFerryRecord(b, rb, n-1, int64((n-1)%1000))
		closeAll(b, ra, rb)
		res.add("ferry-s", s.dur.Seconds())
		res.add("gate-ratio", s.dur.Seconds()/syncGate.Seconds())
		res.add("cpu-s", s.cpu.Seconds())
		res.add("ferry-rec/s", float64(n)/s.dur.Seconds())
		res.add("ferry-B/rec", s.bytes()/float64(n))
		b.Logf("n=%d initial sync on disk (fsync) over loopback TLS: %v (gate %v for 100,000), %d B", n, s.dur, syncGate, int(s.bytes()))
	}
	res.report(b)
}
