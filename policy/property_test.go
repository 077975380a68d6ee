package policy

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/automerge/automerge-go"
	"github.com/ferrysync/ferry/crdt"
	"pgregory.net/rapid"
)

// tb is the part of testing.TB that *rapid.T also has.
type tb interface {
	Helper()
	Fatal(args ...any)
	Fatalf(format string, args ...any)
}

// fakeTime is a manually advanced time source.
type fakeTime struct{ t time.Time }

func (f *fakeTime) now() time.Time          { return f.t }
func (f *fakeTime) advance(d time.Duration) { f.t = f.t.Add(d) }

type replica struct {
	name  string
	doc   *crdt.Doc
	clock *fakeTime
	res   *Resolver
	// writes are this replica's local writes, for the no-overwrite oracle
	// (nil outside the property test).
	writes *[]trackedWrite
	// unchecked: a change was made since the last full Supersede without
	// a local check, so the local check alone may leave stale entries.
	unchecked bool
}

// trackedWrite is a local write: the change that made it and the field
// it surely wrote.
type trackedWrite struct {
	change automerge.ChangeHash
	path   string
}

// clockBound is the clock-skew bound the property test's replicas use.
const clockBound = 5 * time.Minute

const coll = "things"

func newReplica(t tb, name string, prio int, set *Set, base time.Time, saved []byte) *replica {
	ft := &fakeTime{t: base}
	actor := crdt.Actor{ReplicaID: name, Priority: prio, Clock: crdt.NewClock(ft.now, clockBound)}
	var d *crdt.Doc
	var err error
	if saved != nil {
		d, err = crdt.Load(saved, actor)
	} else {
		d, err = crdt.New(actor)
	}
	if err != nil {
		t.Fatal(err)
	}
	return &replica{name: name, doc: d, clock: ft, res: &Resolver{Policies: set, Queue: NewQueue(NewMemKV()),
		Audit: &Audit{Log: &MemLog{}}, Now: ft.now, ReplicaID: name}, writes: &[]trackedWrite{}}
}

// sync merges everything src has into dst and resolves, as the replica
// layer does.
func syncPair(t tb, dst, src *replica) {
	t.Helper()
	before := dst.doc.Heads()
	mr, err := dst.doc.MergeFrom(src.doc)
	if err != nil {
		t.Fatalf("%s<-%s merge: %v", dst.name, src.name, err)
	}
	// As the replica layer does: note writes stamped beyond the bound.
	fws, err := dst.doc.NoteFutureWrites(before, dst.clock.now(), clockBound, true)
	if err != nil {
		t.Fatalf("%s<-%s clock notes: %v", dst.name, src.name, err)
	}
	stats.future += len(fws)
	dst.unchecked = false // Resolve runs the full check
	out, err := dst.res.Resolve(context.Background(), coll, "rec", dst.doc, mr)
	if err != nil {
		t.Fatalf("%s<-%s resolve: %v", dst.name, src.name, err)
	}
	stats.merges++
	stats.conflicts += len(mr.Conflicts)
	stats.repaired += mr.Repaired
	stats.queued += len(out.Queued)
	stats.closed += len(out.Closed)
	for _, c := range mr.Conflicts {
		stats.kinds[c.Kind]++
	}
}

// stats show what the property test exercised (logged, not asserted).
var stats = struct {
	merges, conflicts, repaired, queued, closed int
	future, stale, newer                        int
	kinds                                       map[crdt.ConflictKind]int
}{kinds: map[crdt.ConflictKind]int{}}

var (
	scalarKeys = []string{"a", "b", "m.x", "m.y", "m.n.z", "p"}
	allKinds   = []Kind{Merge, Timestamp, Priority, User}
)

func genRule(t *rapid.T, label string) Rule {
	k := rapid.SampledFrom(allKinds).Draw(t, label)
	r := Rule{Policy: k}
	if k == User {
		r.Deadline = Duration(time.Duration(rapid.IntRange(1, 50).Draw(t, label+"-deadline")) * time.Second)
		r.Fallback = rapid.SampledFrom([]Kind{Timestamp, Priority, Merge}).Draw(t, label+"-fallback")
	}
	if k == Priority && rapid.Bool().Draw(t, label+"-field") {
		r.PriorityField = "rank"
	}
	return r
}

