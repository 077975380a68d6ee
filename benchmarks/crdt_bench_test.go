package benchmarks

import (
	"context"
	"fmt"
	"runtime"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/automerge/automerge-go"
	"github.com/ferrysync/ferry/crdt"
	"github.com/ferrysync/ferry/policy"
)

// benchClock is a fake time source advanced by hand, so the HLCs and change
// hashes are the same on every run.
type benchClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *benchClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(time.Millisecond)
	return c.t
}

func actor(id string, c *benchClock) crdt.Actor {
	return crdt.Actor{ReplicaID: id, Clock: crdt.NewClock(c.now, 0)}
}

const pastChanges = 10_000

var (
	historyOnce  sync.Once
	historyBytes []byte
)

// history returns a saved record with pastChanges changes (each one field
// write, over 100 fields).
func history(b *testing.B) []byte {
	historyOnce.Do(func() {
		clk := &benchClock{t: time.UnixMilli(1_700_000_000_000)}
		d, err := crdt.New(actor("origin", clk))
		if err != nil {
			b.Fatal(err)
		}
		for i := range pastChanges {
			if err := d.Set(fmt.Sprintf("k%02d", i%100), i); err != nil {
				b.Fatal(err)
			}
		}
		historyBytes = d.Save()
	})
	return historyBytes
}

// BenchmarkMergeDelta merges a one-change delta into a record with 10,000
// past changes, against raw automerge-go Apply of the same change in the
// same run. ns/op is raw Apply plus ferry's MergeRemote; the metrics split
// them.
func BenchmarkMergeDelta(b *testing.B) {
	for _, conflict := range []bool{false, true} {
		name := "no-conflict"
		if conflict {
			name = "conflict"
		}
		b.Run(name, func(b *testing.B) { benchMergeDelta(b, conflict) })
	}
}

func benchMergeDelta(b *testing.B, conflict bool) {
	saved := history(b)
	clk := &benchClock{t: time.UnixMilli(1_800_000_000_000)}
	local, err := crdt.Load(saved, actor("local", clk))
	if err != nil {
		b.Fatal(err)
	}
	remote, err := crdt.Load(saved, actor("remote", clk))
	if err != nil {
		b.Fatal(err)
	}
	raw, err := automerge.Load(saved)
	if err != nil {
		b.Fatal(err)
	}
	pol := policy.NewSet(policy.Rule{Policy: policy.Timestamp})
	res := &policy.Resolver{Policies: pol}
	var rawT, ferryT, resolveT []time.Duration
	conflicts := 0
	b.ReportAllocs()
	b.ResetTimer()
	b.StopTimer()
	for i := range b.N {
		// Untimed: both sides write; the local write reaches the raw twin.
		rHeads, lHeads := remote.Heads(), local.Heads()
		if conflict {
			if err := local.Set("k07", fmt.Sprintf("local-%d", i)); err != nil {
				b.Fatal(err)
			}
			lch, _ := local.Changes(lHeads...)
			if err := raw.LoadIncremental(automerge.SaveChanges(lch)); err != nil {
				b.Fatal(err)
			}
		}
		if err := remote.Set("k07", fmt.Sprintf("remote-%d", i)); err != nil {
			b.Fatal(err)
		}
		delta, err := remote.Changes(rHeads...)
		if err != nil || len(delta) != 1 {
			b.Fatalf("delta %d %v", len(delta), err)
		}
		heads := remote.Heads()

		b.StartTimer()
		t0 := time.Now()
		if err := raw.Apply(delta...); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		mr, err := local.MergeRemote(delta, heads)
		t2 := time.Now()
		b.StopTimer()
		if err != nil {
			b.Fatal(err)
		}
		if len(mr.Conflicts) > 0 {
			conflicts++
		}
		if _, err := res.Resolve(context.Background(), "bench", "r", local, mr); err != nil {
			b.Fatal(err)
		}
		t3 := time.Now()
		rawT = append(rawT, t1.Sub(t0))
		ferryT = append(ferryT, t2.Sub(t1))
		resolveT = append(resolveT, t3.Sub(t2))
		// Untimed: the remote learns the local writes and resolutions, so
		// the next delta is again one change on a shared state.
		back, err := local.Changes(heads...)
		if err != nil {
			b.Fatal(err)
		}
		if err := remote.Automerge().LoadIncremental(automerge.SaveChanges(back)); err != nil {
			b.Fatal(err)
		}
		if err := raw.LoadIncremental(automerge.SaveChanges(back)); err != nil {
			b.Fatal(err)
		}
	}
	if conflict && conflicts != b.N {
		b.Fatalf("%d conflicts in %d merges", conflicts, b.N)
	}
	report(b, rawT, ferryT)
	b.ReportMetric(float64(median(resolveT)), "resolve-median-ns")
}

