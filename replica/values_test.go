package replica

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/automerge/automerge-go"
	"github.com/ferrysync/ferry/crdt"
	"github.com/ferrysync/ferry/internal/amjs"
	"github.com/ferrysync/ferry/internal/valuegen"
	"github.com/ferrysync/ferry/storage"
	"github.com/ferrysync/ferry/transport"
	"pgregory.net/rapid"
)

// sameValue: see valuegen.Same.
var sameValue = valuegen.Same

// TestValuesRoundTripProperty: every value ferry accepts reads back
// identically after Put→Get, after sync to a second replica, after
// ExportDoc→ImportDoc into a fresh replica, and after a backup restored
// into another; every value it must refuse is refused with
// crdt.ErrUnsupportedValue and creates nothing.
func TestValuesRoundTripProperty(t *testing.T) {
	e := newEnv(t)
	a, b := e.replica("a"), e.replica("b")
	imp := e.replica("import")
	ctx := context.Background()
	want := map[string]map[string]any{}
	n := 0
	rapid.Check(t, func(rt *rapid.T) {
		n++
		id := fmt.Sprintf("v%d", n)
		if rapid.Bool().Draw(rt, "refused") {
			v := valuegen.Refused().Draw(rt, "v")
			if err := a.Put(ctx, "items", id, map[string]any{"v": v}); !errors.Is(err, crdt.ErrUnsupportedValue) {
				rt.Fatalf("Put(%#v) = %v, want ErrUnsupportedValue", v, err)
			}
			if _, err := a.Get(ctx, "items", id); !errors.Is(err, ErrNotFound) {
				rt.Fatalf("a refused Put created the record: %v", err)
			}
			return
		}
		fields := valuegen.Map(2).Filter(func(m map[string]any) bool { return len(m) > 0 }).Draw(rt, "fields")
		put := fields
		if rapid.Bool().Draw(rt, "typed") {
			// Other Go types the API accepts, read back normalized.
			tw := valuegen.Typed(func(s string) any { return crdt.Text(s) }, func(i int64) any { return crdt.Counter(i) }).Draw(rt, "typed fields")
			put, fields = tw[0], tw[1]
		}
		if err := a.Put(ctx, "items", id, put); err != nil {
			rt.Fatalf("Put(%#v): %v", put, err)
		}
		want[id] = fields
		check := func(r *Replica, id, step string) {
			got, err := r.Get(ctx, "items", id)
			if err != nil || !sameValue(got, fields) {
				rt.Fatalf("%s: Get = %#v, %v; want %#v", step, got, err, fields)
			}
		}
		check(a, id, "Put→Get")
		e.sync(a, b)
		check(b, id, "after sync")
		doc, err := a.ExportDoc(ctx, "items", id)
		if err != nil {
			rt.Fatal(err)
		}
		if _, err := imp.ImportDoc(ctx, "items", id, doc); err != nil {
			rt.Fatalf("ImportDoc: %v", err)
		}
		check(imp, id, "after ExportDoc→ImportDoc")
	})
	// A backup of everything restores every value exactly.
	var buf bytes.Buffer
	if _, err := a.Backup(ctx, &buf, storage.ExportOptions{Passphrase: []byte("bk"), ScryptWorkFactor: 10}); err != nil {
		t.Fatal(err)
	}
	r := e.replica("restored")
	if _, err := r.Restore(ctx, &buf, storage.ImportOptions{Passphrase: []byte("bk")}); err != nil {
		t.Fatal(err)
	}
	for id, fields := range want {
		if got := mustGet(t, r, "items", id); !sameValue(got, fields) {
			t.Fatalf("after backup/restore %s = %#v, want %#v", id, got, fields)
		}
	}
}

