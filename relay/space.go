package relay

import (
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/binary"
	"fmt"
	"strings"
)

// SpaceKeySize is the size of a space key.
const SpaceKeySize = 32

// SpaceIDLen is the length of a space ID.
const SpaceIDLen = 26

// idEncoding is RFC 4648 base32, lowercase, without padding.
var idEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// Space is one user's set of devices sharing data through a relay. Key is
// held only by member devices and never sent to the relay; ID is derived
// from it and is all the relay sees. Store a Space sealed (MarshalBinary).
//
// String and GoString never print the key, so a Space can be logged.
type Space struct {
	ID       string
	Key      [SpaceKeySize]byte
	RelayURL string
}

// NewSpace returns a space with a fresh random key.
func NewSpace(relayURL string) (Space, error) {
	var k [SpaceKeySize]byte
	if _, err := rand.Read(k[:]); err != nil {
		return Space{}, fmt.Errorf("relay: space key: %w", err)
	}
	return SpaceFromKey(k, relayURL), nil
}

// SpaceFromKey returns the space of an existing key.
func SpaceFromKey(key [SpaceKeySize]byte, relayURL string) Space {
	return Space{ID: SpaceID(key), Key: key, RelayURL: relayURL}
}

// SpaceID derives the opaque ID the relay knows a space by:
// base32(HMAC-SHA256(key, "ferry-relay-space-id"))[:26], 130 bits.
func SpaceID(key [SpaceKeySize]byte) string {
	m := hmac.New(sha256.New, key[:])
	m.Write([]byte("ferry-relay-space-id"))
	return idEncoding.EncodeToString(m.Sum(nil))[:SpaceIDLen]
}

// String names the space without its key.
func (s Space) String() string { return "relay space " + s.ID + " at " + s.RelayURL }

// GoString names the space without its key.
func (s Space) GoString() string {
	return fmt.Sprintf("relay.Space{ID: %q, RelayURL: %q}", s.ID, s.RelayURL)
}

// check verifies that the ID is the one derived from the key.
func (s Space) check() error {
	if s.ID != SpaceID(s.Key) {
		return invalidf("space ID %q does not match its key", s.ID)
	}
	return nil
}

// bundleKey is the AEAD key for bundles: HKDF-SHA256(key, info).
func (s Space) bundleKey() []byte {
	k, err := hkdf.Key(sha256.New, s.Key[:], nil, "ferry-relay-bundle-key-v1", 32)
	if err != nil {
		panic(err) // only for lengths HKDF cannot produce
	}
	return k
}

// validSpaceID reports whether s has the form of a space ID.
func validSpaceID(s string) bool {
	if len(s) != SpaceIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '2' && c <= '7') {
			return false
		}
	}
	return true
}

const (
	spaceBinVersion = 1
	maxURLLen       = 2048
)

// MarshalBinary encodes the space (key included) for the caller to store
// sealed: version 1 | 32-byte key | u16 URL length | URL.
func (s Space) MarshalBinary() ([]byte, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	if len(s.RelayURL) > maxURLLen {
		return nil, invalidf("relay URL longer than %d bytes", maxURLLen)
	}
	b := make([]byte, 0, 1+SpaceKeySize+2+len(s.RelayURL))
	b = append(b, spaceBinVersion)
	b = append(b, s.Key[:]...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(s.RelayURL)))
	return append(b, s.RelayURL...), nil
}

// UnmarshalBinary decodes what MarshalBinary produced.
func (s *Space) UnmarshalBinary(b []byte) error {
	if len(b) < 1+SpaceKeySize+2 || b[0] != spaceBinVersion {
		return invalidf("malformed space encoding")
	}
	var k [SpaceKeySize]byte
	copy(k[:], b[1:])
	n := int(binary.BigEndian.Uint16(b[1+SpaceKeySize:]))
	rest := b[1+SpaceKeySize+2:]
	if len(rest) != n || n > maxURLLen || strings.ContainsAny(string(rest), "\x00\r\n") {
		return invalidf("malformed space encoding")
	}
	*s = SpaceFromKey(k, string(rest))
	return nil
}
