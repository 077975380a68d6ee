package storage

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"testing"

	"filippo.io/age"
	"pgregory.net/rapid"
)

// The layout-1 fixture (testdata/legacy-layout1, see its README): what it
// holds.
const layout1Fixture = "testdata/legacy-layout1/store"

var layout1Opts = Options{Passphrase: []byte("layout1")}

func l1Head(id string, n int) []byte {
	h := sha256.Sum256([]byte(fmt.Sprintf("%s/%d", id, n)))
	return h[:]
}

func l1Body(id string, n, size int) []byte {
	b := make([]byte, size)
	for i := range b {
		b[i] = byte(len(id) + n + i)
	}
	return b
}

type l1Rec struct {
	coll, id string
	data     []byte
	heads    [][]byte
	deleted  bool
}

func layout1Want() []l1Rec {
	var out []l1Rec
	for i := 0; i < 40; i++ {
		id := fmt.Sprintf("r%02d", i)
		size := 100
		if i%10 == 0 {
			size = 2000
		}
		r := l1Rec{coll: "todos", id: id, data: l1Body(id, 0, size), heads: [][]byte{l1Head(id, 0)}}
		switch id {
		case "r01":
			r.data = append(r.data, l1Body(id, 1, 30)...)
			r.heads = [][]byte{l1Head(id, 1)}
		case "r02":
			r.deleted, r.heads = true, [][]byte{l1Head(id, 1)}
		case "r10":
			r.data = append(r.data, l1Body(id, 1, 40)...)
			r.heads = [][]byte{l1Head(id, 1), l1Head(id, 2)}
		}
		out = append(out, r)
	}
	return append(out, l1Rec{coll: "notes", id: "n1", data: l1Body("n1", 0, 50), heads: [][]byte{l1Head("n1", 0), l1Head("n1", 1)}})
}