// TestValuesRefusedByPut: the examples through replica.Put and
// ResolveValue's path: NaN, ±Inf, an empty key, a time Automerge cannot hold
// are refused with crdt.ErrUnsupportedValue and the record keeps its value.
func TestValuesRefusedByPut(t *testing.T) {
	e := newEnv(t)
	a := e.replica("a")
	ctx := context.Background()
	mustPut(t, a, "items", "x", map[string]any{"keep": int64(1)})
	for _, v := range []any{math.NaN(), math.Inf(1), math.Inf(-1), map[string]any{"": 1},
		time.Date(300_000_000, 1, 1, 0, 0, 0, 0, time.UTC), time.UnixMilli(1).Add(time.Microsecond)} {
		if err := a.Put(ctx, "items", "x", map[string]any{"v": v}); !errors.Is(err, crdt.ErrUnsupportedValue) {
			t.Fatalf("Put(%v) = %v, want ErrUnsupportedValue", v, err)
		}
	}
	if err := a.Put(ctx, "items", "x", map[string]any{"": 1}); !errors.Is(err, crdt.ErrUnsupportedValue) {
		t.Fatalf("Put with an empty field name = %v", err)
	}
	if got := mustGet(t, a, "items", "x"); !reflect.DeepEqual(got, map[string]any{"keep": int64(1)}) {
		t.Fatalf("after refused puts: %#v", got)
	}
}

// TestImportDocRefusesEmptyAndGarbage: an empty file, a truncated one, one
// with trailing garbage and a document without changes are refused and
// never reported as merged; nothing is created.
func TestImportDocRefusesEmptyAndGarbage(t *testing.T) {
	e := newEnv(t)
	a := e.replica("a")
	ctx := context.Background()
	plain := automerge.New()
	if err := plain.Path("t").Set("x"); err != nil {
		t.Fatal(err)
	}
	if _, err := plain.Commit("x"); err != nil {
		t.Fatal(err)
	}
	good := plain.Save()
	cases := map[string]struct {
		doc  []byte
		want error
	}{
		"empty":            {nil, crdt.ErrBadDocument},
		"zero bytes":       {[]byte{}, crdt.ErrBadDocument},
		"garbage":          {[]byte("garbage"), crdt.ErrBadDocument},
		"truncated":        {good[:len(good)-4], crdt.ErrBadDocument},
		"trailing garbage": {append(append([]byte{}, good...), "junk"...), crdt.ErrBadDocument},
		"no changes":       {automerge.New().Save(), ErrInvalid},
	}
	for name, c := range cases {
		n, err := a.ImportDoc(ctx, "items", "imp", c.doc)
		if !errors.Is(err, c.want) || n != 0 {
			t.Fatalf("%s: ImportDoc = %d, %v; want %v", name, n, err, c.want)
		}
		if _, err := a.Get(ctx, "items", "imp"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("%s: a refused import created the record: %v", name, err)
		}
	}
	if _, err := a.ImportDoc(ctx, "items", "imp", good); err != nil {
		t.Fatal(err)
	}
}

// runForeign runs valuegen.ForeignScript (with an optional base64 document
// to load instead of building one) and decodes its output.
func runForeign(t *testing.T, doc []byte) (valuegen.ForeignOutput, any) {
	t.Helper()
	var args []string
	if doc != nil {
		args = append(args, base64.StdEncoding.EncodeToString(doc))
	}
	var out valuegen.ForeignOutput
	if err := json.Unmarshal(amjs.Run(t, valuegen.ForeignScript, args...), &out); err != nil {
		t.Fatalf("script output: %v", err)
	}
	want, err := valuegen.FromJSView(out.View)
	if err != nil {
		t.Fatal(err)
	}
	return out, want
}

