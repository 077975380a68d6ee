package replica

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/ferrysync/ferry/storage"
)

// streamTestRecords is how many records the stream tests hold: 5,000,
// 1,500 under the race detector (the model hosts hash every record on
// each read; the bounds checked stay well under either).
func streamTestRecords() int {
	if raceEnabled {
		return 1500
	}
	return 5000
}

// modelSession runs one fault-free session between the model hosts a
// (initiating) and b and fails the test if either side fails. It returns
// a's side (its core, for the queue's peak), both sides' stats and the
// conversation's transcript.
func modelSession(t *testing.T, a, b *reconModel) (*coreSide, SyncStats, SyncStats, string) {
	t.Helper()
	var out strings.Builder
	cv := &coreConv{out: &out}
	sa, sb := &coreSide{name: "a", host: a}, &coreSide{name: "b", host: b}
	statsA, statsB := cv.session(sa, sb)
	if sa.err != nil || sb.err != nil {
		t.Fatalf("session failed: %v / %v", sa.err, sb.err)
	}
	return sa, statsA, statsB, out.String()
}

// TestReconSendsStayBounded: a reconciliation that finds the peer lacks
// most of this side's records queues them as spans (reconSpan) and
// expands them a few buckets at a time as batches go out, so the queue
// of sends never holds every record. Before, a first meeting with an
// empty peer queued one send per record, read order included: a sender of
// 1,000,000 records peaked at 435 MiB (BenchmarkMemReplica,
// FERRY_MEM_N=1000000), every other workload at about 100. The cases: a
// peer holding nothing (one span over the whole key space), a peer
// holding a few of the records (spans that leave out the records it
// listed) and a peer holding some of them at other versions.
func TestReconSendsStayBounded(t *testing.T) {
	n := streamTestRecords()
	for _, tc := range []struct {
		name          string
		peer, changed int // records the peer holds (every 97th), of them changed since
	}{
		{"empty peer", 0, 0},
		{"peer holds a few", n / 97, 0},
		{"peer holds a few at other versions", n / 97, n / 97 / 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := newReconModel("a"), newReconModel("b")
			for i := range n {
				a.write(fmt.Sprintf("notes/%d", i), fmt.Sprintf("e%d", i))
			}
			for j := range tc.peer {
				i := j * 97
				b.write(fmt.Sprintf("notes/%d", i), fmt.Sprintf("e%d", i))
				if j < tc.changed {
					b.write(fmt.Sprintf("notes/%d", i), fmt.Sprintf("b%d", i))
				}
			}
			sa, statsA, statsB, _ := modelSession(t, a, b)
			if got, want := b.names(), a.names(); got != want {
				t.Fatalf("after the session b holds %d records, a %d", len(b.records), len(a.records))
			}
			if want := n - tc.peer; statsA.RecordsSent != want || statsB.RecordsSent != tc.changed {
				t.Errorf("a sent %d records and b %d, want %d and %d", statsA.RecordsSent, statsB.RecordsSent, want, tc.changed)
			}
			// A batch (512 records) and an expansion (expandMin and a
			// bucket's worth more, buckets holding ~n/1024).
			bound := 512 + expandMin + 4*n/storage.ReconBuckets
			if sa.core.reconPeak > bound || sa.core.reconPeak == 0 {
				t.Errorf("a queued at most %d records at once, want 1..%d (of %d)", sa.core.reconPeak, bound, n)
			}
			t.Logf("%d records, %d sent, at most %d queued", n, statsA.RecordsSent, sa.core.reconPeak)
		})
	}
}

// TestReconListedRangeReadBucketByBucket: a peer that lists its few
// records over a wide range (an initiator holding at most reconListAt
// records lists the whole key space: a new device that wrote a record
// before its first sync) does not make this side read every record of
// the range at once: the step reads it a bucket at a time and queues a
// span. (From the review of the spans change: one step read all 5,000.)
func TestReconListedRangeReadBucketByBucket(t *testing.T) {
	n := streamTestRecords()
	for _, names := range [][2]string{{"a", "b"}, {"b", "a"}} { // either side starts
		big, small := newReconModel(names[0]), newReconModel(names[1])
		for i := range n {
			big.write(fmt.Sprintf("notes/%d", i), fmt.Sprintf("e%d", i))
		}
		small.write("notes/new", "s")
		sbig, st, _, out := modelSession(t, big, small)
		first := strings.SplitN(out, "\n", 6)
		t.Logf("%v: big sent %d, queue peak %d, largest reconItems read %d of %d; %q", names, st.RecordsSent, sbig.core.reconPeak, big.maxItems, n, first[2])
		if big.maxItems > n/4 {
			t.Errorf("one step read %d records at once", big.maxItems)
		}
	}
}

