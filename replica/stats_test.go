package replica

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/ferrysync/ferry/policy"
	"github.com/ferrysync/ferry/storage"
)

// sameCounts checks that the two sides of one session count the same
// things: what one sent, the other received (records and bytes and frames).
func sameCounts(t *testing.T, what string, sa, sb SyncStats) {
	t.Helper()
	if sa.RecordsSent != sb.RecordsReceived || sb.RecordsSent != sa.RecordsReceived ||
		sa.BytesSent != sb.BytesReceived || sb.BytesSent != sa.BytesReceived ||
		sa.FramesSent != sb.FramesReceived || sb.FramesSent != sa.FramesReceived {
		t.Fatalf("%s: the sides disagree:\nA %+v\nB %+v", what, sa, sb)
	}
}

// TestSyncStatsBothSidesAgree: in every kind of session, A's sent counts
// are B's received counts and the other way round, and records count
// records (a record split across frames counts once).
func TestSyncStatsBothSidesAgree(t *testing.T) {
	e := newEnv(t)
	a, b := e.replica("a"), e.replica("b")

	for i := range 10 {
		mustPut(t, a, "notes", fmt.Sprintf("a%d", i), map[string]any{"v": i})
	}
	sa, sb := e.sync(a, b)
	sameCounts(t, "one way", sa, sb)
	if sa.RecordsSent != 10 {
		t.Fatalf("one way: sent %d records, want 10", sa.RecordsSent)
	}

	for i := range 20 {
		mustPut(t, a, "notes", fmt.Sprintf("x%d", i), map[string]any{"a": i})
		mustPut(t, b, "notes", fmt.Sprintf("y%d", i), map[string]any{"b": i})
	}
	for i := range 5 {
		mustPut(t, a, "notes", fmt.Sprintf("a%d", i), map[string]any{"v": "from a"})
		mustPut(t, b, "notes", fmt.Sprintf("a%d", i), map[string]any{"v": "from b"})
	}
	sa, sb = e.sync(a, b)
	sameCounts(t, "both ways with conflicts", sa, sb)

	sa, sb = e.sync(a, b)
	sameCounts(t, "idle resync", sa, sb)
	if sa.RecordsSent+sa.RecordsReceived != 0 {
		t.Fatalf("idle resync moved records: %+v", sa)
	}

}

func TestSyncStatsRecordInParts(t *testing.T) {
	e := newEnv(t)
	// On disk: an in-memory Badger refuses values over 1 MiB.
	onDisk := func(name string) *Replica {
		opts := Options{Passphrase: []byte("pw-" + name), KDF: storage.TestKDF(), Name: name, Now: e.clock.Now,
			Policies: policy.NewSet(policy.Rule{Policy: policy.Timestamp})}
		r, err := Open(context.Background(), t.TempDir(), opts)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		return r
	}
	a, b := onDisk("a"), onDisk("b")
	pairAll(t, []*Replica{a, b}, "notes")
	// One record whose changes outweigh a frame: it goes in several parts.
	for i := range 10 {
		mustPut(t, b, "notes", "big", map[string]any{fmt.Sprintf("f%d", i): strings.Repeat(fmt.Sprint(i), 400<<10)})
	}
	sa, sb := e.sync(a, b)
	t.Logf("A %+v\nB %+v", sa, sb)
	sameCounts(t, "a record in parts", sa, sb)
	if sb.RecordsSent != 1 || sa.RecordsReceived != 1 {
		t.Fatalf("a record in parts counted as sent %d, received %d; want 1 and 1", sb.RecordsSent, sa.RecordsReceived)
	}
}

// TestSyncStatsModelScenarios: the same agreement over the session's
// model hosts, in the cases real replicas reach only rarely: a record the
// receiver cannot apply and asks for in full, overlapping edits, a feed
// that lags, small batches.
func TestSyncStatsModelScenarios(t *testing.T) {
	a, b := newModelHost("a"), newModelHost("b")
	for i := range 30 {
		a.write(fmt.Sprintf("notes/%d", i), fmt.Sprintf("a%d", i))
		b.write(fmt.Sprintf("notes/%d", i+15), fmt.Sprintf("b%d", i))
	}
	b.missing["notes/3"] = true
	sa, sb := syncModel(t, a, b, sessionConfig{maxRecords: 4, window: 2})
	sameCounts(t, "overlap with a need", sa, sb)
	if sa.RecordsSent < 30 {
		t.Fatalf("A sent %d records, want at least its 30", sa.RecordsSent)
	}
	a.write("notes/1", "late")
	a.lag, a.hideFrom = 3, a.seq
	sa, sb = syncModel(t, a, b, sessionConfig{})
	sameCounts(t, "lagging feed", sa, sb)
	sa, sb = syncModel(t, b, a, sessionConfig{})
	sameCounts(t, "idle, other way", sa, sb)
}

// TestCountRecords: parts before a record's last count nothing, nor do
// empty answers.
func TestCountRecords(t *testing.T) {
	recs := []recordChanges{
		{Collection: "c", ID: "big", Changes: []byte{1}, Partial: true},
		{Collection: "c", ID: "big", Changes: []byte{2}, Partial: true},
		{Collection: "c", ID: "big", Changes: []byte{3}, Heads: [][]byte{{9}}},
		{Collection: "c", ID: "gone"},
		{Collection: "c", ID: "x", Changes: []byte{4}, Heads: [][]byte{{8}}},
	}
	if n := countRecords(recs); n != 2 {
		t.Fatalf("countRecords = %d, want 2", n)
	}
}
