package crdt

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/automerge/automerge-go"
)

// WriteKey names one write by its recorded origin: the writing replica and
// the HLC it stamped. A resolution that carries a winner's metadata over
// names the same write as the winner itself.
type WriteKey struct {
	ReplicaID string
	HLC       Timestamp
}

// ClockNote records, inside a document, that a replica received a write
// whose recorded time was beyond its own clock's bound: from then on the
// write counts as made at Clamp (the receiver's physical time at receipt
// plus the bound) when conflicts are decided by time. Notes are data: every
// replica that holds the document reads the same notes and so decides the
// same way.
type ClockNote struct {
	_     struct{} `cbor:",toarray"`
	Write WriteKey
	Clamp Timestamp // the time the write counts as (< Write.HLC)
	Noter string    // the replica that received it early
}

// FutureWrite is a write received before its recorded time.
type FutureWrite struct {
	Write WriteKey
	// Ahead is how far the write's time was ahead of this replica's
	// physical clock when it arrived (a lower bound of the writer's
	// clock error: the write was made before it arrived).
	Ahead time.Duration
	// Noted is true when this replica wrote a ClockNote for it (false
	// when an earlier note already clamps it at least as far).
	Noted bool
}

// clockNotePrefix starts the hidden root keys that hold clock notes.
const clockNotePrefix = MetaPrefix + "!clock:"

func clockNoteKey(n ClockNote) string {
	b, err := encMode.Marshal([]any{n.Noter, n.Write.ReplicaID, n.Write.HLC})
	if err != nil {
		panic(fmt.Sprintf("crdt: encoding clock note key: %v", err)) // only plain types inside
	}
	sum := sha256.Sum256(b)
	return clockNotePrefix + hex.EncodeToString(sum[:16])
}

// ClockClamps returns, for every write some replica noted as received
// early, the earliest Clamp any note gives it. Cost: O(root keys).
func (d *Doc) ClockClamps() (map[WriteKey]Timestamp, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.clockClamps()
}

// clockClamps is ClockClamps with d.mu held.
func (d *Doc) clockClamps() (map[WriteKey]Timestamp, error) {
	out := map[WriteKey]Timestamp{}
	err := guard(func() error {
		root := d.am.RootMap()
		keys, err := root.Keys()
		if err != nil {
			return err
		}
		for _, k := range keys {
			if !strings.HasPrefix(k, clockNotePrefix) {
				continue
			}
			v, err := root.Get(k)
			if err != nil {
				return err
			}
			if v.Kind() != automerge.KindBytes {
				continue // not a note: ignored, like any foreign hidden key
			}
			var n ClockNote
			if wsDecMode.Unmarshal(v.Bytes(), &n) != nil || n.Clamp.Compare(n.Write.HLC) >= 0 {
				continue
			}
			if cur, ok := out[n.Write]; !ok || n.Clamp.Compare(cur) < 0 {
				out[n.Write] = n.Clamp
			}
		}
		return nil
	})
	return out, err
}

// WriterTimes returns, for every other replica that wrote in the changes
// of the document not in the history of before (what a merge just added),
// the latest time its writes there carry: the write-set entries of ferry
// changes (with the metadata they carry) and plain changes' timestamps.
// Cost: O(changes added).
func (d *Doc) WriterTimes(before []automerge.ChangeHash) (map[string]Timestamp, error) {
	ws, err := d.AddedWrites(before)
	return LatestTimes(ws), err
}

// AddedWrites returns the writes by other replicas in the changes of the
// document not in the history of before (what a merge just added), in no
// particular order: the metadata of ferry changes' write-set entries and
// plain changes' timestamps, what WriterTimes and NoteFutureWrites read.
// Read once, they serve both (LatestTimes, NoteFutureWritesOf). Cost:
// O(changes added).
func (d *Doc) AddedWrites(before []automerge.ChangeHash) ([]WriteMeta, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []WriteMeta
	err := d.addedWrites(before, func(m WriteMeta) { out = append(out, m) })
	return out, err
}

// LatestTimes returns, for every writer of writes, the latest time among
// its writes (WriterTimes over AddedWrites' result); never nil.
func LatestTimes(writes []WriteMeta) map[string]Timestamp {
	out := map[string]Timestamp{}
	for _, m := range writes {
		if cur, ok := out[m.ReplicaID]; !ok || m.HLC.Compare(cur) > 0 {
			out[m.ReplicaID] = m.HLC
		}
	}
	return out
}

