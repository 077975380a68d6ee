package relay

import (
	"context"
	"crypto/ed25519"
)

// store is what the server needs from its storage: every operation on a
// space's state, each atomic. The membership, counter and quota rules
// live in the implementation because each must hold under concurrent
// writers (several front-ends on one cluster). Errors are *httpError for
// refusals (errNoSpace for "not a member"), anything else is internal.
type store interface {
	// createSpace registers a space with its signed member list (version
	// 1); the same request again is a no-op, another list a conflict.
	createSpace(ctx context.Context, sm SignedMembers, raw []byte, creator ed25519.PublicKey) error
	// updateMembers installs the next version of the member list.
	updateMembers(ctx context.Context, sm SignedMembers, raw []byte) error
	// storeBundle checks the sender's counter and the quotas and stores
	// the sealed bundle with the space's next sequence number.
	storeBundle(ctx context.Context, space string, sender ed25519.PublicKey, counter uint64, data []byte) (pushResult, error)
	// loadBundles returns the bundles after seq after, at most maxN and
	// about maxBytes (at least one if any), with the head and low marks.
	loadBundles(ctx context.Context, space string, member ed25519.PublicKey, after uint64, maxN, maxBytes int) (pullResponse, error)
	// ack moves member's cursor up to seq (at most the head).
	ack(ctx context.Context, space string, member ed25519.PublicKey, seq uint64) error
	// compact deletes what every member has acknowledged and returns how
	// many bundles it deleted.
	compact(ctx context.Context, space string) (int, error)
	status(ctx context.Context, space string, member ed25519.PublicKey) (SpaceStatus, error)
	// members returns the signed member list as accepted.
	members(ctx context.Context, space string, member ed25519.PublicKey) ([]byte, error)
	// putEpoch stores the space's next key-epoch record (epoch = newest
	// + 1; the same record again succeeds), keeping the newest MaxEpochs.
	putEpoch(ctx context.Context, space string, member ed25519.PublicKey, epoch uint64, raw []byte) error
	// epochs returns the space's key-epoch records, oldest first.
	epochs(ctx context.Context, space string, member ed25519.PublicKey) ([][]byte, error)
	close() error
}

var _ store = (*jsStore)(nil)
