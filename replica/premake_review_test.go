package replica

import (
	"context"
	"errors"
	"fmt"
	"math"
	"runtime/debug"
	"slices"
	"sync"
	"testing"

	"github.com/ferrysync/ferry/policy"
	"github.com/ferrysync/ferry/storage"
)

// TestPremakeWithConcurrentPuts (h4-review): while apply makes the
// documents of a batch's new records in parallel (premakeNew), local Puts
// of the same records wait for the batch's record locks: none of them
// lands between premakeNew's "not in the store" and the batch's write
// (which would write the received bytes as the record's whole document
// and lose the Put). Every record ends with the received field and the
// local one.
func TestPremakeWithConcurrentPuts(t *testing.T) {
	noMemoryLimit(t)
	ctx := context.Background()
	e := newEnv(t)
	src, dst := e.replica("src"), e.replica("dst")
	const n = 48
	var recs []recordChanges
	for i := range n {
		id := fmt.Sprintf("r%02d", i)
		mustPut(t, src, "notes", id, map[string]any{"remote": int64(i)})
		whole, ok, err := src.wholeRecord(ctx, "notes", id)
		if err != nil || !ok {
			t.Fatalf("wholeRecord: %v %v", ok, err)
		}
		recs = append(recs, whole)
	}
	var wg sync.WaitGroup
	errs := make(chan error, n+1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		if _, _, _, err := dst.applyRecords(ctx, src.ID(), recs, 0); err != nil {
			errs <- err
		}
	}()
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := dst.Put(ctx, "notes", fmt.Sprintf("r%02d", i), map[string]any{"local": int64(i)}); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	dst.cache.clear()
	for i := range n {
		m := mustGet(t, dst, "notes", fmt.Sprintf("r%02d", i))
		if m["remote"] != int64(i) || m["local"] != int64(i) {
			t.Fatalf("r%02d = %v: the received record or the local Put was lost", i, m)
		}
	}
}

