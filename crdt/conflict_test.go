package crdt

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"reflect"
	"testing"
	"time"
)

type wantConflict struct {
	path  string
	kind  ConflictKind
	cands int
}

func TestConflictKinds(t *testing.T) {
	base := map[string]any{
		"name":    "n0",
		"n":       int64(1),
		"profile": map[string]any{"city": "Paris", "zip": "75001", "geo": map[string]any{"lat": 1.5}},
		"tags":    []any{"a", "b"},
	}
	cases := []struct {
		name    string
		setup   func(d *Doc) error // extra base state, written by A before the split
		a, b    func(d *Doc) error
		want    []wantConflict
		checkFn func(t *testing.T, merged map[string]any)
	}{
		{name: "same field different values",
			a:    func(d *Doc) error { return d.Set("name", "alice") },
			b:    func(d *Doc) error { return d.Set("name", "bob") },
			want: []wantConflict{{"/name", ConflictValue, 2}}},
		{name: "same field equal values",
			a: func(d *Doc) error { return d.Set("name", "same") },
			b: func(d *Doc) error { return d.Set("name", "same") }},
		{name: "different keys merge",
			a: func(d *Doc) error { return d.Set("x", 1) },
			b: func(d *Doc) error { return d.Set("y", 2) },
			checkFn: func(t *testing.T, m map[string]any) {
				if m["x"] != int64(1) || m["y"] != int64(2) {
					t.Fatalf("merged %v", m)
				}
			}},
		{name: "nested field",
			a:    func(d *Doc) error { return d.Set("profile.geo.lat", 2.5) },
			b:    func(d *Doc) error { return d.Set([]any{"profile", "geo", "lat"}, 3.5) },
			want: []wantConflict{{"/profile/geo/lat", ConflictValue, 2}}},
		{name: "nested different keys",
			a: func(d *Doc) error { return d.Set("profile.city", "Rome") },
			b: func(d *Doc) error { return d.Set("profile.zip", "00100") }},
		{name: "int vs float is a value conflict",
			a:    func(d *Doc) error { return d.Set("n", 2) },
			b:    func(d *Doc) error { return d.Set("n", 2.5) },
			want: []wantConflict{{"/n", ConflictValue, 2}}},
		{name: "field deleted vs edited",
			a:    func(d *Doc) error { return d.Delete("name") },
			b:    func(d *Doc) error { return d.Set("name", "bob") },
			want: []wantConflict{{"/name", ConflictEditDelete, 2}}},
		{name: "parent deleted vs nested edit",
			a:    func(d *Doc) error { return d.Delete("profile") },
			b:    func(d *Doc) error { return d.Set("profile.geo.lat", 9.0) },
			want: []wantConflict{{"/profile/geo/lat", ConflictEditDelete, 2}}},
		{name: "record deleted vs edit",
			a:    func(d *Doc) error { return d.DeleteRecord() },
			b:    func(d *Doc) error { return d.Set("profile.city", "Oslo") },
			want: []wantConflict{{"/profile/city", ConflictEditDelete, 2}}},
		{name: "delete vs delete",
			a: func(d *Doc) error { return d.Delete("name") },
			b: func(d *Doc) error { return d.Delete("name") }},
		{name: "scalar vs map is a type conflict",
			a:    func(d *Doc) error { return d.Set("name", map[string]any{"first": "a"}) },
			b:    func(d *Doc) error { return d.Set("name", "bob") },
			want: []wantConflict{{"/name", ConflictType, 2}}},
		{name: "map replaced by scalar vs edit inside",
			a:    func(d *Doc) error { return d.Set("profile", "gone") },
			b:    func(d *Doc) error { return d.Set("profile.city", "Oslo") },
			want: []wantConflict{{"/profile", ConflictType, 2}}},
		{name: "string vs text is a type conflict",
			a:    func(d *Doc) error { return d.Set("name", Text("t")) },
			b:    func(d *Doc) error { return d.Set("name", "s") },
			want: []wantConflict{{"/name", ConflictType, 2}}},
		{name: "list inserts merge",
			a: func(d *Doc) error { return d.ListInsert("tags", 0, "x") },
			b: func(d *Doc) error { return d.ListAppend("tags", "y") },
			checkFn: func(t *testing.T, m map[string]any) {
				if len(m["tags"].([]any)) != 4 {
					t.Fatalf("tags %v", m["tags"])
				}
			}},
		{name: "list edited vs list deleted",
			a:    func(d *Doc) error { return d.Delete("tags") },
			b:    func(d *Doc) error { return d.ListAppend("tags", "y") },
			want: []wantConflict{{"/tags", ConflictEditDelete, 2}}},
		{name: "list replaced vs list edited",
			a:    func(d *Doc) error { return d.Set("tags", []any{"new"}) },
			b:    func(d *Doc) error { return d.ListAppend("tags", "y") },
			want: []wantConflict{{"/tags", ConflictValue, 2}}},
		{name: "text splices merge",
			setup: func(d *Doc) error { return d.NewText("body", "hello") },
			a:     func(d *Doc) error { return d.SpliceText("body", 0, 0, ">") },
			b:     func(d *Doc) error { return d.SpliceText("body", 5, 0, "!") },
			checkFn: func(t *testing.T, m map[string]any) {
				if m["body"] != ">hello!" {
					t.Fatalf("body %q", m["body"])
				}
			}},
		{name: "counter increments add up",
			setup: func(d *Doc) error { return d.Set("likes", Counter(10)) },
			a:     func(d *Doc) error { return d.Increment("likes", 2) },
			b:     func(d *Doc) error { return d.Increment("likes", 3) },
			checkFn: func(t *testing.T, m map[string]any) {
				if m["likes"] != int64(15) {
					t.Fatalf("likes %v", m["likes"])
				}
			}},
		{name: "same new nested map with different keys is unioned",
			a: func(d *Doc) error { return d.Set("prefs.theme", "dark") },
			b: func(d *Doc) error { return d.Set("prefs.lang", "fr") },
			checkFn: func(t *testing.T, m map[string]any) {
				p := m["prefs"].(map[string]any)
				if p["theme"] != "dark" || p["lang"] != "fr" {
					t.Fatalf("prefs %v", p)
				}
			}},
		{name: "same new nested map with a common key",
			a:    func(d *Doc) error { return d.Set("prefs", map[string]any{"theme": "dark", "a": 1}) },
			b:    func(d *Doc) error { return d.Set("prefs", map[string]any{"theme": "light", "b": 2}) },
			want: []wantConflict{{"/prefs/theme", ConflictValue, 2}},
			checkFn: func(t *testing.T, m map[string]any) {
				p := m["prefs"].(map[string]any)
				if p["a"] != int64(1) || p["b"] != int64(2) {
					t.Fatalf("prefs %v", p)
				}
			}},
		{name: "map set replaces keys vs concurrent edit of a removed key",
			a:    func(d *Doc) error { return d.Set("profile", map[string]any{"city": "Paris"}) },
			b:    func(d *Doc) error { return d.Set("profile.zip", "99999") },
			want: []wantConflict{{"/profile/zip", ConflictEditDelete, 2}}},
		{name: "superseded local write does not count",
			a: func(d *Doc) error {
				if err := d.Set("name", "tmp"); err != nil {
					return err
				}
				return d.Set("name", "bob")
			},
			b: func(d *Doc) error { return d.Set("name", "bob") }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			clk := newTestClock()
			a := mustNew(t, clk.actor("A", 0))
			if err := a.Put(base); err != nil {
				t.Fatal(err)
			}
			if tc.setup != nil {
				if err := tc.setup(a); err != nil {
					t.Fatal(err)
				}
			}
			b, err := Load(a.Save(), clk.actor("B", 0))
			if err != nil {
				t.Fatal(err)
			}
			clk.tick(time.Second)
			if err := tc.a(a); err != nil {
				t.Fatal(err)
			}
			clk.tick(time.Millisecond)
			if err := tc.b(b); err != nil {
				t.Fatal(err)
			}
			res := detectBoth(t, a, b)
			if len(res.Conflicts) != len(tc.want) {
				t.Fatalf("got %d conflicts %+v, want %v", len(res.Conflicts), res.Conflicts, tc.want)
			}
			for i, w := range tc.want {
				c := res.Conflicts[i]
				if c.Path != w.path || c.Kind != w.kind || len(c.Candidates) != w.cands {
					t.Fatalf("conflict %d = %s %s %d candidates, want %+v", i, c.Path, c.Kind, len(c.Candidates), w)
				}
				for _, cd := range c.Candidates {
					if cd.ReplicaID != "A" && cd.ReplicaID != "B" || cd.FromPlainAutomerge {
						t.Fatalf("candidate origin %+v", cd)
					}
				}
			}
			ma, _ := a.ToMap()
			mb, _ := b.ToMap()
			if !reflect.DeepEqual(ma, mb) {
				t.Fatalf("replicas differ:\n%v\n%v", ma, mb)
			}
			if tc.checkFn != nil {
				tc.checkFn(t, ma)
			}
		})
	}
}