// addedWrites calls fn with the metadata of every write by another
// replica in the changes not in the history of before. d.mu is held.
func (d *Doc) addedWrites(before []automerge.ChangeHash, fn func(WriteMeta)) error {
	var metas []*chMeta
	if all, ok := d.historyMetas(); ok && len(before) == 0 {
		// The whole history, already read (a record new to the store):
		// not one automerge-go result per change again.
		metas = all
	} else {
		chs, err := d.changesSince(before)
		if err != nil {
			return fmt.Errorf("crdt: added writes: %w", err)
		}
		for _, c := range chs {
			if m := d.metaOf(c.Hash()); m != nil {
				metas = append(metas, m)
			}
		}
	}
	consider := func(m WriteMeta) {
		if m.ReplicaID != d.actor.ReplicaID {
			fn(m)
		}
	}
	for _, m := range metas {
		if m.ws == nil {
			consider(m.meta) // a plain change: its timestamp
			continue
		}
		// A ferry change's writes: each entry's own meta (a resolution or
		// repair carries the original write's) or the change's. A change
		// without entries (clock notes) writes no field: its time competes
		// in no conflict, and noting it could make two replicas with
		// clocks apart note each other's notes forever.
		for _, e := range m.ws.E {
			if e.Meta != nil {
				consider(*e.Meta)
			} else {
				consider(m.ws.M)
			}
		}
	}
	return nil
}

// NoteFutureWrites finds the writes by other replicas in the changes not
// in the history of before (see WriterTimes) whose recorded time is more
// than bound ahead of now (this replica's physical time). When note is
// set it writes a ClockNote for each (Clamp = now + bound) that no note
// already clamps at or below that, all in one change; a replica that
// doubts its own clock passes note=false and only learns of them. It
// returns every such write, ordered by writer and time. Cost: O(changes
// added), plus O(root keys) when a write is found.
func (d *Doc) NoteFutureWrites(before []automerge.ChangeHash, now time.Time, bound time.Duration, note bool) ([]FutureWrite, error) {
	if bound <= 0 {
		return nil, fmt.Errorf("crdt: clock bound %s must be positive", bound)
	}
	ws, err := d.AddedWrites(before)
	if err != nil {
		return nil, err
	}
	return d.NoteFutureWritesOf(ws, now, bound, note)
}

// NoteFutureWritesOf is NoteFutureWrites for the writes AddedWrites
// returned (read once for WriterTimes and this). The document must not
// have changed since they were read.
func (d *Doc) NoteFutureWritesOf(writes []WriteMeta, now time.Time, bound time.Duration, note bool) ([]FutureWrite, error) {
	if bound <= 0 {
		return nil, fmt.Errorf("crdt: clock bound %s must be positive", bound)
	}
	limit := now.Add(bound).UnixMilli()
	found := map[WriteKey]time.Duration{}
	for _, m := range writes {
		if m.HLC.WallMillis > limit {
			found[WriteKey{m.ReplicaID, m.HLC}] = time.Duration(m.HLC.WallMillis-now.UnixMilli()) * time.Millisecond
		}
	}
	if len(found) == 0 {
		return nil, nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	clamps, err := d.clockClamps()
	if err != nil {
		return nil, err
	}
	clamp := Timestamp{WallMillis: limit}
	out := make([]FutureWrite, 0, len(found))
	for w, ahead := range found {
		fw := FutureWrite{Write: w, Ahead: ahead}
		if cur, ok := clamps[w]; note && (!ok || clamp.Compare(cur) < 0) {
			fw.Noted = true
		}
		out = append(out, fw)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Write.ReplicaID != out[j].Write.ReplicaID {
			return out[i].Write.ReplicaID < out[j].Write.ReplicaID
		}
		return out[i].Write.HLC.Compare(out[j].Write.HLC) < 0
	})
	if !note {
		return out, nil
	}
	t := d.newTx(WriteMeta{HLC: d.clock.Now(), ReplicaID: d.actor.ReplicaID, Priority: d.actor.Priority})
	err = guard(func() error {
		root := d.am.RootMap()
		for _, fw := range out {
			if !fw.Noted {
				continue
			}
			n := ClockNote{Write: fw.Write, Clamp: clamp, Noter: d.actor.ReplicaID}
			b, err := encMode.Marshal(n)
			if err != nil {
				return err
			}
			if err := root.Set(clockNoteKey(n), b); err != nil {
				return err
			}
			t.touched = true
		}
		return nil
	})
	if err != nil {
		return out, err
	}
	return out, t.commit()
}

// EqualValues reports whether two application values (as Get returns
// them) are the same value of the same kind.
func EqualValues(a, b any) bool {
	na, errA := fromGo(a)
	nb, errB := fromGo(b)
	if errA != nil || errB != nil {
		return false
	}
	return equalNodes(na, nb)
}
