package storage

import (
	"errors"
	"fmt"
	"strings"
	"syscall"

	"github.com/dgraph-io/badger/v4"
	"github.com/ferrysync/ferry/errkind"
)

// Sentinel errors. Every error returned by this package that has one of these
// causes wraps it, so errors.Is works; the wrapping adds short context only.
// Each but ErrClosed also belongs to a kind of package errkind
// (errors.Is(ErrNoStore, errkind.NotFound)).
var (
	// ErrWrongKey: the passphrase or raw key does not unlock the store, or
	// the passphrase or identities given to Import do not open the backup.
	// (age cannot tell a wrong backup passphrase from a damaged passphrase
	// stanza in the backup's header: that damage is reported as this too.)
	ErrWrongKey = errkind.New("storage: wrong passphrase or key", errkind.WrongKey)
	// ErrCorrupt: a stored value or file failed authentication or decoding.
	// It deliberately says nothing about which byte or which check failed.
	ErrCorrupt = errkind.New("storage: corrupt or tampered data", errkind.Corrupt)
	// ErrNotFound: no such record, slot or log.
	ErrNotFound = errkind.New("storage: not found", errkind.NotFound)
	// ErrClosed: the store has been closed.
	ErrClosed = errors.New("storage: store closed")
	// ErrLocked: the directory is open in another process (or another Store).
	ErrLocked = errkind.New("storage: store is locked by another process", errkind.Forbidden)
	// ErrExists: Create found an existing store in the directory.
	ErrExists = errkind.New("storage: store already exists", errkind.Forbidden)
	// ErrNoStore: Open found no store in the directory.
	ErrNoStore = errkind.New("storage: no store in directory", errkind.NotFound)
	// ErrBadBackup: a backup is truncated or tampered with (a wrong
	// passphrase or identity is ErrWrongKey). Nothing was written to the store.
	ErrBadBackup = errkind.New("storage: bad backup", errkind.Corrupt)

	// ErrInvalid: the caller passed invalid arguments (empty or oversized
	// names, a batch too big for one transaction, inconsistent options).
	ErrInvalid = errkind.New("storage: invalid argument", errkind.Invalid)
	// ErrNoSpace: the file system holding the store has too little free
	// space for Badger to write safely (see docs/storage.md, "Disk space").
	// Nothing acknowledged is lost; free space and retry.
	ErrNoSpace = errkind.New("storage: no space left on device", errkind.NoSpace)
)

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
		return fmt.Errorf("%s: batch too big for one transaction: %w", op, ErrInvalid)
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