// TestForeignValuesFromJS: a document made by @automerge/automerge holding
// every value type (str, text, int and uint at their limits, floats with
// NaN and the infinities, counter, dates beyond 0000-9999, bytes, booleans,
// null, nested lists and maps, empty keys) imports into a replica, and Get
// returns exactly what the JS library reports for it; its JSON form is
// valid JSON; the record stays writable; and the JS library reads ferry's
// export back with the same values.
func TestForeignValuesFromJS(t *testing.T) {
	out, want := runForeign(t, nil)
	e := newEnv(t)
	a := e.replica("a")
	ctx := context.Background()
	if _, err := a.ImportDoc(ctx, "items", "js", out.Doc); err != nil {
		t.Fatalf("ImportDoc: %v", err)
	}
	got := mustGet(t, a, "items", "js")
	if !sameValue(got, want) {
		for k, w := range want.(map[string]any) {
			if !sameValue(got[k], w) {
				t.Errorf("%q: Get %#v, JS reports %#v", k, got[k], w)
			}
		}
		t.Fatalf("Get differs from the JS view")
	}
	j, err := crdt.EncodeJSON(got)
	if err != nil || !json.Valid(j) {
		t.Fatalf("EncodeJSON: %s, %v", j, err)
	}
	// The JSON form reads back as the same JSON (it does not tell a small
	// uint from an int, or a counter or text from an int or string).
	back, err := crdt.DecodeJSON(j)
	if err != nil {
		t.Fatalf("DecodeJSON(EncodeJSON(Get)): %v", err)
	}
	if j2, err := crdt.EncodeJSON(back); err != nil || !bytes.Equal(j2, j) {
		t.Fatalf("JSON form not stable:\n%s\n%s", j, j2)
	}
	t.Logf("ferry get shows: %s", j)
	// The record stays writable, the foreign values stay put.
	mustPut(t, a, "items", "js", map[string]any{"added": "by ferry"})
	got = mustGet(t, a, "items", "js")
	if got["added"] != "by ferry" {
		t.Fatalf("after a write: %#v", got)
	}
	delete(got, "added")
	if !sameValue(got, want) {
		t.Fatalf("a write changed the foreign values: %#v", got)
	}
	// Sync to another replica keeps them.
	b := e.replica("b")
	e.sync(a, b)
	gb := mustGet(t, b, "items", "js")
	delete(gb, "added")
	if !sameValue(gb, want) {
		t.Fatalf("after sync: %#v", gb)
	}
	// The JS library reads ferry's export with the same values.
	exp, err := a.ExportDoc(ctx, "items", "js")
	if err != nil {
		t.Fatal(err)
	}
	_, jsBack := runForeign(t, exp)
	m := jsBack.(map[string]any)
	if m["added"] != "by ferry" {
		t.Fatalf("JS reads added = %#v", m["added"])
	}
	for k := range m {
		if k == "added" || strings.HasPrefix(k, "_ferry") {
			delete(m, k)
		}
	}
	if !sameValue(m, want) {
		t.Fatalf("JS reads ferry's export as %#v, want %#v", m, want)
	}
}

