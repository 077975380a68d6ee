package policy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/ferrysync/ferry/internal/cborx"
	"github.com/ferrysync/ferry/internal/kv"
	"github.com/ferrysync/ferry/internal/names"

	"github.com/ferrysync/ferry/crdt"
	"github.com/fxamacker/cbor/v2"
)

// KV is the small key-value store the queue persists through. The storage
// package's *storage.Slots has exactly these methods.
type KV = kv.KV

// MemKV is an in-memory KV for tests.
type MemKV = kv.Mem

// NewMemKV returns an empty MemKV.
func NewMemKV() *MemKV { return kv.NewMem() }

// ErrNoEntry: no open queue entry with that conflict id.
var ErrNoEntry = errors.New("policy: no such queued conflict")

// ErrNoCandidate: a pick names no candidate of the conflict (out of range).
var ErrNoCandidate = errors.New("policy: no such candidate")

// Entry is a conflict waiting for the user. Every field derives from the
// documents and the policy set, so replicas that exchanged everything hold
// identical entries.
type Entry struct {
	Collection string
	RecordID   string
	Conflict   crdt.Conflict
	// Provisional is the index of the candidate written for now.
	Provisional int
	// Deadline is the rule's deadline after the later of the newest
	// candidate's HLC time and Detected.
	Deadline time.Time
	// Detected is when this replica queued the conflict, by its clock
	// (Resolver.Now); zero for entries queued before it was recorded.
	Detected time.Time
	// Fallback decides at the deadline.
	Fallback              Kind
	FallbackPriorityField string
}

// ID returns the entry's id: EntryID of its collection, record and
// conflict id. It is what the queue is keyed by, what Conflicts lists and
// what ResolvePick takes. The conflict id (Conflict.ID, written into
// documents) is only unique within one record; this one is unique per
// store.
func (e *Entry) ID() string { return EntryID(e.Collection, e.RecordID, e.Conflict.ID) }

// EntryID returns the queue id of conflict conflictID of one record: 32 hex
// digits, the first 128 bits of SHA-256 over the length-prefixed
// (names.Key) collection, record id and conflict id. Two records holding
// the same history meet the same conflict id, never the same entry id.
func EntryID(collection, recordID, conflictID string) string {
	sum := sha256.Sum256([]byte("ferry-queue-entry/1" + names.Key(collection, recordID, conflictID)))
	return hex.EncodeToString(sum[:16])
}

type entryWire struct {
	_                     struct{} `cbor:",toarray"`
	V                     int
	Collection, RecordID  string
	Conflict              []byte
	Provisional           int
	DeadlineMillis        int64
	Fallback              Kind
	FallbackPriorityField string
}

// entryWire2 is entryWire with the detection time (version 2).
type entryWire2 struct {
	_                     struct{} `cbor:",toarray"`
	V                     int
	Collection, RecordID  string
	Conflict              []byte
	Provisional           int
	DeadlineMillis        int64
	Fallback              Kind
	FallbackPriorityField string
	DetectedMillis        int64
}

func encodeEntry(e Entry) ([]byte, error) {
	cb, err := e.Conflict.MarshalBinary()
	if err != nil {
		return nil, err
	}
	var det int64
	if !e.Detected.IsZero() {
		det = e.Detected.UnixMilli()
	}
	return cborEnc.Marshal(entryWire2{V: 2, Collection: e.Collection, RecordID: e.RecordID, Conflict: cb,
		Provisional: e.Provisional, DeadlineMillis: e.Deadline.UnixMilli(), Fallback: e.Fallback,
		FallbackPriorityField: e.FallbackPriorityField, DetectedMillis: det})
}