// checkLayout1Content checks every record of the fixture reads as written,
// by Load, List and Feed, and its slot.
func checkLayout1Content(t *testing.T, s *Store) {
	t.Helper()
	ctx := context.Background()
	want := layout1Want()
	for _, r := range want {
		data, m, err := s.Load(ctx, r.coll, r.id)
		if err != nil {
			t.Fatalf("Load %s/%s: %v", r.coll, r.id, err)
		}
		if !bytes.Equal(data, r.data) || !slices.EqualFunc(m.Heads, r.heads, bytes.Equal) || m.Deleted != r.deleted {
			t.Fatalf("%s/%s reads differently after the upgrade", r.coll, r.id)
		}
	}
	n := 0
	if err := s.List(ctx, "todos", func(RecordMeta) error { n++; return nil }); err != nil || n != 40 {
		t.Fatalf("List todos: %d records, %v", n, err)
	}
	feed, err := s.Feed(ctx, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(feed) != len(want) {
		t.Fatalf("feed: %d entries, want %d", len(feed), len(want))
	}
	// The three records updated last are last in the feed, in order.
	var tail []string
	for _, e := range feed[len(feed)-3:] {
		tail = append(tail, e.ID)
	}
	if !slices.Equal(tail, []string{"r01", "r02", "r10"}) {
		t.Fatalf("feed ends with %v", tail)
	}
	if v, ok, err := s.Slots("app").Get(ctx, "cursor"); err != nil || !ok || string(v) != "c1" {
		t.Fatalf("slot: %q %v %v", v, ok, err)
	}
}

// legacyKinds counts the entries of layout 1's kinds.
func legacyKinds(t *testing.T, s *Store) map[byte]int {
	t.Helper()
	out := map[byte]int{}
	for k := range rawDump(t, s) {
		if _, kind, ok := keyEpoch(mustHex(k)); ok {
			out[kind]++
		}
	}
	return out
}

func checkUpgraded(t *testing.T, s *Store) {
	t.Helper()
	kinds := legacyKinds(t, s)
	for _, k := range []byte{kindMeta, kindReconItem, kindReconSum} {
		if kinds[k] != 0 {
			t.Fatalf("%d entries of layout-1 kind %q left", kinds[k], k)
		}
	}
	if kinds[kindRec] != 41 || kinds[kindReconPage] == 0 {
		t.Fatalf("kinds after the upgrade: %v", kinds)
	}
	checkLayout1Content(t, s)
	checkRecon(t, s, "todos")
	checkRecon(t, s, "notes")
}

// TestUpgradeLayout1 opens a store written by the code before layout 2
// (testdata/legacy-layout1): Open upgrades it; every record, the feed and
// the slot read as written; the reconciliation sums equal the ones
// computed from the records; later writes and a reopen keep them exact.
func TestUpgradeLayout1(t *testing.T) {
	ctx := context.Background()
	dir := copyFixture(t, layout1Fixture)
	if v := headerVersionOnDisk(t, dir); v != headerLayout1 {
		t.Fatalf("fixture's format version %d, want %d", v, headerLayout1)
	}
	s, err := Open(ctx, dir, layout1Opts)
	if err != nil {
		t.Fatal(err)
	}
	checkUpgraded(t, s)
	// A build that knows only layout 1 refuses a version above 1.
	if v := headerVersionOnDisk(t, dir); v != headerVersion {
		t.Fatalf("upgraded store's format version %d, want %d", v, headerVersion)
	}
	if _, err := s.Write(ctx, Batch{Records: []RecordWrite{
		{Collection: "todos", ID: "r03", Changes: []byte("more"), Heads: [][]byte{l1Head("r03", 9)}},
		{Collection: "todos", ID: "new", Changes: []byte("new"), Heads: [][]byte{l1Head("new", 0)}},
	}}); err != nil {
		t.Fatal(err)
	}
	checkRecon(t, s, "todos")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(ctx, dir, layout1Opts)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	checkRecon(t, s, "todos")
	if _, m, err := s.Load(ctx, "todos", "r03"); err != nil || !bytes.Equal(m.Heads[0], l1Head("r03", 9)) {
		t.Fatalf("r03 after reopen: %v", err)
	}
	if err := s.RotateKey(ctx, nil); err != nil {
		t.Fatal(err)
	}
	checkRecon(t, s, "todos")
}

// TestLayout1ReadOnly: a layout-1 store opened read-only (too little free
// space for anything, its upgrade included) reads as before, refuses
// writes and reconciliation with ErrNoSpace, stays read-only when space
// comes back, and is upgraded by the next Open with space.
func TestLayout1ReadOnly(t *testing.T) {
	ctx := context.Background()
	dir := copyFixture(t, layout1Fixture)
	free := Reserve(layout1Opts) - 1
	withFree(t, &free)
	s, err := Open(ctx, dir, layout1Opts)
	if err != nil {
		t.Fatal(err)
	}
	if !s.readOnly.Load() || !s.legacy.Load() {
		t.Fatal("not opened read-only and legacy")
	}
	if v := headerVersionOnDisk(t, dir); v != headerLayout1 {
		t.Fatalf("read-only Open wrote format version %d", v)
	}
	checkLayout1Content(t, s)
	id, _ := age.GenerateX25519Identity()
	if st, err := s.Export(ctx, io.Discard, ExportOptions{Recipients: []age.Recipient{id.Recipient()}}); err != nil || st.Records != 41 {
		t.Fatalf("Export of a read-only layout-1 store: %+v, %v", st, err)
	}
	if _, err := s.ReconSums(ctx, "todos"); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("ReconSums: %v, want ErrNoSpace", err)
	}
	if _, err := s.ReconItems(ctx, "todos", 0); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("ReconItems: %v, want ErrNoSpace", err)
	}
	free = 1 << 40
	if _, err := s.Write(ctx, Batch{Records: []RecordWrite{{Collection: "todos", ID: "x", Changes: []byte("x")}}}); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("Write: %v, want ErrNoSpace", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(ctx, dir, layout1Opts)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	checkUpgraded(t, s)
	if v := headerVersionOnDisk(t, dir); v != headerVersion {
		t.Fatalf("upgraded store's format version %d, want %d", v, headerVersion)
	}
}

// TestUpgradeLayout1Crash kills (SIGKILL) a child upgrading the fixture
// after each step in turn (metas moved 8 at a time, pages written); the
// next Open finishes the upgrade and everything reads as written.
func TestUpgradeLayout1Crash(t *testing.T) {
	ctx := context.Background()
	// 41 metas in steps of 8: 6 meta steps, then the pages.
	for stop := 1; stop <= 7; stop++ {
		t.Run(strconv.Itoa(stop), func(t *testing.T) {
			dir := copyFixture(t, layout1Fixture)
			t.Setenv("FERRY_UPGRADE_STOP", strconv.Itoa(stop))
			lines := runUntil(t, "upgrade", dir, "step", stop)
			if last := lines[len(lines)-1]; last == "step done" {
				t.Fatalf("the upgrade ended before step %d", stop)
			}
			// Marked before the first step: an older build refuses a
			// half-upgraded store.
			if v := headerVersionOnDisk(t, dir); v != headerVersion {
				t.Fatalf("format version %d during the upgrade, want %d", v, headerVersion)
			}
			s, err := Open(ctx, dir, layout1Opts)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			checkUpgraded(t, s)
		})
	}
}

