package policy

import (
	"context"
	"fmt"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/automerge/automerge-go"
	"github.com/ferrysync/ferry/crdt"
	"pgregory.net/rapid"
)

// foreignClient is a plain Automerge application (no ferry write-sets) that
// stamps its changes in seconds (as @automerge/automerge and Rust do) or in
// milliseconds (as automerge-go does).
type foreignClient struct {
	name    string
	doc     *automerge.Doc
	seconds bool
	at      time.Time
}

func (f *foreignClient) commit(t *rapid.T) {
	raw := f.at.UnixMilli()
	if f.seconds {
		raw = f.at.Unix()
	}
	when := time.UnixMilli(raw) // automerge-go writes UnixMilli of this: raw
	if _, err := f.doc.Commit("", automerge.CommitOptions{Time: &when}); err != nil && !strings.Contains(err.Error(), "empty") {
		t.Fatalf("%s commit: %v", f.name, err)
	}
}

// genForeignValue draws a value of any type a plain client can write,
// awkward ones included.
func genForeignValue(t *rapid.T) any {
	switch rapid.IntRange(0, 12).Draw(t, "fkind") {
	case 0:
		return rapid.SampledFrom([]string{"", "x", "y", "\x00", "é"}).Draw(t, "fstr")
	case 1:
		return rapid.SampledFrom([]int64{0, 1, -1, math.MaxInt64, math.MinInt64}).Draw(t, "fint")
	case 2:
		return rapid.SampledFrom([]uint64{0, 3, math.MaxUint64}).Draw(t, "fuint")
	case 3:
		return rapid.SampledFrom([]float64{0.5, -0.25, math.MaxFloat64, math.SmallestNonzeroFloat64}).Draw(t, "ffloat")
	case 4:
		return rapid.Bool().Draw(t, "fbool")
	case 5:
		return nil
	case 6:
		return rapid.SampledFrom([][]byte{{}, {0}, {1, 2}}).Draw(t, "fbytes")
	case 7:
		return time.UnixMilli(rapid.SampledFrom([]int64{0, 1, 1_700_000_000_123}).Draw(t, "ftime"))
	case 8:
		return automerge.NewText(rapid.SampledFrom([]string{"", "t", "text"}).Draw(t, "ftext"))
	case 9:
		return []any{rapid.SampledFrom([]any{int64(1), "e"}).Draw(t, "felem")}
	case 10:
		return map[string]any{"x": rapid.SampledFrom([]any{int64(1), "v"}).Draw(t, "fmapx")}
	case 11:
		return automerge.NewCounter(int64(rapid.IntRange(-2, 2).Draw(t, "fcounter")))
	default:
		return map[string]any{"rank": int64(rapid.IntRange(0, 3).Draw(t, "frank"))}
	}
}

// foreignOp makes one edit of any kind through automerge-go directly: a
// replacement by a value of any type, or an in-place edit (splice,
// insert, increment, map key) of whatever object is there.
func foreignOp(t *rapid.T, f *foreignClient) {
	root := f.doc.RootMap()
	key := rapid.SampledFrom([]string{"a", "b", "m", "l", "t", "k"}).Draw(t, "fkey")
	cur, err := root.Get(key)
	if err != nil {
		t.Fatal(err)
	}
	switch rapid.IntRange(0, 3).Draw(t, "fop") {
	case 0:
		err = root.Delete(key)
	case 1:
		switch cur.Kind() {
		case automerge.KindText:
			err = cur.Text().Insert(0, rapid.SampledFrom([]string{"p", "q"}).Draw(t, "fins"))
		case automerge.KindList:
			err = cur.List().Insert(0, rapid.SampledFrom([]any{int64(7), "i"}).Draw(t, "flins"))
		case automerge.KindCounter:
			err = cur.Counter().Inc(int64(rapid.IntRange(1, 3).Draw(t, "finc")))
		case automerge.KindMap:
			err = cur.Map().Set(rapid.SampledFrom([]string{"x", "y"}).Draw(t, "fmk"), genForeignValue(t))
		default:
			err = root.Set(key, genForeignValue(t))
		}
	default:
		err = root.Set(key, genForeignValue(t))
	}
	if err != nil {
		t.Fatalf("%s op on %s: %v", f.name, key, err)
	}
	f.commit(t)
}

// TestPropertyForeignClients: ferry replicas under any policies exchange
// records with plain Automerge clients that write every value type and
// stamp their changes in seconds or milliseconds. All replicas decide every
// conflict alike and converge, a further exchange makes no change, and a
// plain client that takes the final state sees what ferry shows.
func TestPropertyForeignClients(t *testing.T) {
	rapid.Check(t, checkForeignClients)
	t.Logf("exercised: %d merges, %d conflicts %v", stats.merges, stats.conflicts, stats.kinds)
}

