package replica

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// TestOrderSendsReadsInStoreOrder: a reconciliation's sends (in name
// order, as the engine lists them) are put in the store's read order
// before they are read, every send kept with its since; fewer than
// orderSendsMin keep their order.
func TestOrderSendsReadsInStoreOrder(t *testing.T) {
	ctx := context.Background()
	r := diskReplica(t, newEnv(t), "a", t.TempDir())
	var sends []reconSend
	n := orderSendsMin + 44
	for _, i := range rand.New(rand.NewPCG(3, 5)).Perm(n) { // written out of name order
		if err := r.Put(ctx, "c", fmt.Sprintf("r%03d", i), map[string]any{"n": int64(i)}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range n {
		sends = append(sends, reconSend{coll: "c", id: fmt.Sprintf("r%03d", i), since: [][]byte{{byte(i)}}})
	}
	h := &host{r: r}
	few := slices.Clone(sends[:orderSendsMin-1])
	if err := h.orderSends(ctx, few); err != nil {
		t.Fatal(err)
	}
	if !slices.EqualFunc(few, sends[:orderSendsMin-1], func(x, y reconSend) bool { return x.id == y.id }) {
		t.Fatal("fewer than orderSendsMin sends were reordered")
	}
	before := slices.Clone(sends)
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