func genSet(t *rapid.T) *Set {
	set := NewSet(Rule{Policy: Timestamp})
	c := Collection{Rule: genRule(t, "coll"), Fields: map[string]Rule{}}
	for _, f := range []string{"a", "m", "m.n", "l", "t"} {
		if rapid.Bool().Draw(t, "override-"+f) {
			c.Fields[f] = genRule(t, "rule-"+f)
		}
	}
	if err := set.SetCollection(coll, c); err != nil {
		t.Fatal(err)
	}
	return set
}

func genScalar(t *rapid.T) any {
	switch rapid.IntRange(0, 5).Draw(t, "vkind") {
	case 0:
		return rapid.IntRange(0, 3).Draw(t, "int")
	case 1:
		return rapid.SampledFrom([]string{"x", "y", "z"}).Draw(t, "str")
	case 2:
		return rapid.Bool().Draw(t, "bool")
	case 3:
		return nil
	case 4:
		return map[string]any{"rank": rapid.IntRange(0, 3).Draw(t, "rank"), "v": rapid.IntRange(0, 2).Draw(t, "rv")}
	default:
		return []any{rapid.IntRange(0, 2).Draw(t, "li")}
	}
}

// localOp performs one random application write; errors such as ErrNotFound
// for a missing path are part of the game and ignored.
func localOp(t *rapid.T, r *replica) {
	d := r.doc
	ctx := context.Background()
	before := d.Heads()
	path := ""
	defer func() {
		after := d.Heads()
		if crdt.SameHeads(before, after) || len(after) != 1 {
			return
		}
		if r.writes != nil && path != "-" {
			*r.writes = append(*r.writes, trackedWrite{change: after[0], path: path})
		}
		// As the replica layer does after every local write; sometimes
		// not (an application on crdt directly, a crash right after the
		// write), so that stale entries reach Commit too.
		if path == "-" || rapid.IntRange(0, 4).Draw(t, "skipSupersede") == 0 {
			r.unchecked = true
			return
		}
		closed, err := r.res.SupersedeLocal(ctx, coll, "rec", d, before)
		if err != nil {
			t.Fatal(err)
		}
		stats.newer += len(closed)
		// The O(new changes) check for local writes misses nothing the
		// full check finds (when every earlier change was checked).
		more, err := r.res.Supersede(ctx, coll, "rec", d)
		if err != nil || len(more) != 0 && !r.unchecked {
			t.Fatalf("%s: the local check left %v superseded (%v)", r.name, more, err)
		}
		r.unchecked = false
	}()
	ptr := func(dotted string) string { return crdt.FieldPointer(strings.Split(dotted, ".")...) }
	switch rapid.IntRange(0, 12).Draw(t, "op") {
	case 0, 1, 2:
		k := rapid.SampledFrom(scalarKeys).Draw(t, "key")
		path = ptr(k)
		_ = d.Set(k, genScalar(t))
	case 3:
		k := rapid.SampledFrom(append(scalarKeys, "m", "m.n", "l", "t", "k")).Draw(t, "delkey")
		path = ptr(k)
		_ = d.Delete(k)
	case 4:
		pk := rapid.SampledFrom([]string{"x", "q"}).Draw(t, "pk")
		path = ptr("m." + pk)
		_ = d.Put(map[string]any{"m": map[string]any{pk: genScalar(t)}})
	case 5:
		path = "/l"
		if err := d.ListInsert("l", 0, rapid.IntRange(0, 9).Draw(t, "elem")); err != nil {
			_ = d.Set("l", []any{})
		}
	case 6:
		path = "/l"
		if err := d.ListDelete("l", 0, 1); err != nil {
			_ = d.ListAppend("l", "e")
		}
	case 7:
		path = "/t"
		if err := d.SpliceText("t", 0, 0, rapid.SampledFrom([]string{"a", "b"}).Draw(t, "ins")); err != nil {
			_ = d.NewText("t", "T")
		}
	case 8:
		path = "/k"
		if err := d.Increment("k", int64(rapid.IntRange(1, 3).Draw(t, "inc"))); err != nil {
			_ = d.Set("k", crdt.Counter(0))
		}
	case 10:
		path = "-" // a resolution, not an application write
		es, err := r.res.Queue.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(es) > 0 {
			e := es[0]
			n := rapid.IntRange(0, len(e.Conflict.Candidates)-1).Draw(t, "pick")
			var p Pending
			if rapid.Bool().Draw(t, "pickOrValue") {
				p, err = r.res.Queue.ResolvePick(ctx, e.ID(), n)
			} else {
				p, err = r.res.Queue.ResolveValue(ctx, e.ID(), "user", false)
			}
			if err != nil {
				t.Fatal(err)
			}
			commitChecked(t, r, p)
		}
	case 11:
		path = "-"
		r.clock.advance(time.Duration(rapid.IntRange(1, 60).Draw(t, "sweepAdvance")) * time.Second)
		ps, err := r.res.Queue.Sweep(ctx, r.clock.now())
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range ps {
			commitChecked(t, r, p)
		}
	case 9:
		path = ""
		if rapid.IntRange(0, 4).Draw(t, "delrec") == 0 {
			_ = d.DeleteRecord()
		}
	case 12:
		// The user edits a field with an open conflict, and may then try
		// to decide the conflict from a stale view of the queue.
		path = "-"
		es, err := r.res.Queue.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(es) == 0 {
			return
		}
		e := es[0]
		p, err := crdt.PointerToPath(e.Conflict.Path)
		if err != nil {
			t.Fatal(err)
		}
		h := d.Heads()
		if err := d.Set(p, genScalar(t)); err != nil || crdt.SameHeads(h, d.Heads()) {
			return
		}
		*r.writes = append(*r.writes, trackedWrite{change: d.Heads()[0], path: e.Conflict.Path})
		if rapid.Bool().Draw(t, "decideStale") {
			n := rapid.IntRange(0, len(e.Conflict.Candidates)-1).Draw(t, "stalePick")
			pe, err := r.res.Queue.ResolvePick(ctx, e.ID(), n)
			if err != nil {
				t.Fatal(err)
			}
			commitChecked(t, r, pe)
		}
	}
}

