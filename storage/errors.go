package storage

import (
	"errors"
	"fmt"
	"strings"
	"syscall"

	"github.com/dgraph-io/badger/v4"
)

// Sentinel errors. Every error returned by this package that has one of these
// causes wraps it, so errors.Is works; the wrapping adds short context only.
// Each but ErrClosed also belongs to a kind of package errkind
// (errors.Is(ErrNoStore, errkind.NotFound)), by duck typing (kindError):
// storage imports nothing from the rest of ferry.
var (
	// ErrWrongKey: the passphrase or raw key does not unlock the store, or
	// the passphrase or identities given to Import do not open the backup.
	// (age cannot tell a wrong backup passphrase from a damaged passphrase
	// stanza in the backup's header: that damage is reported as this too.)
	ErrWrongKey = kinded("storage: wrong passphrase or key", "wrong key")
	// ErrCorrupt: a stored value or file failed authentication or decoding.
	// It deliberately says nothing about which byte or which check failed.
	ErrCorrupt = kinded("storage: corrupt or tampered data", "corrupt")
	// ErrNotFound: no such record, slot or log.
	ErrNotFound = kinded("storage: not found", "not found")
	// ErrClosed: the store has been closed.
	ErrClosed = errors.New("storage: store closed")
	// ErrLocked: the directory is open in another process (or another Store).
	ErrLocked = kinded("storage: store is locked by another process", "forbidden")
	// ErrExists: Create found an existing store in the directory.
	ErrExists = kinded("storage: store already exists", "forbidden")
	// ErrNoStore: Open found no store in the directory.
	ErrNoStore = kinded("storage: no store in directory", "not found")
	// ErrNewerStore: the store's header has a format version newer than
	// this build knows (a store written, or upgraded, by a newer ferry).
	// Nothing was read past the header and no file was changed; open it
	// with that newer build.
	ErrNewerStore = kinded("storage: store made by a newer version of ferry", "protocol violation")
	// ErrBadBackup: a backup is truncated or tampered with (a wrong
	// passphrase or identity is ErrWrongKey). Nothing was written to the store.
	ErrBadBackup = kinded("storage: bad backup", "corrupt")

	// ErrInvalid: the caller passed invalid arguments (empty or oversized
	// names, a batch too big for one transaction, inconsistent options).
	ErrInvalid = kinded("storage: invalid argument", "invalid")
	// ErrNoSpace: the file system holding the store has too little free
	// space for Badger to write safely (see docs/storage.md, "Disk space").
	// Nothing acknowledged is lost; free space and retry.
	ErrNoSpace = kinded("storage: no space left on device", "no space")
)

// kindError is a sentinel of a kind of package errkind, named by the
// kind's name (errkind.Kind.KindName) so that storage need not import
// errkind: errkind.Of reads ErrorKind, and errors.Is(err, errkind.NotFound)
// holds through Is, which matches kinds only (another sentinel of the same
// kind is a different error).
type kindError struct{ msg, kind string }

func kinded(msg, kind string) error { return &kindError{msg: msg, kind: kind} }

func (e *kindError) Error() string     { return e.msg }
func (e *kindError) ErrorKind() string { return e.kind }
func (e *kindError) Is(target error) bool {
	k, ok := target.(interface{ KindName() string })
	return ok && k.KindName() == e.kind
}

// errRetry restarts a transaction whose snapshot predates a key-state change.
var errRetry = errors.New("storage: retry transaction")

// corruptf wraps ErrCorrupt with a short, non-revealing context.
func corruptf(what string) error { return fmt.Errorf("%s: %w", what, ErrCorrupt) }

func invalidf(format string, args ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), ErrInvalid)
}

// mapBadgerErr converts Badger's own errors into this package's sentinels.
// Badger wraps most internal errors with %+v (losing the chain), so
// corruption is recognised by message as well as by identity.
func mapBadgerErr(op string, err error) error {
	if err == nil {
		return nil
	}
	var u userErr
	if errors.As(err, &u) {
		return u.err
	}
	switch {
	case errors.Is(err, ErrCorrupt), errors.Is(err, ErrNotFound), errors.Is(err, ErrClosed),
		errors.Is(err, ErrInvalid), errors.Is(err, ErrWrongKey), errors.Is(err, errRetry),
		errors.Is(err, ErrNoSpace):
		return err
	case isNoSpace(err):
		return fmt.Errorf("%s: %w", op, ErrNoSpace)
	case errors.Is(err, badger.ErrReadOnlyTxn):
		// Only a store opened read-only for lack of space refuses writes.
		return fmt.Errorf("%s: store opened read-only: %w", op, ErrNoSpace)
	case errors.Is(err, badger.ErrKeyNotFound):
		return fmt.Errorf("%s: %w", op, ErrNotFound)
	case errors.Is(err, badger.ErrDBClosed), errors.Is(err, badger.ErrBlockedWrites):
		return fmt.Errorf("%s: %w", op, ErrClosed)
	case errors.Is(err, badger.ErrTxnTooBig):
		return fmt.Errorf("%s: batch too big for one transaction: %w (%w)", op, ErrInvalid, errTooBig)
	}
	return mapByMessage(op, err, corruptMarks)
}

// Badger error texts that mean damaged data. openMarks adds texts that only
// mean corruption while opening a store (an unreadable manifest, key
// registry or value log).
var (
	corruptMarks = []string{"checksum", "corrupt", "bad magic", "block out of index",
		"failed to initialize table", "index out of range", "datakey", "encryption key mismatch"}
	openMarks = append([]string{"magic", "unexpected eof", "truncate", "invalid", "manifest",
		"keyregistry", "data key", "file does not exist for table", "while opening", "replay",
		"proto", "unmarshal"}, corruptMarks...)
)

func mapByMessage(op string, err error, marks []string) error {
	if isNoSpace(err) {
		return fmt.Errorf("%s: %w", op, ErrNoSpace)
	}
	msg := strings.ToLower(err.Error())
	if strings.Contains(msg, "cannot acquire directory lock") {
		return fmt.Errorf("%s: %w", op, ErrLocked)
	}
	for _, s := range marks {
		if strings.Contains(msg, s) {
			return fmt.Errorf("%s: %w", op, ErrCorrupt)
		}
	}
	return fmt.Errorf("%s: %w", op, err)
}

// isNoSpace reports a full file system (ENOSPC or EDQUOT), by identity or,
// because Badger formats many causes with %v, by message.
func isNoSpace(err error) bool {
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return true
	}
	msg := err.Error()
	return strings.Contains(msg, syscall.ENOSPC.Error()) || strings.Contains(msg, syscall.EDQUOT.Error())
}

// errTooBig marks a batch that does not fit in one Badger transaction
// (about 15% of a memtable in bytes, Options.Sizes); Write splits such a
// batch.
var errTooBig = errors.New("storage: transaction too big")