// report publishes the medians (robust to GC and finalizer pauses, which
// land on either side at random) and their ratio.
func report(b *testing.B, raw, ferry []time.Duration) {
	r, f := median(raw), median(ferry)
	b.ReportMetric(float64(r), "raw-median-ns")
	b.ReportMetric(float64(f), "ferry-median-ns")
	b.ReportMetric(float64(f)/float64(r), "ferry/raw")
}

func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

// BenchmarkConflictStorm: 100 replicas each set the same key concurrently
// (crdt-benchmarks B3.1 style); replica 0 merges the other 99 changes,
// which is one conflict with 100 candidates. Raw automerge-go applies the
// same changes in the same run.
func BenchmarkConflictStorm(b *testing.B) {
	const replicas = 100
	clk := &benchClock{t: time.UnixMilli(1_700_000_000_000)}
	origin, _ := crdt.New(actor("origin", clk))
	_ = origin.Put(map[string]any{"v": -1, "other": "x"})
	base := origin.Save()
	var changes []*automerge.Change
	// automerge-go's changes borrow from the document that produced them:
	// the replicas must outlive the changes.
	var docs []*crdt.Doc
	for i := range replicas {
		d, err := crdt.Load(base, actor(fmt.Sprintf("r%03d", i), clk))
		if err != nil {
			b.Fatal(err)
		}
		h := d.Heads()
		if err := d.Set("v", i); err != nil {
			b.Fatal(err)
		}
		chs, _ := d.Changes(h...)
		changes = append(changes, chs...)
		docs = append(docs, d)
	}
	own, others := changes[0], changes[1:]
	var remoteHeads []automerge.ChangeHash
	for _, c := range others {
		remoteHeads = append(remoteHeads, c.Hash())
	}
	res := &policy.Resolver{Policies: policy.NewSet(policy.Rule{Policy: policy.Timestamp})}
	var rawT, ferryT, resolveT []time.Duration
	b.ReportAllocs()
	b.ResetTimer()
	b.StopTimer()
	for range b.N {
		raw, err := automerge.Load(base)
		if err != nil {
			b.Fatal(err)
		}
		target, err := crdt.Load(base, actor("r000", clk))
		if err != nil {
			b.Fatal(err)
		}
		if err := raw.Apply(own); err != nil {
			b.Fatal(err)
		}
		if err := target.Automerge().Apply(own); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		t0 := time.Now()
		// automerge-go's Apply with more than two changes from different C
		// results can corrupt the heap (a finalizer frees an intermediate
		// result it still reads), so the baseline loads the same changes'
		// bytes, as ferry does.
		if err := raw.LoadIncremental(automerge.SaveChanges(others)); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		mr, err := target.MergeRemote(others, remoteHeads)
		t2 := time.Now()
		b.StopTimer()
		if err != nil || len(mr.Conflicts) != 1 || len(mr.Conflicts[0].Candidates) != replicas {
			b.Fatalf("conflicts %+v err %v", mr, err)
		}
		if _, err := res.Resolve(context.Background(), "bench", "r", target, mr); err != nil {
			b.Fatal(err)
		}
		t3 := time.Now()
		if v, _ := target.Get("v"); v != int64(replicas-1) {
			b.Fatalf("timestamp winner %v", v)
		}
		rawT = append(rawT, t1.Sub(t0))
		ferryT = append(ferryT, t2.Sub(t1))
		resolveT = append(resolveT, t3.Sub(t2))
	}
	report(b, rawT, ferryT)
	b.ReportMetric(float64(median(resolveT)), "resolve-median-ns")
	runtime.KeepAlive(docs)
}
