package collector

import (
	"context"
	"sync"
)

// MemDestination is an in-memory Destination for tests: Send checks the
// batch as an encoder would (ErrBadBatch) and keeps a deep copy. Safe for
// concurrent use.
type MemDestination struct {
	// Fail, if set, is called for every Send; a non-nil error is
	// returned and nothing is kept (fault injection: ErrRejected,
	// ErrGaveUp...).
	Fail func(Batch) error

	mu      sync.Mutex
	batches []Batch
}

var _ Destination = (*MemDestination)(nil)

// Send implements Destination.
func (d *MemDestination) Send(ctx context.Context, batch Batch) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := checkBatch(batch); err != nil {
		return err // wraps ErrBadBatch
	}
	if d.Fail != nil {
		if err := d.Fail(batch); err != nil {
			return err
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.batches = append(d.batches, cloneBatch(batch))
	return nil
}

// Batches returns copies of the batches received, in order.
func (d *MemDestination) Batches() []Batch {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]Batch, len(d.batches))
	for i, b := range d.batches {
		out[i] = cloneBatch(b)
	}
	return out
}
