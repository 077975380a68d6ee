package crdt

import (
	"testing"
	"time"

	"github.com/automerge/automerge-go"
)

// TestChangeTimeUnits: a change time written in seconds (JS, Rust) and one
// written in milliseconds (automerge-go) read as the same instant.
func TestChangeTimeUnits(t *testing.T) {
	cases := []struct {
		raw  int64
		want time.Time
	}{
		{0, time.Time{}},
		{-5, time.Time{}},
		{1_700_000_000, time.Unix(1_700_000_000, 0).UTC()},           // seconds (JS)
		{1_700_000_000_123, time.UnixMilli(1_700_000_000_123).UTC()}, // milliseconds (Go)
		{SecondsThreshold - 1, time.Unix(SecondsThreshold-1, 0).UTC()},
		{SecondsThreshold, time.UnixMilli(SecondsThreshold).UTC()},
		{1, time.Unix(1, 0).UTC()},
	}
	for _, c := range cases {
		if got := rawChangeTime(c.raw); !got.Equal(c.want) || got.IsZero() != c.want.IsZero() {
			t.Errorf("raw %d: got %v, want %v", c.raw, got, c.want)
		}
	}
	// Through a real change: automerge-go stores what it is given in ms.
	doc := automerge.New()
	_ = doc.RootMap().Set("a", int64(1))
	secs := time.UnixMilli(1_700_000_000) // the raw field will hold 1.7e9: seconds
	if _, err := doc.Commit("plain", automerge.CommitOptions{Time: &secs}); err != nil {
		t.Fatal(err)
	}
	chs, err := doc.Changes()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := ChangeTime(chs[0]), time.Unix(1_700_000_000, 0).UTC(); !got.Equal(want) {
		t.Fatalf("ChangeTime = %v, want %v", got, want)
	}
	if plainMeta(chs[0]).HLC.WallMillis != 1_700_000_000_000 {
		t.Fatalf("plainMeta = %+v", plainMeta(chs[0]))
	}
	// A ferry change reads its write-set's time.
	clk := newTestClock()
	f := mustNew(t, clk.actor("F", 0))
	if err := f.Set("a", 1); err != nil {
		t.Fatal(err)
	}
	fc, err := f.Changes()
	if err != nil {
		t.Fatal(err)
	}
	if got := ChangeTime(fc[len(fc)-1]); !got.Equal(clk.now()) {
		t.Fatalf("ferry ChangeTime = %v, want %v", got, clk.now())
	}
	if ChangeTime(nil) != (time.Time{}) {
		t.Fatal("nil change")
	}
}
