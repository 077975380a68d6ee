package replica

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/ferrysync/ferry/privacy/consent"
	"github.com/ferrysync/ferry/relay"
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

// Unpair revokes every grant a destination holds: a peer (its
// fingerprint) or a relay space ("space:<id>"); a running session stops
// sharing at its next record, and a space holding no grant is not synced
// any more (ErrNoConsent), as a peer is refused. It returns how many
// grants it revoked.
func (r *Replica) Unpair(ctx context.Context, peer string) (int, error) {
	dest, err := ParseDestination(peer)
	if err != nil {
		return 0, err
	}
	return r.consent.RevokeDestination(ctx, dest, "unpaired")
}

// ParseDestination accepts a device-sync destination as a user may type
// it: a peer fingerprint (any case, grouped) or a relay space
// "space:<id>" (its 26-character id), and returns its canonical form.
// Anything else is ErrInvalid.
func ParseDestination(s string) (string, error) {
	if id, ok := strings.CutPrefix(strings.TrimSpace(s), "space:"); ok {
		id = strings.ToLower(id)
		if !validSpaceID(id) {
			return "", fmt.Errorf("%w: space id %q: want the %d characters `ferry space list` prints", ErrInvalid, id, relay.SpaceIDLen)
		}
		return spacePeer(id), nil
	}
	fp, err := transport.ParseFingerprint(s)
	if err != nil {
		return "", fmt.Errorf("%w: %w (or space:ID for a relay space)", ErrInvalid, err)
	}
	return fp, nil
}

func validSpaceID(id string) bool {
	if len(id) != relay.SpaceIDLen {
		return false
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= '2' && c <= '7') {
			return false
		}
	}
	return true
}

// Consent returns the consent ledger: grants, revocations, permission
// requests and the record of every share.
func (r *Replica) Consent() *consent.Ledger { return r.consent }
