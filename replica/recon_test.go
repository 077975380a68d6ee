package replica

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/ferrysync/ferry/policy"
)

// TestReconThreeDevicesMoveNothing: A syncs with B, B with C, then A and C
// meet for the first time holding the same records. They reconcile and
// move no record (before reconciliation they sent every record both ways),
// and the session is a handful of small frames.
func TestReconThreeDevicesMoveNothing(t *testing.T) {
	e := newEnv(t)
	a, b, c := e.replica("a"), e.replica("b"), e.replica("c")
	const n = 300
	for i := range n {
		mustPut(t, a, "notes", fmt.Sprintf("r%03d", i), map[string]any{"v": i})
	}
	e.sync(a, b)
	e.sync(b, c)
	sa, sc := e.sync(a, c)
	sameCounts(t, "first meeting", sa, sc)
	if sa.RecordsSent+sa.RecordsReceived != 0 {
		t.Fatalf("identical replicas moved records: %+v", sa)
	}
	if sa.BytesSent+sa.BytesReceived > 4096 {
		t.Fatalf("first meeting of identical replicas took %d bytes", sa.BytesSent+sa.BytesReceived)
	}
	// One differing record of each side's, then a first meeting of a new
	// pair: only those move.
	mustPut(t, a, "notes", "r007", map[string]any{"v": "from a"})
	mustPut(t, c, "notes", "only-c", map[string]any{"v": "c"})
	d := e.replica("d")
	e.sync(c, d)
	sa, sd := e.sync(a, d)
	sameCounts(t, "one difference each", sa, sd)
	if sa.RecordsSent != 1 || sa.RecordsReceived != 1 {
		t.Fatalf("moved %d/%d records, want 1/1: %+v", sa.RecordsSent, sa.RecordsReceived, sa)
	}
	for _, r := range []*Replica{a, d} {
		if got := mustGet(t, r, "notes", "r007")["v"]; got != "from a" {
			t.Fatalf("%s: r007 = %v", r.Name(), got)
		}
		if got := mustGet(t, r, "notes", "only-c")["v"]; got != "c" {
			t.Fatalf("%s: only-c = %v", r.Name(), got)
		}
	}
}

// TestReconRestoredStoreHeals: B's store is restored from a copy taken
// before it received records and edits; the next session with A gives it
// all of them back, and one more session moves nothing.
func TestReconRestoredStoreHeals(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	root := t.TempDir()
	dirB, saved := filepath.Join(root, "b"), filepath.Join(root, "b-copy")
	optsB := diskOptions("b")
	optsB.Now = e.clock.Now
	optsB.NoSync = true
	optsB.Policies = policy.NewSet(policy.Rule{Policy: policy.Timestamp})
	b, err := Open(ctx, dirB, optsB)
	if err != nil {
		t.Fatal(err)
	}
	a := e.replica("a")
	pairAll(t, []*Replica{a, b}, "notes")
	// b shares nothing of "oneway" with a: reconciliation cannot cover it.
	if _, err := a.Pair(ctx, b.ID(), []string{"oneway"}, 0); err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		mustPut(t, a, "notes", fmt.Sprintf("old%02d", i), map[string]any{"v": i})
		mustPut(t, a, "oneway", fmt.Sprintf("old%02d", i), map[string]any{"v": i})
	}
	e.sync(a, b)
	b.Close()
	copyDir(t, dirB, saved)
	if b, err = Open(ctx, dirB, optsB); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		mustPut(t, a, "notes", fmt.Sprintf("new%02d", i), map[string]any{"v": i})
	}
	mustPut(t, a, "notes", "old03", map[string]any{"v": "edited"})
	mustPut(t, a, "oneway", "old03", map[string]any{"v": "edited"})
	mustPut(t, a, "oneway", "new", map[string]any{"v": "new"})
	e.sync(a, b)
	e.sync(a, b)
	b.Close()
	os.RemoveAll(dirB)
	copyDir(t, saved, dirB)
	if b, err = Open(ctx, dirB, optsB); err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	sa, sb := e.sync(a, b)
	sameCounts(t, "healing", sa, sb)
	if sa.RecordsSent < 23 {
		t.Fatalf("healing sent %d records, want at least 23", sa.RecordsSent)
	}
	for _, c := range []string{"notes", "oneway"} {
		if !reflect.DeepEqual(dump(t, a, c), dump(t, b, c)) {
			t.Fatalf("the restored store did not get everything of %s back", c)
		}
	}
	// Healed: neither side reports the pair stale any more.
	for _, r := range []*Replica{a, b} {
		_, peers := r.Status(ctx)
		for _, p := range peers {
			if p.State == Stale {
				t.Fatalf("%s still reports %s stale after healing: %s", r.Name(), p.Peer, p.Warning)
			}
		}
	}
	sa, sb = e.sync(a, b)
	sameCounts(t, "after healing", sa, sb)
	if sa.RecordsSent+sa.RecordsReceived != 0 {
		t.Fatalf("the session after healing moved records: %+v", sa)
	}
}