// allWrites is every replica's tracked writes (set by checkConvergence).
var allWrites []*[]trackedWrite

// commitChecked commits a user or fallback decision and checks it against
// an oracle independent of crdt.Doc.Superseded: when the replica holds an
// application write to the conflict's field (or a parent or child) whose
// history contains every candidate, the decision must be refused with
// ErrStale rather than overwrite it.
func commitChecked(t *rapid.T, r *replica, p Pending) {
	newer := ""
	for _, ws := range allWrites {
		for _, w := range *ws {
			if !r.doc.HasChange(w.change) || !related(w.path, p.Entry.Conflict.Path) {
				continue
			}
			f, err := r.doc.Automerge().Fork(w.change)
			if err != nil {
				t.Fatal(err)
			}
			after := true
			for _, cd := range p.Entry.Conflict.Candidates {
				if _, err := f.Change(cd.Change); err != nil {
					after = false
					break
				}
			}
			if after {
				newer = w.path
			}
		}
	}
	err := r.res.Commit(context.Background(), r.doc, p)
	switch {
	case errors.Is(err, ErrStale):
		stats.stale++
	case err != nil:
		t.Fatal(err)
	case newer != "":
		t.Fatalf("%s: decision on %s (%s) overwrote a newer write to %s", r.name, p.Entry.ID(), p.Entry.Conflict.Path, newer)
	}
}

// related reports whether two field pointers are the same, or one is
// inside the other.
func related(a, b string) bool {
	under := func(q, p string) bool { return p == "" || q == p || strings.HasPrefix(q, p+"/") }
	return under(a, b) || under(b, a)
}

func headsKey(r *replica) string { return fmt.Sprint(r.doc.Heads()) }

func queueKey(t tb, r *replica) string {
	es, err := r.res.Queue.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// Deadlines run from when each replica detected the conflict (its
	// clock), so they may differ; everything else, and the fallback's
	// decision, must not.
	// List orders by deadline, so the entries are sorted by id here.
	var ks []string
	for _, e := range es {
		e.Deadline, e.Detected = time.Time{}, time.Time{}
		b, _ := encodeEntry(e)
		ks = append(ks, fmt.Sprintf("%s/%d/%x;", e.ID(), FallbackFor(e).Resolution.Winner, b))
	}
	sortStrings(ks)
	return strings.Join(ks, "")
}

