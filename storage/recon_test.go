package storage

import (
	"context"
	"fmt"
	"testing"
)

// reconExpect computes, from the records' metas, what the reconciliation
// index must say: per bucket the count and sum of item hashes.
func reconExpect(t *testing.T, s *Store, coll string) map[uint16]ReconSum {
	t.Helper()
	want := map[uint16]ReconSum{}
	err := s.List(context.Background(), coll, func(m RecordMeta) error {
		k := ReconKey(coll, m.ID)
		b := ReconBucket(k)
		cur := want[b]
		cur.Bucket = b
		cur.Count++
		AddSum(&cur.Sum, ReconHash(k, m.Heads))
		want[b] = cur
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return want
}

func checkRecon(t *testing.T, s *Store, coll string) {
	t.Helper()
	ctx := context.Background()
	want := reconExpect(t, s, coll)
	got, err := s.ReconSums(ctx, coll)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("%d buckets, want %d", len(got), len(want))
	}
	for _, g := range got {
		if want[g.Bucket] != g {
			t.Fatalf("bucket %d: %+v, want %+v", g.Bucket, g, want[g.Bucket])
		}
		items, err := s.ReconItems(ctx, coll, g.Bucket)
		if err != nil {
			t.Fatal(err)
		}
		var sum [32]byte
		for _, it := range items {
			if ReconBucket(it.Key) != g.Bucket || it.Key != ReconKey(coll, it.ID) || it.Hash != ReconHash(it.Key, it.Heads) {
				t.Fatalf("item %s out of place", it.ID)
			}
			AddSum(&sum, it.Hash)
		}
		if uint64(len(items)) != g.Count || sum != g.Sum {
			t.Fatalf("bucket %d: items disagree with the sum", g.Bucket)
		}
	}
}

// TestReconIndexFollowsWrites: the bucket sums and items match the records
// after creates, updates (several in one batch), a key rotation, and a
// rebuild of an index that was lost (a store written before it existed).
func TestReconIndexFollowsWrites(t *testing.T) {
	ctx := context.Background()
	s, dir := newDiskStore(t)
	docs := map[string]*tdoc{}
	for i := 0; i < 300; i++ {
		id := fmt.Sprintf("r%03d", i)
		docs[id] = newDoc("c", id)
		mustWrite(t, s, docs[id].set(t, "v", id))
	}
	checkRecon(t, s, "c")
	// Two updates of one record in one batch, and one of another.
	mustWrite(t, s, docs["r001"].set(t, "v", "x"), docs["r001"].set(t, "v", "y"), docs["r002"].set(t, "v", "z"))
	checkRecon(t, s, "c")
	if err := s.RotateKey(ctx, nil); err != nil {
		t.Fatal(err)
	}
	checkRecon(t, s, "c")
	mustWrite(t, s, docs["r003"].set(t, "v", "after rotation"))
	checkRecon(t, s, "c")
	s = reopen(t, s, dir)
	checkRecon(t, s, "c")

}

func TestReconSumArithmetic(t *testing.T) {
	var a [32]byte
	x := ReconHash(ReconKey("c", "a"), nil)
	y := ReconHash(ReconKey("c", "b"), nil)
	AddSum(&a, x)
	AddSum(&a, y)
	subSum(&a, x)
	if a != y {
		t.Fatal("add then subtract does not give back")
	}
	var ff [32]byte
	for i := range ff {
		ff[i] = 0xff
	}
	AddSum(&ff, [32]byte{31: 1})
	if ff != ([32]byte{}) {
		t.Fatal("no wrap-around")
	}
}

// TestFeedNotify: the channel is closed by the next write that adds a
// feed entry, and not by a slot write.
func TestFeedNotify(t *testing.T) {
	ctx := context.Background()
	s := newMemStore(t)
	ch := s.FeedNotify()
	if err := s.Slots("ns").Put(ctx, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ch:
		t.Fatal("closed by a slot write")
	default:
	}
	mustWrite(t, s, newDoc("c", "a").set(t, "v", "1"))
	select {
	case <-ch:
	default:
		t.Fatal("not closed by a record write")
	}
	if s.FeedNotify() == ch {
		t.Fatal("same channel after the write")
	}
}
