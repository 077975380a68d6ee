package policy

import (
	"context"
	"errors"
	"fmt"
	"time"

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
	// Closed are the conflict ids whose queued entry was closed, by a
	// remote resolution or because a newer conflict superseded them.
	Closed []string
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
	out := &Outcome{}
	var rs []crdt.Resolution
	for _, c := range mr.Conflicts {
		if r.Policies.RuleFor(collection, c.Path).Policy == Merge {
			if err := d.FillCRDTWinner(&c); err != nil {
				return out, fmt.Errorf("policy: crdt winner: %w", err)
			}
		}
		dec := r.Policies.Decide(collection, c)
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
				closing[rr.ConflictID] = ByRemote
			}
			for _, id := range rr.Supersedes {
				closing[id] = BySuperseded
			}
		}
		for _, c := range mr.Conflicts {
			for _, cd := range c.Candidates {
				if cd.Resolves != "" && isUser(c.Path) {
					closing[cd.Resolves] = BySuperseded
				}
			}
		}
		for _, id := range sortedIDs(closing) {
			e, err := r.Queue.Close(ctx, id)
			if err != nil {
				return out, err
			}
			if e != nil {
				out.Closed = append(out.Closed, id)
				if err := r.audit(ctx, Record{Collection: e.Collection, RecordID: e.RecordID, Conflict: e.Conflict,
					Winner: -1, Policy: User, By: closing[id]}); err != nil {
					return out, err
				}
			}
		}
		var adds []Entry
		for _, dec := range out.Decisions {
			if dec.Provisional {
				adds = append(adds, r.entry(collection, recordID, dec.Conflict))
			}
		}
		for _, rr := range mr.Resolutions {
			if rr.Provisional && rr.Conflict != nil && r.Policies.RuleFor(collection, rr.Conflict.Path).Policy == User {
				adds = append(adds, r.entry(collection, recordID, *rr.Conflict))
			}
		}
		for _, e := range adds {
			added, err := r.Queue.Add(ctx, e)
			if err != nil {
				return out, err
			}
			if added {
				out.Queued = append(out.Queued, e)
			}
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

// entry builds the queue entry for a user-policy conflict. Everything in it
// derives from the conflict and the policy set.
func (r *Resolver) entry(collection, recordID string, c crdt.Conflict) Entry {
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
	return Entry{Collection: collection, RecordID: recordID, Conflict: c,
		Provisional: Pick(Timestamp, "", c), Deadline: newest.Time().Add(deadline),
		Fallback: rule.Fallback, FallbackPriorityField: rule.FallbackPriorityField}
}

// Commit writes a user or fallback decision into the record's document,
// closes the queue entry and audits it.
func (r *Resolver) Commit(ctx context.Context, d *crdt.Doc, p Pending) error {
	if p.Policy == Merge {
		c := p.Entry.Conflict
		if err := d.FillCRDTWinner(&c); err != nil {
			return fmt.Errorf("policy: crdt winner: %w", err)
		}
		p.Resolution.Winner = Pick(Merge, "", c)
	}
	if err := d.Resolve(p.Resolution); err != nil {
		return fmt.Errorf("policy: commit %s: %w", p.Entry.Conflict.ID, err)
	}
	var errs []error
	if r.Queue != nil {
		if _, err := r.Queue.Close(ctx, p.Entry.Conflict.ID); err != nil {
			errs = append(errs, err)
		}
	}
	by := ByUser
	if p.Policy != User {
		by = ByFallback
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
