package replica

import (
	"fmt"
	"os"
	"strconv"
	"testing"

	"github.com/ferrysync/ferry/storage"
)

// diffSets builds two in-memory sets holding the same records named by
// ids, then makes k of them differ, spread over the ids: a third newer on
// a, a third only on b, a third changed concurrently on both.
func diffSetsOf(ids []string, k int) (a, b *memSet) {
	a, b = newMemSet(), newMemSet()
	for _, id := range ids {
		a.put("c", id, "h"+id)
		b.put("c", id, "h"+id)
	}
	for i := range k {
		id := ids[i*(len(ids)/k)]
		switch i % 3 {
		case 0:
			a.put("c", id, "h"+id, "newer on a")
		case 1:
			b.put("c", id+"-only-b", "x")
		case 2:
			a.put("c", id, "concurrent a")
			b.put("c", id, "concurrent b")
		}
	}
	return a, b
}

// TestReconBytesPerDiffDenseBuckets: with about 100 records a bucket (as
// at 100,000 records over the 1024 buckets), the reconciliation frames
// cost well under 2 KiB per differing record: a differing bucket is split
// by key tag, not listed whole (which alone costs 16 bytes a record of the
// bucket, 1.6 KB here). The records fill 40 buckets, so the test runs in
// a second.
func TestReconBytesPerDiffDenseBuckets(t *testing.T) {
	const buckets, perBucket = 40, 100
	var ids []string
	for i := 0; len(ids) < buckets*perBucket; i++ {
		id := fmt.Sprint("r", i)
		if storage.ReconBucket(storage.ReconKey("c", id)) < buckets {
			ids = append(ids, id)
		}
	}
	for _, k := range []int{1, 10} {
		a, b := diffSetsOf(ids, k)
		frames, bytes, _, _ := reconcile(t, a, b)
		sameSets(t, a, b)
		t.Logf("%d records in %d buckets, %d differing: %d frames, %d bytes, %d B per differing record",
			len(ids), buckets, k, frames, bytes, bytes/k)
		if bytes > 1200*k {
			t.Fatalf("%d differing records cost %d bytes of reconciliation frames, want <= %d", k, bytes, 1200*k)
		}
	}
}

// TestReconEngineBytesScale logs the reconciliation frames' bytes for
// FERRY_RECON_ENGINE_N records in memory (skipped when unset), k = 1, 10,
// 1000 differing.
func TestReconEngineBytesScale(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("FERRY_RECON_ENGINE_N"))
	if n <= 0 {
		t.Skip("set FERRY_RECON_ENGINE_N=N to measure")
	}
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprint(i)
	}
	for _, k := range []int{1, 10, 1000} {
		a, b := diffSetsOf(ids, k)
		frames, bytes, _, _ := reconcile(t, a, b)
		sameSets(t, a, b)
		t.Logf("n=%d k=%d: %d frames, %d bytes, %d B/diff", n, k, frames, bytes, bytes/k)
	}
}
