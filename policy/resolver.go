package policy

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/automerge/automerge-go"
	"github.com/ferrysync/ferry/crdt"
)

// Resolver applies a policy Set to merge results, keeps the user queue and
// the audit trail. Queue and Audit may be nil (then User conflicts are still
// written provisionally but not queued, and nothing is audited).
type Resolver struct {
	Policies *Set
	Queue    *Queue
	Audit    *Audit
	// Now stamps audit records (time.Now when nil).
	Now func() time.Time
	// ReplicaID is recorded in audit records.
	ReplicaID string
}

// Outcome is what Resolve did.
type Outcome struct {
	Decisions []Decision
	// Queued are the entries added to the user queue (local detections and
	// provisional resolutions received from other replicas).
	Queued []Entry
	// Closed are the entry ids (Entry.ID) whose queued entry was closed, by a
	// remote resolution, because a newer conflict superseded them, or
	// because a newer write to the field did (ClosedBy says which).
	Closed   []string
	ClosedBy map[string]Decider
}

func (r *Resolver) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

// Resolve decides every conflict of mr, writes the resolutions into d in
// one change, and updates the queue and the audit trail. Call it right after
// MergeRemote and before the merged document is saved or sent, so that the
// replica that detects a conflict is the one that resolves it.
func (r *Resolver) Resolve(ctx context.Context, collection, recordID string, d *crdt.Doc, mr *crdt.MergeResult) (*Outcome, error) {
	out := &Outcome{ClosedBy: map[string]Decider{}}
	var cl Clamps
	if len(mr.Conflicts) > 0 {
		m, err := d.ClockClamps()
		if err != nil {
			return out, fmt.Errorf("policy: clock notes: %w", err)
		}
		cl = m
	}
	var rs []crdt.Resolution
	for _, c := range mr.Conflicts {
		if r.Policies.RuleFor(collection, c.Path).Policy == Merge {
			if err := d.FillCRDTWinner(&c); err != nil {
				return out, fmt.Errorf("policy: crdt winner: %w", err)
			}
		}
		dec := r.Policies.DecideClamped(collection, c, cl)
		dec.RecordID = recordID
		out.Decisions = append(out.Decisions, dec)
		rs = append(rs, crdt.Resolution{Conflict: c, Winner: dec.Winner, Provisional: dec.Provisional, By: dec.By})
	}
	if len(rs) > 0 {
		if err := d.Resolve(rs...); err != nil {
			return out, fmt.Errorf("policy: resolve: %w", err)
		}
	}
	if r.Queue != nil {
		// Closes first, so a final resolution in the same batch as a
		// provisional one wins.
		closing := map[string]Decider{}
		isUser := func(path string) bool { return r.Policies.RuleFor(collection, path).Policy == User }
		for _, rr := range mr.Resolutions {
			if !isUser(rr.Path) {
				continue
			}
			if !rr.Provisional {
				closing[EntryID(collection, recordID, rr.ConflictID)] = ByRemote
			}
			for _, id := range rr.Supersedes {
				closing[EntryID(collection, recordID, id)] = BySuperseded
			}
		}
		for _, c := range mr.Conflicts {
			for _, cd := range c.Candidates {
				if cd.Resolves != "" && isUser(c.Path) {
					closing[EntryID(collection, recordID, cd.Resolves)] = BySuperseded
				}
			}
		}
		for _, id := range sortedIDs(closing) {
			e, err := r.Queue.CloseAs(ctx, id, closing[id])
			if err != nil {
				return out, err
			}
			if e != nil {
				out.Closed = append(out.Closed, id)
				out.ClosedBy[id] = closing[id]
				if err := r.audit(ctx, Record{Collection: e.Collection, RecordID: e.RecordID, Conflict: e.Conflict,
					Winner: -1, Policy: User, By: closing[id]}); err != nil {
					return out, err
				}
			}
		}
		var adds []Entry
		detected := r.now().UTC()
		for _, dec := range out.Decisions {
			if dec.Provisional {
				adds = append(adds, r.entry(collection, recordID, dec.Conflict, detected))
			}
		}
		for _, rr := range mr.Resolutions {
			if rr.Provisional && rr.Conflict != nil && r.Policies.RuleFor(collection, rr.Conflict.Path).Policy == User {
				adds = append(adds, r.entry(collection, recordID, *rr.Conflict, detected))
			}
		}
		for _, e := range adds {
			// A conflict that reaches this replica already superseded by a
			// newer write (both arrived in one batch) is closed, not shown.
			if _, stale, err := d.Superseded(e.Conflict.Path, e.Conflict.ID, candidateChanges(e.Conflict)); err != nil {
				return out, fmt.Errorf("policy: superseded: %w", err)
			} else if stale {
				if _, err := r.Queue.CloseAs(ctx, e.ID(), ByNewerWrite); err != nil {
					return out, err
				}
				continue
			}
			added, err := r.Queue.Add(ctx, e)
			if err != nil {
				return out, err
			}
			if added {
				out.Queued = append(out.Queued, e)
			}
		}
		closed, err := r.Supersede(ctx, collection, recordID, d)
		for _, id := range closed {
			out.Closed = append(out.Closed, id)
			out.ClosedBy[id] = ByNewerWrite
		}
		if err != nil {
			return out, err
		}
	}
	for _, dec := range out.Decisions {
		if dec.Provisional {
			continue
		}
		if err := r.audit(ctx, Record{Collection: collection, RecordID: recordID, Conflict: dec.Conflict,
			Winner: dec.Winner, Policy: dec.Policy, By: ByPolicy}); err != nil {
			return out, err
		}
	}
	return out, nil
}

