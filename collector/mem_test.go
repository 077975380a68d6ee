package collector

import (
	"context"
	"errors"
	"testing"
)

// TestMemDestination: a good batch is kept as a copy the caller cannot
// change afterwards; a malformed batch and an injected failure keep
// nothing.
func TestMemDestination(t *testing.T) {
	ctx := context.Background()
	d := &MemDestination{}
	rec := map[string]any{"n": int64(1), "tags": []any{"a"}}
	if err := d.Send(ctx, Batch{Purpose: "improve", Collection: "usage", Records: []map[string]any{rec}}); err != nil {
		t.Fatal(err)
	}
	rec["n"] = int64(2)
	rec["tags"].([]any)[0] = "changed"
	if err := d.Send(ctx, Batch{Purpose: "", Collection: "usage"}); !errors.Is(err, ErrBadBatch) {
		t.Fatalf("empty purpose: %v, want ErrBadBatch", err)
	}
	if err := d.Send(ctx, Batch{Purpose: "p", Collection: "c", Records: []map[string]any{{"f": func() {}}}}); !errors.Is(err, ErrBadBatch) {
		t.Fatalf("a func value: %v, want ErrBadBatch", err)
	}
	d.Fail = func(Batch) error { return ErrRejected }
	if err := d.Send(ctx, Batch{Purpose: "p", Collection: "c"}); !errors.Is(err, ErrRejected) {
		t.Fatalf("injected failure: %v", err)
	}
	got := d.Batches()
	if len(got) != 1 || got[0].Records[0]["n"] != int64(1) || got[0].Records[0]["tags"].([]any)[0] != "a" {
		t.Fatalf("batches %+v", got)
	}
	got[0].Records[0]["n"] = int64(3)
	if d.Batches()[0].Records[0]["n"] != int64(1) {
		t.Fatal("Batches returned the stored batch itself")
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := (&MemDestination{}).Send(cctx, Batch{Purpose: "p", Collection: "c"}); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled ctx: %v", err)
	}
}
