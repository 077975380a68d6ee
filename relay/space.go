package relay

import (
	"cmp"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/binary"
	"fmt"
	"slices"
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
//
// Key is the space's first key (epoch 0): the ID derives from it and never
// changes. Removing a member rotates the key: Epochs holds the later keys,
// epoch ascending (1, 2, ...), each sealed at the relay to the members of
// its time only (see NewEpochRecord). Bundles are sealed under the newest
// key and opened under the key of the epoch they name.
type Space struct {
	ID       string
	Key      [SpaceKeySize]byte
	RelayURL string
	Epochs   []EpochKey
}

// EpochKey is the space key of one key epoch (>= 1).
type EpochKey struct {
	Epoch uint64
	Key   [SpaceKeySize]byte
}

// MaxEpochs bounds the key epochs a space keeps (the relay keeps as many
// records, a Space as many keys).
const MaxEpochs = 64

// Epoch is the space's current key epoch: 0 until the first rotation.
func (s Space) Epoch() uint64 {
	if len(s.Epochs) == 0 {
		return 0
	}
	return s.Epochs[len(s.Epochs)-1].Epoch
}

// current is the key bundles are sealed under now, with its epoch.
func (s Space) current() (uint64, [SpaceKeySize]byte) {
	if len(s.Epochs) == 0 {
		return 0, s.Key
	}
	e := s.Epochs[len(s.Epochs)-1]
	return e.Epoch, e.Key
}

// keyFor is the key of epoch e, if this space holds it.
func (s Space) keyFor(e uint64) ([SpaceKeySize]byte, bool) {
	if e == 0 {
		return s.Key, true
	}
	for _, k := range s.Epochs {
		if k.Epoch == e {
			return k.Key, true
		}
	}
	return [SpaceKeySize]byte{}, false
}

// WithEpoch returns a copy of s that also holds key epoch k (an epoch it
// already holds is kept as is; epochs stay ascending, at most MaxEpochs,
// the oldest dropped first).
func (s Space) WithEpoch(k EpochKey) Space {
	out := s
	out.Epochs = slices.Clone(s.Epochs)
	if k.Epoch == 0 {
		return out
	}
	if _, ok := s.keyFor(k.Epoch); ok {
		return out
	}
	out.Epochs = append(out.Epochs, k)
	slices.SortFunc(out.Epochs, func(a, b EpochKey) int { return cmp.Compare(a.Epoch, b.Epoch) })
	if len(out.Epochs) > MaxEpochs {
		out.Epochs = out.Epochs[len(out.Epochs)-MaxEpochs:]
	}
	return out
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

// bundleKey is the AEAD key for bundles of one epoch's key:
// HKDF-SHA256(key, info).
func aeadKey(key [SpaceKeySize]byte) []byte {
	k, err := hkdf.Key(sha256.New, key[:], nil, "ferry-relay-bundle-key-v1", 32)
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
	spaceBinVersion  = 1 // no key epochs
	spaceBinVersion2 = 2 // with key epochs
	maxURLLen        = 2048
)

// MarshalBinary encodes the space (keys included) for the caller to store
// sealed: version 1 | 32-byte key | u16 URL length | URL, and for a space
// with key epochs version 2 with, after the URL, u16 count | count ×
// (u64 epoch | 32-byte key).
func (s Space) MarshalBinary() ([]byte, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	if len(s.RelayURL) > maxURLLen {
		return nil, invalidf("relay URL longer than %d bytes", maxURLLen)
	}
	if len(s.Epochs) > MaxEpochs {
		return nil, invalidf("%d key epochs, at most %d", len(s.Epochs), MaxEpochs)
	}
	b := make([]byte, 0, 1+SpaceKeySize+2+len(s.RelayURL)+2+40*len(s.Epochs))
	if len(s.Epochs) == 0 {
		b = append(b, spaceBinVersion)
	} else {
		b = append(b, spaceBinVersion2)
	}
	b = append(b, s.Key[:]...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(s.RelayURL)))
	b = append(b, s.RelayURL...)
	if len(s.Epochs) == 0 {
		return b, nil
	}
	b = binary.BigEndian.AppendUint16(b, uint16(len(s.Epochs)))
	for _, e := range s.Epochs {
		b = binary.BigEndian.AppendUint64(b, e.Epoch)
		b = append(b, e.Key[:]...)
	}
	return b, nil
}

// UnmarshalBinary decodes what MarshalBinary produced.
func (s *Space) UnmarshalBinary(b []byte) error {
	if len(b) < 1+SpaceKeySize+2 || (b[0] != spaceBinVersion && b[0] != spaceBinVersion2) {
		return invalidf("malformed space encoding")
	}
	var k [SpaceKeySize]byte
	copy(k[:], b[1:])
	n := int(binary.BigEndian.Uint16(b[1+SpaceKeySize:]))
	rest := b[1+SpaceKeySize+2:]
	if len(rest) < n || n > maxURLLen || strings.ContainsAny(string(rest[:n]), "\x00\r\n") {
		return invalidf("malformed space encoding")
	}
	url, rest := string(rest[:n]), rest[n:]
	out := SpaceFromKey(k, url)
	if b[0] == spaceBinVersion {
		if len(rest) != 0 {
			return invalidf("malformed space encoding")
		}
		*s = out
		return nil
	}
	if len(rest) < 2 {
		return invalidf("malformed space encoding")
	}
	c := int(binary.BigEndian.Uint16(rest))
	rest = rest[2:]
	if c == 0 || c > MaxEpochs || len(rest) != c*(8+SpaceKeySize) {
		return invalidf("malformed space encoding")
	}
	for i := range c {
		e := EpochKey{Epoch: binary.BigEndian.Uint64(rest[i*40:])}
		copy(e.Key[:], rest[i*40+8:])
		if e.Epoch == 0 || (i > 0 && e.Epoch <= out.Epochs[i-1].Epoch) {
			return invalidf("malformed space encoding")
		}
		out.Epochs = append(out.Epochs, e)
	}
	*s = out
	return nil
}