func decodeEntry(b []byte) (Entry, error) {
	var w entryWire2
	var head []cbor.RawMessage
	if err := cborDec.Unmarshal(b, &head); err != nil || len(head) == 0 {
		return Entry{}, fmt.Errorf("policy: queue entry: not a versioned array: %v", err)
	}
	var v int
	if err := cborDec.Unmarshal(head[0], &v); err != nil {
		return Entry{}, fmt.Errorf("policy: queue entry version: %w", err)
	}
	switch v {
	case 1:
		var w1 entryWire
		if err := cborDec.Unmarshal(b, &w1); err != nil {
			return Entry{}, fmt.Errorf("policy: queue entry: %w", err)
		}
		w = entryWire2{V: 1, Collection: w1.Collection, RecordID: w1.RecordID, Conflict: w1.Conflict,
			Provisional: w1.Provisional, DeadlineMillis: w1.DeadlineMillis, Fallback: w1.Fallback,
			FallbackPriorityField: w1.FallbackPriorityField}
	case 2:
		if err := cborDec.Unmarshal(b, &w); err != nil {
			return Entry{}, fmt.Errorf("policy: queue entry: %w", err)
		}
	default:
		return Entry{}, fmt.Errorf("policy: queue entry version %d", v)
	}
	e := Entry{Collection: w.Collection, RecordID: w.RecordID, Provisional: w.Provisional,
		Deadline: time.UnixMilli(w.DeadlineMillis).UTC(), Fallback: w.Fallback, FallbackPriorityField: w.FallbackPriorityField}
	if w.DetectedMillis != 0 {
		e.Detected = time.UnixMilli(w.DetectedMillis).UTC()
	}
	if err := e.Conflict.UnmarshalBinary(w.Conflict); err != nil {
		return Entry{}, err
	}
	return e, nil
}

var (
	cborEnc = cborx.Enc
	cborDec = cborx.NewDec(cbor.DecOptions{MaxArrayElements: 1 << 20, MaxMapPairs: 1 << 20})
)

const (
	// Entries and tombstones are keyed by entry id (EntryID: collection,
	// record and conflict id).
	openPrefix   = "policy/queue/open2/"
	closedPrefix = "policy/queue/closed2/"
	// Before, they were keyed by the conflict id alone, which two records
	// holding the same history share. Open entries under these keys are
	// moved under the new ones when the queue is first used (they hold
	// their record); closed tombstones hold no record, so they stay and
	// are read as closing that conflict id in every record.
	legacyOpenPrefix   = "policy/queue/open/"
	legacyClosedPrefix = "policy/queue/closed/"
)

// Queue is the persisted user-choice queue. Closed entry ids are kept as
// tombstones (holding who closed them) so that a late-arriving provisional
// resolution does not reopen a conflict already decided.
type Queue struct {
	kv KV
	mu sync.Mutex
	// migrated: entries under legacy keys were moved (see legacyOpenPrefix).
	migrated bool
	// byRecord indexes the open entries by record (loaded on first use),
	// so a write to a record without open conflicts costs no store read.
	byRecord map[recordRef]map[string]bool
}

type recordRef struct{ collection, id string }

// NewQueue returns a queue over kv.
func NewQueue(kv KV) *Queue { return &Queue{kv: kv} }

// migrateLocked moves open entries stored under the conflict id alone
// (legacyOpenPrefix) under their entry id, once per Queue; q.mu is held.
// An entry whose new key is open or closed already is dropped.
func (q *Queue) migrateLocked(ctx context.Context) error {
	if q.migrated {
		return nil
	}
	type legacy struct {
		key string
		e   Entry
	}
	var old []legacy
	err := q.kv.Range(ctx, func(key string, value []byte) error {
		if !strings.HasPrefix(key, legacyOpenPrefix) {
			return nil
		}
		e, err := decodeEntry(value)
		if err != nil {
			return fmt.Errorf("policy: queue entry %s: %w", key, err)
		}
		old = append(old, legacy{key, e})
		return nil
	})
	if err != nil {
		return err
	}
	for _, l := range old {
		id := l.e.ID()
		_, closed, err := q.kv.Get(ctx, closedPrefix+id)
		if err != nil {
			return err
		}
		if !closed {
			b, err := encodeEntry(l.e)
			if err != nil {
				return err
			}
			if err := q.kv.Put(ctx, openPrefix+id, b); err != nil {
				return err
			}
		}
		if err := q.kv.Delete(ctx, l.key); err != nil {
			return err
		}
	}
	q.migrated = true
	return nil
}

func (q *Queue) migrate(ctx context.Context) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.migrateLocked(ctx)
}

// closedLocked reports whether e's entry was closed: under its entry id,
// or under its conflict id alone by a tombstone from before entries were
// keyed by record (legacyClosedPrefix).
func (q *Queue) closedLocked(ctx context.Context, e Entry) (bool, error) {
	if _, ok, err := q.kv.Get(ctx, closedPrefix+e.ID()); err != nil || ok {
		return ok, err
	}
	_, ok, err := q.kv.Get(ctx, legacyClosedPrefix+e.Conflict.ID)
	return ok, err
}

