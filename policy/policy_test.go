package policy

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ferrysync/ferry/crdt"
)

func cand(v any, wall int64, logical uint32, replica string, prio int, hash byte) crdt.Candidate {
	c := crdt.Candidate{Value: v, HLC: crdt.Timestamp{WallMillis: wall, Logical: logical}, ReplicaID: replica, Priority: prio}
	c.Change[0] = hash
	if v == nil {
		c.Deleted = true
	}
	return c
}

func TestPick(t *testing.T) {
	cases := []struct {
		name  string
		kind  Kind
		field string
		cands []crdt.Candidate
		crdt  int
		want  int
	}{
		{"timestamp latest", Timestamp, "", []crdt.Candidate{cand("a", 10, 0, "r1", 0, 1), cand("b", 20, 0, "r2", 0, 2)}, -1, 1},
		{"timestamp logical", Timestamp, "", []crdt.Candidate{cand("a", 10, 5, "r1", 0, 1), cand("b", 10, 4, "r2", 0, 2)}, -1, 0},
		{"timestamp tie replica", Timestamp, "", []crdt.Candidate{cand("a", 10, 0, "r9", 0, 1), cand("b", 10, 0, "r2", 0, 2)}, -1, 0},
		{"timestamp tie replica and hlc", Timestamp, "", []crdt.Candidate{cand("a", 10, 0, "r", 0, 1), cand("b", 10, 0, "r", 0, 2)}, -1, 1},
		{"timestamp delete wins", Timestamp, "", []crdt.Candidate{cand(nil, 30, 0, "r1", 0, 1), cand("b", 20, 0, "r2", 0, 2)}, -1, 0},
		{"priority replica", Priority, "", []crdt.Candidate{cand("a", 10, 0, "r1", 5, 1), cand("b", 20, 0, "r2", 1, 2)}, -1, 0},
		{"priority tie falls to timestamp", Priority, "", []crdt.Candidate{cand("a", 10, 0, "r1", 5, 1), cand("b", 20, 0, "r2", 5, 2)}, -1, 1},
		{"priority field", Priority, "rank", []crdt.Candidate{
			cand(map[string]any{"rank": int64(1)}, 30, 0, "r1", 9, 1), cand(map[string]any{"rank": 2.5}, 20, 0, "r2", 0, 2)}, -1, 1},
		{"priority field missing ranks lowest", Priority, "rank", []crdt.Candidate{
			cand(map[string]any{"x": int64(1)}, 30, 0, "r1", 9, 1), cand(map[string]any{"rank": int64(-5)}, 20, 0, "r2", 0, 2)}, -1, 1},
		{"merge takes crdt winner", Merge, "", []crdt.Candidate{cand("a", 10, 0, "r1", 0, 1), cand("b", 20, 0, "r2", 0, 2)}, 0, 0},
		{"merge unknown falls to timestamp", Merge, "", []crdt.Candidate{cand("a", 10, 0, "r1", 0, 1), cand("b", 20, 0, "r2", 0, 2)}, -1, 1},
		{"user picks like timestamp", User, "", []crdt.Candidate{cand("a", 30, 0, "r1", 0, 1), cand("b", 20, 0, "r2", 0, 2)}, -1, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := crdt.Conflict{ID: "c", Path: "/f", Candidates: tc.cands, CRDTWinner: tc.crdt}
			// Candidate.Field needs the typed value: round-trip through the
			// conflict encoding, as queued conflicts do.
			b, err := c.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			var back crdt.Conflict
			if err := back.UnmarshalBinary(b); err != nil {
				t.Fatal(err)
			}
			back.CRDTWinner = tc.crdt
			if got := Pick(tc.kind, tc.field, back); got != tc.want {
				t.Fatalf("got %d, want %d", got, tc.want)
			}
		})
	}
}

