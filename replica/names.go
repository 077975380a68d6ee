package replica

import (
	"context"
	"fmt"

	"github.com/ferrysync/ferry/internal/names"
)

// Names. The rule (docs/replica.md, "Collection names and record ids") is
// internal/names.Check: valid UTF-8, 1 to 1024 bytes, no control
// character. Every entry point that takes a name from the application or
// from a peer checks it; keys that join names use names.RecordKey, which
// no two records share whatever their bytes.

// recordKey names a record in the document cache, the lock stripes, the
// per-session maps and the per-peer shared-heads slots. For every valid
// name it is the collection, a NUL and the id (the slot key stores already
// hold); see names.RecordKey.
func recordKey(collection, id string) string { return names.RecordKey(collection, id) }

// checkName refuses a collection name or record id outside the rule with
// ErrInvalid.
func checkName(collection, id string) error {
	if err := checkCollection(collection); err != nil {
		return err
	}
	if err := names.Check("record id", id); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return nil
}

// checkCollection refuses a collection name outside the rule with
// ErrInvalid.
func checkCollection(collection string) error {
	if err := names.Check("collection", collection); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return nil
}

// checkRead is checkName for the readers Get and ExportDoc: a record a
// store already holds under a name the rule refuses (written before the
// rule existed) can still be read and exported, so nothing stored becomes
// unreachable. Any other refused name is ErrInvalid.
func (r *Replica) checkRead(ctx context.Context, collection, id string) error {
	err := checkName(collection, id)
	if err == nil || !names.Fits(collection) || !names.Fits(id) {
		return err
	}
	if _, merr := r.store.Meta(ctx, collection, id); merr == nil {
		return nil
	}
	return err
}

// validRecord reports whether a record that came from a peer, a relay or a
// parked bundle may be applied, or a stored record may be sent: names
// outside the rule never cross between replicas.
func validRecord(collection, id string) bool { return checkName(collection, id) == nil }

// dropInvalid returns recs without the records whose names break the rule,
// and how many it dropped. It never reorders recs.
func dropInvalid(recs []recordChanges) ([]recordChanges, int) {
	bad := 0
	for i := range recs {
		if !validRecord(recs[i].Collection, recs[i].ID) {
			bad++
		}
	}
	if bad == 0 {
		return recs, 0
	}
	out := make([]recordChanges, 0, len(recs)-bad)
	for _, rc := range recs {
		if validRecord(rc.Collection, rc.ID) {
			out = append(out, rc)
		}
	}
	return out, bad
}