// TestConflictIDAndCandidates checks the candidate details for a value
// conflict.
func TestConflictIDAndCandidates(t *testing.T) {
	clk := newTestClock()
	a := mustNew(t, clk.actor("A", 3))
	if err := a.Set("x", "base"); err != nil {
		t.Fatal(err)
	}
	b, _ := Load(a.Save(), clk.actor("B", 7))
	clk.tick(time.Second)
	_ = a.Set("x", "from-a")
	clk.tick(time.Second)
	_ = b.Set("x", "from-b")
	res := detectBoth(t, a, b)
	if len(res.Conflicts) != 1 {
		t.Fatalf("%+v", res.Conflicts)
	}
	c := res.Conflicts[0]
	byReplica := map[string]Candidate{}
	for _, cd := range c.Candidates {
		byReplica[cd.ReplicaID] = cd
	}
	if byReplica["A"].Value != "from-a" || byReplica["A"].Priority != 3 || byReplica["B"].Value != "from-b" || byReplica["B"].Priority != 7 {
		t.Fatalf("candidates %+v", c.Candidates)
	}
	if byReplica["B"].HLC.Compare(byReplica["A"].HLC) <= 0 {
		t.Fatalf("B wrote later: %v vs %v", byReplica["B"].HLC, byReplica["A"].HLC)
	}
	if len(c.ID) != 32 || c.CRDTWinner != -1 {
		t.Fatalf("id %q winner %d", c.ID, c.CRDTWinner)
	}
	if err := a.FillCRDTWinner(&c); err != nil || c.CRDTWinner < 0 {
		t.Fatalf("crdt winner %d %v", c.CRDTWinner, err)
	}
	got, _ := a.Get("x")
	if c.Candidates[c.CRDTWinner].Value != got {
		t.Fatalf("CRDT winner %v but doc shows %v", c.Candidates[c.CRDTWinner].Value, got)
	}
	// Round trip of the conflict record.
	bin, err := c.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	var back Conflict
	if err := back.UnmarshalBinary(bin); err != nil {
		t.Fatal(err)
	}
	c.CRDTWinner = -1
	for i := range back.Candidates {
		back.Candidates[i].node, c.Candidates[i].node = nil, nil
		c.Candidates[i].contrib = nil
	}
	if !reflect.DeepEqual(back, c) {
		t.Fatalf("round trip:\n%+v\n%+v", back, c)
	}
}