func TestRuleForAndFingerprint(t *testing.T) {
	const file = `{
	  "version": 1,
	  "default": {"policy": "merge"},
	  "collections": {
	    "notes": {
	      "policy": "timestamp",
	      "fields": {
	        "title": {"policy": "user", "deadline": "2h", "fallback": "priority"},
	        "meta": {"policy": "priority", "priority_field": "rank"},
	        "/meta/sub": {"policy": "merge"}
	      }
	    }
	  }
	}`
	s, err := Parse([]byte(file))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		coll, path string
		want       Kind
	}{
		{"other", "/x", Merge},
		{"notes", "/x", Timestamp},
		{"notes", "/title", User},
		{"notes", "/titles", Timestamp},
		{"notes", "/meta/a", Priority},
		{"notes", "/meta/sub/deep", Merge},
	} {
		if got := s.RuleFor(tc.coll, tc.path).Policy; got != tc.want {
			t.Fatalf("%s %s: %s, want %s", tc.coll, tc.path, got, tc.want)
		}
	}
	if r := s.RuleFor("notes", "/title"); time.Duration(r.Deadline) != 2*time.Hour || r.Fallback != Priority {
		t.Fatalf("%+v", r)
	}
	// Same decisions, different layout: same fingerprint.
	s2 := NewSet(Rule{Policy: Merge})
	_ = s2.SetCollection("notes", Collection{Rule: Rule{Policy: Timestamp}, Fields: map[string]Rule{
		"/title":   {Policy: User, Deadline: Duration(2 * time.Hour), Fallback: Priority},
		"/meta":    {Policy: Priority, PriorityField: "rank"},
		"meta.sub": {Policy: Merge},
	}})
	if s.Fingerprint() != s2.Fingerprint() {
		t.Fatal("equivalent sets differ")
	}
	_ = s2.SetCollection("notes", Collection{Rule: Rule{Policy: Timestamp}})
	if s.Fingerprint() == s2.Fingerprint() {
		t.Fatal("different sets share a fingerprint")
	}
	for _, bad := range []string{`{"version": 2}`, `{"version":1,"default":{"policy":"coin"}}`, `{"version":1,"extra":1}`,
		`{"version":1,"collections":{"c":{"fields":{"a..b":{"policy":"merge"}}}}}`,
		`{"version":1,"collections":{"c":{"fields":{"a":{"policy":"user","deadline":"soon"}}}}}`} {
		if _, err := Parse([]byte(bad)); !errors.Is(err, ErrBadPolicy) {
			t.Fatalf("%s: %v", bad, err)
		}
	}
	if def := NewSet(Rule{}); def.RuleFor("x", "/y").Policy != Timestamp {
		t.Fatal("default policy must be timestamp")
	}
}

// TestUserFlow: the user policy end to end across three replicas: a
// provisional winner, the queue identical everywhere, the user's pick
// closing it everywhere; then a second conflict decided by the deadline
// fallback with a fake clock.
func TestUserFlow(t *testing.T) {
	ctx := context.Background()
	set := NewSet(Rule{Policy: Timestamp})
	_ = set.SetCollection(coll, Collection{Rule: Rule{Policy: Timestamp}, Fields: map[string]Rule{
		"title": {Policy: User, Deadline: Duration(time.Hour), Fallback: Priority},
	}})
	base := time.UnixMilli(1_700_000_000_000).UTC()
	a := newReplica(t, "a", 1, set, base, nil)
	_ = a.doc.Put(map[string]any{"title": "t0", "body": "b"})
	b := newReplica(t, "b", 5, set, base, a.doc.Save())
	c := newReplica(t, "c", 0, set, base, a.doc.Save())

	a.clock.advance(time.Second)
	b.clock.advance(2 * time.Second)
	_ = a.doc.Set("title", "from a")
	_ = b.doc.Set("title", "from b")
	syncPair(t, a, b) // a detects, writes the provisional winner, queues
	qa, _ := a.res.Queue.List(ctx)
	if len(qa) != 1 {
		t.Fatalf("a queue %+v", qa)
	}
	e := qa[0]
	if e.Conflict.Candidates[e.Provisional].Value != "from b" {
		t.Fatalf("provisional %v", e.Conflict.Candidates[e.Provisional].Value)
	}
	if got, _ := a.doc.Get("title"); got != "from b" {
		t.Fatalf("a shows %v", got)
	}
	if want := base.Add(2 * time.Second).Add(time.Hour); !e.Deadline.Equal(want) {
		t.Fatalf("deadline %v, want %v", e.Deadline, want)
	}
	// c learns the conflict from a's provisional resolution; b too.
	syncPair(t, c, a)
	syncPair(t, b, a)
	for _, r := range []*replica{b, c} {
		if queueKey(t, r) != queueKey(t, a) {
			t.Fatalf("%s queue differs", r.name)
		}
	}
	// The user on c picks a's value: everyone closes the entry.
	p, err := c.res.Queue.ResolvePick(ctx, e.ID(), 1-e.Provisional)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.res.Commit(ctx, c.doc, p); err != nil {
		t.Fatal(err)
	}
	syncPair(t, a, c)
	syncPair(t, b, a)
	for _, r := range []*replica{a, b, c} {
		if got, _ := r.doc.Get("title"); got != "from a" {
			t.Fatalf("%s title %v", r.name, got)
		}
		if q, _ := r.res.Queue.List(ctx); len(q) != 0 {
			t.Fatalf("%s queue %+v", r.name, q)
		}
	}
	recs, err := c.res.Audit.Query(ctx, Filter{Collection: coll, RecordID: "rec", ConflictID: e.ID()})
	if err != nil || len(recs) != 1 || recs[0].By != ByUser || recs[0].Winner != 1-e.Provisional {
		t.Fatalf("c audit %+v %v", recs, err)
	}
	if recs, _ := a.res.Audit.Query(ctx, Filter{ConflictID: e.ID()}); len(recs) != 1 || recs[0].By != ByRemote {
		t.Fatalf("a audit %+v", recs)
	}

	// Second conflict: nobody answers; the fallback (priority) decides
	// after the deadline, on two replicas independently, without a new
	// round.
	a.clock.advance(time.Second)
	b.clock.advance(time.Second)
	_ = a.doc.Set("title", "a2")
	_ = b.doc.Set("title", "b2")
	a0 := newReplica(t, "a", 1, set, base, a.doc.Save())
	syncPair(t, a, b)
	syncPair(t, b, a0) // b detects the same conflict on its own
	qa, _ = a.res.Queue.List(ctx)
	if len(qa) != 1 || queueKey(t, a) != queueKey(t, b) {
		t.Fatalf("queues %q vs %q", queueKey(t, a), queueKey(t, b))
	}
	for _, r := range []*replica{a, b} {
		if due, _ := r.res.Queue.Sweep(ctx, r.clock.now()); len(due) != 0 {
			t.Fatalf("%s: swept before the deadline", r.name)
		}
		r.clock.advance(2 * time.Hour)
		due, err := r.res.Queue.Sweep(ctx, r.clock.now())
		if err != nil || len(due) != 1 || due[0].By != "fallback:priority" {
			t.Fatalf("%s sweep %+v %v", r.name, due, err)
		}
		if err := r.res.Commit(ctx, r.doc, due[0]); err != nil {
			t.Fatal(err)
		}
	}
	syncPair(t, a, b)
	syncPair(t, b, a)
	syncPair(t, c, a)
	ha := headsKey(a)
	syncPair(t, a, c)
	syncPair(t, b, c)
	if headsKey(a) != ha || headsKey(b) != ha || headsKey(c) != ha {
		t.Fatal("not quiescent after independent fallbacks")
	}
	for _, r := range []*replica{a, b, c} {
		if got, _ := r.doc.Get("title"); got != "b2" { // b has the higher priority
			t.Fatalf("%s title %v", r.name, got)
		}
		if q, _ := r.res.Queue.List(ctx); len(q) != 0 {
			t.Fatalf("%s queue %+v", r.name, q)
		}
	}
	recs, _ = a.res.Audit.Query(ctx, Filter{Since: base.Add(time.Hour)})
	if len(recs) != 1 || recs[0].By != ByFallback || recs[0].Policy != Priority {
		t.Fatalf("fallback audit %+v", recs)
	}
}

