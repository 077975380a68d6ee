package replica

import (
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"
)

// TestReconScale measures reconciliation between two replicas holding the
// same FERRY_RECON_SCALE records (skipped when unset), then with k of them
// changed on one side: frames, bytes and time of the session, which
// reconciles because the anti-entropy interval has passed.
func TestReconScale(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("FERRY_RECON_SCALE"))
	if n <= 0 {
		t.Skip("set FERRY_RECON_SCALE=N to measure")
	}
	e := newEnv(t)
	e.timeout = time.Hour
	every := func(o *Options) { o.AntiEntropy = time.Nanosecond }
	a, b := e.replica("a", every), e.replica("b", every)
	start := time.Now()
	if err := putMany(a, "items", n); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d puts: %v", n, time.Since(start))
	start = time.Now()
	sa, _ := e.sync(a, b)
	t.Logf("initial sync: %v, %d records, %d bytes", time.Since(start), sa.RecordsSent, sa.BytesSent)
	e.clock.Advance(time.Second)
	start = time.Now()
	sa, sb := e.sync(a, b)
	sameCounts(t, "identical", sa, sb)
	t.Logf("reconcile identical %d: %v, %d+%d frames, %d bytes, %d records", n, time.Since(start),
		sa.FramesSent, sa.FramesReceived, sa.BytesSent+sa.BytesReceived, sa.RecordsSent+sa.RecordsReceived)
	if sa.RecordsSent+sa.RecordsReceived != 0 || sa.BytesSent+sa.BytesReceived > 4096 {
		t.Fatalf("identical sets: %+v", sa)
	}
	done := 0
	for _, k := range []int{1, 10, 1000} {
		for i := range k {
			mustPut(t, a, "items", fmt.Sprintf("item-%05d", (done+i)*7919%n), map[string]any{"qty": int64(-1 - done - i)})
		}
		done += k
		e.clock.Advance(time.Second)
		start = time.Now()
		sa, sb := e.sync(a, b)
		sameCounts(t, "k differ", sa, sb)
		t.Logf("reconcile %d differing of %d: %v, %d+%d frames, %d bytes, %d records sent", k, n, time.Since(start),
			sa.FramesSent, sa.FramesReceived, sa.BytesSent+sa.BytesReceived, sa.RecordsSent)
	}
}