// BenchmarkPremakePrepass (h4-review): what premakeNew's pass costs on a
// batch of records the store holds already (a delta sync: one Meta read
// each, then nothing to make), against applying the same batch.
func BenchmarkPremakePrepass(b *testing.B) {
	ctx := context.Background()
	e := newEnv(b)
	src, dst := e.replica("src"), e.replica("dst")
	var recs []recordChanges
	for i := range 1000 {
		id := fmt.Sprintf("r%04d", i)
		mustPut(b, src, "notes", id, map[string]any{"n": int64(i), "s": "some text of a field"})
		whole, _, err := src.wholeRecord(ctx, "notes", id)
		if err != nil {
			b.Fatal(err)
		}
		recs = append(recs, whole)
	}
	if _, _, _, err := dst.applyRecords(ctx, src.ID(), recs, 0); err != nil {
		b.Fatal(err)
	}
	for _, k := range []int{10, 100} {
		batch := recs[:k]
		b.Run(fmt.Sprintf("prepass-%d", k), func(b *testing.B) {
			for range b.N {
				dst.cache.clear()
				if _, err := dst.premakeNew(ctx, batch); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("apply-%d", k), func(b *testing.B) {
			for range b.N {
				dst.cache.clear()
				if _, _, _, err := dst.applyRecords(ctx, src.ID(), batch, 0); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestFindNewSkipsHeldBatches (h4-review): on a batch of records the
// store holds already (a delta sync), the pre-pass stops after a few Meta
// reads instead of reading every record's meta before apply loads each
// again (BenchmarkPremakePrepass: ~11% of applying 100 such records); on
// a batch of new records it finds them all, and a batch of mostly new
// ones with some held finds every new one.
func TestFindNewSkipsHeldBatches(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	src, dst := e.replica("src"), e.replica("dst")
	var recs []recordChanges
	for i := range 150 {
		id := fmt.Sprintf("r%03d", i)
		mustPut(t, src, "notes", id, map[string]any{"n": int64(i)})
		whole, _, err := src.wholeRecord(ctx, "notes", id)
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, whole)
	}
	held, fresh := recs[:100], recs[100:]
	idx, reads, err := dst.findNew(ctx, held)
	if err != nil || len(idx) != 100 || reads != 100 {
		t.Fatalf("new batch: %d new of 100 in %d reads (%v)", len(idx), reads, err)
	}
	if _, _, _, err := dst.applyRecords(ctx, src.ID(), held, 0); err != nil {
		t.Fatal(err)
	}
	dst.cache.clear()
	idx, reads, err = dst.findNew(ctx, held)
	if err != nil || len(idx) != 0 || reads > premadeMin+1 {
		t.Fatalf("held batch: %d new in %d Meta reads (%v), want none in at most %d", len(idx), reads, err, premadeMin+1)
	}
	mixed := append(append([]recordChanges{}, held[:5]...), fresh...)
	idx, _, err = dst.findNew(ctx, mixed)
	if err != nil || len(idx) != len(fresh) {
		t.Fatalf("mixed batch: %d new, want %d (%v)", len(idx), len(fresh), err)
	}
}

// cancelAfter is a context that reports itself cancelled from its
// after-th Err call on: a cancellation at every point of apply in turn.
type cancelAfter struct {
	context.Context
	calls, after int64
	mu           sync.Mutex
}

func (c *cancelAfter) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.calls++; c.calls > c.after {
		return context.Canceled
	}
	return nil
}

// TestPremakeCancelled (h4-review): a batch of new records whose apply
// is cancelled at any point (before, during or after premakeNew's
// parallel loads) writes nothing and leaves the replica able to apply the
// same batch whole afterwards, with every record as sent.
func TestPremakeCancelled(t *testing.T) {
	noMemoryLimit(t)
	ctx := context.Background()
	e := newEnv(t)
	src := e.replica("src")
	var recs []recordChanges
	for i := range 24 {
		id := fmt.Sprintf("r%02d", i)
		mustPut(t, src, "notes", id, map[string]any{"n": int64(i)})
		whole, _, err := src.wholeRecord(ctx, "notes", id)
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, whole)
	}
	for after := int64(0); ; after += 2 {
		dst, err := Open(ctx, "", Options{Passphrase: []byte("pw"), KDF: storage.TestKDF(), InMemory: true,
			Name: "dst", Now: e.clock.Now, Policies: policy.NewSet(policy.Rule{Policy: policy.Timestamp})})
		if err != nil {
			t.Fatal(err)
		}
		c := &cancelAfter{Context: ctx, after: after}
		_, _, _, err = dst.applyRecords(c, src.ID(), recs, 0)
		if err == nil {
			dst.Close()
			if after == 0 {
				t.Fatal("apply with a cancelled context succeeded")
			}
			t.Logf("applied whole with %d context checks", after)
			return // past every Err call: the batch was applied whole
		}
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled after %d checks: %v, want context.Canceled", after, err)
		}
		n := 0
		if err := dst.store.List(ctx, "notes", func(storage.RecordMeta) error { n++; return nil }); err != nil {
			t.Fatal(err)
		}
		if n != 0 {
			t.Fatalf("cancelled after %d checks: %d records written", after, n)
		}
		if _, _, _, err := dst.applyRecords(ctx, src.ID(), recs, 0); err != nil {
			t.Fatalf("apply after a cancelled one: %v", err)
		}
		for i := range recs {
			if m := mustGet(t, dst, "notes", fmt.Sprintf("r%02d", i)); m["n"] != int64(i) {
				t.Fatalf("r%02d = %v after a cancelled apply", i, m)
			}
		}
		dst.Close()
	}
}

// TestPremadeWrongHeads (h4-review): the case rapid saved in
// testdata/rapid/TestPropertyPremadeMatchesOneByOne (the parallel path
// wrote a record whose claimed heads were another record's, where the
// one-by-one path asks for it whole), made deterministic: ten new
// records (one sent twice), three the receiver holds, and a copy of the
// first new record under another name with a held record's heads.
func TestPremadeWrongHeads(t *testing.T) {
	noMemoryLimit(t)
	ctx := context.Background()
	e := newEnv(t)
	src, pre := e.replica("src"), e.replica("pre")
	var held []recordChanges
	for i := range 3 {
		id := fmt.Sprintf("held%d", i)
		mustPut(t, pre, "notes", id, map[string]any{"n": int64(i)})
		whole, _, err := pre.wholeRecord(ctx, "notes", id)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, whole)
	}
	var recs []recordChanges
	for i := range 10 {
		id := fmt.Sprintf("new%d", i)
		mustPut(t, src, "notes", id, map[string]any{"n": int64(i)})
		whole, _, err := src.wholeRecord(ctx, "notes", id)
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, whole)
		if i == 1 {
			recs = append(recs, whole)
		}
	}
	recs = append(recs, held[0], held[2], held[1])
	wrong := recs[0]
	wrong.ID = "wrong"
	wrong.Heads = held[1].Heads
	recs = append(recs, wrong)
	for _, min := range []int{1, 1 << 30} {
		old := premadeMin
		premadeMin = min
		r, err := Open(ctx, "", Options{Passphrase: []byte("pw"), KDF: storage.TestKDF(), InMemory: true,
			Name: "dst", Now: e.clock.Now, Policies: policy.NewSet(policy.Rule{Policy: policy.Timestamp})})
		if err != nil {
			t.Fatal(err)
		}
		if _, _, _, err := r.applyRecords(ctx, src.ID(), held, 0); err != nil {
			t.Fatal(err)
		}
		needs, _, _, err := r.applyRecords(ctx, src.ID(), slices.Clone(recs), 0)
		premadeMin = old
		if err != nil {
			t.Fatal(err)
		}
		if len(needs) != 1 || needs[0].ID != "wrong" {
			t.Fatalf("premadeMin %d: needs %v, want the record whose heads are not its own", min, needs)
		}
		if _, err := r.store.Meta(ctx, "notes", "wrong"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("premadeMin %d: the record whose heads are not its own was written (%v)", min, err)
		}
		r.Close()
	}
}

// TestPremakeSkippedUnderAMemoryLimit: with a memory limit in force the
// documents of new records are made one by one (no parallel loads, whose
// C allocations spread over glibc's per-thread arenas); without one, the
// same batch is premade.
func TestPremakeSkippedUnderAMemoryLimit(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	src, dst := e.replica("src"), e.replica("dst")
	var recs []recordChanges
	for i := range premadeMin + 2 {
		id := fmt.Sprintf("m%d", i)
		mustPut(t, src, "notes", id, map[string]any{"n": int64(i)})
		rc, ok, err := src.wholeRecord(ctx, "notes", id)
		if err != nil || !ok {
			t.Fatalf("wholeRecord: %v %v", ok, err)
		}
		recs = append(recs, rc)
	}
	release := func(pre map[int]*premade) {
		for _, p := range pre {
			if p.d != nil {
				p.d.Release()
			}
		}
	}
	old := debug.SetMemoryLimit(-1)
	defer debug.SetMemoryLimit(old)
	debug.SetMemoryLimit(math.MaxInt64)
	pre, err := dst.premakeNew(ctx, recs)
	release(pre)
	if err != nil || len(pre) != len(recs) {
		t.Fatalf("no memory limit: %d of %d premade, %v", len(pre), len(recs), err)
	}
	debug.SetMemoryLimit(1 << 40)
	pre, err = dst.premakeNew(ctx, recs)
	release(pre)
	if err != nil || pre != nil {
		t.Fatalf("under a memory limit: %d premade, %v; want none", len(pre), err)
	}
}

// noMemoryLimit lifts the process's memory limit for the test (another
// test of the package may have left one: replica.Options.MemoryLimit is
// process-wide), so that premakeNew makes documents in parallel.
func noMemoryLimit(t *testing.T) {
	old := debug.SetMemoryLimit(math.MaxInt64)
	t.Cleanup(func() { debug.SetMemoryLimit(old) })
}
