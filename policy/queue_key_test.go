package policy

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// encodeEntryV1 is the entry encoding written before entries held their
// detection time (version 1).
func encodeEntryV1(t *testing.T, e Entry) []byte {
	t.Helper()
	cb, err := e.Conflict.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	b, err := cborEnc.Marshal(entryWire{V: 1, Collection: e.Collection, RecordID: e.RecordID, Conflict: cb,
		Provisional: e.Provisional, DeadlineMillis: e.Deadline.UnixMilli(), Fallback: e.Fallback,
		FallbackPriorityField: e.FallbackPriorityField})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestQueueMigratesLegacyEntries: an open entry stored under the conflict
// id alone (as every store did before entries were keyed by record) is
// moved under its entry id when the queue is first used, stays open and
// resolvable, and a legacy tombstone still keeps its conflict closed.
func TestQueueMigratesLegacyEntries(t *testing.T) {
	ctx := context.Background()
	_, _, e := queuedTitle(t)
	e.Collection, e.RecordID, e.Detected = "notes", "x", time.Time{}
	kv := NewMemKV()
	if err := kv.Put(ctx, legacyOpenPrefix+e.Conflict.ID, encodeEntryV1(t, e)); err != nil {
		t.Fatal(err)
	}
	q := NewQueue(kv)
	list, err := q.List(ctx)
	if err != nil || len(list) != 1 {
		t.Fatalf("list after migration: %+v %v", list, err)
	}
	got := list[0]
	if got.ID() != EntryID("notes", "x", e.Conflict.ID) || got.Conflict.ID != e.Conflict.ID ||
		!got.Deadline.Equal(e.Deadline) || got.RecordID != "x" {
		t.Fatalf("migrated entry %+v", got)
	}
	if _, ok, _ := kv.Get(ctx, legacyOpenPrefix+e.Conflict.ID); ok {
		t.Fatal("legacy key still present")
	}
	if _, ok, _ := kv.Get(ctx, openPrefix+got.ID()); !ok {
		t.Fatal("entry not under its new key")
	}
	// A second queue over the store (reopening) finds it once.
	if list, err := NewQueue(kv).List(ctx); err != nil || len(list) != 1 {
		t.Fatalf("after reopen: %+v %v", list, err)
	}
	if _, err := q.ResolvePick(ctx, got.ID(), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := q.ResolvePick(ctx, e.Conflict.ID, 0); !errors.Is(err, ErrNoEntry) {
		t.Fatalf("the bare conflict id still names an entry: %v", err)
	}
	// The same conflict in another record is its own entry.
	other := e
	other.RecordID = "y"
	if added, err := q.Add(ctx, other); err != nil || !added {
		t.Fatalf("add of the same conflict in y: %v %v", added, err)
	}
	if closed, err := q.CloseAs(ctx, got.ID(), ByUser); err != nil || closed == nil || closed.RecordID != "x" {
		t.Fatalf("close x: %+v %v", closed, err)
	}
	if _, err := q.Get(ctx, other.ID()); err != nil {
		t.Fatalf("closing x closed y: %v", err)
	}
	if added, err := q.Add(ctx, got); err != nil || added {
		t.Fatalf("x reopened after closing: %v %v", added, err)
	}
	// A tombstone written under the conflict id alone keeps that
	// conflict closed in every record (it does not say which it was).
	kv2 := NewMemKV()
	if err := kv2.Put(ctx, legacyClosedPrefix+e.Conflict.ID, []byte(ByUser)); err != nil {
		t.Fatal(err)
	}
	if added, err := NewQueue(kv2).Add(ctx, e); err != nil || added {
		t.Fatalf("add over a legacy tombstone: %v %v", added, err)
	}
}

// TestEntryIDUnambiguous: entry ids differ whenever collection, record or
// conflict id differ, including pairs that plain concatenation would join
// into the same string.
func TestEntryIDUnambiguous(t *testing.T) {
	ids := map[string][3]string{}
	for _, k := range [][3]string{
		{"notes", "x", "c"}, {"notes", "y", "c"}, {"other", "x", "c"}, {"notes", "x", "d"},
		{"a/b", "c", "d"}, {"a", "b/c", "d"}, {"ab", "c", "d"}, {"a", "bc", "d"},
	} {
		id := EntryID(k[0], k[1], k[2])
		if prev, ok := ids[id]; ok {
			t.Fatalf("%v and %v share entry id %s", prev, k, id)
		}
		if len(id) != 32 || strings.Trim(id, "0123456789abcdef") != "" {
			t.Fatalf("entry id %q", id)
		}
		ids[id] = k
	}
}
