package crdt

import (
	"errors"

	"github.com/ferrysync/ferry/errkind"
)

// Sentinel errors. Every error returned by this package that falls into one
// of these classes wraps the sentinel, so callers test with errors.Is.
var (
	// ErrUnsupportedValue: a Go value that has no JSON-like representation
	// (chan, func, complex, struct, map with non-string keys, ...), or one
	// that would not read back exactly (NaN, ±Inf, an empty map key,
	// invalid UTF-8, a sub-millisecond or out-of-range time, a counter
	// overflow), or JSON text DecodeJSON refuses.
	ErrUnsupportedValue = errkind.New("crdt: unsupported value", errkind.Invalid)
	// ErrNotFound: the path does not exist in the document.
	ErrNotFound = errors.New("crdt: path not found")
	// ErrBadPath: the path is malformed, empty where a field is needed,
	// names the reserved metadata namespace, or crosses a value of the
	// wrong kind (a key into a list, an index into a map, ...).
	ErrBadPath = errkind.New("crdt: bad path", errkind.Invalid)
	// ErrBadDocument: bytes from outside (a saved document, changes,
	// heads) could not be loaded.
	ErrBadDocument = errkind.New("crdt: bad document", errkind.Corrupt)
	// ErrClockSkew: a remote hybrid-logical-clock timestamp is further
	// ahead of local physical time than Clock.MaxDrift allows.
	ErrClockSkew = errors.New("crdt: remote clock too far ahead")
	// ErrBadActor: the Actor a Doc is opened with is invalid.
	ErrBadActor = errors.New("crdt: bad actor")
	// ErrActorClash: the changes to merge and the document hold two
	// different changes with the same Automerge actor and sequence number
	// (two histories written under one actor, as when one replica wrote
	// two records independently and one is imported into the other).
	// Automerge cannot merge them; ForkClashes rewrites such a history
	// under fresh actors when the actor's changes share nothing with the
	// document. A merge that fails so may have applied part of the
	// changes: discard the document.
	ErrActorClash = errkind.New("crdt: one Automerge actor wrote two different histories", errkind.Invalid)
	// ErrMissingDeps: MergeRemote was given changes whose dependencies
	// the document lacks, so the remote heads are not all present.
	ErrMissingDeps = errors.New("crdt: changes with missing dependencies")
)
