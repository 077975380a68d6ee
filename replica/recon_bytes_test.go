package replica

import (
	"fmt"
	"os"
	"strconv"
	"testing"
)

// reconDiffBytes reconciles two in-memory sets of n records of which k
// differ (a third a ahead, a third only on b, a third concurrent) and
// returns the frames and bytes of the reconciliation frames.
func reconDiffBytes(t *testing.T, n, k int) (frames, bytes int) {
	t.Helper()
	a, b := newMemSet(), newMemSet()
	for i := range n {
		a.put("c", fmt.Sprint(i), fmt.Sprint("h", i))
		b.put("c", fmt.Sprint(i), fmt.Sprint("h", i))
	}
	for i := range k {
		id := fmt.Sprint(i * (n / k))
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
	frames, bytes, _, _ = reconcile(t, a, b)
	sameSets(t, a, b)
	return frames, bytes
}

func TestReconBytesScan(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("SCAN_N"))
	if n == 0 {
		t.Skip()
	}
	for _, k := range []int{1, 10, 1000} {
		f, b := reconDiffBytes(t, n, k)
		t.Logf("n=%d k=%d: %d frames, %d bytes, %d B/diff", n, k, f, b, b/k)
	}
}
