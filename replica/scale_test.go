package replica

import (
	"context"
	"fmt"
	"reflect"
	"testing"
	"time"
)

// TestDeltaSyncMovesOnlyChanges: two replicas share many records; one
// changes ten; the next session moves those ten and nothing else, and an
// idle resync moves a few frames and a few hundred bytes.
func TestDeltaSyncMovesOnlyChanges(t *testing.T) {
	n := 10000
	if testing.Short() {
		n = 1000
	}
	e := newEnv(t)
	a, b := e.replica("a"), e.replica("b")
	start := time.Now()
	if err := putMany(a, "items", n); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d puts: %v", n, time.Since(start))
	start = time.Now()
	sa, sb := e.sync(a, b)
	t.Logf("initial sync of %d: %v, %d bytes, %d frames", n, time.Since(start), sa.BytesSent, sa.FramesSent)
	if sa.RecordsSent != n || sb.RecordsSent != 0 {
		t.Fatalf("initial sync sent %d/%d records", sa.RecordsSent, sb.RecordsSent)
	}
	for i := range 10 {
		mustPut(t, a, "items", fmt.Sprintf("item-%05d", i*997%n), map[string]any{"qty": int64(1000 + i)})
	}
	sa, sb = e.sync(a, b)
	t.Logf("delta: sent %d records, %d bytes in %d frames; received %d bytes", sa.RecordsSent, sa.BytesSent, sa.FramesSent, sa.BytesReceived)
	if sa.RecordsSent != 10 || sb.RecordsSent != 0 {
		t.Fatalf("delta sync sent %d/%d records, want 10/0", sa.RecordsSent, sb.RecordsSent)
	}
	if per := sa.BytesSent / 10; per > 2048 {
		t.Fatalf("delta sync sent %d bytes per changed record", per)
	}
	sa, sb = e.sync(a, b)
	total := sa.BytesSent + sb.BytesSent
	t.Logf("idle resync: %d frames, %d bytes", sa.FramesSent+sb.FramesSent, total)
	if sa.RecordsSent+sb.RecordsSent != 0 || sa.FramesSent+sb.FramesSent > 6 || total > 2048 {
		t.Fatalf("idle resync: %d records, %d frames, %d bytes", sa.RecordsSent+sb.RecordsSent, sa.FramesSent+sb.FramesSent, total)
	}
	if got := mustGet(t, b, "items", fmt.Sprintf("item-%05d", 9*997%n))["qty"]; got != int64(1009) {
		t.Fatalf("b has qty %v", got)
	}
}

func putMany(r *Replica, coll string, n int) error {
	ctx := context.Background()
	for i := range n {
		if err := r.Put(ctx, coll, fmt.Sprintf("item-%05d", i), map[string]any{
			"name": fmt.Sprintf("item %d", i), "qty": int64(i), "tags": []any{"a", "b"},
		}); err != nil {
			return err
		}
	}
	return nil
}

// TestThirtyDaysOffline: two replicas edit hundreds of records each, some
// the same ones, over 30 simulated days without meeting; one session then
// converges them, and a second moves nothing.
func TestThirtyDaysOffline(t *testing.T) {
	e := newEnv(t)
	a, b := e.replica("a"), e.replica("b")
	ctx := context.Background()
	if err := putMany(a, "items", 200); err != nil {
		t.Fatal(err)
	}
	e.sync(a, b)
	edits := 0
	for day := range 30 {
		for i := range 20 {
			// Each replica edits its own records and, every few days, a
			// few shared ones: same fields, so conflicts, and new fields.
			id := fmt.Sprintf("item-%05d", (day*20+i)%200)
			if err := a.Put(ctx, "items", id, map[string]any{"qty": int64(day*100 + i), "note-a": fmt.Sprintf("day %d", day)}); err != nil {
				t.Fatal(err)
			}
			e.clock.Advance(7 * time.Minute)
			if err := b.Put(ctx, "items", id, map[string]any{"qty": int64(-day*100 - i), "note-b": fmt.Sprintf("day %d", day)}); err != nil {
				t.Fatal(err)
			}
			if err := b.Put(ctx, "b-only", fmt.Sprintf("d%02d-%02d", day, i), map[string]any{"day": int64(day)}); err != nil {
				t.Fatal(err)
			}
			edits += 3
		}
		e.clock.Advance(24*time.Hour - 140*time.Minute)
	}
	start := time.Now()
	sa, sb := e.sync(a, b)
	t.Logf("after %d edits over 30 days: one sync in %v, %d+%d records, %d conflicts", edits, time.Since(start), sa.RecordsSent, sb.RecordsSent, sa.Conflicts+sb.Conflicts)
	for _, coll := range []string{"items", "b-only"} {
		da, db := dump(t, a, coll), dump(t, b, coll)
		if !reflect.DeepEqual(da, db) {
			t.Fatalf("%s diverged after 30 days offline", coll)
		}
	}
	if got := len(dump(t, a, "b-only")); got != 600 {
		t.Fatalf("a has %d of b's 600 records", got)
	}
	// b wrote last on every shared record (7 minutes after a): timestamp
	// policy keeps b's qty, and both notes survive (different fields).
	m := mustGet(t, a, "items", "item-00005")
	if q, _ := m["qty"].(int64); q > 0 || m["note-a"] == nil || m["note-b"] == nil {
		t.Fatalf("merged record: %v", m)
	}
	sa, sb = e.sync(a, b)
	if sa.RecordsSent+sb.RecordsSent != 0 {
		t.Fatalf("second sync moved %d records", sa.RecordsSent+sb.RecordsSent)
	}
}
