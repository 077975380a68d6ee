package replica

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"reflect"
	"strconv"
	"testing"
	"time"

	"github.com/ferrysync/ferry/crdt"
	"github.com/ferrysync/ferry/internal/amjs"
	"github.com/ferrysync/ferry/policy"
)

// concurrentJS builds, with @automerge/automerge, one document per case:
// a base, forked into two actors that each change the same field
// concurrently (times in seconds, as JS writes them: a at argv[2], b at
// argv[3]), and the JS merge of the two. For each it reports which side
// Automerge shows, found from A.getConflicts (the value with the greatest
// op id wins), and how many values getConflicts lists.
const concurrentJS = `
import * as A from "@automerge/automerge"
const TA = Number(process.argv[2]), TB = Number(process.argv[3])
const actors = {base: "00000000000000000000000000000001", a: "0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a", b: "0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b"}
const b64 = (d) => Buffer.from(A.save(d)).toString("base64")
// [name, path, initial value of k, edit of a, edit of b]
const cases = [
  ["text", ["k"], () => "hello", d => { d.k = "from a" }, d => { d.k = "from b" }],
  ["string", ["k"], () => new A.ImmutableString("s0"), d => { d.k = new A.ImmutableString("a") }, d => { d.k = new A.ImmutableString("b") }],
  ["int", ["k"], () => 0, d => { d.k = -7 }, d => { d.k = new A.Int(9) }],
  ["uint", ["k"], () => new A.Uint(1), d => { d.k = new A.Uint(3) }, d => { d.k = new A.Uint(9007199254740991) }],
  ["float", ["k"], () => 0.5, d => { d.k = 1.5 }, d => { d.k = new A.Float64(-0.25) }],
  ["bool", ["k"], () => null, d => { d.k = true }, d => { d.k = false }],
  ["null", ["k"], () => 1, d => { d.k = null }, d => { d.k = 2 }],
  ["bytes", ["k"], () => new Uint8Array([0]), d => { d.k = new Uint8Array([1]) }, d => { d.k = new Uint8Array([2, 3]) }],
  ["date", ["k"], () => new Date(0), d => { d.k = new Date(1000) }, d => { d.k = new Date(1700000000123) }],
  ["list", ["k"], () => ["x"], d => { d.k = [1, "p"] }, d => { d.k = ["q"] }],
  ["map", ["k"], () => ({x: 1}), d => { d.k = {y: 1} }, d => { d.k = {z: "2"} }],
  ["counter", ["k"], () => new A.Counter(10), d => { d.k = new A.Counter(1) }, d => { d.k = new A.Counter(2) }],
  ["counter vs increment", ["k"], () => new A.Counter(10), d => { d.k = new A.Counter(0) }, d => { d.k.increment(5) }],
  ["text vs splice", ["k"], () => "hello", d => { d.k = "new" }, d => { A.splice(d, ["k"], 5, 0, "!") }],
  ["nested text", ["k", "t"], () => ({t: "inner"}), d => { d.k.t = "x" }, d => { d.k.t = "y" }],
  // JS makes no operation for a scalar written with the value it has.
  ["int written again", ["k"], () => 1, d => { d.k = 1 }, d => { d.k = 2 }],
  ["delete vs splice", ["k"], () => "hello", d => { delete d.k }, d => { A.splice(d, ["k"], 0, 0, ">") }],
  ["text vs counter", ["k"], () => "hello", d => { d.k = new A.Counter(3) }, d => { d.k = "t" }],
  ["new text", ["n"], () => 0, d => { d.n = "from a" }, d => { d.n = "from b" }],
  // These merge: no conflict.
  ["new maps", ["n"], () => 0, d => { d.n = {y: 1} }, d => { d.n = {z: "2"} }],
  ["increments", ["k"], () => new A.Counter(10), d => { d.k.increment(1) }, d => { d.k.increment(2) }],
  ["splices", ["k"], () => "hello", d => { A.splice(d, ["k"], 0, 0, "A") }, d => { A.splice(d, ["k"], 5, 0, "B") }],
  ["list inserts", ["k"], () => ["x"], d => { d.k.push("A") }, d => { d.k.insertAt(0, "B") }],
  ["map keys", ["k"], () => ({x: 1}), d => { d.k.a = 1 }, d => { d.k.b = 2 }],
]
const out = []
for (const [name, path, init, ea, eb] of cases) {
  const base = A.change(A.init({actor: actors.base}), {time: 1600000000}, d => { d.k = init() })
  const a = A.change(A.clone(base, {actor: actors.a}), {time: TA}, ea)
  const b = A.change(A.clone(base, {actor: actors.b}), {time: TB}, eb)
  const m = A.merge(A.clone(a), b)
  let parent = m
  for (const k of path.slice(0, -1)) parent = parent[k]
  const conflicts = A.getConflicts(parent, path[path.length - 1]) || {}
  let win = null, best = null
  for (const id of Object.keys(conflicts)) {
    const [ctr, actor] = id.split("@")
    const key = [Number(ctr), actor]
    if (best === null || key[0] > best[0] || key[0] === best[0] && key[1] > best[1]) { best = key; win = actor }
  }
  out.push({name, path, a: b64(a), b: b64(b), merged: b64(m), values: Object.keys(conflicts).length,
    winner: win === actors.a ? "a" : win === actors.b ? "b" : ""})
}
process.stdout.write(JSON.stringify(out))
`

