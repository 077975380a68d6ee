package crdt

import (
	"bytes"
	"testing"
	"time"

	"github.com/automerge/automerge-go"
)

// foreignSide forks a plain Automerge document (saved bytes) as another
// plain client and commits edit with a time in SECONDS, as
// @automerge/automerge and the Rust library write it.
func foreignSide(t testing.TB, base []byte, actor string, secs int64, edit func(d *automerge.Doc) error) *automerge.Doc {
	t.Helper()
	d, err := automerge.Load(base)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.SetActorID(actor); err != nil {
		t.Fatal(err)
	}
	if err := edit(d); err != nil {
		t.Fatal(err)
	}
	when := time.UnixMilli(secs) // the raw field holds secs: a seconds writer
	if _, err := d.Commit("", automerge.CommitOptions{Time: &when, AllowEmpty: true}); err != nil {
		t.Fatal(err)
	}
	return d
}

func foreignBase(t testing.TB) []byte {
	t.Helper()
	d := automerge.New()
	if err := d.SetActorID("0000aaaa"); err != nil {
		t.Fatal(err)
	}
	r := d.RootMap()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(r.Set("text", automerge.NewText("hello")))
	must(r.Set("list", []any{"a", "b"}))
	must(r.Set("map", map[string]any{"x": int64(1), "y": "why"}))
	must(r.Set("counter", automerge.NewCounter(10)))
	must(r.Set("str", "s0"))
	must(r.Set("int", int64(1)))
	nested := automerge.NewMap()
	must(r.Set("nested", nested))
	must(nested.Set("t", automerge.NewText("inner")))
	must(nested.Set("c", automerge.NewCounter(0)))
	when := time.UnixMilli(1_600_000_000)
	if _, err := d.Commit("", automerge.CommitOptions{Time: &when}); err != nil {
		t.Fatal(err)
	}
	return d.Save()
}

// amEdit is an edit a plain client makes.
type amEdit func(d *automerge.Doc) error

func setKey(key string, v func() any) amEdit {
	return func(d *automerge.Doc) error { return d.RootMap().Set(key, v()) }
}

func valueAt(d *automerge.Doc, keys ...string) *automerge.Value {
	v := d.Root()
	for _, k := range keys {
		v, _ = v.Map().Get(k)
	}
	return v
}