// TestForeignConflictAtEmptyKey: two @automerge/automerge clients
// concurrently set a field under an empty key (which the JS library allows
// and automerge-go cannot write) and non-finite floats. Importing both
// versions, in either order, into two replicas succeeds (it used to fail
// with Automerge's raw "key must not be an empty string"); the field under
// the empty key keeps Automerge's own winner; the replicas agree and a sync
// between them settles.
func TestForeignConflictAtEmptyKey(t *testing.T) {
	out := amjs.Run(t, `
import * as A from "@automerge/automerge"
const base = A.change(A.init(), d => { d[""] = new A.ImmutableString("base"); d.f = 1.5; d.m = {"": 1} })
const a = A.change(A.clone(base), {time: 1700000000}, d => { d[""] = new A.ImmutableString("a"); d.f = NaN; d.m[""] = 2 })
const b = A.change(A.clone(base), {time: 1700000001}, d => { d[""] = new A.ImmutableString("b"); d.f = Infinity; d.m[""] = 3 })
const m = A.merge(A.clone(a), b)
const show = d => JSON.stringify({e: d[""], f: String(d.f), m: d.m[""]})
process.stdout.write(JSON.stringify({docs: [Buffer.from(A.save(a)).toString("base64"), Buffer.from(A.save(b)).toString("base64")], merged: show(m)}))
`)
	var js struct {
		Docs   [][]byte `json:"docs"`
		Merged string   `json:"merged"`
	}
	if err := json.Unmarshal(out, &js); err != nil {
		t.Fatal(err)
	}
	var jsView struct {
		E string `json:"e"`
		F string `json:"f"`
		M int64  `json:"m"`
	}
	if err := json.Unmarshal([]byte(js.Merged), &jsView); err != nil {
		t.Fatal(err)
	}
	e := newEnv(t)
	r1, r2 := e.replica("r1"), e.replica("r2")
	ctx := context.Background()
	for i, r := range []*Replica{r1, r2} {
		first, second := js.Docs[0], js.Docs[1]
		if i == 1 {
			first, second = second, first
		}
		if _, err := r.ImportDoc(ctx, "items", "x", first); err != nil {
			t.Fatalf("%s: first import: %v", r.Name(), err)
		}
		if _, err := r.ImportDoc(ctx, "items", "x", second); err != nil {
			t.Fatalf("%s: second import: %v", r.Name(), err)
		}
	}
	g1, g2 := mustGet(t, r1, "items", "x"), mustGet(t, r2, "items", "x")
	if !sameValue(g1, g2) {
		t.Fatalf("replicas disagree: %#v vs %#v", g1, g2)
	}
	// The empty-key fields show what Automerge itself shows for the merge.
	if g1[""] != jsView.E || g1["m"].(map[string]any)[""] != jsView.M {
		t.Fatalf("empty-key fields %#v / %#v, Automerge shows %q / %d", g1[""], g1["m"], jsView.E, jsView.M)
	}
	if f, ok := g1["f"].(float64); !ok || !(math.IsNaN(f) || math.IsInf(f, 1)) {
		t.Fatalf("f = %#v, want one of the candidates NaN, +Inf", g1["f"])
	}
	e.sync(r1, r2)
	e.sync(r1, r2)
	h1, h2 := mustGet(t, r1, "items", "x"), mustGet(t, r2, "items", "x")
	if !sameValue(h1, h2) || !sameValue(h1, g1) {
		t.Fatalf("after sync: %#v vs %#v (before %#v)", h1, h2, g1)
	}
	// A quiet third session exchanges no records.
	sa, sb := e.sync(r1, r2)
	if sa.RecordsSent != 0 || sb.RecordsSent != 0 {
		t.Fatalf("sync did not settle: %+v / %+v", sa, sb)
	}
}

