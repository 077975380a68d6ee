package replica

import (
	"fmt"
	"strings"
	"testing"

	"github.com/ferrysync/ferry/storage"
)

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
	const n = 5000
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
			var out strings.Builder
			cv := &coreConv{out: &out}
			sa, sb := &coreSide{name: "a", host: a}, &coreSide{name: "b", host: b}
			statsA, statsB := cv.session(sa, sb)
			if sa.err != nil || sb.err != nil {
				t.Fatalf("session failed: %v / %v", sa.err, sb.err)
			}
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