func TestResolveValueAndPolicies(t *testing.T) {
	ctx := context.Background()
	for _, k := range []Kind{Merge, Timestamp, Priority} {
		set := NewSet(Rule{Policy: k})
		base := time.UnixMilli(1_700_000_000_000).UTC()
		a := newReplica(t, "a", 9, set, base, nil)
		_ = a.doc.Set("x", 0)
		b := newReplica(t, "b", 1, set, base.Add(time.Second), a.doc.Save())
		_ = a.doc.Set("x", "a")
		_ = b.doc.Set("x", "b")
		syncPair(t, a, b)
		syncPair(t, b, a)
		want := map[Kind]any{Timestamp: "b", Priority: "a"}[k]
		ga, _ := a.doc.Get("x")
		gb, _ := b.doc.Get("x")
		if ga != gb || (want != nil && ga != want) {
			t.Fatalf("%s: a=%v b=%v want %v", k, ga, gb, want)
		}
		recs, _ := a.res.Audit.Query(ctx, Filter{})
		if len(recs) != 1 || recs[0].Policy != k || recs[0].By != ByPolicy {
			t.Fatalf("%s audit %+v", k, recs)
		}
	}
	// A user-supplied value.
	set := NewSet(Rule{Policy: User})
	base := time.UnixMilli(1_700_000_000_000).UTC()
	a := newReplica(t, "a", 0, set, base, nil)
	_ = a.doc.Set("x", 0)
	b := newReplica(t, "b", 0, set, base, a.doc.Save())
	_ = a.doc.Set("x", 1)
	_ = b.doc.Set("x", 2)
	syncPair(t, a, b)
	q, _ := a.res.Queue.List(ctx)
	p, err := a.res.Queue.ResolveValue(ctx, q[0].ID(), map[string]any{"merged": []any{1, 2}}, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.res.Commit(ctx, a.doc, p); err != nil {
		t.Fatal(err)
	}
	syncPair(t, b, a)
	if got, _ := b.doc.Get("x.merged"); len(got.([]any)) != 2 {
		t.Fatalf("b x %v", got)
	}
	if _, err := a.res.Queue.Get(ctx, q[0].ID()); !errors.Is(err, ErrNoEntry) {
		t.Fatal(err)
	}
	recs, _ := a.res.Audit.Query(ctx, Filter{ConflictID: q[0].ID()})
	if len(recs) != 1 || recs[0].By != ByUser || recs[0].Winner != -1 || recs[0].Value == nil {
		t.Fatalf("user value audit %+v", recs)
	}
}

// TestPolicyRefusesInvalidCollectionName: a rule for a collection name no
// record can have (a control character) is a bad policy, not a rule that
// silently never applies.
func TestPolicyRefusesInvalidCollectionName(t *testing.T) {
	_, err := Parse([]byte(`{"version":1,"default":{"policy":"timestamp"},"collections":{"bad\tname":{"policy":"user"}}}`))
	if !errors.Is(err, ErrBadPolicy) {
		t.Fatalf("err = %v, want ErrBadPolicy", err)
	}
	if err := NewSet(Rule{Policy: Timestamp}).SetCollection("ok/notes: 😀", Collection{Rule: Rule{Policy: User}}); err != nil {
		t.Fatal(err)
	}
}