// Add queues e unless an entry with its id (Entry.ID) is open or was
// closed. It reports whether it added.
func (q *Queue) Add(ctx context.Context, e Entry) (bool, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if err := q.migrateLocked(ctx); err != nil {
		return false, err
	}
	id := e.ID()
	if closed, err := q.closedLocked(ctx, e); err != nil || closed {
		return false, err
	}
	if _, ok, err := q.kv.Get(ctx, openPrefix+id); err != nil || ok {
		return false, err
	}
	b, err := encodeEntry(e)
	if err != nil {
		return false, err
	}
	if err := q.kv.Put(ctx, openPrefix+id, b); err != nil {
		return false, err
	}
	if q.byRecord != nil {
		ref := recordRef{e.Collection, e.RecordID}
		if q.byRecord[ref] == nil {
			q.byRecord[ref] = map[string]bool{}
		}
		q.byRecord[ref][id] = true
	}
	return true, nil
}

// Close removes the entry with that entry id (Entry.ID, EntryID) if open
// and records the id as closed. It returns the entry that was open, if any.
func (q *Queue) Close(ctx context.Context, id string) (*Entry, error) {
	return q.CloseAs(ctx, id, "")
}

// CloseAs is Close recording who closed the conflict (ClosedBy reports
// it). An id closed already keeps its first reason.
func (q *Queue) CloseAs(ctx context.Context, id string, by Decider) (*Entry, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if err := q.migrateLocked(ctx); err != nil {
		return nil, err
	}
	var open *Entry
	b, ok, err := q.kv.Get(ctx, openPrefix+id)
	if err != nil {
		return nil, err
	}
	if ok {
		e, err := decodeEntry(b)
		if err != nil {
			return nil, err
		}
		open = &e
	}
	if _, was, err := q.kv.Get(ctx, closedPrefix+id); err != nil {
		return nil, err
	} else if !was {
		reason := []byte(by)
		if by == "" {
			reason = []byte{1} // closed, reason not recorded (as before reasons were kept)
		}
		if err := q.kv.Put(ctx, closedPrefix+id, reason); err != nil {
			return nil, err
		}
	}
	if ok {
		if err := q.kv.Delete(ctx, openPrefix+id); err != nil {
			return nil, err
		}
		if q.byRecord != nil {
			ref := recordRef{open.Collection, open.RecordID}
			delete(q.byRecord[ref], id)
			if len(q.byRecord[ref]) == 0 {
				delete(q.byRecord, ref)
			}
		}
	}
	return open, nil
}

// IsClosed reports whether the entry id was closed here.
func (q *Queue) IsClosed(ctx context.Context, id string) (bool, error) {
	if err := q.migrate(ctx); err != nil {
		return false, err
	}
	_, ok, err := q.kv.Get(ctx, closedPrefix+id)
	return ok, err
}

// ClosedBy reports whether the entry id was closed here and, if the
// reason was recorded, who closed it (empty when unknown).
func (q *Queue) ClosedBy(ctx context.Context, id string) (Decider, bool, error) {
	if err := q.migrate(ctx); err != nil {
		return "", false, err
	}
	b, ok, err := q.kv.Get(ctx, closedPrefix+id)
	if err != nil || !ok {
		return "", false, err
	}
	if len(b) == 1 && b[0] == 1 {
		return "", true, nil
	}
	return Decider(b), true, nil
}

// ForRecord returns the open entries of one record, ordered like List.
// The first call reads every open entry once to build an index; later
// calls for a record without open entries read nothing.
func (q *Queue) ForRecord(ctx context.Context, collection, id string) ([]Entry, error) {
	q.mu.Lock()
	if err := q.migrateLocked(ctx); err != nil {
		q.mu.Unlock()
		return nil, err
	}
	if q.byRecord == nil {
		idx := map[recordRef]map[string]bool{}
		err := q.kv.Range(ctx, func(key string, value []byte) error {
			if !strings.HasPrefix(key, openPrefix) {
				return nil
			}
			e, err := decodeEntry(value)
			if err != nil {
				return err
			}
			ref := recordRef{e.Collection, e.RecordID}
			if idx[ref] == nil {
				idx[ref] = map[string]bool{}
			}
			idx[ref][e.ID()] = true
			return nil
		})
		if err != nil {
			q.mu.Unlock()
			return nil, err
		}
		q.byRecord = idx
	}
	ids := make([]string, 0, len(q.byRecord[recordRef{collection, id}]))
	for cid := range q.byRecord[recordRef{collection, id}] {
		ids = append(ids, cid)
	}
	q.mu.Unlock()
	var out []Entry
	for _, cid := range ids {
		e, err := q.Get(ctx, cid)
		if errors.Is(err, ErrNoEntry) {
			continue // closed meanwhile
		}
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	sortEntries(out)
	return out, nil
}

func sortEntries(out []Entry) {
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Deadline.Equal(out[j].Deadline) {
			return out[i].Deadline.Before(out[j].Deadline)
		}
		return out[i].ID() < out[j].ID()
	})
}

