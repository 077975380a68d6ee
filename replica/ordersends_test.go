package replica

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"testing"
)

// TestOrderSendsReadsInStoreOrder: a reconciliation's sends (in name
// order, as the engine lists them) are put in the store's read order
// before they are read, every send kept with its since.
func TestOrderSendsReadsInStoreOrder(t *testing.T) {
	ctx := context.Background()
	r := diskReplica(t, newEnv(t), "a", t.TempDir())
	var sends []reconSend
	for i := range 200 {
		id := fmt.Sprintf("r%03d", i)
		if err := r.Put(ctx, "c", id, map[string]any{"n": int64(i)}); err != nil {
			t.Fatal(err)
		}
		sends = append(sends, reconSend{coll: "c", id: id, since: [][]byte{{byte(i)}}})
	}
	before := slices.Clone(sends)
	h := &host{r: r}
	if err := h.orderSends(ctx, sends); err != nil {
		t.Fatal(err)
	}
	place, err := r.store.ReadOrder(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i < len(sends); i++ {
		if bytes.Compare(place(sends[i-1].coll, sends[i-1].id), place(sends[i].coll, sends[i].id)) > 0 {
			t.Fatalf("sends %d and %d out of the store's order", i-1, i)
		}
	}
	key := func(s reconSend) string { return fmt.Sprint(s.coll, "/", s.id, s.since) }
	a, b := make([]string, len(sends)), make([]string, len(before))
	for i := range sends {
		a[i], b[i] = key(sends[i]), key(before[i])
	}
	slices.Sort(a)
	slices.Sort(b)
	if !slices.Equal(a, b) {
		t.Fatal("ordering changed the sends")
	}
	if slices.EqualFunc(sends, before, func(x, y reconSend) bool { return x.id == y.id }) {
		t.Fatal("the sends kept their name order")
	}
}