// TestResolutionQuiescence: two replicas resolve the same conflict
// independently; when they meet, nothing new happens.
func TestResolutionQuiescence(t *testing.T) {
	for _, winner := range []int{0, 1} {
		clk := newTestClock()
		a := mustNew(t, clk.actor("A", 0))
		_ = a.Put(map[string]any{"x": "base", "m": map[string]any{"k": 1}})
		b, _ := Load(a.Save(), clk.actor("B", 0))
		c, _ := Load(a.Save(), clk.actor("C", 0))
		clk.tick(time.Second)
		_ = a.Set("x", "a")
		_ = a.Delete("m")
		_ = b.Set("x", "b")
		_ = b.Set("m.k", 2)
		res := detectBoth(t, a, b)
		if len(res.Conflicts) != 2 {
			t.Fatalf("%+v", res.Conflicts)
		}
		// b detected the same conflicts in detectBoth; both resolve alike.
		var rs []Resolution
		for _, cf := range res.Conflicts {
			rs = append(rs, Resolution{Conflict: cf, Winner: winner, By: "test"})
		}
		if err := a.Resolve(rs...); err != nil {
			t.Fatal(err)
		}
		if err := b.Resolve(rs...); err != nil {
			t.Fatal(err)
		}
		for _, pair := range [][2]*Doc{{a, b}, {b, a}, {c, a}, {c, b}, {a, c}, {b, c}} {
			if r := mustMerge(t, pair[0], pair[1]); len(r.Conflicts) != 0 || r.Repaired != 0 {
				t.Fatalf("winner %d: new round: %+v", winner, r.Conflicts)
			}
		}
		heads := [3]string{}
		for i, d := range []*Doc{a, b, c} {
			heads[i] = hashesString(d.Heads())
		}
		if heads[0] != heads[1] || heads[1] != heads[2] {
			t.Fatalf("heads differ %v", heads)
		}
		for _, pair := range [][2]*Doc{{a, b}, {b, c}, {c, a}} {
			mustMerge(t, pair[0], pair[1])
		}
		if hashesString(a.Heads()) != heads[0] {
			t.Fatal("another round changed the heads")
		}
		ma, _ := a.ToMap()
		mc, _ := c.ToMap()
		if !reflect.DeepEqual(ma, mc) {
			t.Fatalf("%v vs %v", ma, mc)
		}
		// The resolution is the candidate's value with the candidate's meta.
		var w Candidate
		for _, cf := range res.Conflicts {
			if cf.Path == "/x" {
				w = cf.Candidates[winner]
			}
		}
		if got, _ := a.Get("x"); got != w.Value {
			t.Fatalf("x = %v, want %v", got, w.Value)
		}
		meta, ok, _ := a.FieldMeta("x")
		if !ok || meta != w.Meta() {
			t.Fatalf("meta %+v, want %+v", meta, w.Meta())
		}
	}
}