// TestReconSpanWritesDuringSession: records rewritten, created and
// deleted while a first meeting's feed span is being expanded (and a key
// rotation moving records between epochs) all reach the peer: a second
// session, which trusts the cursors and does not reconcile, leaves both
// sides identical. (From the review of the spans change.)
func TestReconSpanWritesDuringSession(t *testing.T) {
	for _, tc := range []struct {
		name   string
		rotate bool
		peer   int // records b holds first: none makes a's span one read through the feed
	}{
		{"writes, empty peer (feed span)", false, 0},
		{"writes and a key rotation, empty peer (feed span)", true, 0},
		{"writes, peer holds 20 (bucket spans)", false, 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			e := newEnv(t)
			a := e.replica("a", func(o *Options) { o.Batch = 64 })
			b := e.replica("b", func(o *Options) { o.Batch = 64 })
			const n = 1500
			for i := range n {
				mustPut(t, a, "notes", fmt.Sprintf("r%04d", i), map[string]any{"v": i})
			}
			for i := range tc.peer {
				mustPut(t, b, "notes", fmt.Sprintf("b%04d", i), map[string]any{"v": i})
			}
			var stop atomic.Bool
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				rng := rand.New(rand.NewSource(1))
				for k := 0; !stop.Load(); k++ {
					i := rng.Intn(n)
					id := fmt.Sprintf("r%04d", i)
					var err error
					switch {
					case k%7 == 3:
						err = a.Delete(ctx, "notes", id)
					case k%11 == 5:
						err = a.Put(ctx, "notes", fmt.Sprintf("new%05d", k), map[string]any{"k": k})
					default:
						err = a.Put(ctx, "notes", id, map[string]any{"w": k})
					}
					if err != nil && !isNotFound(err) {
						t.Errorf("write: %v", err)
						return
					}
					if tc.rotate && k == 20 {
						if err := a.RotateKey(ctx, nil); err != nil {
							t.Errorf("rotate: %v", err)
							return
						}
					}
				}
			}()
			sa, sb := e.sync(b, a)
			stop.Store(true)
			wg.Wait()
			t.Logf("session 1: a sent %d, b sent %d", sb.RecordsSent, sa.RecordsSent)
			// The second session trusts the cursors: no reconciliation.
			e.sync(b, a)
			diffReplicas(t, a, b)
		})
	}
}

func isNotFound(err error) bool { return errors.Is(err, ErrNotFound) }

func diffReplicas(t *testing.T, a, b *Replica) {
	t.Helper()
	ctx := context.Background()
	list := func(r *Replica) map[string]bool {
		out := map[string]bool{}
		if err := r.Scan(ctx, "notes", true, func(ri RecordInfo) error {
			out[ri.ID] = ri.Deleted
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return out
	}
	la, lb := list(a), list(b)
	missing, differ := 0, 0
	for id, del := range la {
		dl, ok := lb[id]
		if !ok {
			if missing < 5 {
				t.Errorf("b lacks notes/%s (deleted on a: %v)", id, del)
			}
			missing++
			continue
		}
		if dl != del {
			differ++
			if differ < 5 {
				t.Errorf("notes/%s deleted on a %v, on b %v", id, del, dl)
			}
			continue
		}
		if !del {
			va, _ := a.Get(ctx, "notes", id)
			vb, _ := b.Get(ctx, "notes", id)
			if !reflect.DeepEqual(va, vb) {
				differ++
				if differ < 5 {
					t.Errorf("notes/%s differs: a %v, b %v", id, va, vb)
				}
			}
		}
	}
	for id := range lb {
		if _, ok := la[id]; !ok {
			missing++
			t.Errorf("a lacks notes/%s", id)
		}
	}
	if missing+differ > 0 {
		t.Errorf("%d missing, %d differing (a %d records, b %d)", missing, differ, len(la), len(lb))
	}
}

// failingSet is a memSet whose index reads (and, as a reconFeeder, feed
// reads) fail once sums are loaded.
type failingSet struct{ *memSet }

var errIndexRead = errors.New("index read failed")

func (f failingSet) reconItems(context.Context, uint16, uint16) ([]reconItem, error) {
	return nil, errIndexRead
}

func (f failingSet) reconFeed(context.Context, uint64, int) ([]recRef, uint64, bool, error) {
	return nil, 0, false, errIndexRead
}

// TestReconExpandReportsReadErrors: a span whose records cannot be read,
// bucket by bucket or through the feed, fails the expansion with the
// store's error rather than expanding to nothing (which would drop its
// records from the session silently).
func TestReconExpandReportsReadErrors(t *testing.T) {
	s := newMemSet()
	for i := range 50 {
		s.put("notes", fmt.Sprint(i), "x")
	}
	for _, feed := range []bool{false, true} {
		e := newReconEngine(reconKey("a", "b", []byte("na"), []byte("nb")), true)
		if err := e.loadSums(context.Background(), s); err != nil {
			t.Fatal(err)
		}
		sp := &reconSpan{lo: 0, hi: storage.ReconBuckets, feed: feed}
		out, err := e.expand(context.Background(), failingSet{s}, reconSend{span: sp})
		if !errors.Is(err, errIndexRead) || out != nil {
			t.Errorf("feed %v: expand gave %d sends, error %v; want the read's error", feed, len(out), err)
		}
	}
}
