package storage

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"testing"
)

// TestReadOrderIsTheMetasOrder: ReadOrder's key for a record is where its
// meta is in Badger, so sorting by it reads the metas (and the small
// records' data inside them) in key order; a record's key does not change
// when it is written again.
func TestReadOrderIsTheMetasOrder(t *testing.T) {
	ctx := context.Background()
	s := newMemStore(t)
	var ids []string
	var writes []RecordWrite
	for i := range 300 {
		id := fmt.Sprintf("r%04d", i)
		ids = append(ids, id)
		writes = append(writes, RecordWrite{Collection: "c", ID: id, Changes: []byte(id)})
	}
	if _, err := s.Write(ctx, Batch{Records: writes}); err != nil {
		t.Fatal(err)
	}
	place, err := s.ReadOrder(ctx)
	if err != nil {
		t.Fatal(err)
	}
	raw := rawDump(t, s)
	var metas []string // the metas' keys in Badger's order
	for k := range raw {
		kb, _ := hex.DecodeString(k)
		if len(kb) > prefixLen && kb[0] == keyData && kb[prefixLen-1] == kindRec {
			metas = append(metas, k)
		}
	}
	slices.Sort(metas)
	byPlace := slices.Clone(ids)
	slices.SortFunc(byPlace, func(a, b string) int { return bytes.Compare(place("c", a), place("c", b)) })
	if len(metas) != len(ids) {
		t.Fatalf("%d metas for %d records", len(metas), len(ids))
	}
	for i, id := range byPlace {
		if got := hex.EncodeToString(place("c", id)); got != metas[i] {
			t.Fatalf("record %d in read order (%s): key %s, the %dth meta is %s", i, id, got, i, metas[i])
		}
	}
	if slices.Equal(byPlace, ids) {
		t.Fatal("read order is the names' order: the keys are not blinded")
	}
	if _, err := s.Write(ctx, Batch{Records: []RecordWrite{{Collection: "c", ID: "r0007", Changes: []byte("again")}}}); err != nil {
		t.Fatal(err)
	}
	if _, ok := rawDump(t, s)[hex.EncodeToString(place("c", "r0007"))]; !ok {
		t.Fatal("a record written again is no longer at its read-order key")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ReadOrder(ctx); !errors.Is(err, ErrClosed) {
		t.Fatalf("ReadOrder of a closed store: %v, want ErrClosed", err)
	}
}
