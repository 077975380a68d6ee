package storage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// TestReadOrderIsTheWriteOrder: ReadOrder places records in the order of
// their last writes (the order of their documents in the value log), in
// batches and one by one, a record written again moves to the end, one
// written after the order was read comes after every other, and a closed
// store says ErrClosed.
func TestReadOrderIsTheWriteOrder(t *testing.T) {
	ctx := context.Background()
	s, _ := newDiskStore(t)
	rnd := rand.New(rand.NewPCG(7, 11))
	var order []string // names in the order of their last writes
	var batch []RecordWrite
	for _, i := range rnd.Perm(300) {
		id := fmt.Sprintf("r%04d", i)
		order = append(order, id)
		batch = append(batch, RecordWrite{Collection: "c", ID: id, Changes: bytes.Repeat([]byte(id), 300)})
		if len(batch) == 40 {
			if _, err := s.Write(ctx, Batch{Records: batch}); err != nil {
				t.Fatal(err)
			}
			batch = nil
		}
	}
	if _, err := s.Write(ctx, Batch{Records: batch}); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{order[5], order[200], order[0]} {
		if _, err := s.Write(ctx, Batch{Records: []RecordWrite{{Collection: "c", ID: id, Changes: []byte("again")}}}); err != nil {
			t.Fatal(err)
		}
		order = append(slices.DeleteFunc(order, func(x string) bool { return x == id }), id)
	}
	place, err := s.ReadOrder(ctx)
	if err != nil {
		t.Fatal(err)
	}
	byPlace := slices.Clone(order)
	slices.SortStableFunc(byPlace, func(a, b string) int { return bytes.Compare(place("c", a), place("c", b)) })
	if !slices.Equal(byPlace, order) {
		t.Fatalf("read order %v..., want the order of last writes %v...", byPlace[:8], order[:8])
	}
	if _, err := s.Write(ctx, Batch{Records: []RecordWrite{{Collection: "c", ID: "later", Changes: []byte("x")}}}); err != nil {
		t.Fatal(err)
	}
	if bytes.Compare(place("c", "later"), place("c", order[len(order)-1])) <= 0 {
		t.Fatal("a record written after ReadOrder is not placed after every other")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ReadOrder(ctx); !errors.Is(err, ErrClosed) {
		t.Fatalf("ReadOrder of a closed store: %v, want ErrClosed", err)
	}
}