// entry builds the queue entry for a user-policy conflict detected (or
// received) at detected, by this replica's clock. Everything in it but
// Detected and Deadline derives from the conflict and the policy set. The
// deadline runs from the later of the newest candidate's time and
// detected: a conflict between old changes (imported from a foreign
// document, or synced after a long time apart) still gives the user the
// rule's whole window. Which candidate the fallback picks does not depend
// on when it runs.
func (r *Resolver) entry(collection, recordID string, c crdt.Conflict, detected time.Time) Entry {
	rule := r.Policies.RuleFor(collection, c.Path)
	var newest crdt.Timestamp
	for _, cd := range c.Candidates {
		if cd.HLC.Compare(newest) > 0 {
			newest = cd.HLC
		}
	}
	deadline := time.Duration(rule.Deadline)
	if deadline <= 0 {
		deadline = DefaultDeadline
	}
	start := newest.Time()
	if detected.After(start) {
		start = detected
	}
	return Entry{Collection: collection, RecordID: recordID, Conflict: c, Detected: detected,
		Provisional: Pick(Timestamp, "", c), Deadline: start.Add(deadline),
		Fallback: rule.Fallback, FallbackPriorityField: rule.FallbackPriorityField}
}

// Supersede closes every open entry of the record that a newer write to
// its field superseded (crdt.Doc.Superseded), audits each as
// ByNewerWrite, and returns their ids. Call it after every write to the
// record that did not go through Resolve (local edits, restores); Resolve
// calls it itself. Every replica that holds the newer write closes the
// same entries, so queues stay identical.
func (r *Resolver) Supersede(ctx context.Context, collection, recordID string, d *crdt.Doc) ([]string, error) {
	return r.closeSuperseded(ctx, collection, recordID, func(e Entry) (bool, error) {
		_, stale, err := d.Superseded(e.Conflict.Path, e.Conflict.ID, candidateChanges(e.Conflict))
		return stale, err
	})
}

// SupersedeLocal is Supersede after a local write: the changes since
// before were written here, on top of a state holding every candidate of
// the record's open conflicts, so only they are read (crdt.Doc.
// SupersededLocally), whatever the history since the conflicts arose.
func (r *Resolver) SupersedeLocal(ctx context.Context, collection, recordID string, d *crdt.Doc, before []automerge.ChangeHash) ([]string, error) {
	return r.closeSuperseded(ctx, collection, recordID, func(e Entry) (bool, error) {
		return d.SupersededLocally(e.Conflict.Path, e.Conflict.ID, candidateChanges(e.Conflict), before)
	})
}

// closeSuperseded closes every open entry of the record that stale says a
// newer write superseded, and returns their ids.
func (r *Resolver) closeSuperseded(ctx context.Context, collection, recordID string, stale func(Entry) (bool, error)) ([]string, error) {
	if r.Queue == nil {
		return nil, nil
	}
	entries, err := r.Queue.ForRecord(ctx, collection, recordID)
	if err != nil {
		return nil, err
	}
	var closed []string
	for _, e := range entries {
		ok, err := stale(e)
		if err != nil {
			return closed, fmt.Errorf("policy: superseded %s: %w", e.ID(), err)
		}
		if !ok {
			continue
		}
		if err := r.closeStale(ctx, e); err != nil {
			return closed, err
		}
		closed = append(closed, e.ID())
	}
	return closed, nil
}

