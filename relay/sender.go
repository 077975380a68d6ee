package relay

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
)

// Sender seals and pushes one device's payloads to a space with
// consecutive counters, kept in a KV under "relay/send/<space ID>" (the
// last counter the relay accepted).
//
// A counter is persisted only after the relay stored the bundle. If the
// relay reports that it expects a higher counter (a push whose reply was
// lost before a crash), Send adopts it and pushes again, so the payload is
// delivered under the new counter (the old one, too, if it differed:
// the replica layer's payloads are idempotent). If the relay expects a
// lower counter than ours it has lost bundles: Send refuses with a
// *CounterError rather than reuse counters receivers may have applied.
//
// A Sender is not safe for concurrent use.
type Sender struct {
	c     API
	space Space
	kv    KV
	key   string
	last  uint64
}

// NewSender loads the sender state of space from kv.
func NewSender(ctx context.Context, c API, space Space, kv KV) (*Sender, error) {
	if err := space.check(); err != nil {
		return nil, err
	}
	if c == nil || kv == nil {
		return nil, invalidf("nil client or KV")
	}
	s := &Sender{c: c, space: space, kv: kv, key: "relay/send/" + space.ID}
	raw, ok, err := kv.Get(ctx, s.key)
	if err != nil {
		return nil, fmt.Errorf("relay: load sender state: %w", err)
	}
	if ok {
		if len(raw) != 8 {
			return nil, fmt.Errorf("%w: corrupt sender state", ErrProtocol)
		}
		s.last = binary.BigEndian.Uint64(raw)
	}
	return s, nil
}

// Counter is the last counter the relay accepted from this device.
func (s *Sender) Counter() uint64 { return s.last }

// Position is this device's own position, for Invite: a Verifier skips its
// own bundles (VerifierOptions.Self), so its Positions lack it.
func (s *Sender) Position() Position {
	return Position{Sender: publicOf(s.c.SigningKey()), Counter: s.last}
}

// Send seals payload with the next counter and pushes it. On ErrQuota or
// any other error nothing is lost: keep payload and send it again later.
func (s *Sender) Send(ctx context.Context, payload []byte) (seq uint64, err error) {
	counter := s.last + 1
	for try := 0; ; try++ {
		sealed, err := Seal(s.space, s.c.SigningKey(), counter, payload)
		if err != nil {
			return 0, err
		}
		seq, err = s.c.Push(ctx, s.space, sealed)
		var ce *CounterError
		if errors.As(err, &ce) && ce.Expected > counter && try < 2 {
			counter = ce.Expected
			continue
		}
		if err != nil {
			return 0, err
		}
		break
	}
	s.last = counter
	if err := s.kv.Put(ctx, s.key, binary.BigEndian.AppendUint64(nil, counter)); err != nil {
		return seq, fmt.Errorf("relay: save sender state: %w", err)
	}
	return seq, nil
}

// Adopt raises the sender's counter to counter if it is below (the
// relay's count of this device's bundles, read from Status, when this
// device's store went back to an older copy) and persists it, so the next
// bundle takes a counter no receiver has seen. It never lowers it.
func (s *Sender) Adopt(ctx context.Context, counter uint64) error {
	if counter <= s.last {
		return nil
	}
	s.last = counter
	if err := s.kv.Put(ctx, s.key, binary.BigEndian.AppendUint64(nil, counter)); err != nil {
		return fmt.Errorf("relay: save sender state: %w", err)
	}
	return nil
}