// Get returns the open entry with entry id id (Entry.ID): ErrNoEntry when
// none is open.
func (q *Queue) Get(ctx context.Context, id string) (Entry, error) {
	if err := q.migrate(ctx); err != nil {
		return Entry{}, err
	}
	b, ok, err := q.kv.Get(ctx, openPrefix+id)
	if err != nil {
		return Entry{}, err
	}
	if !ok {
		return Entry{}, fmt.Errorf("%w: %s", ErrNoEntry, id)
	}
	return decodeEntry(b)
}

// List returns the open entries ordered by deadline, then entry id.
func (q *Queue) List(ctx context.Context) ([]Entry, error) {
	if err := q.migrate(ctx); err != nil {
		return nil, err
	}
	var out []Entry
	err := q.kv.Range(ctx, func(key string, value []byte) error {
		if !strings.HasPrefix(key, openPrefix) {
			return nil
		}
		e, err := decodeEntry(value)
		if err != nil {
			return err
		}
		out = append(out, e)
		return nil
	})
	sortEntries(out)
	return out, err
}

// Pending is a decided queue entry waiting to be written: pass it to
// Resolver.Commit with the record's document.
type Pending struct {
	Entry      Entry
	Resolution crdt.Resolution
	Policy     Kind   // the policy that decided (fallback), or User
	By         string // "user" or "fallback:<kind>"
}

// ResolvePick decides an open conflict for candidate n (0-based):
// ErrNoEntry when no such conflict is open, ErrNoCandidate when n is out
// of range.
func (q *Queue) ResolvePick(ctx context.Context, id string, n int) (Pending, error) {
	e, err := q.Get(ctx, id)
	if err != nil {
		return Pending{}, err
	}
	if n < 0 || n >= len(e.Conflict.Candidates) {
		return Pending{}, fmt.Errorf("%w: conflict %s has %d candidates (0 to %d), not %d", ErrNoCandidate, id, len(e.Conflict.Candidates), len(e.Conflict.Candidates)-1, n)
	}
	return Pending{Entry: e, Policy: User, By: "user",
		Resolution: crdt.Resolution{Conflict: e.Conflict, Winner: n, By: "user"}}, nil
}

// ResolveValue decides an open conflict with a new value from the user
// (deleted, when del is set).
func (q *Queue) ResolveValue(ctx context.Context, id string, v any, del bool) (Pending, error) {
	e, err := q.Get(ctx, id)
	if err != nil {
		return Pending{}, err
	}
	return Pending{Entry: e, Policy: User, By: "user",
		Resolution: crdt.Resolution{Conflict: e.Conflict, Winner: -1, Value: v, Delete: del, By: "user"}}, nil
}

// Sweep returns the fallback decisions for entries whose deadline is at or
// before now.
func (q *Queue) Sweep(ctx context.Context, now time.Time) ([]Pending, error) {
	entries, err := q.List(ctx)
	if err != nil {
		return nil, err
	}
	var out []Pending
	for _, e := range entries {
		if e.Deadline.After(now) {
			continue
		}
		out = append(out, FallbackFor(e))
	}
	return out, nil
}

// FallbackFor returns the fallback decision for an entry, whatever its
// deadline (Resolver.Commit takes it again with the document's clock
// notes).
func FallbackFor(e Entry) Pending {
	fb := e.Fallback
	if fb == "" || fb == User {
		fb = Timestamp
	}
	by := "fallback:" + string(fb)
	w := Pick(fb, e.FallbackPriorityField, e.Conflict)
	return Pending{Entry: e, Policy: fb, By: by,
		Resolution: crdt.Resolution{Conflict: e.Conflict, Winner: w, By: by}}
}