func (r *Resolver) closeStale(ctx context.Context, e Entry) error {
	open, err := r.Queue.CloseAs(ctx, e.ID(), ByNewerWrite)
	if err != nil || open == nil {
		return err
	}
	return r.audit(ctx, Record{Collection: e.Collection, RecordID: e.RecordID, Conflict: e.Conflict,
		Winner: -1, Policy: User, By: ByNewerWrite})
}

func candidateChanges(c crdt.Conflict) []automerge.ChangeHash {
	out := make([]automerge.ChangeHash, len(c.Candidates))
	for i, cd := range c.Candidates {
		out[i] = cd.Change
	}
	return out
}

// EffectiveDeadline is the entry's deadline with candidate times bounded
// by cl: a candidate stamped in the future (a device whose clock runs
// ahead) does not push the deadline out further than its clamp. It never
// starts before e.Detected.
func EffectiveDeadline(e Entry, cl Clamps) time.Time {
	var raw, eff crdt.Timestamp
	for _, cd := range e.Conflict.Candidates {
		if cd.HLC.Compare(raw) > 0 {
			raw = cd.HLC
		}
		if t := cl.Time(cd); t.Compare(eff) > 0 {
			eff = t
		}
	}
	start, effStart := raw.Time(), eff.Time()
	if e.Detected.After(start) {
		start = e.Detected
	}
	if e.Detected.After(effStart) {
		effStart = e.Detected
	}
	return e.Deadline.Add(-start.Sub(effStart))
}

// Commit writes a user or fallback decision into the record's document,
// closes the queue entry and audits it. A conflict that a newer write to
// its field superseded is closed instead (audited ByNewerWrite) and Commit
// returns ErrStale: deciding it would overwrite that write. A fallback
// decision is taken again here with the document's clock notes.
func (r *Resolver) Commit(ctx context.Context, d *crdt.Doc, p Pending) error {
	if _, stale, err := d.Superseded(p.Entry.Conflict.Path, p.Entry.Conflict.ID, candidateChanges(p.Entry.Conflict)); err != nil {
		return fmt.Errorf("policy: superseded %s: %w", p.Entry.ID(), err)
	} else if stale {
		if r.Queue != nil {
			if err := r.closeStale(ctx, p.Entry); err != nil {
				return err
			}
		}
		return fmt.Errorf("%w: %s (%s)", ErrStale, p.Entry.ID(), p.Entry.Conflict.Path)
	}
	if p.Policy != User {
		c := p.Entry.Conflict
		if p.Policy == Merge {
			if err := d.FillCRDTWinner(&c); err != nil {
				return fmt.Errorf("policy: crdt winner: %w", err)
			}
		}
		cl, err := d.ClockClamps()
		if err != nil {
			return fmt.Errorf("policy: clock notes: %w", err)
		}
		p.Resolution.Winner = PickClamped(p.Policy, p.Entry.FallbackPriorityField, c, cl)
	}
	if err := d.Resolve(p.Resolution); err != nil {
		return fmt.Errorf("policy: commit %s: %w", p.Entry.Conflict.ID, err)
	}
	var errs []error
	by := ByUser
	if p.Policy != User {
		by = ByFallback
	}
	if r.Queue != nil {
		if _, err := r.Queue.CloseAs(ctx, p.Entry.ID(), by); err != nil {
			errs = append(errs, err)
		}
	}
	errs = append(errs, r.audit(ctx, Record{Collection: p.Entry.Collection, RecordID: p.Entry.RecordID,
		Conflict: p.Entry.Conflict, Winner: p.Resolution.Winner, Value: p.Resolution.Value,
		Deleted: p.Resolution.Winner < 0 && p.Resolution.Delete, Policy: p.Policy, By: by}))
	return errors.Join(errs...)
}

func (r *Resolver) audit(ctx context.Context, rec Record) error {
	if r.Audit == nil {
		return nil
	}
	rec.At = r.now().UTC()
	rec.Replica = r.ReplicaID
	_, err := r.Audit.Append(ctx, rec)
	return err
}

func sortedIDs(m map[string]Decider) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sortStrings(out)
	return out
}