// TestPropertyAwkwardValuesConverge: three replicas write awkward values
// (integer and float limits, -0.0, NUL and control characters, bytes,
// dates far outside 0000-9999, nested maps and lists, keys that look like
// tags) concurrently to the same fields and sync in random pairs over a
// network that cuts sessions; refused values (NaN, ±Inf, empty keys,
// invalid UTF-8, unrepresentable times) never reach a record. After
// fault-free rounds every replica holds identical records (floats bit for
// bit) and the same conflict queue, every record prints as JSON, and a
// further round writes nothing. The replicas live across iterations (each
// iteration uses its own records), which keeps the test fast.
func TestPropertyAwkwardValuesConverge(t *testing.T) {
	e := newEnv(t)
	rs := []*Replica{e.replica("a"), e.replica("b"), e.replica("c")}
	n := len(rs)
	ctx := context.Background()
	fields := []string{"a", "b", "$bytes", "n\x00ul"}
	iter := 0
	rapid.Check(t, func(rt *rapid.T) {
		iter++
		recs := []string{fmt.Sprintf("i%d-0", iter), fmt.Sprintf("i%d-1", iter)}
		session := func(i, j, cut int) {
			if cut > 0 {
				if err := e.net.Script(transport.Plan{From: rs[i].ID(), To: rs[j].ID(), CutAfter: cut}); err != nil {
					rt.Fatal(err)
				}
			}
			_, _, errA, errB := e.trySync(rs[i], rs[j])
			if cut == 0 && (errA != nil || errB != nil) {
				rt.Fatalf("fault-free session failed: %v / %v", errA, errB)
			}
		}
		steps := rapid.IntRange(1, 8).Draw(rt, "steps")
		for range steps {
			switch rapid.IntRange(0, 3).Draw(rt, "action") {
			case 0, 1:
				r := rs[rapid.IntRange(0, n-1).Draw(rt, "who")]
				rec := rapid.SampledFrom(recs).Draw(rt, "record")
				field := rapid.SampledFrom(fields).Draw(rt, "field")
				if rapid.IntRange(0, 4).Draw(rt, "refused") == 0 {
					before, errBefore := r.Get(ctx, "items", rec)
					v := valuegen.Refused().Draw(rt, "bad")
					if err := r.Put(ctx, "items", rec, map[string]any{field: v}); !errors.Is(err, crdt.ErrUnsupportedValue) {
						rt.Fatalf("Put(%#v) = %v, want ErrUnsupportedValue", v, err)
					}
					after, errAfter := r.Get(ctx, "items", rec)
					if (errBefore == nil) != (errAfter == nil) || !sameValue(before, after) {
						rt.Fatalf("a refused Put changed the record: %#v -> %#v", before, after)
					}
					continue
				}
				v := valuegen.Value(2).Draw(rt, "value")
				if err := r.Put(ctx, "items", rec, map[string]any{field: v}); err != nil {
					rt.Fatalf("Put(%#v): %v", v, err)
				}
			case 2:
				i := rapid.IntRange(0, n-1).Draw(rt, "from")
				j := (i + 1 + rapid.IntRange(0, n-2).Draw(rt, "to")) % n
				cut := 0
				if rapid.Bool().Draw(rt, "fault") {
					cut = rapid.IntRange(1, 8).Draw(rt, "cutAfter")
				}
				session(i, j, cut)
			default:
				e.clock.Advance(time.Duration(rapid.IntRange(0, 5000).Draw(rt, "ms")) * time.Millisecond)
			}
		}
		for range 2 {
			for j := 1; j < n; j++ {
				session(0, j, 0)
			}
		}
		queue := func(r *Replica) []string {
			list, err := r.Conflicts(ctx)
			if err != nil {
				rt.Fatal(err)
			}
			var ids []string
			for _, c := range list {
				ids = append(ids, c.Conflict.ID)
			}
			sort.Strings(ids)
			return ids
		}
		for _, rec := range recs {
			want, errW := rs[0].Get(ctx, "items", rec)
			if errW == nil {
				if _, err := crdt.EncodeJSON(want); err != nil {
					rt.Fatalf("%s does not print: %v", rec, err)
				}
			}
			for i := 1; i < n; i++ {
				got, err := rs[i].Get(ctx, "items", rec)
				if (err == nil) != (errW == nil) || !sameValue(got, want) {
					rt.Fatalf("replica %d: %s = %#v (%v), want %#v (%v)", i, rec, got, err, want, errW)
				}
			}
		}
		for i := 1; i < n; i++ {
			if !reflect.DeepEqual(queue(rs[i]), queue(rs[0])) {
				rt.Fatalf("replica %d: conflict queue %v, want %v", i, queue(rs[i]), queue(rs[0]))
			}
		}
		before := make([]uint64, n)
		for i, r := range rs {
			before[i] = r.store.LastSeq()
		}
		for j := 1; j < n; j++ {
			session(0, j, 0)
		}
		for i, r := range rs {
			if r.store.LastSeq() != before[i] {
				rt.Fatalf("replica %d wrote during a quiescent round", i)
			}
		}
	})
}
