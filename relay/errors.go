package relay

import (
	"errors"
	"fmt"

	"github.com/ferrysync/ferry/errkind"
)

// Sentinel errors. Every error the package returns wraps at most one of
// them, with short context (the relay URL, the sender, the counter).
var (
	// ErrTampered: a bundle failed verification (signature, AEAD, format,
	// size bucket) or an envelope's sender disagrees with its bundle. The
	// payload is never yielded. The error names the relay URL.
	ErrTampered = errkind.New("relay: bundle tampered", errkind.Corrupt)
	// ErrMissing: a sender's counters have a gap that the relay did not
	// fill although it claims to have nothing more (a dropped bundle), or
	// the reorder buffer overflowed.
	ErrMissing = errkind.New("relay: bundles missing", errkind.Corrupt)
	// ErrQuota: the relay refused to store a bundle or space because a
	// quota is full or the body is too large (HTTP 507 or 413). Nothing was
	// stored; keep the data and retry after members have acknowledged.
	ErrQuota = errkind.New("relay: quota exceeded", errkind.Forbidden)
	// ErrAuth: the relay refused the request's authentication (HTTP 401:
	// bad signature, stale timestamp, replayed nonce, malformed headers).
	ErrAuth = errkind.New("relay: authentication refused", errkind.Forbidden)
	// ErrNotMember: the key is not a current member of the space, or the
	// space does not exist (HTTP 403; the relay does not tell them apart).
	ErrNotMember = errkind.New("relay: not a member of the space", errkind.Forbidden)
	// ErrConflict: the space already exists, a membership update is not
	// the next version, or a bundle counter is out of order or reused
	// (HTTP 409). See CounterError.
	ErrConflict = errors.New("relay: conflict")
	// ErrProtocol: a malformed request or response (HTTP 400, or a reply
	// from the relay that does not decode).
	ErrProtocol = errkind.New("relay: protocol error", errkind.Protocol)
	// ErrUnavailable: the relay kept failing (network errors or HTTP 5xx)
	// after every retry.
	ErrUnavailable = errkind.New("relay: unavailable", errkind.Unavailable)
	// ErrInvalid: a bad argument (wrong key size, payload too large, a
	// Space whose ID does not match its key, a counter of 0).
	ErrInvalid = errkind.New("relay: invalid argument", errkind.Invalid)
	// ErrNoKey: a bundle or key-epoch record is sealed under a key this
	// device does not hold: the space's key was rotated without it (it was
	// removed), or it has not fetched the new epoch yet. Nothing is
	// yielded.
	ErrNoKey = errkind.New("relay: sealed under a key this device does not hold", errkind.Forbidden)
	// ErrRemoved: this device was a member of the space and has been
	// removed (HTTP 403 with code "removed"). It wraps ErrNotMember too.
	// What it holds stays on the device; it can rejoin only by a new
	// invitation.
	ErrRemoved = errkind.New("relay: removed from the space", errkind.Forbidden)
	// ErrInvitation: an invitation could not be opened (not for this
	// identity, corrupted, or not an invitation).
	ErrInvitation = errkind.New("relay: invalid invitation", errkind.Corrupt)
)

// CounterError is a push refused because of the bundle's counter: the
// relay expects Expected from this sender next (Got was below it and not a
// stored duplicate, or above it, or reused with different content). It
// unwraps to ErrConflict.
type CounterError struct {
	Got, Expected uint64
}

func (e *CounterError) Error() string {
	return fmt.Sprintf("relay: conflict: counter %d refused, relay expects %d", e.Got, e.Expected)
}

// Unwrap returns ErrConflict.
func (e *CounterError) Unwrap() error { return ErrConflict }

func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, args...)...)
}