func TestPropertyConvergenceAndQuiescence(t *testing.T) {
	// Several independent batches (each rapid's default 100 cases, or
	// -rapid.checks) from fresh seeds; fewer under -short.
	batches := 5
	if testing.Short() {
		batches = 1
	}
	for range batches {
		rapid.Check(t, checkConvergence)
	}
	t.Logf("exercised: %d merges, %d conflicts %v, %d repairs, %d queued, %d closed, %d future writes noted, %d closed by newer writes, %d stale decisions refused",
		stats.merges, stats.conflicts, stats.kinds, stats.repaired, stats.queued, stats.closed, stats.future, stats.newer, stats.stale)
}

// clockErrors are the clock errors the property test gives replicas:
// mostly none, else minutes to days, ahead and behind.
var clockErrors = []time.Duration{0, 0, 0, 0, 4 * time.Minute, -10 * time.Minute, 3 * time.Hour, -3 * time.Hour,
	24 * time.Hour, -24 * time.Hour, 72 * time.Hour, -50 * time.Hour}

func checkConvergence(t *rapid.T) {
	allWrites = nil
	set := genSet(t)
	n := rapid.IntRange(2, 5).Draw(t, "replicas")
	base := time.UnixMilli(1_700_000_000_000).UTC()
	seed := newReplica(t, "r0", 0, set, base, nil)
	shared := rapid.Bool().Draw(t, "sharedStart")
	if shared {
		if err := seed.doc.Put(map[string]any{"a": 1, "m": map[string]any{"x": "init"}}); err != nil {
			t.Fatal(err)
		}
	}
	rs := []*replica{}
	for i := range n {
		var saved []byte
		if shared {
			saved = seed.doc.Save()
		}
		prio := rapid.IntRange(0, 2).Draw(t, "prio")
		skew := time.Duration(rapid.IntRange(0, 3000).Draw(t, "skew")) * time.Millisecond
		// Wrong clocks, hours or days off either way, on some replicas.
		skew += rapid.SampledFrom(clockErrors).Draw(t, "clockError")
		r := newReplica(t, fmt.Sprintf("r%d", i), prio, set, base.Add(skew), saved)
		r.writes = &[]trackedWrite{}
		allWrites = append(allWrites, r.writes)
		rs = append(rs, r)
	}
	steps := rapid.IntRange(1, 40).Draw(t, "steps")
	for range steps {
		i := rapid.IntRange(0, n-1).Draw(t, "who")
		if rapid.IntRange(0, 2).Draw(t, "syncOrOp") == 0 {
			j := rapid.IntRange(0, n-1).Draw(t, "from")
			if i != j {
				syncPair(t, rs[i], rs[j])
			}
			continue
		}
		rs[i].clock.advance(time.Duration(rapid.IntRange(0, 5).Draw(t, "tick")) * time.Millisecond)
		localOp(t, rs[i])
	}
	// Everyone merges everything, in rounds, until a whole round changes
	// nothing.
	order := rapid.Permutation(pairs(n)).Draw(t, "order")
	quiet := false
	for round := 0; round < 8 && !quiet; round++ {
		before := make([]string, n)
		for i, r := range rs {
			before[i] = headsKey(r)
		}
		for _, p := range order {
			syncPair(t, rs[p[0]], rs[p[1]])
		}
		quiet = true
		for i, r := range rs {
			if headsKey(r) != before[i] {
				quiet = false
			}
		}
	}
	if !quiet {
		t.Fatalf("no quiescence after 8 full rounds")
	}
	want, err := rs[0].doc.ToMap()
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rs[1:] {
		got, err := r.doc.ToMap()
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%s diverged:\n got %v\nwant %v", r.name, got, want)
		}
		if headsKey(r) != headsKey(rs[0]) {
			t.Fatalf("%s heads differ", r.name)
		}
		if queueKey(t, r) != queueKey(t, rs[0]) {
			t.Fatalf("%s queue differs:\n%s\n%s", r.name, queueKey(t, r), queueKey(t, rs[0]))
		}
	}
}

func pairs(n int) [][2]int {
	var out [][2]int
	for i := range n {
		for j := range n {
			if i != j {
				out = append(out, [2]int{i, j})
			}
		}
	}
	return out
}