func hashesString(hs []ChangeHashAlias) string {
	s := ""
	for _, h := range hs {
		s += h.String()
	}
	return s
}

// TestRemoteResolutionsReported: provisional resolutions carry the
// conflict, final ones close it.
func TestRemoteResolutionsReported(t *testing.T) {
	clk := newTestClock()
	a := mustNew(t, clk.actor("A", 0))
	_ = a.Set("x", 0)
	b, _ := Load(a.Save(), clk.actor("B", 0))
	c, _ := Load(a.Save(), clk.actor("C", 0))
	_ = a.Set("x", 1)
	_ = b.Set("x", 2)
	res := mustMerge(t, a, b)
	cf := res.Conflicts[0]
	if err := a.Resolve(Resolution{Conflict: cf, Winner: 1, Provisional: true, By: "user:provisional"}); err != nil {
		t.Fatal(err)
	}
	r := mustMerge(t, c, a)
	if len(r.Conflicts) != 0 || len(r.Resolutions) != 1 || !r.Resolutions[0].Provisional || r.Resolutions[0].Conflict == nil ||
		r.Resolutions[0].Conflict.ID != cf.ID || r.Resolutions[0].ConflictID != cf.ID {
		t.Fatalf("%+v", r.Resolutions)
	}
	if err := a.Resolve(Resolution{Conflict: cf, Winner: -1, Value: "user value", By: "user"}); err != nil {
		t.Fatal(err)
	}
	r = mustMerge(t, c, a)
	if len(r.Resolutions) != 1 || r.Resolutions[0].Provisional || r.Resolutions[0].Winner.Value != "user value" {
		t.Fatalf("%+v", r.Resolutions)
	}
	if got, _ := c.Get("x"); got != "user value" {
		t.Fatalf("x = %v", got)
	}
}

func TestMergeErrors(t *testing.T) {
	clk := newTestClock()
	a := mustNew(t, clk.actor("A", 0))
	_ = a.Set("x", 1)
	b, _ := Load(a.Save(), clk.actor("B", 0))
	_ = a.Set("x", 2)
	_ = a.Set("x", 3)
	chs, _ := a.Changes(b.Heads()...)
	if len(chs) != 2 {
		t.Fatalf("%d changes", len(chs))
	}
	last := chs[1]
	if len(last.Dependencies()) == 1 && last.Dependencies()[0] != chs[0].Hash() {
		last = chs[0]
	}
	if _, err := b.MergeChanges(last.Save(), nil); !errors.Is(err, ErrMissingDeps) {
		t.Fatalf("missing deps: %v", err)
	}
	if _, err := b.MergeChanges([]byte("garbage"), nil); !errors.Is(err, ErrBadDocument) {
		t.Fatalf("garbage: %v", err)
	}
	if _, err := Load([]byte{0x85, 0x6f, 0x4a, 0x83, 1, 2, 3}, clk.actor("C", 0)); !errors.Is(err, ErrBadDocument) {
		t.Fatalf("bad load: %v", err)
	}
	if _, err := New(Actor{}); !errors.Is(err, ErrBadActor) {
		t.Fatalf("empty actor: %v", err)
	}
	// Applying the same changes twice is harmless.
	raw, _ := a.ChangesSince()
	r1, err := b.MergeChanges(raw, a.Heads())
	if err != nil {
		t.Fatal(err)
	}
	r2, err := b.MergeChanges(raw, a.Heads())
	if err != nil || r2.Applied != 0 || r1.Applied == 0 {
		t.Fatalf("applied %d then %d, %v", r1.Applied, r2.Applied, err)
	}
}

