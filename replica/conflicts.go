package replica

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/ferrysync/ferry/crdt"
	"github.com/ferrysync/ferry/errkind"
	"github.com/ferrysync/ferry/policy"
	"github.com/ferrysync/ferry/storage"
)

// ErrNoConflict: no open conflict has that id (none ever did, or it was
// decided already).
var ErrNoConflict = errkind.New("replica: no such open conflict", errkind.NotFound)

// ErrConflictStale: the conflict was closed because a newer write changed
// its field after it arose; deciding it would overwrite that write, so the
// decision is refused. The record shows the newer write (Get).
var ErrConflictStale = errkind.New("replica: conflict superseded by a newer write", errkind.Forbidden)

// Conflicts lists the conflicts waiting for the user, with every candidate
// and its origin, ordered by deadline. Only what stands now is listed: a
// conflict whose field a newer write changed is closed (Watch reports it)
// instead of listed. In each entry Provisional is the index of the
// candidate the record shows now, or -1 when it shows none of them, and
// Deadline is when the fallback decides (bounded for candidates stamped by
// a clock running ahead: see Options.MaxClockDrift). Replicas that have
// exchanged everything list the same conflicts.
func (r *Replica) Conflicts(ctx context.Context) ([]policy.Entry, error) {
	if r.isClosed() {
		return nil, ErrClosed
	}
	list, err := r.queue.List(ctx)
	if err != nil {
		return nil, fmt.Errorf("replica: conflicts: %w", err)
	}
	out := list[:0]
	for _, e := range list {
		// A record that cannot be read now (an error) is listed as queued:
		// the listing never hides a conflict it could not check.
		if live, err := r.currentEntry(ctx, &e); live || err != nil {
			out = append(out, e)
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		if !out[i].Deadline.Equal(out[j].Deadline) {
			return out[i].Deadline.Before(out[j].Deadline)
		}
		return out[i].ID() < out[j].ID()
	})
	return out, nil
}

// currentEntry brings a queued entry up to date with its record: it closes
// it when a newer write superseded it (reporting false), and otherwise
// sets Provisional to the candidate the record shows and Deadline to the
// clamped deadline.
func (r *Replica) currentEntry(ctx context.Context, e *policy.Entry) (bool, error) {
	orig := *e
	live, err := r.refreshEntry(ctx, e)
	if err != nil {
		*e = orig
	}
	return live, err
}

func (r *Replica) refreshEntry(ctx context.Context, e *policy.Entry) (bool, error) {
	coll, id := e.Collection, e.RecordID
	unlock := r.lockRecords(recordKey(coll, id))
	defer unlock()
	d, ok, err := r.loadDoc(ctx, coll, id)
	if err != nil {
		return false, err
	}
	if !ok {
		return true, nil
	}
	closed, err := r.res.Supersede(ctx, coll, id, d)
	if err != nil {
		return false, err
	}
	r.publishClosed(coll, "", closed, policy.ByNewerWrite)
	for _, c := range closed {
		if c == e.ID() {
			return false, nil
		}
	}
	cl, err := d.ClockClamps()
	if err != nil {
		return false, err
	}
	e.Deadline = policy.EffectiveDeadline(*e, cl)
	e.Provisional = -1
	path, err := crdt.PointerToPath(e.Conflict.Path)
	if err != nil {
		return true, nil // a path this version cannot read: shows no candidate
	}
	cur, err := d.Get(path)
	deleted := errors.Is(err, crdt.ErrNotFound) || d.Deleted()
	if err != nil && !deleted {
		return true, nil // unreadable path: shows no candidate
	}
	for i, cd := range e.Conflict.Candidates {
		if cd.Deleted && deleted || !cd.Deleted && !deleted && crdt.EqualValues(cd.Value, cur) {
			e.Provisional = i
			break
		}
	}
	return true, nil
}

// publishClosed tells watchers that conflicts were closed, and why.
func (r *Replica) publishClosed(coll, peer string, ids []string, by policy.Decider) {
	for _, id := range ids {
		r.events.publish(Event{Kind: EventConflict, Collection: coll, ID: id, Peer: peer, Reason: string(by)})
	}
}

// supersede closes the open conflicts of a record that a write just
// superseded. It is best effort: the write is stored already, and a
// conflict it misses is closed when listed or resolved.
func (r *Replica) supersede(ctx context.Context, coll, id string, d *crdt.Doc, before crdt.Heads) {
	closed, _ := r.res.SupersedeLocal(ctx, coll, id, d, before)
	r.publishClosed(coll, "", closed, policy.ByNewerWrite)
}

// ResolvePick decides an open conflict for candidate n (0-based, in the
// order Conflicts lists them). id is the entry id Conflicts lists
// (policy.Entry.ID: one record's, 32 hex digits), not the conflict id
// written into documents (Entry.Conflict.ID), which records holding the
// same history share. The decision is written as a change that
// supersedes every candidate and syncs like any other.
//
// Errors: ErrNoConflict when no open conflict has that id (or it was
// decided already); ErrConflictStale when a newer write to the field
// superseded it (the conflict is closed and nothing is written);
// ErrInvalid when n names no candidate.
func (r *Replica) ResolvePick(ctx context.Context, id string, n int) error {
	if r.isClosed() {
		return ErrClosed
	}
	p, err := r.queue.ResolvePick(ctx, id, n)
	if err != nil {
		return r.noConflict(ctx, id, err)
	}
	return r.commit(ctx, p)
}