type jsCase struct {
	Name   string   `json:"name"`
	Path   []string `json:"path"`
	A      string   `json:"a"`
	B      string   `json:"b"`
	Merged string   `json:"merged"`
	Values int      `json:"values"`
	Winner string   `json:"winner"`
}

func (c jsCase) doc(t *testing.T, which string) []byte {
	t.Helper()
	s := map[string]string{"a": c.A, "b": c.B, "merged": c.Merged}[which]
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// valueIn reads the case's field from a saved document as ferry's Get
// renders it (nil, false when absent).
func (c jsCase) valueIn(t *testing.T, which string) (any, bool) {
	t.Helper()
	d, err := crdt.Load(c.doc(t, which), crdt.Actor{ReplicaID: "reader"})
	if err != nil {
		t.Fatal(err)
	}
	m, err := d.ToMap()
	if err != nil {
		t.Fatal(err)
	}
	return lookupField(m, c.Path)
}

func lookupField(m map[string]any, path []string) (any, bool) {
	var v any = m
	for _, k := range path {
		mm, ok := v.(map[string]any)
		if !ok {
			return nil, false
		}
		if v, ok = mm[k]; !ok {
			return nil, false
		}
	}
	return v, true
}

// TestForeignConcurrentEditsFromJS: documents made by @automerge/automerge
// in which two plain clients changed the same field concurrently, for
// every value type. ferry reports one conflict for each replacement (and
// none where the edits merge), whether the two sides come in by import or
// by syncing two replicas, and Get shows what the policy decides: under
// merge, Automerge's own winner, the one JS reports; under timestamp, the
// later side.
//
// Without the identity probe the replacements of texts, lists, maps and
// counters are reported as 0 conflicts; without reading JS times as seconds
// the timestamp policy still passes here (both sides are JS) but
// TestForeignTimestampUnits fails.
func TestForeignConcurrentEditsFromJS(t *testing.T) {
	// Seconds; a is later, while Automerge shows b (the greater actor id
	// at equal op counters), so the two policies pick different sides.
	const ta, tb = 1_767_258_100, 1_767_258_000
	var cases []jsCase
	if err := json.Unmarshal(amjs.Run(t, concurrentJS, strconv.Itoa(ta), strconv.Itoa(tb)), &cases); err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		t.Logf("%s: %d values, Automerge shows %q", c.Name, c.Values, c.Winner)
	}
	ctx := context.Background()
	for _, pol := range []policy.Kind{policy.Merge, policy.Timestamp} {
		t.Run(string(pol), func(t *testing.T) {
			e := newEnv(t)
			withPolicy := func(o *Options) { o.Policies = policy.NewSet(policy.Rule{Policy: pol}) }
			imp := e.replica("imp", withPolicy)
			r1, r2 := e.replica("r1", withPolicy), e.replica("r2", withPolicy)
			want := map[string]any{}
			wantGone := map[string]bool{}
			conflicting := map[string]bool{}
			for i, c := range cases {
				id := fmt.Sprintf("c%02d", i)
				conflict := c.Values > 1 && c.Name != "new maps" || c.Name == "counter vs increment" || c.Name == "text vs splice" || c.Name == "delete vs splice"
				if conflict {
					conflicting[id] = true
				}
				// The expected result.
				var v any
				var ok bool
				switch {
				case c.Name == "new maps":
					// Maps created concurrently where there was none have
					// their keys unioned, as for ferry's own writes
					// (Automerge alone would show one of the two maps).
					v, ok = map[string]any{"y": int64(1), "z": "2"}, true
				case !conflict:
					v, ok = c.valueIn(t, "merged")
				case pol == policy.Timestamp:
					v, ok = c.valueIn(t, "a")
				default:
					if c.Winner == "" {
						// One side's value hid the other's without a
						// conflict in Automerge's view (an edit of an object
						// the other side replaced): Automerge shows the
						// merged state.
						v, ok = c.valueIn(t, "merged")
					} else {
						v, ok = c.valueIn(t, c.Winner)
					}
				}
				if ok {
					want[id] = v
				} else {
					wantGone[id] = true
				}
				// By import: one side, then the other.
				if n, err := imp.ImportDoc(ctx, "notes", id, c.doc(t, "a")); err != nil || n != 0 {
					t.Fatalf("%s: import a: %d conflicts, %v", c.Name, n, err)
				}
				n, err := imp.ImportDoc(ctx, "notes", id, c.doc(t, "b"))
				if err != nil {
					t.Fatalf("%s: import b: %v", c.Name, err)
				}
				if wantN := map[bool]int{true: 1, false: 0}[conflict]; n != wantN {
					t.Errorf("%s: import reported %d conflicts, want %d", c.Name, n, wantN)
				}
				// By sync: one replica holds each side.
				if _, err := r1.ImportDoc(ctx, "notes", id, c.doc(t, "a")); err != nil {
					t.Fatal(err)
				}
				if _, err := r2.ImportDoc(ctx, "notes", id, c.doc(t, "b")); err != nil {
					t.Fatal(err)
				}
			}
			sa, sb := e.sync(r1, r2)
			if sa.Conflicts+sb.Conflicts < len(conflicting) {
				t.Errorf("sync reported %d+%d conflicts, want at least %d", sa.Conflicts, sb.Conflicts, len(conflicting))
			}
			for _, r := range []*Replica{imp, r1, r2} {
				recs, err := r.Audit(ctx, policy.Filter{})
				if err != nil {
					t.Fatal(err)
				}
				decided := map[string]bool{}
				for _, rec := range recs {
					decided[rec.RecordID] = true
				}
				for i, c := range cases {
					id := fmt.Sprintf("c%02d", i)
					if conflicting[id] && r != r2 && !decided[id] { // r2 may take r1's decision
						t.Errorf("%s on %s: no decision audited", c.Name, r.Name())
					}
					if !conflicting[id] && decided[id] {
						t.Errorf("%s on %s: a conflict was decided where the edits merge", c.Name, r.Name())
					}
					rec := mustGet(t, r, "notes", id)
					got, ok := lookupField(rec, c.Path)
					if wantGone[id] {
						if ok {
							t.Errorf("%s on %s: %s = %#v, want it deleted", c.Name, r.Name(), c.Path, got)
						}
						continue
					}
					if !ok || !reflect.DeepEqual(got, want[id]) {
						t.Errorf("%s on %s: %s = %#v, want %#v (winner %q)", c.Name, r.Name(), c.Path, got, want[id], c.Winner)
					}
				}
			}
			// Quiescence: a further exchange sends nothing.
			sa, sb = e.sync(r1, r2)
			if sa.RecordsSent+sb.RecordsSent != 0 || sa.Conflicts+sb.Conflicts != 0 {
				t.Fatalf("quiescent round sent %d records, %d conflicts", sa.RecordsSent+sb.RecordsSent, sa.Conflicts+sb.Conflicts)
			}
		})
	}
}

