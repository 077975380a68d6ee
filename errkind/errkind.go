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
//
// A package that must not import errkind (storage imports nothing from the
// rest of ferry) gives its sentinels a kind by duck typing: a small local
// error type whose ErrorKind method returns the kind's name (Kind.Name:
// "not found", "invalid", ...) and whose Is method matches a kind by name
// (see Kinded). errors.Is(err, errkind.NotFound) and Of then work for it as
// for a sentinel made with New.
package errkind

import "errors"

// Kind is one class of failure. Its Error is the kind's name.
type Kind struct{ name string }

func (k *Kind) Error() string { return k.name }

// KindName returns the kind's name, the string a Kinded error's ErrorKind
// returns for it. Only kinds have this method, so a Kinded error's Is can
// tell a kind (a match) from another sentinel of the same kind (never a
// match).
func (k *Kind) KindName() string { return k.name }

// Kinded is an error that names its kind without importing this package.
// ErrorKind returns the name of one of Kinds (Kind.KindName). For
// errors.Is(err, kind) to hold, the error also has this Is method (a
// target that is a Kind has KindName; no sentinel has):
//
//	func (e *sentinel) Is(target error) bool {
//		k, ok := target.(interface{ KindName() string })
//		return ok && k.KindName() == e.kind
//	}
type Kinded interface {
	error
	ErrorKind() string
}

// Of returns the kind of the first error in err's chain that has one (a
// sentinel made with New, a Kinded error, or a Kind itself), or nil.
func Of(err error) *Kind {
	var kd Kinded
	if !errors.As(err, &kd) {
		return nil
	}
	for _, k := range Kinds {
		if k.name == kd.ErrorKind() {
			return k
		}
	}
	return nil
}

// ErrorKind makes a Kind Kinded: a kind is of its own kind.
func (k *Kind) ErrorKind() string { return k.name }

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

func (e *sentinel) Error() string     { return e.msg }
func (e *sentinel) Unwrap() error     { return e.kind }
func (e *sentinel) ErrorKind() string { return e.kind.name }