// ResolveValue decides an open conflict with a value the user supplies.
// Errors as ResolvePick.
func (r *Replica) ResolveValue(ctx context.Context, id string, v any) error {
	if r.isClosed() {
		return ErrClosed
	}
	p, err := r.queue.ResolveValue(ctx, id, v, false)
	if err != nil {
		return r.noConflict(ctx, id, err)
	}
	return r.commit(ctx, p)
}

// Audit returns the trail of resolved conflicts that match f.
func (r *Replica) Audit(ctx context.Context, f policy.Filter) ([]policy.Record, error) {
	return r.audit.Query(ctx, f)
}

// SweepConflicts lets the fallback policy decide every open conflict whose
// deadline has passed (by the replica's clock, Options.Now), and returns
// how many it decided; conflicts found superseded by a newer write are
// closed without a decision and not counted. The replica sweeps by itself
// when it opens and in the background sync loop (StartSync), so no
// application has to call it; it stays public for applications that want
// the fallback to run at a moment of their choosing.
func (r *Replica) SweepConflicts(ctx context.Context) (int, error) {
	if r.isClosed() {
		return 0, ErrClosed
	}
	now := r.opts.Now()
	// Every open entry is looked at, not only those whose recorded deadline
	// passed: a candidate stamped by a clock running ahead pushes the
	// recorded deadline out, and its clock note pulls it back in
	// (policy.EffectiveDeadline). Open conflicts are few.
	list, err := r.queue.List(ctx)
	if err != nil {
		return 0, fmt.Errorf("replica: sweep: %w", err)
	}
	n := 0
	var errs []error
	for _, e := range list {
		if ctx.Err() != nil {
			return n, ctx.Err()
		}
		err := r.commitDue(ctx, policy.FallbackFor(e), now)
		switch {
		case errors.Is(err, errNotDue), errors.Is(err, ErrConflictStale), errors.Is(err, ErrNoConflict):
		case err != nil:
			// One record that cannot be read does not stop the others.
			errs = append(errs, err)
		default:
			n++
		}
	}
	return n, errors.Join(errs...)
}

var errNotDue = errors.New("replica: conflict not due")

func (r *Replica) noConflict(ctx context.Context, id string, err error) error {
	if errors.Is(err, policy.ErrNoEntry) {
		by, closed, cerr := r.queue.ClosedBy(ctx, id)
		switch {
		case cerr != nil:
			return fmt.Errorf("replica: conflict %s: %w", id, cerr)
		case closed && by == policy.ByNewerWrite:
			return fmt.Errorf("%w: %s was closed: a newer write changed its field after it arose; the record shows that write", ErrConflictStale, id)
		case closed && by != "":
			return fmt.Errorf("%w: %s was decided already (%s)", ErrNoConflict, id, by)
		}
		return fmt.Errorf("%w: %s", ErrNoConflict, id)
	}
	if errors.Is(err, policy.ErrNoCandidate) {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return fmt.Errorf("replica: conflict %s: %w", id, err)
}

// commit writes a user or fallback decision into its record.
func (r *Replica) commit(ctx context.Context, p policy.Pending) error {
	return r.commitDue(ctx, p, time.Time{})
}

// commitDue is commit; with a non-zero now it first checks that the
// entry's clamped deadline has passed (errNotDue otherwise).
func (r *Replica) commitDue(ctx context.Context, p policy.Pending, now time.Time) error {
	coll, id := p.Entry.Collection, p.Entry.RecordID
	key := recordKey(coll, id)
	unlock := r.lockRecords(key)
	defer unlock()
	if _, err := r.queue.Get(ctx, p.Entry.ID()); err != nil {
		return r.noConflict(ctx, p.Entry.ID(), err) // closed meanwhile
	}
	d, _, err := r.loadDoc(ctx, coll, id)
	if err != nil {
		return err
	}
	if !now.IsZero() {
		cl, err := d.ClockClamps()
		if err != nil {
			return fmt.Errorf("replica: sweep %s: %w", p.Entry.ID(), err)
		}
		if policy.EffectiveDeadline(p.Entry, cl).After(now) {
			return errNotDue
		}
	}
	before := d.Heads()
	if err := r.res.Commit(ctx, d, p); err != nil {
		if errors.Is(err, policy.ErrStale) {
			r.publishClosed(coll, "", []string{p.Entry.ID()}, policy.ByNewerWrite)
			return fmt.Errorf("%w: %s: a newer write changed %s after the conflict arose; the record shows that write", ErrConflictStale, p.Entry.ID(), p.Entry.Conflict.Path)
		}
		r.cache.drop(key)
		return fmt.Errorf("replica: resolve %s: %w", p.Entry.ID(), err)
	}
	by := policy.ByUser
	if p.Policy != policy.User {
		by = policy.ByFallback
	}
	if before.Equal(d.Heads()) {
		r.publishClosed(coll, "", []string{p.Entry.ID()}, by)
		return nil
	}
	metas, err := r.store.Write(ctx, storage.Batch{Records: []storage.RecordWrite{r.recordWrite(coll, id, d)}})
	if err != nil {
		r.cache.drop(key)
		return fmt.Errorf("replica: resolve %s: %w", p.Entry.ID(), err)
	}
	r.events.publish(Event{Kind: EventRecord, Collection: coll, ID: id, Seq: metas[0].Seq, Local: true})
	r.publishClosed(coll, "", []string{p.Entry.ID()}, by)
	return nil
}
