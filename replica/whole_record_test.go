package replica

import (
	"bytes"
	"context"
	"reflect"
	"strings"
	"testing"

	"github.com/ferrysync/ferry/crdt"
)

// TestWholeRecordGoesAsStored: a small record the peer lacks goes as
// storage holds it (its saved document, then the change appended since)
// and the receiver keeps those bytes as the record (no load on one side,
// no save on the other); a record over maxStoredSend goes as its changes.
// Both arrive whole and merge on.
func TestWholeRecordGoesAsStored(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	a, b := e.replica("a"), e.replica("b")
	mustPut(t, a, "notes", "small", map[string]any{"title": "first"})
	mustPut(t, a, "notes", "small", map[string]any{"title": "second"}) // appended as a change chunk
	big := strings.Repeat("x", maxStoredSend+1)
	mustPut(t, a, "notes", "big", map[string]any{"body": big})
	a.cache.clear() // as after a restart: nothing cached
	stored, _, err := a.store.Load(ctx, "notes", "small")
	if err != nil {
		t.Fatal(err)
	}
	if !crdt.HoldsDocument(stored) {
		t.Fatal("the sender's record holds no saved document")
	}
	if sa, sb := e.sync(a, b); sa.RecordsSent != 2 || sb.RecordsReceived != 2 {
		t.Fatalf("sent %d, received %d records, want 2", sa.RecordsSent, sb.RecordsReceived)
	}
	got, _, err := b.store.Load(ctx, "notes", "small")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, stored) {
		t.Fatalf("receiver stored %d bytes, want the sender's %d stored bytes as they are", len(got), len(stored))
	}
	if v := mustGet(t, b, "notes", "small"); v["title"] != "second" {
		t.Fatalf("small = %v", v)
	}
	if v := mustGet(t, b, "notes", "big"); v["body"] != big {
		t.Fatal("the big record arrived changed")
	}
	// The received bytes are a record like any other: it merges on.
	mustPut(t, b, "notes", "small", map[string]any{"title": "third"})
	e.sync(a, b)
	if da, db := dump(t, a, "notes"), dump(t, b, "notes"); !reflect.DeepEqual(da, db) || da["small"]["title"] != "third" {
		t.Fatalf("after a second sync: %v vs %v", da["small"], db["small"])
	}
}
