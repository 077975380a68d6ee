package relay

import (
	"context"
	"crypto/ed25519"
	"time"
)

// API is what one member device does with a relay: the operations a
// replica drives. *Client implements it over HTTP; MemClient implements it
// against an in-process MemRelay for tests (as transport.MemNetwork stands
// in for real connections). Sender and Verifier.Receive take an API.
//
// Implementations return the package's sentinels (ErrNotMember,
// ErrConflict and *CounterError, ErrQuota, ErrProtocol, ErrUnavailable,
// ErrInvalid) as documented on Client's methods.
type API interface {
	// CreateSpace registers space with this device as its only member.
	CreateSpace(ctx context.Context, space Space) error
	// Members returns the space's signed member list.
	Members(ctx context.Context, space Space) (SignedMembers, error)
	// UpdateMembers signs and submits the next member list.
	UpdateMembers(ctx context.Context, space Space, add, remove []ed25519.PublicKey) (Members, error)
	// Push stores a sealed bundle and returns its sequence number.
	Push(ctx context.Context, space Space, sealed []byte) (uint64, error)
	// PullPage returns the bundles after seq after, waiting up to wait
	// for one if there are none.
	PullPage(ctx context.Context, space Space, after uint64, wait time.Duration) (Page, error)
	// Ack acknowledges every bundle up to seq.
	Ack(ctx context.Context, space Space, seq uint64) error
	// Status returns what the relay holds about the space.
	Status(ctx context.Context, space Space) (SpaceStatus, error)
	// Epochs returns the space's signed key-epoch records, oldest first.
	Epochs(ctx context.Context, space Space) ([][]byte, error)
	// PutEpoch posts the space's next key-epoch record.
	PutEpoch(ctx context.Context, space Space, record []byte) error
	// SigningKey is the device's Ed25519 identity: requests are made as
	// it and Sender seals bundles with it.
	SigningKey() ed25519.PrivateKey
}

var (
	_ API = (*Client)(nil)
	_ API = (*MemClient)(nil)
)

// SigningKey returns c.Identity.
func (c *Client) SigningKey() ed25519.PrivateKey { return c.Identity }

// publicOf is k's public key, nil for a malformed key.
func publicOf(k ed25519.PrivateKey) ed25519.PublicKey {
	if len(k) != ed25519.PrivateKeySize {
		return nil
	}
	return k.Public().(ed25519.PublicKey)
}
