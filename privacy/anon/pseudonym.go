package anon

import (
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base32"
	"fmt"
	"time"
)

// MinSecret is the shortest device secret New accepts (bytes).
const MinSecret = 32

// TokenBytes is how many bytes of the HMAC a pseudonym keeps (80 bits,
// written as 16 lowercase base32 characters).
const TokenBytes = 10

var tokenEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// pseudonymKey derives the HMAC key of one purpose and epoch:
// HKDF-SHA256(secret, salt = none, info = "ferry-pseudonym/"+purpose+"/"+epoch).
// Labels exclude "/", so the info string has one parse.
func pseudonymKey(secret []byte, purpose, epoch string) ([]byte, error) {
	return hkdf.Key(sha256.New, secret, nil, "ferry-pseudonym/"+purpose+"/"+epoch, 32)
}

// token is the pseudonym of a normalized scalar: the first TokenBytes of
// HMAC-SHA256(key, canonical CBOR of the value), so "5" and 5 differ.
func token(key []byte, v any) string {
	m := hmac.New(sha256.New, key)
	m.Write(canonical(v))
	return tokenEncoding.EncodeToString(m.Sum(nil)[:TokenBytes])
}

// Period is how long a pseudonym epoch lasts.
type Period string

// Epoch periods, in UTC.
const (
	Daily     Period = "day"     // "2026-11-05"
	Weekly    Period = "week"    // ISO week, "2026-W45"
	Monthly   Period = "month"   // "2026-11"
	Quarterly Period = "quarter" // "2026-Q4"
	Yearly    Period = "year"    // "2026"
)

// EpochFor returns the label of the epoch of period p that holds t (in
// UTC). Pseudonyms are stable within an epoch and unlinkable across epochs.
// An unknown period is an error wrapping ErrBadEpoch.
func EpochFor(t time.Time, p Period) (string, error) {
	t = t.UTC()
	switch p {
	case Daily:
		return t.Format("2006-01-02"), nil
	case Weekly:
		y, w := t.ISOWeek()
		return fmt.Sprintf("%04d-W%02d", y, w), nil
	case Monthly:
		return t.Format("2006-01"), nil
	case Quarterly:
		return fmt.Sprintf("%04d-Q%d", t.Year(), (int(t.Month())+2)/3), nil
	case Yearly:
		return t.Format("2006"), nil
	}
	return "", fmt.Errorf("%w: unknown period %q", ErrBadEpoch, p)
}
