package main

import (
	"context"
	"crypto/ed25519"
	"errors"
	"filippo.io/age"
	"fmt"
	"sync"

	"github.com/ferrysync/ferry/privacy/consent"
	"github.com/ferrysync/ferry/replica"
	"github.com/ferrysync/ferry/transport"
)

// classified is an error whose message is written for the user, while
// errors.Is still finds its class (and the cause) underneath.
type classified struct {
	msg string
	err error
}

func (e *classified) Error() string { return e.msg }
func (e *classified) Unwrap() error { return e.err }

// pinWatch pins exactly the peers holding a live device-sync grant, and
// remembers the last key it refused and the
// last it let through, so a refused handshake can be explained: which
// side refused whom, and why (an expired grant).
type pinWatch struct {
	r        *replica.Replica
	onRefuse func(fp string) // called, if set, for every key refused

	mu               sync.Mutex
	refused, allowed string
}

func watchPins(r *replica.Replica, onRefuse func(fp string)) *pinWatch {
	return &pinWatch{r: r, onRefuse: onRefuse}
}

func (p *pinWatch) Allowed(pub ed25519.PublicKey) bool {
	fp := transport.Fingerprint(pub)
	ok := p.r.Consent().AnyAllowed(fp, consent.PurposeDeviceSync)
	p.mu.Lock()
	if ok {
		p.allowed = fp
	} else {
		p.refused = fp
	}
	p.mu.Unlock()
	if !ok && p.onRefuse != nil {
		p.onRefuse(fp)
	}
	return ok
}

// explainDial rewrites a failed dial's ErrUnknownPeer into what the user
// can do: this replica refused the peer because its grant expired, or the
// peer refused this replica (which only the peer can change).
func (p *pinWatch) explainDial(ctx context.Context, addr string, err error) error {
	if !errors.Is(err, transport.ErrUnknownPeer) {
		return fmt.Errorf("dial %s: %w", addr, err)
	}
	p.mu.Lock()
	refused, allowed := p.refused, p.allowed
	p.mu.Unlock()
	switch {
	case refused != "":
		if g, ok := p.r.ExpiredGrant(ctx, refused); ok {
			return &classified{msg: replica.GrantExpiredMessage(g), err: err}
		}
		return &classified{msg: fmt.Sprintf("%s is an unknown peer: trust it first with ferry trust %s --collections ...",
			refused, refused), err: err}
	case allowed != "":
		return &classified{msg: fmt.Sprintf("peer %s at %s refused this replica (%s): it holds no live grant for it "+
			"(never given, expired or revoked); on that peer run ferry trust %s --collections ...",
			allowed, addr, p.r.ID(), p.r.ID()), err: err}
	}
	return fmt.Errorf("dial %s: %w", addr, err)
}

// refusedLine is what `ferry serve` prints for a peer it refused.
func refusedLine(ctx context.Context, r *replica.Replica, fp string) string {
	if g, ok := r.ExpiredGrant(ctx, fp); ok {
		return "refused " + fp + ": " + replica.GrantExpiredMessage(g)
	}
	return "refused " + fp + ": unknown peer (not trusted: see ferry trust)"
}

// isNoIdentityMatch reports an age file that none of the given keys opens
// (an invitation sealed for another device): a wrong key, not corruption.
func isNoIdentityMatch(err error) bool {
	var nm *age.NoIdentityMatchError
	return errors.As(err, &nm)
}
