// Package errkind holds the few kinds of failure that ferry's sentinel
// errors belong to, so a caller can tell classes of failure apart without
// knowing every package's sentinels.
//
// Every package keeps its own sentinels (storage.ErrNotFound,
// relay.ErrQuota, ...), and errors.Is(err, storage.ErrNotFound) works as
// before; a sentinel made with New also answers to its kind:
//
//	errors.Is(storage.ErrNotFound, errkind.NotFound) // true
//	errors.Is(fmt.Errorf("get notes/x: %w", storage.ErrNotFound), errkind.NotFound) // true
//
// A sentinel with no kind (an internal failure) is made with errors.New.
// The ferry command maps kinds to its exit codes, so a new sentinel needs
// no change there.
package errkind

// Kind is one class of failure. Its Error is the kind's name.
type Kind struct{ name string }

func (k *Kind) Error() string { return k.name }

// The kinds. A sentinel belongs to at most one.
var (
	// Invalid: bad input from the caller (an argument, a file, a value).
	Invalid = &Kind{"invalid"}
	// WrongKey: a wrong passphrase or key.
	WrongKey = &Kind{"wrong key"}
	// NotFound: no such record, store, conflict, grant or space.
	NotFound = &Kind{"not found"}
	// Corrupt: corrupted or tampered data.
	Corrupt = &Kind{"corrupt"}
	// Forbidden: refused (no consent, unknown peer, quota, store locked).
	Forbidden = &Kind{"forbidden"}
	// Protocol: the peer broke ferry's protocol or speaks another version.
	Protocol = &Kind{"protocol violation"}
	// Unavailable: the peer or service could not be reached, went away
	// mid-session, or the connection is closed.
	Unavailable = &Kind{"unavailable"}
	// NoSpace: no space left on the device.
	NoSpace = &Kind{"no space"}
)

// Kinds lists every kind.
var Kinds = []*Kind{Invalid, WrongKey, NotFound, Corrupt, Forbidden, Protocol, Unavailable, NoSpace}

// New returns a sentinel error whose message is msg (exactly, as
// errors.New) and whose kind is k: errors.Is(err, k) holds for it and for
// every error that wraps it. Each call returns a distinct error.
func New(msg string, k *Kind) error { return &sentinel{msg: msg, kind: k} }

type sentinel struct {
	msg  string
	kind *Kind
}

func (e *sentinel) Error() string { return e.msg }
func (e *sentinel) Unwrap() error { return e.kind }
