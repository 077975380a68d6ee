package replica

import (
	"fmt"
	"testing"
)

// TestIdleSessionBytes: a resync of two replicas already in sync costs a
// hello and an idle each way, at most 306 bytes in all (protocol 1's
// figure, before the hello carried the reconciliation's fields; 378 with
// them as strings and 16-byte nonces), whatever the number of records.
func TestIdleSessionBytes(t *testing.T) {
	e := newEnv(t)
	a, b := e.replica("a"), e.replica("b")
	for i := range 200 {
		mustPut(t, a, "notes", fmt.Sprint("n", i), map[string]any{"v": int64(i)})
	}
	e.sync(a, b)
	sa, sb := e.sync(a, b)
	sameCounts(t, "idle", sa, sb)
	total := sa.BytesSent + sa.BytesReceived
	t.Logf("idle session: %d bytes, %d+%d frames", total, sa.FramesSent, sa.FramesReceived)
	if sa.RecordsSent+sa.RecordsReceived != 0 || sa.FramesSent+sa.FramesReceived != 4 || total > 306 {
		t.Fatalf("idle session: %d records, %d frames, %d bytes; want 0, 4, <= 306",
			sa.RecordsSent+sa.RecordsReceived, sa.FramesSent+sa.FramesReceived, total)
	}
}