// TestMergeChangesOfAStoredDocument: a record as storage holds it (a saved
// document, then change chunks appended) merges like the same history sent
// as change chunks: into an empty document and into one with a concurrent
// edit, with the same heads, remote changes and conflicts.
func TestMergeChangesOfAStoredDocument(t *testing.T) {
	clk := newTestClock()
	a := mustNew(t, clk.actor("A", 0))
	if err := a.Set("name", "alice"); err != nil {
		t.Fatal(err)
	}
	base := a.Save()
	b, err := Load(base, clk.actor("B", 0))
	if err != nil {
		t.Fatal(err)
	}
	mustSet := func(d *Doc, k string, v any) {
		t.Helper()
		if err := d.Set(k, v); err != nil {
			t.Fatal(err)
		}
	}
	mustSet(a, "name", "anna")
	mustSet(a, "city", "Rome")
	stored := append(a.Save()[:0:0], base...)
	stored = append(stored, a.SaveIncremental()...) // base, then what came after
	stored = append(a.Save(), stored...)            // a snapshot, then chunks it already holds
	mustSet(b, "name", "bea")                       // concurrent with a's rename: a conflict

	asChanges, err := a.ChangesSince()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		into func() *Doc
	}{
		{"empty", func() *Doc { return mustNew(t, clk.actor("C", 0)) }},
		{"concurrent edit", func() *Doc { return copyDoc(t, b) }},
	} {
		want, err := tc.into().MergeChanges(asChanges, a.Heads())
		if err != nil {
			t.Fatalf("%s: changes: %v", tc.name, err)
		}
		d := tc.into()
		got, err := d.MergeChanges(stored, a.Heads())
		if err != nil {
			t.Fatalf("%s: stored document: %v", tc.name, err)
		}
		if !SameHeads(got.HeadsAfter, want.HeadsAfter) || got.Applied != want.Applied || len(got.Conflicts) != len(want.Conflicts) {
			t.Fatalf("%s: stored document merged to %v (%d applied, %d conflicts), changes to %v (%d, %d)", tc.name,
				got.HeadsAfter, got.Applied, len(got.Conflicts), want.HeadsAfter, want.Applied, len(want.Conflicts))
		}
		if tc.name == "concurrent edit" && len(got.Conflicts) == 0 {
			t.Fatalf("%s: no conflict reported for the concurrent rename", tc.name)
		}
	}
	// A document chunk whose bytes are damaged is refused like any other.
	bad := append([]byte(nil), stored...)
	bad[len(bad)/3] ^= 0xFF
	if _, err := mustNew(t, clk.actor("D", 0)).MergeChanges(bad, nil); !errors.Is(err, ErrBadDocument) {
		t.Fatalf("damaged stored document: %v", err)
	}
}

// TestMergeChangesRefusesAStoredDocumentThatDoesNotLoad: a saved document
// followed by a chunk whose checksum holds but whose contents do not parse
// is refused when merged into an empty document (LoadIncremental alone
// would skip the chunk, and a receiver that keeps the bytes it received
// would store a record that no longer loads). Found in review.
func TestMergeChangesRefusesAStoredDocumentThatDoesNotLoad(t *testing.T) {
	clk := newTestClock()
	a := mustNew(t, clk.actor("A", 0))
	if err := a.Set("name", "alice"); err != nil {
		t.Fatal(err)
	}
	changes, err := a.ChangesSince()
	if err != nil {
		t.Fatal(err)
	}
	for i, typ := range []byte{chunkDocument, chunkCompressedChange, chunkCompressedChange} {
		lead := a.Save()
		if i == 2 {
			lead = changes // change chunks only, then the bad one
		}
		raw := append(append([]byte{}, lead...), badChunk(typ, []byte("this is not deflate, nor a document"))...)
		if _, _, err := walkChunks(raw); err != nil {
			t.Fatalf("type %d: the bad chunk's framing should hold: %v", typ, err)
		}
		if _, err := mustNew(t, clk.actor("B", 0)).MergeChanges(raw, a.Heads()); !errors.Is(err, ErrBadDocument) {
			t.Fatalf("type %d: merged into an empty document: %v, want ErrBadDocument", typ, err)
		}
	}
}

// badChunk frames payload as an Automerge chunk of type typ with a valid
// checksum.
func badChunk(typ byte, payload []byte) []byte {
	body := append([]byte{typ}, binary.AppendUvarint(nil, uint64(len(payload)))...)
	body = append(body, payload...)
	sum := sha256.Sum256(body)
	return append(append(append([]byte{}, chunkMagic...), sum[:4]...), body...)
}
