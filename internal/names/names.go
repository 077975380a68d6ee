package names

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// MaxLen is the longest collection name or record id, in bytes of UTF-8.
// It is also what a store and a sync frame can carry.
const MaxLen = 1024

// Check reports whether s is a valid collection name or record id: valid
// UTF-8 of 1 to MaxLen bytes holding no control character (Unicode
// category Cc: U+0000 to U+001F, U+007F to U+009F). Everything else is
// allowed and significant: spaces anywhere, punctuation, '/', ':', emoji,
// every script. Names are compared byte for byte (no Unicode
// normalisation, no case folding). what names the argument in the error
// ("collection", "record id"). The error carries no sentinel: callers wrap
// it with their own ErrInvalid.
func Check(what, s string) error {
	switch {
	case s == "":
		return fmt.Errorf("%s is empty", what)
	case len(s) > MaxLen:
		return fmt.Errorf("%s is %d bytes long, more than %d", what, len(s), MaxLen)
	}
	for i, r := range s {
		if r == utf8.RuneError {
			if _, n := utf8.DecodeRuneInString(s[i:]); n == 1 {
				return fmt.Errorf("%s %s is not valid UTF-8 (byte %d)", what, quote(s), i)
			}
		}
		if unicode.IsControl(r) {
			return fmt.Errorf("%s %s holds the control character %U at byte %d", what, quote(s), r, i)
		}
	}
	return nil
}

// Fits reports whether s is a name a store can hold, valid or not: 1 to
// MaxLen bytes. Stores written before the rule of Check may hold names it
// refuses; readers accept those so that nothing stored becomes
// unreachable.
func Fits(s string) bool { return s != "" && len(s) <= MaxLen }

// quote renders a name for an error message on one line, shortened.
func quote(s string) string {
	const show = 64
	if len(s) > show {
		cut := show
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		return fmt.Sprintf("%+q…", s[:cut])
	}
	return fmt.Sprintf("%+q", s)
}

// RecordKey is the key of one record wherever a single string must name
// it: caches, lock stripes, per-peer slots. It is injective over all
// strings: distinct (collection, id) pairs give distinct keys, whatever
// bytes they hold.
//
// For a collection without NUL (every valid one) it is
// collection + "\x00" + id, the form stores written before this package
// already hold, so their slots stay readable. A collection holding a NUL
// (never valid, so never stored by a replica) takes a NUL-free form,
// "\xff" + hex(Key(collection, id)), that no key of the first form equals:
// every key of the first form holds a NUL.
func RecordKey(collection, id string) string {
	if strings.IndexByte(collection, 0) < 0 {
		return collection + "\x00" + id
	}
	return "\xff" + hex.EncodeToString([]byte(Key(collection, id)))
}

// Key joins parts into one string that no other sequence of parts gives:
// each part is written as its length (unsigned varint) and its bytes.
func Key(parts ...string) string {
	n := 0
	for _, p := range parts {
		n += binary.MaxVarintLen64 + len(p)
	}
	b := make([]byte, 0, n)
	for _, p := range parts {
		b = binary.AppendUvarint(b, uint64(len(p)))
		b = append(b, p...)
	}
	return string(b)
}
