package replica

import (
	"context"
	"errors"
	"fmt"

	"github.com/ferrysync/ferry/policy"
	"github.com/ferrysync/ferry/storage"
)

// ErrNoConflict: no open conflict has that id.
var ErrNoConflict = errors.New("replica: no such open conflict")

// Conflicts lists the conflicts waiting for the user, with every candidate
// and its origin. Replicas that have exchanged everything list the same.
func (r *Replica) Conflicts(ctx context.Context) ([]policy.Entry, error) {
	if r.isClosed() {
		return nil, ErrClosed
	}
	list, err := r.queue.List(ctx)
	if err != nil {
		return nil, fmt.Errorf("replica: conflicts: %w", err)
	}
	return list, nil
}

// ResolvePick decides an open conflict for candidate n (0-based, in the
// order Conflicts lists them). The decision is written as a change that
// supersedes every candidate and syncs like any other. ErrNoConflict when
// no such conflict is open; ErrInvalid when n names no candidate.
func (r *Replica) ResolvePick(ctx context.Context, id string, n int) error {
	p, err := r.queue.ResolvePick(ctx, id, n)
	if err != nil {
		return r.noConflict(id, err)
	}
	return r.commit(ctx, p)
}

// ResolveValue decides an open conflict with a value the user supplies.
func (r *Replica) ResolveValue(ctx context.Context, id string, v any) error {
	p, err := r.queue.ResolveValue(ctx, id, v, false)
	if err != nil {
		return r.noConflict(id, err)
	}
	return r.commit(ctx, p)
}

// Audit returns the trail of resolved conflicts that match f.
func (r *Replica) Audit(ctx context.Context, f policy.Filter) ([]policy.Record, error) {
	return r.audit.Query(ctx, f)
}

// SweepConflicts lets the fallback policy decide every open conflict whose
// deadline has passed (by the replica's clock), and returns how many it
// decided. The background loop calls it; applications may too.
func (r *Replica) SweepConflicts(ctx context.Context) (int, error) {
	due, err := r.queue.Sweep(ctx, r.opts.Now())
	if err != nil {
		return 0, fmt.Errorf("replica: sweep: %w", err)
	}
	for _, p := range due {
		if err := r.commit(ctx, p); err != nil {
			return 0, err
		}
	}
	return len(due), nil
}

func (r *Replica) noConflict(id string, err error) error {
	if errors.Is(err, policy.ErrNoEntry) {
		return fmt.Errorf("%w: %s", ErrNoConflict, id)
	}
	if errors.Is(err, policy.ErrNoCandidate) {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return fmt.Errorf("replica: conflict %s: %w", id, err)
}

// commit writes a user or fallback decision into its record.
func (r *Replica) commit(ctx context.Context, p policy.Pending) error {
	coll, id := p.Entry.Collection, p.Entry.RecordID
	key := recordKey(coll, id)
	unlock := r.lockRecords(key)
	defer unlock()
	d, _, err := r.loadDoc(ctx, coll, id)
	if err != nil {
		return err
	}
	if err := r.res.Commit(ctx, d, p); err != nil {
		r.cache.drop(key)
		return fmt.Errorf("replica: resolve %s: %w", p.Entry.ID(), err)
	}
	metas, err := r.store.Write(ctx, storage.Batch{Records: []storage.RecordWrite{r.recordWrite(coll, id, d)}})
	if err != nil {
		r.cache.drop(key)
		return fmt.Errorf("replica: resolve %s: %w", p.Entry.ID(), err)
	}
	r.events.publish(Event{Kind: EventRecord, Collection: coll, ID: id, Seq: metas[0].Seq, Local: true})
	r.events.publish(Event{Kind: EventConflict, Collection: coll, ID: p.Entry.ID()})
	return nil
}