var foreignCases = []struct {
	name  string
	a, b  amEdit
	paths []string // conflicting fields, sorted; nil: none
	kinds []ConflictKind
}{
	{name: "text replaced twice", paths: []string{"/text"},
		a: setKey("text", func() any { return automerge.NewText("from a") }),
		b: setKey("text", func() any { return automerge.NewText("from b") })},
	{name: "text replaced twice, same contents",
		a: setKey("text", func() any { return automerge.NewText("same") }),
		b: setKey("text", func() any { return automerge.NewText("same") })},
	{name: "text spliced twice (merges)",
		a: func(d *automerge.Doc) error { return valueAt(d, "text").Text().Insert(0, "A") },
		b: func(d *automerge.Doc) error { return valueAt(d, "text").Text().Append("B") }},
	{name: "text replaced vs spliced", paths: []string{"/text"},
		a: setKey("text", func() any { return automerge.NewText("new") }),
		b: func(d *automerge.Doc) error { return valueAt(d, "text").Text().Append("B") }},
	{name: "text replaced by equal text vs spliced", paths: []string{"/text"},
		a: setKey("text", func() any { return automerge.NewText("hello") }),
		b: func(d *automerge.Doc) error { return valueAt(d, "text").Text().Append("B") }},
	{name: "list replaced twice", paths: []string{"/list"},
		a: setKey("list", func() any { return []any{"p"} }),
		b: setKey("list", func() any { return []any{"q", int64(2)} })},
	{name: "list appended twice (merges)",
		a: func(d *automerge.Doc) error { return valueAt(d, "list").List().Append("A") },
		b: func(d *automerge.Doc) error { return valueAt(d, "list").List().Append("B") }},
	{name: "list replaced vs appended", paths: []string{"/list"},
		a: setKey("list", func() any { return []any{"p"} }),
		b: func(d *automerge.Doc) error { return valueAt(d, "list").List().Append("B") }},
	{name: "map replaced twice", paths: []string{"/map"},
		a: setKey("map", func() any { return map[string]any{"z": int64(1)} }),
		b: setKey("map", func() any { return map[string]any{"w": int64(2)} })},
	{name: "map keys edited in place (merges)",
		a: func(d *automerge.Doc) error { return valueAt(d, "map").Map().Set("a", int64(1)) },
		b: func(d *automerge.Doc) error { return valueAt(d, "map").Map().Set("b", int64(2)) }},
	{name: "map replaced vs key edited in place", paths: []string{"/map/x"},
		a: setKey("map", func() any { return map[string]any{"x": int64(1), "z": true} }),
		b: func(d *automerge.Doc) error { return valueAt(d, "map").Map().Set("x", int64(5)) }},
	{name: "counter incremented twice (merges)",
		a: func(d *automerge.Doc) error { return valueAt(d, "counter").Counter().Inc(1) },
		b: func(d *automerge.Doc) error { return valueAt(d, "counter").Counter().Inc(2) }},
	{name: "counter replaced twice", paths: []string{"/counter"},
		a: setKey("counter", func() any { return automerge.NewCounter(1) }),
		b: setKey("counter", func() any { return automerge.NewCounter(2) })},
	{name: "counter replaced vs incremented", paths: []string{"/counter"},
		a: setKey("counter", func() any { return automerge.NewCounter(0) }),
		b: func(d *automerge.Doc) error { return valueAt(d, "counter").Counter().Inc(2) }},
	{name: "counter replaced by an int vs incremented", paths: []string{"/counter"},
		a: setKey("counter", func() any { return int64(7) }),
		b: func(d *automerge.Doc) error { return valueAt(d, "counter").Counter().Inc(2) }},
	{name: "text deleted vs spliced", paths: []string{"/text"}, kinds: []ConflictKind{ConflictEditDelete},
		a: func(d *automerge.Doc) error { return d.RootMap().Delete("text") },
		b: func(d *automerge.Doc) error { return valueAt(d, "text").Text().Append("B") }},
	{name: "counter deleted vs incremented", paths: []string{"/counter"}, kinds: []ConflictKind{ConflictEditDelete},
		a: func(d *automerge.Doc) error { return d.RootMap().Delete("counter") },
		b: func(d *automerge.Doc) error { return valueAt(d, "counter").Counter().Inc(1) }},
	{name: "list deleted vs appended", paths: []string{"/list"}, kinds: []ConflictKind{ConflictEditDelete},
		a: func(d *automerge.Doc) error { return d.RootMap().Delete("list") },
		b: func(d *automerge.Doc) error { return valueAt(d, "list").List().Append("B") }},
	{name: "map deleted vs key set", paths: []string{"/map/x"}, kinds: []ConflictKind{ConflictEditDelete},
		a: func(d *automerge.Doc) error { return d.RootMap().Delete("map") },
		b: func(d *automerge.Doc) error { return valueAt(d, "map").Map().Set("x", int64(9)) }},
	{name: "map replaced vs deleted", paths: []string{"/map"}, kinds: []ConflictKind{ConflictEditDelete},
		a: setKey("map", func() any { return map[string]any{"q": true} }),
		b: func(d *automerge.Doc) error { return d.RootMap().Delete("map") }},
	{name: "nested text replaced twice", paths: []string{"/nested/t"},
		a: func(d *automerge.Doc) error { return valueAt(d, "nested").Map().Set("t", automerge.NewText("x")) },
		b: func(d *automerge.Doc) error { return valueAt(d, "nested").Map().Set("t", automerge.NewText("y")) }},
	{name: "nested counter incremented twice (merges)",
		a: func(d *automerge.Doc) error { return valueAt(d, "nested", "c").Counter().Inc(1) },
		b: func(d *automerge.Doc) error { return valueAt(d, "nested", "c").Counter().Inc(1) }},
	{name: "nested map replaced vs its text spliced", paths: []string{"/nested/t"},
		a: setKey("nested", func() any { return map[string]any{"t": "plain"} }),
		b: func(d *automerge.Doc) error { return valueAt(d, "nested", "t").Text().Append("!") }},
	{name: "text vs list", paths: []string{"/text"}, kinds: []ConflictKind{ConflictType},
		a: setKey("text", func() any { return []any{"l"} }),
		b: setKey("text", func() any { return automerge.NewText("t") })},
	{name: "string", paths: []string{"/str"},
		a: setKey("str", func() any { return "a" }), b: setKey("str", func() any { return "b" })},
	{name: "int", paths: []string{"/int"},
		a: setKey("int", func() any { return int64(-1) }), b: setKey("int", func() any { return int64(2) })},
	{name: "uint", paths: []string{"/new"},
		a: setKey("new", func() any { return uint64(1 << 63) }), b: setKey("new", func() any { return uint64(3) })},
	{name: "float", paths: []string{"/new"},
		a: setKey("new", func() any { return 1.5 }), b: setKey("new", func() any { return -0.25 })},
	{name: "bool", paths: []string{"/new"},
		a: setKey("new", func() any { return true }), b: setKey("new", func() any { return false })},
	{name: "null vs string", paths: []string{"/str"}, kinds: []ConflictKind{ConflictType},
		a: setKey("str", func() any { return nil }), b: setKey("str", func() any { return "b" })},
	{name: "bytes", paths: []string{"/new"},
		a: setKey("new", func() any { return []byte{1} }), b: setKey("new", func() any { return []byte{2, 3} })},
	{name: "time", paths: []string{"/new"},
		a: setKey("new", func() any { return time.UnixMilli(1) }), b: setKey("new", func() any { return time.UnixMilli(2) })},
	// Automerge makes no operation for a scalar written with the value it
	// has, so this is one side's change only.
	{name: "string written again unchanged vs changed",
		a: setKey("str", func() any { return "s0" }), b: setKey("str", func() any { return "b" })},
	{name: "string deleted vs set", paths: []string{"/str"}, kinds: []ConflictKind{ConflictEditDelete},
		a: func(d *automerge.Doc) error { return d.RootMap().Delete("str") }, b: setKey("str", func() any { return "b" })},
}