func checkForeignClients(t *rapid.T) {
	set := genSet(t)
	base := time.UnixMilli(1_700_000_000_000).UTC()
	// The record starts in a plain client.
	origin := automerge.New()
	_ = origin.RootMap().Set("a", "start")
	_ = origin.RootMap().Set("t", automerge.NewText("hello"))
	_ = origin.RootMap().Set("k", automerge.NewCounter(0))
	_ = origin.RootMap().Set("m", map[string]any{"x": int64(1)})
	_ = origin.RootMap().Set("l", []any{"e"})
	when := time.UnixMilli(base.Unix() - 60) // seconds
	if _, err := origin.Commit("", automerge.CommitOptions{Time: &when}); err != nil {
		t.Fatal(err)
	}
	saved := origin.Save()

	nf := rapid.IntRange(1, 3).Draw(t, "foreign")
	var fs []*foreignClient
	for i := range nf {
		d, err := automerge.Load(saved)
		if err != nil {
			t.Fatal(err)
		}
		_ = d.SetActorID(fmt.Sprintf("%032x", 0xf0+i))
		fs = append(fs, &foreignClient{name: fmt.Sprintf("f%d", i), doc: d, seconds: rapid.Bool().Draw(t, "seconds"),
			at: base.Add(time.Duration(rapid.IntRange(-3000, 3000).Draw(t, "fskew")) * time.Millisecond)})
	}
	n := rapid.IntRange(1, 3).Draw(t, "replicas")
	var rs []*replica
	for i := range n {
		rs = append(rs, newReplica(t, fmt.Sprintf("r%d", i), rapid.IntRange(0, 2).Draw(t, "prio"), set,
			base.Add(time.Duration(rapid.IntRange(0, 3000).Draw(t, "skew"))*time.Millisecond), saved))
	}
	fromForeign := func(r *replica, f *foreignClient) {
		chs, err := f.doc.Changes()
		if err != nil {
			t.Fatal(err)
		}
		mr, err := r.doc.MergeRemote(chs, f.doc.Heads())
		if err != nil {
			t.Fatalf("%s<-%s merge: %v", r.name, f.name, err)
		}
		if _, err := r.res.Resolve(context.Background(), coll, "rec", r.doc, mr); err != nil {
			t.Fatalf("%s<-%s resolve: %v", r.name, f.name, err)
		}
		stats.merges++
		stats.conflicts += len(mr.Conflicts)
		for _, c := range mr.Conflicts {
			stats.kinds[c.Kind]++
		}
	}
	toForeign := func(f *foreignClient, r *replica) {
		b, err := r.doc.ChangesSince()
		if err != nil {
			t.Fatal(err)
		}
		if err := f.doc.LoadIncremental(b); err != nil {
			t.Fatalf("%s<-%s: %v", f.name, r.name, err)
		}
	}
	steps := rapid.IntRange(1, 30).Draw(t, "steps")
	for range steps {
		switch rapid.IntRange(0, 4).Draw(t, "what") {
		case 0, 1:
			f := fs[rapid.IntRange(0, nf-1).Draw(t, "fwho")]
			f.at = f.at.Add(time.Duration(rapid.IntRange(0, 2500).Draw(t, "ftick")) * time.Millisecond)
			foreignOp(t, f)
		case 2:
			r := rs[rapid.IntRange(0, n-1).Draw(t, "who")]
			r.clock.advance(time.Duration(rapid.IntRange(0, 2500).Draw(t, "tick")) * time.Millisecond)
			localOp(t, r)
		case 3:
			r, f := rs[rapid.IntRange(0, n-1).Draw(t, "rx")], fs[rapid.IntRange(0, nf-1).Draw(t, "fx")]
			if rapid.Bool().Draw(t, "dir") {
				fromForeign(r, f)
			} else {
				toForeign(f, r)
			}
		default:
			i, j := rapid.IntRange(0, n-1).Draw(t, "i"), rapid.IntRange(0, n-1).Draw(t, "j")
			if i != j {
				syncPair(t, rs[i], rs[j])
			}
		}
	}
	// The plain clients hand over what they have; then the replicas
	// exchange in rounds until a whole round changes nothing.
	for _, f := range fs {
		fromForeign(rs[rapid.IntRange(0, n-1).Draw(t, "last")], f)
	}
	order := rapid.Permutation(pairs(n)).Draw(t, "order")
	quiet := n == 1
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
		if queueKey(t, r) != queueKey(t, rs[0]) {
			t.Fatalf("%s queue differs", r.name)
		}
	}
	// Every replica audited the same decision for each conflict it decided
	// by policy.
	decided := map[string]string{}
	for _, r := range rs {
		recs, err := r.res.Audit.Query(context.Background(), Filter{})
		if err != nil {
			t.Fatal(err)
		}
		for _, rec := range recs {
			if rec.By != ByPolicy {
				continue
			}
			w := fmt.Sprint(rec.Winner)
			if rec.Winner >= 0 {
				b, _ := crdt.EncodeValue(rec.Conflict.Candidates[rec.Winner].Value)
				w = fmt.Sprintf("%x", b)
			}
			if prev, ok := decided[rec.Conflict.ID]; ok && prev != w {
				t.Fatalf("conflict %s decided differently: %s vs %s", rec.Conflict.ID, prev, w)
			}
			decided[rec.Conflict.ID] = w
		}
	}
	// A plain client that takes the final state sees what ferry shows, and
	// handing it back changes nothing.
	f := fs[0]
	toForeign(f, rs[0])
	heads := rs[0].doc.Heads()
	fromForeign(rs[0], f)
	if !crdt.SameHeads(heads, rs[0].doc.Heads()) {
		t.Fatalf("the plain client's copy of the final state made a change")
	}
	pv, ok := f.doc.Root().Interface().(map[string]any)
	if !ok {
		t.Fatal("plain client root")
	}
	for k := range pv {
		if strings.HasPrefix(k, crdt.MetaPrefix) {
			delete(pv, k)
		}
	}
	if len(pv) != len(want) {
		t.Fatalf("plain client sees keys %v, ferry %v", pv, want)
	}
}
