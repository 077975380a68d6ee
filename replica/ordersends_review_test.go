package replica

import (
	"fmt"
	"testing"
)

// TestReconSendsInStoreOrderMoveEveryRecord (h3-review of de02334): a
// reconciliation whose sends span several batches (over 512 records) and
// several collections, read in the store's order and sent by name per
// batch, moves every record the peer lacks and each side's differing
// version (no send skipped by reconBatch's count of sends used: the core
// keeps the slice the host ordered), both sides converge, and a second
// session moves nothing.
func TestReconSendsInStoreOrderMoveEveryRecord(t *testing.T) {
	e := newEnv(t)
	a, b := e.replica("a"), e.replica("b")
	const onlyA, onlyB, both = 1100, 150, 80
	for i := range onlyA {
		mustPut(t, a, testCollections[i%3], fmt.Sprintf("a%04d", i), map[string]any{"v": i})
	}
	for i := range onlyB {
		mustPut(t, b, testCollections[i%2], fmt.Sprintf("b%04d", i), map[string]any{"v": i})
	}
	for i := range both {
		mustPut(t, a, "notes", fmt.Sprintf("s%04d", i), map[string]any{"a": i})
		mustPut(t, b, "notes", fmt.Sprintf("s%04d", i), map[string]any{"b": i})
	}
	sa, sb := e.sync(a, b)
	sameCounts(t, "first meeting", sa, sb)
	// At least every record the peer lacked; more when the feed sends a
	// merged record back (as at 606b3fc, before the store order: 1,202-1,260
	// and 306-310 here, both before and after).
	if sa.RecordsSent < onlyA+both || sb.RecordsSent < onlyB+both {
		t.Fatalf("sent %d and %d records, want at least %d and %d", sa.RecordsSent, sb.RecordsSent, onlyA+both, onlyB+both)
	}
	for _, r := range []*Replica{a, b} {
		for i := range onlyA {
			if got := mustGet(t, r, testCollections[i%3], fmt.Sprintf("a%04d", i))["v"]; fmt.Sprint(got) != fmt.Sprint(i) {
				t.Fatalf("%s: a%04d = %v", r.Name(), i, got)
			}
		}
		for i := range onlyB {
			if got := mustGet(t, r, testCollections[i%2], fmt.Sprintf("b%04d", i))["v"]; fmt.Sprint(got) != fmt.Sprint(i) {
				t.Fatalf("%s: b%04d = %v", r.Name(), i, got)
			}
		}
		for i := range both {
			d := mustGet(t, r, "notes", fmt.Sprintf("s%04d", i))
			if fmt.Sprint(d["a"]) != fmt.Sprint(i) || fmt.Sprint(d["b"]) != fmt.Sprint(i) {
				t.Fatalf("%s: s%04d = %v, want both sides' fields", r.Name(), i, d)
			}
		}
	}
	e.clock.Advance(48 * 3600e9)
	sa, sb = e.sync(a, b)
	if sa.RecordsSent+sb.RecordsSent != 0 {
		t.Fatalf("second session moved %d+%d records", sa.RecordsSent, sb.RecordsSent)
	}
}