// TestForeignConcurrentReplacement: two plain Automerge clients edit the
// same field concurrently; ferry reports a conflict for every replacement
// of a value of any type (not only scalars) and none for edits that merge
// (text splices, list inserts, counter increments, different map keys).
// Both orders of merging report the same conflicts; a decision written by
// one replica converges and quiesces.
func TestForeignConcurrentReplacement(t *testing.T) {
	base := foreignBase(t)
	for _, tc := range foreignCases {
		t.Run(tc.name, func(t *testing.T) {
			a := foreignSide(t, base, "0000000a", 1_700_000_000, tc.a)
			b := foreignSide(t, base, "0000000b", 1_700_000_100, tc.b)
			clk := newTestClock()
			fa := importPlain(t, a, clk.actor("FA", 0))
			fb := importPlain(t, b, clk.actor("FB", 0))
			ra := detectBoth(t, fa, fb)
			if !ra.Fallback {
				t.Fatal("plain changes must use the three-way fallback")
			}
			var got []string
			for _, c := range ra.Conflicts {
				got = append(got, c.Path)
			}
			if len(got) != len(tc.paths) {
				t.Fatalf("conflicts at %v, want %v\n%+v", got, tc.paths, ra.Conflicts)
			}
			for i := range got {
				if got[i] != tc.paths[i] {
					t.Fatalf("conflicts at %v, want %v", got, tc.paths)
				}
				if tc.kinds != nil && ra.Conflicts[i].Kind != tc.kinds[i] {
					t.Fatalf("conflict kind %s, want %s", ra.Conflicts[i].Kind, tc.kinds[i])
				}
				for _, cd := range ra.Conflicts[i].Candidates {
					// JS-style seconds read as seconds.
					if !cd.FromPlainAutomerge || cd.HLC.WallMillis != 1_700_000_000_000 && cd.HLC.WallMillis != 1_700_000_100_000 {
						t.Fatalf("candidate origin %+v", cd)
					}
				}
			}
			// The later side (b, 100 s later) wins under a timestamp rule;
			// fa decides and writes it; fb takes it; both converge and a
			// further exchange changes nothing.
			var rs []Resolution
			for _, c := range ra.Conflicts {
				rs = append(rs, Resolution{Conflict: c, Winner: latestCandidate(c), By: "test"})
			}
			if len(rs) > 0 {
				if err := fa.Resolve(rs...); err != nil {
					t.Fatal(err)
				}
			}
			rb := mustMerge(t, fb, fa)
			if len(rb.Conflicts) != 0 {
				t.Fatalf("decided conflicts came back: %+v", rb.Conflicts)
			}
			for _, c := range ra.Conflicts {
				cd := c.Candidates[latestCandidate(c)]
				for _, d := range []*Doc{fa, fb} {
					v, err := d.Get(PointerPath(t, c.Path))
					if cd.Deleted {
						if err == nil {
							t.Fatalf("%s: %v, want deleted", c.Path, v)
						}
						continue
					}
					if err != nil || !sameEncoding(v, cd.Value) {
						t.Fatalf("%s = %v (%v), want the later side's %v", c.Path, v, err, cd.Value)
					}
				}
			}
			assertConverged(t, fa, fb)
		})
	}
}

