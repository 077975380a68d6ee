package replica

import (
	"context"
	"fmt"

	"github.com/ferrysync/ferry/storage"
)

// Secret is the secret ChangePassphrase wraps the store's keys under:
// exactly one of Passphrase and Key (a raw 32-byte key), and for a
// passphrase the Argon2id cost (storage.DefaultKDF when zero).
type Secret struct {
	Passphrase []byte
	Key        []byte
	KDF        storage.KDFParams
}

// ChangePassphrase rewraps the replica's master key(s) under next. It is one
// atomic replacement of the store's header: after a crash either the old or
// the new secret opens the store, never neither; no record is rewritten.
// The replica stays open and usable. Errors: ErrInvalid when next sets
// both or neither of Passphrase and Key, storage.ErrInvalid for a key that
// is not 32 bytes, storage.ErrNoSpace, storage.ErrClosed, ctx's error.
func (r *Replica) ChangePassphrase(ctx context.Context, next Secret) error {
	if (len(next.Passphrase) == 0) == (len(next.Key) == 0) {
		return fmt.Errorf("%w: set exactly one of Passphrase and Key", ErrInvalid)
	}
	if err := r.store.ChangePassphrase(ctx, storage.Options{Passphrase: next.Passphrase, Key: next.Key, KDF: next.KDF}); err != nil {
		return fmt.Errorf("replica: change passphrase: %w", err)
	}
	return nil
}

// RotateKey replaces the master key and re-encrypts every stored value
// under the new one, in batches of one transaction each; progress, if not
// nil, is called after each batch with the number of values moved and the
// total. The replica stays usable meanwhile. If RotateKey is interrupted
// (ctx, Close, a crash) the rotation stays pending and the next RotateKey
// or Open finishes it; nothing is lost at any point. Errors:
// storage.ErrNoSpace, storage.ErrClosed, ctx's error.
func (r *Replica) RotateKey(ctx context.Context, progress func(done, total int)) error {
	if err := r.store.RotateKey(ctx, progress); err != nil {
		return fmt.Errorf("replica: rotate key: %w", err)
	}
	return nil
}

// Collections returns the names of every collection that ever held a
// record on this replica, sorted (a collection whose records were all
// deleted is still listed).
func (r *Replica) Collections(ctx context.Context) ([]string, error) {
	cols, err := r.store.Collections(ctx)
	if err != nil {
		return nil, fmt.Errorf("replica: collections: %w", err)
	}
	return cols, nil
}

// LastSeq returns the sequence number of the newest entry in the
// replica's change feed (0 for an empty replica). Every local write and
// every applied remote change adds entries, so an unchanged LastSeq across
// a sync session means the session wrote nothing (quiescence).
func (r *Replica) LastSeq() uint64 { return r.store.LastSeq() }