// TestReconPagesMatchRebuild is a property test: after any sequence of
// batches (new records, updates with new heads or none, deletions, the
// same record several times in one batch, records sharing a bucket and a
// page, two collections, now and then a key rotation), the stored sums
// equal the sums computed from the records, and each bucket's items add up
// to its sum.
func TestReconPagesMatchRebuild(t *testing.T) {
	// Ids that share buckets (and so pages) in collection "a".
	byBucket := map[uint16][]string{}
	var shared []string
	for i := 0; len(shared) < 6; i++ {
		id := "id" + strconv.Itoa(i)
		b := ReconBucket(ReconKey("a", id))
		byBucket[b] = append(byBucket[b], id)
		if len(byBucket[b]) == 2 {
			shared = append(shared, byBucket[b]...)
		}
	}
	ids := append(shared, "x", "y", "\x00", "a\x00b", "é")
	rapid.Check(t, func(rt *rapid.T) {
		ctx := context.Background()
		o := testOpts()
		o.InMemory = true
		s, err := Create(ctx, "", o)
		if err != nil {
			rt.Fatal(err)
		}
		defer s.Close()
		heads := rapid.SliceOfN(rapid.SliceOfN(rapid.Byte(), HeadSize, HeadSize), 0, 3)
		nBatches := rapid.IntRange(1, 8).Draw(rt, "batches")
		for b := 0; b < nBatches; b++ {
			if rapid.IntRange(0, 9).Draw(rt, "rotate") == 0 {
				if err := s.RotateKey(ctx, nil); err != nil {
					rt.Fatal(err)
				}
			}
			var recs []RecordWrite
			for j, n := 0, rapid.IntRange(1, 12).Draw(rt, "writes"); j < n; j++ {
				rw := RecordWrite{
					Collection: rapid.SampledFrom([]string{"a", "a", "b"}).Draw(rt, "coll"),
					ID:         rapid.SampledFrom(ids).Draw(rt, "id"),
					Changes:    []byte{byte(j)},
					Deleted:    rapid.Bool().Draw(rt, "deleted"),
				}
				if rapid.IntRange(0, 3).Draw(rt, "keepHeads") > 0 {
					rw.Heads = heads.Draw(rt, "heads")
					if rw.Heads == nil {
						rw.Heads = [][]byte{}
					}
				}
				recs = append(recs, rw)
			}
			if _, err := s.Write(ctx, Batch{Records: recs}); err != nil {
				rt.Fatal(err)
			}
			for _, c := range []string{"a", "b"} {
				if err := reconMatches(s, c); err != nil {
					rt.Fatalf("after batch %d, collection %s: %v", b, c, err)
				}
			}
		}
	})
}

// reconMatches compares the stored sums and items of coll with the sums
// computed from its records (List).
func reconMatches(s *Store, coll string) error {
	ctx := context.Background()
	want := map[uint16]ReconSum{}
	err := s.List(ctx, coll, func(m RecordMeta) error {
		k := ReconKey(coll, m.ID)
		cur := want[ReconBucket(k)]
		cur.Bucket = ReconBucket(k)
		cur.Count++
		AddSum(&cur.Sum, ReconHash(k, m.Heads))
		want[cur.Bucket] = cur
		return nil
	})
	if err != nil {
		return err
	}
	got, err := s.ReconSums(ctx, coll)
	if err != nil {
		return err
	}
	if len(got) != len(want) {
		return fmt.Errorf("%d buckets, want %d", len(got), len(want))
	}
	for _, g := range got {
		if want[g.Bucket] != g {
			return fmt.Errorf("bucket %d: %+v, want %+v", g.Bucket, g, want[g.Bucket])
		}
		items, err := s.ReconItems(ctx, coll, g.Bucket)
		if err != nil {
			return err
		}
		var sum [32]byte
		for _, it := range items {
			AddSum(&sum, it.Hash)
		}
		if uint64(len(items)) != g.Count || sum != g.Sum {
			return fmt.Errorf("bucket %d: items disagree with the sum", g.Bucket)
		}
	}
	return nil
}