func importPlain(t testing.TB, d *automerge.Doc, a Actor) *Doc {
	t.Helper()
	f, err := Load(d.Save(), a)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func latestCandidate(c Conflict) int {
	best := 0
	for i, cd := range c.Candidates {
		b := c.Candidates[best]
		if x := cd.HLC.Compare(b.HLC); x > 0 || x == 0 && (cd.ReplicaID > b.ReplicaID ||
			cd.ReplicaID == b.ReplicaID && bytes.Compare(cd.Change[:], b.Change[:]) > 0) {
			best = i
		}
	}
	return best
}

// PointerPath turns a field pointer into a Path for Get.
func PointerPath(t testing.TB, ptr string) Path {
	t.Helper()
	p, err := PointerToPath(ptr)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// sameEncoding reports whether two values encode to the same typed node.
func sameEncoding(a, b any) bool {
	na, err1 := fromGo(a)
	nb, err2 := fromGo(b)
	return err1 == nil && err2 == nil && bytes.Equal(na.encode(), nb.encode())
}

// assertConverged checks that a and b hold the same state, and that one
// more exchange both ways makes no change and reports nothing.
func assertConverged(t testing.TB, a, b *Doc) {
	t.Helper()
	for range 2 {
		ra := mustMerge(t, a, b)
		rb := mustMerge(t, b, a)
		if len(ra.Conflicts)+len(rb.Conflicts) != 0 {
			t.Fatalf("conflicts after convergence: %+v %+v", ra.Conflicts, rb.Conflicts)
		}
	}
	if !SameHeads(a.Heads(), b.Heads()) {
		t.Fatal("heads differ after exchange")
	}
	ma, _ := a.ToMap()
	mb, _ := b.ToMap()
	if !sameEncoding(ma, mb) {
		t.Fatalf("states differ:\n%v\n%v", ma, mb)
	}
	h := a.Heads()
	mustMerge(t, a, b)
	if !SameHeads(h, a.Heads()) {
		t.Fatal("a further exchange made a change")
	}
}

// TestForeignAttributionPerChange: a plain client that made several
// changes has each field attributed to the change that wrote it, so its
// early edit of a field loses (by time) to ferry's later concurrent edit
// even though its last change is later still.
func TestForeignAttributionPerChange(t *testing.T) {
	base := foreignBase(t)
	clk := newTestClock() // ferry writes at 1_700_000_000_000 ms
	f := importPlain(t, plainClient(t, base, "00000000"), clk.actor("F", 0))
	p, err := automerge.Load(base)
	if err != nil {
		t.Fatal(err)
	}
	_ = p.SetActorID("0000000c")
	commit := func(secs int64) {
		when := time.UnixMilli(secs) // seconds, as JS writes them
		if _, err := p.Commit("", automerge.CommitOptions{Time: &when}); err != nil {
			t.Fatal(err)
		}
	}
	_ = p.RootMap().Set("str", "plain, early")
	commit(1_700_000_000 - 60)
	_ = p.RootMap().Set("int", int64(99))
	commit(1_700_000_000 + 60)
	_ = p.RootMap().Set("other", true) // a third change that touches neither
	commit(1_700_000_000 + 120)
	if err := f.Set("str", "ferry"); err != nil {
		t.Fatal(err)
	}
	if err := f.Set("int", int64(5)); err != nil {
		t.Fatal(err)
	}
	res, err := f.MergeRemote(mustChanges(t, p), p.Heads())
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Conflicts) != 2 {
		t.Fatalf("conflicts %+v", res.Conflicts)
	}
	wantTime := map[string]int64{"/int": (1_700_000_000 + 60) * 1000, "/str": (1_700_000_000 - 60) * 1000}
	wantWinner := map[string]any{"/int": int64(99), "/str": "ferry"}
	for _, c := range res.Conflicts {
		for _, cd := range c.Candidates {
			if cd.FromPlainAutomerge && cd.HLC.WallMillis != wantTime[c.Path] {
				t.Fatalf("%s: plain candidate at %v, want %v", c.Path, cd.HLC.Time(), time.UnixMilli(wantTime[c.Path]).UTC())
			}
		}
		if got := c.Candidates[latestCandidate(c)].Value; !sameEncoding(got, wantWinner[c.Path]) {
			t.Fatalf("%s: timestamp winner %v, want %v", c.Path, got, wantWinner[c.Path])
		}
	}
}

// BenchmarkForeignMerge: merging a plain client's concurrent replacement
// into a record with a long history (the three-way fallback with the
// identity probe), next to one Fork of the same document, the unit the
// fallback's cost is made of. go test -run '^$' -bench ForeignMerge ./crdt/
func BenchmarkForeignMerge(b *testing.B) {
	const history = 2_000
	d := automerge.New()
	_ = d.SetActorID("000000aa")
	_ = d.RootMap().Set("text", automerge.NewText("hello"))
	for i := range history {
		_ = d.RootMap().Set("n", int64(i))
		when := time.UnixMilli(1_600_000_000 + int64(i))
		if _, err := d.Commit("", automerge.CommitOptions{Time: &when}); err != nil {
			b.Fatal(err)
		}
	}
	base := d.Save()
	a := foreignSide(b, base, "0000000a", 1_700_000_000, setKey("text", func() any { return automerge.NewText("a") }))
	side := foreignSide(b, base, "0000000b", 1_700_000_001, setKey("text", func() any { return automerge.NewText("b") }))
	chs := mustChangesTB(b, side)
	saved := a.Save()
	b.Run("merge", func(b *testing.B) {
		for range b.N {
			b.StopTimer()
			f, err := Load(saved, Actor{ReplicaID: "F"})
			if err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			res, err := f.MergeRemote(chs, side.Heads())
			if err != nil || len(res.Conflicts) != 1 {
				b.Fatalf("%v %v", res, err)
			}
		}
	})
	b.Run("fork", func(b *testing.B) {
		for range b.N {
			if _, err := a.Fork(a.Heads()...); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func mustChangesTB(t testing.TB, d *automerge.Doc) []*automerge.Change {
	t.Helper()
	chs, err := d.Changes()
	if err != nil {
		t.Fatal(err)
	}
	return chs
}
