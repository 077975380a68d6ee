package replica

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"slices"
	"sort"
	"testing"

	"github.com/ferrysync/ferry/storage"
)

// memSet is a reconData over an in-memory set: record name -> heads. A
// record's "changes" are its heads; a send carries the heads the receiver
// lacks, so two memSets converge by union.
type memSet struct {
	recs  map[recRef][][]byte
	cache [][]reconItem // by bucket; nil when a record changed since
}

func newMemSet() *memSet { return &memSet{recs: map[recRef][][]byte{}} }

func (s *memSet) buckets() [][]reconItem {
	if s.cache == nil {
		s.cache = make([][]reconItem, storage.ReconBuckets)
		for _, it := range s.items() {
			b := storage.ReconBucket(it.key)
			s.cache[b] = append(s.cache[b], it)
		}
	}
	return s.cache
}

func (s *memSet) put(coll, id string, heads ...string) {
	var hs [][]byte
	for _, h := range heads {
		sum := sha256.Sum256([]byte(h))
		hs = append(hs, sum[:])
	}
	sort.Slice(hs, func(i, j int) bool { return bytes.Compare(hs[i], hs[j]) < 0 })
	s.recs[recRef{coll, id}] = hs
	s.touch(recRef{coll, id})
}

// touch updates the bucket cache for a record that changed.
func (s *memSet) touch(r recRef) {
	if s.cache == nil {
		return
	}
	k := storage.ReconKey(r.coll, r.id)
	b := storage.ReconBucket(k)
	items := slices.DeleteFunc(s.cache[b], func(it reconItem) bool { return it.coll == r.coll && it.id == r.id })
	hs := s.recs[r]
	s.cache[b] = append(items, reconItem{coll: r.coll, id: r.id, key: k, heads: hs, hash: storage.ReconHash(k, hs)})
	sortItems(s.cache[b])
}

func (s *memSet) items() []reconItem {
	var out []reconItem
	for r, hs := range s.recs {
		k := storage.ReconKey(r.coll, r.id)
		out = append(out, reconItem{coll: r.coll, id: r.id, key: k, heads: hs, hash: storage.ReconHash(k, hs)})
	}
	sortItems(out)
	return out
}

func (s *memSet) reconSums(context.Context) ([]storage.ReconSum, error) {
	out := make([]storage.ReconSum, storage.ReconBuckets)
	for b, items := range s.buckets() {
		for _, it := range items {
			out[b].Bucket = uint16(b)
			out[b].Count++
			storage.AddSum(&out[b].Sum, it.hash)
		}
	}
	return out, nil
}

func (s *memSet) reconItems(_ context.Context, lo, hi uint16) ([]reconItem, error) {
	var out []reconItem
	for _, items := range s.buckets()[lo:hi] {
		out = append(out, items...)
	}
	return out, nil
}

