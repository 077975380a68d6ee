package policy

import (
	"context"
	"fmt"
	"time"

	"github.com/ferrysync/ferry/crdt"
	"github.com/ferrysync/ferry/internal/kv"
)

// AuditLog is the append-only log audit records are kept in (kv.Log: the
// storage package's sealed log, or MemLog in tests).
type AuditLog = kv.Log

// MemLog is an in-memory AuditLog for tests.
type MemLog = kv.MemLog

// Decider says who decided a conflict.
type Decider string

const (
	ByPolicy   Decider = "policy"   // a policy, at merge time
	ByUser     Decider = "user"     // the user's pick or value
	ByFallback Decider = "fallback" // the fallback policy at the deadline
	ByRemote   Decider = "remote"   // another replica's resolution closed the queued conflict
	// BySuperseded: a newer conflict on the same field, one of whose
	// candidates resolved this one, replaced it in the queue.
	BySuperseded Decider = "superseded"
	// ByNewerWrite: a write made after the conflict (by a replica that held
	// every candidate) changed the field, so the conflict no longer stands
	// and was closed without a decision.
	ByNewerWrite Decider = "newer-write"
)

// Record is one audit entry.
type Record struct {
	Seq        uint64
	At         time.Time // local physical time of the decision
	Collection string
	RecordID   string
	Conflict   crdt.Conflict
	// Winner indexes Conflict.Candidates, or -1 for a user-supplied value
	// (Value, or Deleted) or a remote decision.
	Winner  int
	Value   any
	Deleted bool
	Policy  Kind
	By      Decider
	Replica string // the replica that recorded it
}

type recordWire struct {
	_          struct{} `cbor:",toarray"`
	V          int
	AtMillis   int64
	Collection string
	RecordID   string
	Conflict   []byte
	Winner     int
	Value      []byte
	Deleted    bool
	Policy     Kind
	By         Decider
	Replica    string
}

// Audit writes and queries the audit trail.
type Audit struct {
	Log AuditLog
}

// Append records r.
func (a *Audit) Append(ctx context.Context, r Record) (uint64, error) {
	cb, err := r.Conflict.MarshalBinary()
	if err != nil {
		return 0, err
	}
	var vb []byte
	if r.Winner < 0 && !r.Deleted && r.By == ByUser {
		if vb, err = crdt.EncodeValue(r.Value); err != nil {
			return 0, err
		}
	}
	b, err := cborEnc.Marshal(recordWire{V: 1, AtMillis: r.At.UnixMilli(), Collection: r.Collection, RecordID: r.RecordID,
		Conflict: cb, Winner: r.Winner, Value: vb, Deleted: r.Deleted, Policy: r.Policy, By: r.By, Replica: r.Replica})
	if err != nil {
		return 0, err
	}
	return a.Log.Append(ctx, b)
}

// Filter selects audit records; zero fields match everything.
type Filter struct {
	Collection string
	RecordID   string
	// ConflictID matches the conflict id (crdt.Conflict.ID, shared by
	// records holding the same history) or the queue entry id (Entry.ID,
	// one record's).
	ConflictID string
	Since      time.Time // At >= Since
	Until      time.Time // At < Until
}

func (f Filter) match(r *Record) bool {
	return (f.Collection == "" || r.Collection == f.Collection) &&
		(f.RecordID == "" || r.RecordID == f.RecordID) &&
		(f.ConflictID == "" || r.Conflict.ID == f.ConflictID ||
			EntryID(r.Collection, r.RecordID, r.Conflict.ID) == f.ConflictID) &&
		(f.Since.IsZero() || !r.At.Before(f.Since)) &&
		(f.Until.IsZero() || r.At.Before(f.Until))
}

// Query returns the records matching f, oldest first.
func (a *Audit) Query(ctx context.Context, f Filter) ([]Record, error) {
	var out []Record
	err := a.Log.Scan(ctx, 0, func(seq uint64, value []byte) error {
		var w recordWire
		if err := cborDec.Unmarshal(value, &w); err != nil {
			return fmt.Errorf("policy: audit record %d: %w", seq, err)
		}
		r := Record{Seq: seq, At: time.UnixMilli(w.AtMillis).UTC(), Collection: w.Collection, RecordID: w.RecordID,
			Winner: w.Winner, Deleted: w.Deleted, Policy: w.Policy, By: w.By, Replica: w.Replica}
		if err := r.Conflict.UnmarshalBinary(w.Conflict); err != nil {
			return fmt.Errorf("policy: audit record %d: %w", seq, err)
		}
		if len(w.Value) > 0 {
			v, _, err := crdt.DecodeValue(w.Value)
			if err != nil {
				return fmt.Errorf("policy: audit record %d: %w", seq, err)
			}
			r.Value = v
		}
		if f.match(&r) {
			out = append(out, r)
		}
		return nil
	})
	return out, err
}
