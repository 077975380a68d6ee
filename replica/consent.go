package replica

import (
	"context"
	"fmt"
	"time"

	"github.com/ferrysync/ferry/privacy/consent"
	"github.com/ferrysync/ferry/transport"
)

// Pair trusts a peer for device sync: it records a device-sync grant for
// each collection (until revoked when expires is zero). A peer learns of
// no record in a collection it was not granted. A negative expires is
// ErrInvalid (it is not "until revoked").
func (r *Replica) Pair(ctx context.Context, peer string, collections []string, expires time.Duration) ([]consent.Grant, error) {
	fp, err := transport.ParseFingerprint(peer)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if len(collections) == 0 {
		return nil, fmt.Errorf("%w: name the collections to share", ErrInvalid)
	}
	if expires < 0 {
		return nil, fmt.Errorf("%w: grant duration %v is negative", ErrInvalid, expires)
	}
	for _, c := range collections {
		if err := checkCollection(c); err != nil {
			return nil, err
		}
	}
	var out []consent.Grant
	for _, c := range collections {
		g := consent.Grant{Collection: c, Purpose: consent.PurposeDeviceSync, Destination: fp}
		if expires > 0 {
			g.Expires = r.opts.Now().Add(expires)
		}
		g, err := r.consent.Grant(ctx, g)
		if err != nil {
			return out, fmt.Errorf("replica: pair: %w", err)
		}
		out = append(out, g)
	}
	return out, nil
}

// Unpair revokes every grant a peer holds; a running session stops
// sharing at its next record.
func (r *Replica) Unpair(ctx context.Context, peer string) (int, error) {
	fp, err := transport.ParseFingerprint(peer)
	if err != nil {
		return 0, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return r.consent.RevokeDestination(ctx, fp, "unpaired")
}

// Consent returns the consent ledger: grants, revocations, permission
// requests and the record of every share.
func (r *Replica) Consent() *consent.Ledger { return r.consent }