func hasAll(mine, theirs [][]byte) bool {
	for _, t := range theirs {
		found := false
		for _, m := range mine {
			if bytes.Equal(m, t) {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// reconHeads follows the replica's rule with set inclusion for "holds".
func (s *memSet) reconHeads(_ context.Context, coll, id string, theirs [][]byte, round uint8) (*reconSend, [][]byte, bool, error) {
	mine := s.recs[recRef{coll, id}]
	if hasAll(mine, theirs) {
		if hasAll(theirs, mine) {
			return nil, nil, false, nil
		}
		return &reconSend{coll: coll, id: id, since: theirs}, nil, false, nil
	}
	if round == 0 {
		return nil, mine, true, nil
	}
	return &reconSend{coll: coll, id: id, since: nil}, mine, true, nil
}

// receive merges a sent record into s (union of heads).
func (s *memSet) receive(from *memSet, r reconSend) {
	ref := recRef{r.coll, r.id}
	hs := append([][]byte{}, s.recs[ref]...)
	for _, h := range from.recs[ref] {
		if !hasAll(hs, [][]byte{h}) {
			hs = append(hs, h)
		}
	}
	sort.Slice(hs, func(i, j int) bool { return bytes.Compare(hs[i], hs[j]) < 0 })
	s.recs[ref] = hs
	s.touch(ref)
}

// reconcile runs two engines over two sets until neither has anything to
// say, delivering frames in order and applying sends at once. It returns
// the frames and bytes exchanged and the records sent each way.
func reconcile(t testing.TB, a, b *memSet) (frames, wireBytes, sentA, sentB int) {
	t.Helper()
	ctx := context.Background()
	key := reconKey("a", "b", []byte("na"), []byte("nb"))
	ea, eb := newReconEngine(key, true), newReconEngine(key, false)
	toB, err := ea.start(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	var toA []*reconMsg
	count := func(ms []*reconMsg) {
		for _, m := range ms {
			frames++
			b, err := encodeMsg(&wireMsg{T: msgRecon, Recon: m})
			if err != nil {
				t.Fatal(err)
			}
			wireBytes += len(b)
			if _, err := decodeMsg(b); err != nil {
				t.Fatalf("a frame the engine made does not decode: %v", err)
			}
		}
	}
	count(toB)
	for steps := 0; len(toA)+len(toB) > 0; steps++ {
		if steps > 1000 {
			t.Fatal("reconciliation does not end")
		}
		var nextA, nextB []*reconMsg
		for _, m := range toB {
			out, sends, err := eb.step(ctx, b, m)
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range expandAll(t, eb, b, sends) {
				a.receive(b, s)
				sentB++
			}
			count(out)
			nextA = append(nextA, out...)
		}
		for _, m := range toA {
			out, sends, err := ea.step(ctx, a, m)
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range expandAll(t, ea, a, sends) {
				b.receive(a, s)
				sentA++
			}
			count(out)
			nextB = append(nextB, out...)
		}
		toA, toB = nextA, nextB
	}
	if ea.busy() || eb.busy() {
		t.Fatal("an engine is still busy after the exchange")
	}
	return
}

// expandAll expands every span of sends as the session does a bucket at
// a time (reconEngine.expand) and returns the records in name order, as
// a step's whole answer.
func expandAll(t testing.TB, e *reconEngine, d reconData, sends []reconSend) []reconSend {
	t.Helper()
	var out []reconSend
	for len(sends) > 0 {
		s := sends[0]
		sends = sends[1:]
		if s.span == nil {
			out = append(out, s)
			continue
		}
		more, err := e.expand(context.Background(), d, s)
		if err != nil {
			t.Fatal(err)
		}
		sends = append(more, sends...)
	}
	slices.SortFunc(out, compareSends)
	return out
}

func sameSets(t testing.TB, a, b *memSet) {
	t.Helper()
	if len(a.recs) != len(b.recs) {
		t.Fatalf("%d records vs %d", len(a.recs), len(b.recs))
	}
	for r, hs := range a.recs {
		if !hasAll(hs, b.recs[r]) || !hasAll(b.recs[r], hs) {
			t.Fatalf("%v differs", r)
		}
	}
}

// TestReconEngineConverges: identical sets exchange one frame each way;
// k differences move about k records; disjoint and empty sets converge.
func TestReconEngineConverges(t *testing.T) {
	const n = 20000
	build := func() (*memSet, *memSet) {
		a, b := newMemSet(), newMemSet()
		for i := range n {
			a.put("c", fmt.Sprint(i), fmt.Sprint("h", i))
			b.put("c", fmt.Sprint(i), fmt.Sprint("h", i))
		}
		return a, b
	}
	a, b := build()
	frames, bytes, sa, sb := reconcile(t, a, b)
	t.Logf("identical %d: %d frames, %d bytes", n, frames, bytes)
	if frames != 2 || sa+sb != 0 || bytes > 128 {
		t.Fatalf("identical sets: %d frames, %d bytes, %d/%d sent", frames, bytes, sa, sb)
	}
	for _, k := range []int{1, 10, 1000} {
		a, b := build()
		for i := range k {
			id := fmt.Sprint(i * (n / k))
			switch i % 3 {
			case 0:
				a.put("c", id, "h"+id, "newer on a") // a ahead
			case 1:
				b.put("c", id+"-only-b", "x") // b has a record a lacks
			case 2:
				a.put("c", id, "concurrent a")
				b.put("c", id, "concurrent b")
			}
		}
		frames, bytes, sa, sb := reconcile(t, a, b)
		t.Logf("%d differing of %d: %d frames, %d bytes, %d/%d records sent", k, n, frames, bytes, sa, sb)
		sameSets(t, a, b)
		if sa+sb > 2*k || bytes > 2048*k+1024 {
			t.Fatalf("%d differences: %d/%d records, %d bytes", k, sa, sb, bytes)
		}
	}
	a, b = newMemSet(), newMemSet()
	for i := range 100 {
		a.put("c", fmt.Sprint("a", i), "x")
		b.put("d", fmt.Sprint("b", i), "y")
	}
	reconcile(t, a, b)
	sameSets(t, a, b)
	a, b = newMemSet(), newMemSet()
	reconcile(t, a, b)
}

// FuzzReconStep: any reconciliation frame that decodes is handled without
// a panic, at any point of an exchange: an error or an answer.
func FuzzReconStep(f *testing.F) {
	seed := func(m *reconMsg) {
		b, err := encodeMsg(&wireMsg{T: msgRecon, Recon: m})
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, true, false)
		f.Add(b, false, true)
	}
	seed(&reconMsg{Ranges: []reconRange{{Hi: storage.ReconBuckets, FP: make([]byte, reconFPLen)}}})
	seed(&reconMsg{Reply: true, Ranges: []reconRange{{Lo: 3, Hi: 4, Mode: rangeItems, Items: make([]byte, reconItemLen)}}})
	seed(&reconMsg{Ranges: []reconRange{{Lo: 0, Hi: 9, Mode: rangeEmpty}}})
	seed(&reconMsg{Heads: []reconHeads{{Tag: make([]byte, reconTagLen), Lack: true}}})
	parts := make([]byte, reconSplit)
	parts[0], parts[3] = partItems, partFP
	for i := 4; i < reconSplit; i++ {
		parts[i] = partEmpty
	}
	seed(&reconMsg{Ranges: []reconRange{{Lo: 0, Hi: storage.ReconBuckets, Mode: rangeSplit, Parts: parts,
		FP: make([]byte, reconFPLen), Items: make([]byte, reconItemLen)}}})
	seed(&reconMsg{Ranges: []reconRange{{Lo: 5, Hi: 6, Sub: 0x1f3, Mode: rangeSplit, Parts: parts,
		FP: make([]byte, reconFPLen), Items: make([]byte, reconItemLen)}}})
	seed(&reconMsg{Ranges: []reconRange{{Lo: 5, Hi: 6, Sub: 0x12, FP: make([]byte, reconFPLen)}}})
	seed(&reconMsg{Ranges: []reconRange{{Lo: 5, Hi: 6, Sub: 1 << 60, Mode: rangeItems, Items: make([]byte, reconItemLen)}}})
	// Read only by the engine: one set for every input.
	s := newMemSet()
	for i := range 3000 {
		s.put("c", fmt.Sprint(i), "h")
	}
	s.buckets()
	f.Fuzz(func(t *testing.T, frame []byte, initiator, small bool) {
		m, err := decodeMsg(frame)
		if err != nil || m.T != msgRecon {
			return
		}
		e := newReconEngine(reconKey("a", "b", nil, nil), initiator)
		if small {
			e.listSmall = 1 // buckets of two records split by key tag
		}
		if initiator {
			if _, err := e.start(context.Background(), s); err != nil {
				t.Fatal(err)
			}
		}
		out, _, err := e.step(context.Background(), s, m.Recon)
		if err != nil {
			return
		}
		for _, o := range out {
			if err := o.validate(); err != nil {
				t.Fatalf("the engine made an invalid frame: %v", err)
			}
		}
	})
}