// timestampJS makes a base document at a fixed time, and a change by
// another actor setting title at argv[2] (seconds since the epoch, which is
// what @automerge/automerge writes).
const timestampJS = `
import * as A from "@automerge/automerge"
const base = A.change(A.init({actor: "00000000000000000000000000000001"}), {time: 1600000000}, d => { d.title = "base" })
const edit = A.change(A.clone(base, {actor: "0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c"}), {time: Number(process.argv[2])}, d => { d.title = "from js" })
process.stdout.write(JSON.stringify({base: Buffer.from(A.save(base)).toString("base64"), edit: Buffer.from(A.save(edit)).toString("base64")}))
`

// TestForeignTimestampUnits: under the timestamp policy, an edit made in a
// JS Automerge application a minute after ferry's concurrent edit wins, and
// one made a minute before loses: JS's seconds are read as seconds.
func TestForeignTimestampUnits(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name  string
		delta time.Duration // JS time minus ferry's
		want  string
	}{
		{"js later", time.Minute, "from js"},
		{"js earlier", -time.Minute, "from ferry"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			r := e.replica("a")
			tGo := e.clock.Now()
			tJS := tGo.Add(tc.delta).Unix()
			var docs struct{ Base, Edit string }
			if err := json.Unmarshal(amjs.Run(t, timestampJS, strconv.FormatInt(tJS, 10)), &docs); err != nil {
				t.Fatal(err)
			}
			base, _ := base64.StdEncoding.DecodeString(docs.Base)
			edit, _ := base64.StdEncoding.DecodeString(docs.Edit)
			if _, err := r.ImportDoc(ctx, "notes", "n", base); err != nil {
				t.Fatal(err)
			}
			mustPut(t, r, "notes", "n", map[string]any{"title": "from ferry"})
			n, err := r.ImportDoc(ctx, "notes", "n", edit)
			if err != nil || n != 1 {
				t.Fatalf("import: %d conflicts, %v", n, err)
			}
			if got := mustGet(t, r, "notes", "n")["title"]; got != tc.want {
				t.Fatalf("title = %v, want %q", got, tc.want)
			}
			recs, err := r.Audit(ctx, policy.Filter{})
			if err != nil || len(recs) != 1 {
				t.Fatalf("audit: %v %v", recs, err)
			}
			for _, cd := range recs[0].Conflict.Candidates {
				if cd.FromPlainAutomerge && cd.HLC.WallMillis != tJS*1000 {
					t.Fatalf("JS candidate time %v, want %v", cd.HLC.Time(), time.Unix(tJS, 0).UTC())
				}
			}
		})
	}
}
