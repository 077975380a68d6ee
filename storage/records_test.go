package storage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"sync"
	"testing"

	"github.com/automerge/automerge-go"
	"github.com/dgraph-io/badger/v4"
)

// internalMeta reads a record's decoded meta directly (tests only).
func internalMeta(t *testing.T, s *Store, coll, id string) *metaRec {
	t.Helper()
	var m *metaRec
	err := s.db.View(func(txn *badger.Txn) error {
		var err error
		_, _, m, err = s.findRecord(txn, s.st(), coll, id)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestWriteLoadAndCompaction(t *testing.T) {
	ctx := context.Background()
	for _, withSnap := range []bool{true, false} {
		t.Run(fmt.Sprintf("snapshot=%v", withSnap), func(t *testing.T) {
			s, dir := newDiskStore(t)
			td := newDoc("notes", "n1")
			snapCalls := 0
			for i := 0; i < 60; i++ {
				rw := td.set(t, "title", "v"+strconv.Itoa(i), "k"+strconv.Itoa(i%7), strconv.Itoa(i))
				if withSnap {
					inner := rw.Snapshot
					rw.Snapshot = func() ([]byte, error) { snapCalls++; return inner() }
				} else if i > 0 {
					rw.Snapshot = nil
				}
				m := mustWrite(t, s, rw)[0]
				if !reflect.DeepEqual(m.Heads, amHeads(td.d.Heads())) {
					t.Fatalf("heads not stored")
				}
				im := internalMeta(t, s, "notes", "n1")
				snap, inc := im.sizes()
				if withSnap && inc > snap {
					t.Fatalf("write %d: incrementals %d outweigh snapshot %d after write", i, inc, snap)
				}
				if m.Size != snap+inc {
					t.Fatalf("Size %d != %d", m.Size, snap+inc)
				}
				if got := field(t, s, "notes", "n1", "title"); got != "v"+strconv.Itoa(i) {
					t.Fatalf("write %d: title %q", i, got)
				}
			}
			im := internalMeta(t, s, "notes", "n1")
			// Storage cannot parse documents: only a caller's Snapshot
			// compacts, and without one every write stays a chunk.
			if withSnap && len(im.chunks) > 20 {
				t.Fatalf("%d chunks: no compaction", len(im.chunks))
			}
			if !withSnap && len(im.chunks)+min(len(im.inline), 1) != 60 {
				t.Fatalf("%d chunks without a Snapshot func, want 60 (no compaction)", len(im.chunks))
			}
			if withSnap && snapCalls == 0 {
				t.Fatal("Snapshot never called: no compaction")
			}
			s = reopen(t, s, dir)
			data, meta, err := s.Load(ctx, "notes", "n1")
			if err != nil {
				t.Fatal(err)
			}
			d, err := automerge.Load(data)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(amHeads(d.Heads()), meta.Heads) || !slices.Equal(d.Heads(), td.d.Heads()) {
				t.Fatal("loaded heads differ")
			}
		})
	}
}

func TestFirstWriteRules(t *testing.T) {
	ctx := context.Background()
	s := newMemStore(t)
	_, err := s.Write(ctx, Batch{Records: []RecordWrite{{Collection: "c", ID: "1"}}})
	wantErr(t, err, ErrInvalid, "empty first write")
	// Documents are opaque bytes: storage stores what it is given.
	if _, err = s.Write(ctx, Batch{Records: []RecordWrite{{Collection: "c", ID: "opaque", Changes: []byte("not automerge")}}}); err != nil {
		t.Fatalf("opaque first write: %v", err)
	}
	if got, _, err := s.Load(ctx, "c", "opaque"); err != nil || string(got) != "not automerge" {
		t.Fatalf("opaque first write loads %q %v", got, err)
	}
	_, err = s.Write(ctx, Batch{Records: []RecordWrite{{Collection: "c", ID: "1", Changes: []byte("x"), Heads: [][]byte{[]byte("short")}}}})
	wantErr(t, err, ErrInvalid, "head of the wrong length")
	boom := errors.New("boom")
	_, err = s.Write(ctx, Batch{Records: []RecordWrite{{Collection: "c", ID: "1", Snapshot: func() ([]byte, error) { return nil, boom }}}})
	wantErr(t, err, boom, "snapshot error")
	_, err = s.Write(ctx, Batch{Records: []RecordWrite{{Collection: "", ID: "1"}}})
	wantErr(t, err, ErrInvalid, "empty collection")
	_, err = s.Write(ctx, Batch{Records: []RecordWrite{{Collection: "c", ID: string(make([]byte, maxNameLen+1))}}})
	wantErr(t, err, ErrInvalid, "long id")
	// Changes alone that form a loadable document are accepted.
	td := newDoc("c", "1")
	rw := td.set(t, "a", "b")
	rw.Snapshot = nil
	mustWrite(t, s, rw)
	if field(t, s, "c", "1", "a") != "b" {
		t.Fatal("changes-only first write")
	}
	_, _, err = s.Load(ctx, "c", "nope")
	wantErr(t, err, ErrNotFound, "missing record")
	_, err = s.Meta(ctx, "nope", "1")
	wantErr(t, err, ErrNotFound, "missing collection")
}

func TestMetaOnlyWriteAndDelete(t *testing.T) {
	ctx := context.Background()
	s := newMemStore(t)
	td := newDoc("c", "1")
	m1 := mustWrite(t, s, td.set(t, "a", "b"))[0]
	m2 := mustWrite(t, s, RecordWrite{Collection: "c", ID: "1", Deleted: true, Attrs: []byte{1, 2, 3}})[0]
	if !m2.Deleted || string(m2.Attrs) != "\x01\x02\x03" || m2.Seq <= m1.Seq || !reflect.DeepEqual(m2.Heads, m1.Heads) || m2.Size != m1.Size {
		t.Fatalf("meta-only write: %+v", m2)
	}
	data, m3, err := s.Load(ctx, "c", "1")
	if err != nil || !m3.Deleted || docField(t, data, "a") != "b" {
		t.Fatalf("load deleted: %+v %v", m3, err)
	}
}

func TestBatchAtomic(t *testing.T) {
	ctx := context.Background()
	s := newMemStore(t)
	a, b := newDoc("c", "a"), newDoc("c", "b")
	boom := errors.New("boom")
	rb := b.set(t, "x", "1")
	rb.Snapshot = func() ([]byte, error) { return nil, boom }
	_, err := s.Write(ctx, Batch{Records: []RecordWrite{a.set(t, "x", "1"), rb},
		Slots: []SlotWrite{{Namespace: "sync", Key: "cursor", Value: []byte("9")}}})
	wantErr(t, err, boom, "failing batch")
	if _, err := s.Meta(ctx, "c", "a"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("record of failed batch visible: %v", err)
	}
	if _, ok, _ := s.Slots("sync").Get(ctx, "cursor"); ok {
		t.Fatal("slot of failed batch visible")
	}
	if s.LastSeq() != 0 {
		if f, _ := s.Feed(ctx, 0, 0); len(f) != 0 {
			t.Fatalf("feed of failed batch: %v", f)
		}
	}
	// The same record twice in one batch: both applied in order.
	r1 := a.set(t, "x", "2")
	r1.Snapshot = func() ([]byte, error) { return a.d.Save(), nil } // already includes r2's change: fine
	r2 := a.set(t, "x", "3")
	ms := mustWrite(t, s, r1, r2)
	if ms[1].Seq <= ms[0].Seq {
		t.Fatalf("seqs %d %d", ms[0].Seq, ms[1].Seq)
	}
	if field(t, s, "c", "a", "x") != "3" {
		t.Fatal("second write in batch lost")
	}
	f, _ := s.Feed(ctx, 0, 0)
	if len(f) != 1 || f[0].Seq != ms[1].Seq {
		t.Fatalf("feed %v", f)
	}
}

func TestFeed(t *testing.T) {
	ctx := context.Background()
	s, dir := newDiskStore(t)
	docs := map[string]*tdoc{}
	for i := 0; i < 10; i++ {
		id := "r" + strconv.Itoa(i)
		docs[id] = newDoc("c", id)
		mustWrite(t, s, docs[id].set(t, "v", "0"))
	}
	// Touch r3 and r7 again: they move to the end of the feed.
	m3 := mustWrite(t, s, docs["r3"].set(t, "v", "1"))[0]
	m7 := mustWrite(t, s, docs["r7"].set(t, "v", "1"))[0]
	feed, err := s.Feed(ctx, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(feed) != 10 {
		t.Fatalf("feed has %d entries", len(feed))
	}
	for i := 1; i < len(feed); i++ {
		if feed[i].Seq <= feed[i-1].Seq {
			t.Fatal("feed out of order")
		}
	}
	if feed[8].ID != "r3" || feed[9].ID != "r7" || feed[9].Seq != m7.Seq || feed[8].Seq != m3.Seq {
		t.Fatalf("feed tail %v", feed[8:])
	}
	if s.LastSeq() != m7.Seq {
		t.Fatalf("LastSeq %d want %d", s.LastSeq(), m7.Seq)
	}
	page, _ := s.Feed(ctx, feed[2].Seq, 3)
	if len(page) != 3 || page[0] != feed[3] || page[2] != feed[5] {
		t.Fatalf("page %v", page)
	}
	if tail, _ := s.Feed(ctx, m7.Seq, 10); len(tail) != 0 {
		t.Fatalf("after last: %v", tail)
	}
	s = reopen(t, s, dir)
	if s.LastSeq() != m7.Seq {
		t.Fatalf("LastSeq after reopen %d", s.LastSeq())
	}
	m := mustWrite(t, s, docs["r0"].set(t, "v", "2"))[0]
	if m.Seq <= m7.Seq {
		t.Fatalf("seq went backwards after reopen: %d", m.Seq)
	}
}

func TestListAndCollections(t *testing.T) {
	ctx := context.Background()
	s := newMemStore(t)
	want := map[string]map[string]bool{"a": {}, "b": {}, "zz": {}}
	var rws []RecordWrite
	for c := range want {
		for i := 0; i < 5+len(c); i++ {
			id := c + strconv.Itoa(i)
			want[c][id] = true
			rws = append(rws, newDoc(c, id).set(t, "f", id))
		}
	}
	mustWrite(t, s, rws...)
	for c, ids := range want {
		got := map[string]bool{}
		err := s.List(ctx, c, func(m RecordMeta) error {
			if m.Collection != c || got[m.ID] {
				t.Fatalf("List %s: bad meta %+v", c, m)
			}
			got[m.ID] = true
			return nil
		})
		if err != nil || len(got) != len(ids) {
			t.Fatalf("List %s: %d of %d, %v", c, len(got), len(ids), err)
		}
	}
	stop := errors.New("stop")
	n := 0
	err := s.List(ctx, "a", func(RecordMeta) error { n++; return stop })
	if !errors.Is(err, stop) || n != 1 {
		t.Fatalf("List stop: %v after %d", err, n)
	}
	if err := s.List(ctx, "none", func(RecordMeta) error { t.Fatal("called"); return nil }); err != nil {
		t.Fatal(err)
	}
	cols, err := s.Collections(ctx)
	if err != nil || !slices.Equal(cols, []string{"a", "b", "zz"}) {
		t.Fatalf("Collections %v %v", cols, err)
	}
	// Callbacks may call back into the store.
	err = s.List(ctx, "b", func(m RecordMeta) error {
		_, err := s.Write(ctx, Batch{Records: []RecordWrite{{Collection: "b", ID: m.ID, Attrs: []byte("seen")}}})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx2, cancel := context.WithCancel(ctx)
	cancel()
	wantErr(t, s.List(ctx2, "a", func(RecordMeta) error { return nil }), context.Canceled, "cancelled List")
}

// TestConcurrentWritersFeed runs writers against a feed consumer that only
// ever asks for entries after its cursor; when all is done the consumer must
// have seen every record's final change (no change became visible behind a
// cursor that had already passed it).
func TestConcurrentWritersFeed(t *testing.T) {
	ctx := context.Background()
	s := newMemStore(t)
	const writers, perWriter, records = 4, 40, 12
	var wg sync.WaitGroup
	done := make(chan struct{})
	seen := map[uint64]FeedEntry{}
	var cursor uint64
	consume := func() {
		f, err := s.Feed(ctx, cursor, 50)
		if err != nil {
			t.Error(err)
			return
		}
		for _, e := range f {
			seen[e.Seq] = e
			cursor = e.Seq
		}
	}
	var cwg sync.WaitGroup
	cwg.Add(1)
	go func() {
		defer cwg.Done()
		for {
			select {
			case <-done:
				return
			default:
				consume()
			}
		}
	}()
	for g := 0; g < writers; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < perWriter; i++ {
				id := "r" + strconv.Itoa((g*7+i)%records)
				rw := RecordWrite{Collection: "c", ID: id, Attrs: []byte(strconv.Itoa(i))}
				if _, err := s.Meta(ctx, "c", id); errors.Is(err, ErrNotFound) {
					rw = newDoc("c", id).set(t, "g", strconv.Itoa(g))
				}
				if _, err := s.Write(ctx, Batch{Records: []RecordWrite{rw}}); err != nil {
					// A concurrent first write of the same id: fine, retry as meta-only.
					if _, err := s.Write(ctx, Batch{Records: []RecordWrite{{Collection: "c", ID: id}}}); err != nil {
						t.Error(err)
						return
					}
				}
			}
		}(g)
	}
	wg.Wait()
	close(done)
	cwg.Wait()
	for {
		before := len(seen)
		consume()
		if len(seen) == before {
			break
		}
	}
	n := 0
	err := s.List(ctx, "c", func(m RecordMeta) error {
		n++
		e, ok := seen[m.Seq]
		if !ok || e.ID != m.ID {
			t.Errorf("record %s final seq %d never seen by the feed consumer", m.ID, m.Seq)
		}
		return nil
	})
	if err != nil || n != records {
		t.Fatalf("List: %d %v", n, err)
	}
	if s.LastSeq() != cursor {
		t.Fatalf("LastSeq %d, consumer cursor %d", s.LastSeq(), cursor)
	}
}

// TestBatchSameRecordDrafts: each write of a record in one batch returns
// the meta of that write, also when a later write in the batch compacts
// the record into a new chunk (each write's meta is sealed after the whole
// batch is built, from a copy that later writes must not change).
func TestBatchSameRecordDrafts(t *testing.T) {
	ctx := context.Background()
	s := newMemStore(t)
	snap0 := bytes.Repeat([]byte{'a'}, 100)
	if _, err := s.Write(ctx, Batch{Records: []RecordWrite{{Collection: "c", ID: "r",
		Snapshot: func() ([]byte, error) { return snap0, nil }}}}); err != nil {
		t.Fatal(err)
	}
	// Alternately a small change, and a large one that makes the
	// incrementals outweigh the snapshot: storage compacts into a new
	// snapshot chunk (too big to inline) in the chunk array that earlier
	// writes' metas were built from.
	var (
		writes []RecordWrite
		want   []int
		last   []byte
	)
	snap, inc := len(snap0), 0
	for i := range 8 {
		var rw RecordWrite
		if i%2 == 0 {
			ch := bytes.Repeat([]byte{byte('b' + i)}, 10+i)
			rw = RecordWrite{Collection: "c", ID: "r", Changes: ch}
			inc += len(ch)
			last = append(last, ch...)
		} else {
			ch := bytes.Repeat([]byte{byte('b' + i)}, snap+1)
			ns := bytes.Repeat([]byte{byte('B' + i)}, inlineMax+100*i)
			rw = RecordWrite{Collection: "c", ID: "r", Changes: ch, Snapshot: func() ([]byte, error) { return ns, nil }}
			snap, inc, last = len(ns), 0, slices.Clone(ns)
		}
		rw.Attrs = []byte(strconv.Itoa(i))
		writes = append(writes, rw)
		want = append(want, snap+inc)
	}
	ms, err := s.Write(ctx, Batch{Records: writes})
	if err != nil {
		t.Fatal(err)
	}
	for i, m := range ms {
		if m.Size != want[i] || string(m.Attrs) != strconv.Itoa(i) {
			t.Fatalf("write %d: size %d attrs %q, want %d %q", i, m.Size, m.Attrs, want[i], strconv.Itoa(i))
		}
	}
	data, m, err := s.Load(ctx, "c", "r")
	if err != nil || !bytes.Equal(data, last) || m.Seq != ms[len(ms)-1].Seq {
		t.Fatalf("load: %d bytes, seq %d, %v", len(data), m.Seq, err)
	}
}
