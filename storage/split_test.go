package storage

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"testing"
)

// smallMemtableStore creates a store in dir with 1 MiB memtables (the
// smallest Sizes allows), where Badger refuses a transaction over ~157 KB,
// and returns it with its options.
func smallMemtableStore(t *testing.T, dir string) (*Store, Options) {
	t.Helper()
	o := testOpts()
	// Values of up to 100 KiB stay in the LSM tree (the threshold 1 MiB
	// memtables had before the 1 KiB default), so transactions count the
	// documents' bytes, not their value pointers.
	o.Sizes = Sizes{MemTableSize: 1 << 20, ValueThreshold: (1 << 20) / 10}
	s, err := Create(context.Background(), dir, o)
	if err != nil {
		t.Fatal(err)
	}
	return s, o
}

// A sync batch bigger than one Badger transaction (ErrTxnTooBig: about 15%
// of a memtable) is written in parts, not refused: with 1 MiB memtables,
// 600 records of 1 KiB changes each is several transactions' worth. Every
// record is stored and the slot (a cursor) too.
func TestWriteSplitsBatchTooBigForOneTransaction(t *testing.T) {
	ctx := context.Background()
	s, _ := smallMemtableStore(t, t.TempDir())
	defer s.Close()
	const n = 600
	b := Batch{Slots: []SlotWrite{{Namespace: "peer", Key: "cursor", Value: []byte("600")}}}
	for i := range n {
		ch := make([]byte, 1024)
		_, _ = rand.Read(ch)
		h := make([]byte, HeadSize)
		_, _ = rand.Read(h)
		b.Records = append(b.Records, RecordWrite{Collection: "c", ID: fmt.Sprintf("r%04d", i), Changes: ch, Heads: [][]byte{h}})
	}
	// The same batch in one transaction is refused by Badger: the test
	// would prove nothing with sizes that fit.
	if err := s.update(ctx, "write", func(w *wtx) error {
		var out RecordMeta
		for i := range b.Records {
			if err := w.writeRecord(&b.Records[i], &out); err != nil {
				return err
			}
		}
		return nil
	}); !errors.Is(err, errTooBig) {
		t.Fatalf("one transaction: %v, want errTooBig", err)
	}
	before := s.LastSeq()
	metas, err := s.Write(ctx, b)
	if err != nil {
		t.Fatalf("Write: %v", err)
	}
	if len(metas) != n || metas[n-1].ID != "r0599" {
		t.Fatalf("metas: %d, last %+v", len(metas), metas[len(metas)-1])
	}
	for i := range n {
		got, _, err := s.Load(ctx, "c", fmt.Sprintf("r%04d", i))
		if err != nil || string(got) != string(b.Records[i].Changes) {
			t.Fatalf("record %d: %v", i, err)
		}
	}
	if v, ok, err := s.Slots("peer").Get(ctx, "cursor"); err != nil || !ok || string(v) != "600" {
		t.Fatalf("slot: %q %v %v", v, ok, err)
	}
	if got := s.LastSeq() - before; got < n {
		t.Fatalf("feed advanced by %d, want at least %d", got, n)
	}
}

// A batch of slots alone (forgetting a space's learned heads deletes one
// slot per record) is split the same way, in order: the last slot lands
// with or after every other one.
func TestWriteSplitsSlotsTooBigForOneTransaction(t *testing.T) {
	ctx := context.Background()
	s, _ := smallMemtableStore(t, t.TempDir())
	defer s.Close()
	const n = 3000
	var b Batch
	for i := range n {
		v := make([]byte, 64)
		_, _ = rand.Read(v)
		b.Slots = append(b.Slots, SlotWrite{Namespace: "shared", Key: fmt.Sprintf("k%05d", i), Value: v})
	}
	b.Slots = append(b.Slots, SlotWrite{Namespace: "peer", Key: "done", Value: []byte{1}})
	if err := s.update(ctx, "write", func(w *wtx) error {
		for i := range b.Slots {
			if err := w.writeSlot(&b.Slots[i]); err != nil {
				return err
			}
		}
		return nil
	}); !errors.Is(err, errTooBig) {
		t.Fatalf("one transaction: %v, want errTooBig", err)
	}
	if _, err := s.Write(ctx, b); err != nil {
		t.Fatalf("Write: %v", err)
	}
	got := 0
	if err := s.Slots("shared").Range(ctx, func(string, []byte) error { got++; return nil }); err != nil || got != n {
		t.Fatalf("slots stored: %d, %v; want %d", got, err, n)
	}
	if v, ok, err := s.Slots("peer").Get(ctx, "done"); err != nil || !ok || len(v) != 1 {
		t.Fatalf("last slot: %v %v %v", v, ok, err)
	}
}
