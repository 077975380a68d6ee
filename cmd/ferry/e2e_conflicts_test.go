package main

import (
	"strings"
	"testing"
	"time"
)

// TestE2EResolveAfterNewerWrite is issue 11 part 4's example through the
// binary: the conflict is queued on both stores, a sets the title to
// "final" and syncs. Neither store lists the conflict any more, and
// `resolve --pick` of an old candidate is refused (exit 7): "final" stays.
func TestE2EResolveAfterNewerWrite(t *testing.T) {
	const pol = `{"version":1,"default":{"policy":"timestamp"},
	  "collections":{"notes":{"policy":"timestamp","fields":{"/title":{"policy":"user","deadline":"24h"}}}}}`
	a, b, _ := conflictPair(t, pol, nil, nil)
	cb := b.conflicts()
	if len(cb) != 1 || len(a.conflicts()) != 1 {
		t.Fatalf("conflicts before: a %d, b %d", len(a.conflicts()), len(cb))
	}
	id := cb[0].ID

	a.must("put", "notes", "n1", `{"title":"final"}`)
	if n := len(a.conflicts()); n != 0 {
		t.Fatalf("a lists %d conflicts after its newer write", n)
	}
	syncTo(t, a, b)
	if n := len(b.conflicts()); n != 0 {
		t.Fatalf("b lists %d conflicts after receiving the newer write", n)
	}
	if out := b.must("conflicts"); strings.Contains(out, id) || strings.Contains(out, "showing candidate") {
		t.Fatalf("conflicts (text) still shows the superseded conflict:\n%s", out)
	}
	for _, s := range []*store{a, b} {
		for _, args := range [][]string{{"resolve", id, "--pick", "1"}, {"resolve", id, "--pick", "0"}, {"resolve", id, "--value", `"other"`}} {
			_, errOut, code := s.ferry(args...)
			assertFailure(t, errOut, code, exitForbidden, "newer write")
		}
	}
	syncTo(t, a, b)
	if got := sameTitle(t, a, b); got != "final" {
		t.Fatalf("title %q, want final", got)
	}
}

// TestE2EStatusShowsClockSkew: a store whose clock runs 24 h ahead writes
// a title and syncs; the receiving store's `ferry status` names it and
// says by how much, in text and JSON. A title written ten minutes later
// (real time) on a third store that never saw the fast write wins on every
// store once they meet: the fast write counts as made at most the bound
// (5 minutes) after it arrived.
func TestE2EStatusShowsClockSkew(t *testing.T) {
	a := newStore(t, "a", "pass-a")
	fast := newStore(t, "fast", "pass-fast")
	late := newStore(t, "late", "pass-late")
	fast.extra = []string{"FERRY_TEST_CLOCK_OFFSET=24h"}
	// a receives the fast write ten minutes before late's edit: its clock
	// reads ten minutes earlier until then than afterwards.
	a.extra = []string{"FERRY_TEST_CLOCK_OFFSET=-10m"}
	pair(t, a, fast)
	pair(t, late, a)
	pair(t, late, fast)
	a.must("put", "notes", "n1", `{"title":"base","body":"same"}`)
	syncTo(t, a, fast)
	syncTo(t, late, a)
	fast.must("put", "notes", "n1", `{"title":"from-fast"}`)
	syncTo(t, fast, a)
	a.extra = nil

	fid := fast.id()
	out := a.must("status")
	var line string
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "peer "+fid[:12]) {
			line = l
		}
	}
	if !strings.Contains(line, "clock at least 24h") {
		t.Fatalf("status does not report the fast clock on its peer line:\n%s", out)
	}
	var st struct {
		Overall struct {
			ClockSkews []struct {
				Replica string `json:"replica"`
				Ahead   int64  `json:"ahead_ns"`
			} `json:"clock_skews"`
		} `json:"overall"`
		Peers []struct {
			Peer      string `json:"peer"`
			ClockSkew *struct {
				Replica string `json:"replica"`
				Ahead   int64  `json:"ahead_ns"`
				Writes  int    `json:"writes"`
			} `json:"clock_skew"`
		} `json:"peers"`
	}
	mustJSON(t, a.must("status", "--json"), &st)
	found := false
	for _, p := range st.Peers {
		if p.Peer == fid {
			found = p.ClockSkew != nil && p.ClockSkew.Replica == fid && p.ClockSkew.Writes >= 1 &&
				time.Duration(p.ClockSkew.Ahead) > 24*time.Hour && time.Duration(p.ClockSkew.Ahead) <= 25*time.Hour
		}
	}
	if !found || len(st.Overall.ClockSkews) != 1 || st.Overall.ClockSkews[0].Replica != fid {
		t.Fatalf("status --json skew: %+v", st)
	}
	// The fast store sees nothing wrong with a's clock.
	if strings.Contains(fast.must("status"), "clock at least") {
		t.Fatal("the fast store reports the correct clock as skewed")
	}

	late.must("put", "notes", "n1", `{"title":"from-late"}`)
	syncTo(t, late, a)
	syncTo(t, late, fast)
	syncTo(t, a, fast)
	syncTo(t, late, a)
	for _, s := range []*store{a, fast, late} {
		if got := s.get("notes", "n1")["title"]; got != "from-late" {
			t.Fatalf("%s: title %v, the fast clock won", s.name, got)
		}
	}
}

// TestE2EDeadlineFallbackRunsByItself: past the deadline, any command that
// opens the store lets the fallback decide; nobody calls a sweep. (The
// clock is moved 25 hours on for the later commands.)
func TestE2EDeadlineFallbackRunsByItself(t *testing.T) {
	const pol = `{"version":1,"default":{"policy":"timestamp"},
	  "collections":{"notes":{"policy":"timestamp","fields":{"/title":{"policy":"user","deadline":"24h","fallback":"timestamp"}}}}}`
	a, b, _ := conflictPair(t, pol, nil, nil)
	if len(b.conflicts()) != 1 {
		t.Fatal("no conflict queued")
	}
	b.extra = []string{"FERRY_TEST_CLOCK_OFFSET=23h"}
	if len(b.conflicts()) != 1 {
		t.Fatal("the fallback decided before the deadline")
	}
	b.extra = []string{"FERRY_TEST_CLOCK_OFFSET=25h"}
	if got := b.get("notes", "n1")["title"]; got != "from-b" {
		t.Fatalf("title after the deadline %v, want the timestamp fallback's from-b", got)
	}
	if n := len(b.conflicts()); n != 0 {
		t.Fatalf("%d conflicts still open past the deadline", n)
	}
	a.extra = b.extra
	syncTo(t, a, b)
	if n := len(a.conflicts()); n != 0 {
		t.Fatalf("a lists %d conflicts after the fallback synced", n)
	}
}
