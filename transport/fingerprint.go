package transport

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base32"
	"fmt"
	"slices"
	"strings"
	"sync"
)

// fpEncoding is RFC 4648 base32, lowercase, without padding.
var fpEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// FingerprintLen is the length of a canonical fingerprint.
const FingerprintLen = 52

// Fingerprint returns the canonical printable fingerprint of an Ed25519
// public key: the SHA-256 of the 32 raw key bytes in lowercase base32
// without padding (52 characters). It is what peers pin and what users
// compare out of band. It returns "" for a key of the wrong length.
func Fingerprint(pub ed25519.PublicKey) string {
	if len(pub) != ed25519.PublicKeySize {
		return ""
	}
	sum := sha256.Sum256(pub)
	return fpEncoding.EncodeToString(sum[:])
}

// ParseFingerprint accepts a fingerprint as a user may type it (any case,
// with spaces or dashes between groups) and returns its canonical form. It
// rejects anything that is not the encoding of exactly 32 bytes, including
// encodings with non-zero trailing bits.
func ParseFingerprint(s string) (string, error) {
	norm := strings.Map(func(r rune) rune {
		switch {
		case r == ' ' || r == '-' || r == '\t':
			return -1
		case r >= 'A' && r <= 'Z':
			return r + ('a' - 'A')
		}
		return r
	}, s)
	if len(norm) != FingerprintLen {
		return "", fmt.Errorf("transport: fingerprint has %d characters, want %d", len(norm), FingerprintLen)
	}
	raw, err := fpEncoding.DecodeString(norm)
	if err != nil || len(raw) != sha256.Size {
		return "", fmt.Errorf("transport: malformed fingerprint %q", s)
	}
	if fpEncoding.EncodeToString(raw) != norm {
		return "", fmt.Errorf("transport: non-canonical fingerprint %q", s)
	}
	return norm, nil
}

// Pins decides which peer identities a transport trusts. It is consulted
// during every handshake (TLS) or dial (in-memory), so changes apply to the
// next connection; connections already established are not re-checked (close
// them to revoke). Implementations must be safe for concurrent use and must
// not call back into the transport.
type Pins interface {
	Allowed(pub ed25519.PublicKey) bool
}

// PinFunc adapts a function to Pins.
type PinFunc func(pub ed25519.PublicKey) bool

// Allowed calls f.
func (f PinFunc) Allowed(pub ed25519.PublicKey) bool { return f(pub) }

// PinSet is a concurrency-safe set of pinned fingerprints. The zero value is
// an empty set, ready to use.
type PinSet struct {
	mu sync.RWMutex
	fp map[string]struct{}
}

var _ Pins = (*PinSet)(nil)

// NewPinSet returns a set pinning the given keys.
func NewPinSet(keys ...ed25519.PublicKey) *PinSet {
	s := &PinSet{}
	for _, k := range keys {
		s.Add(k)
	}
	return s
}

// Add pins a key. Keys of the wrong length are ignored.
func (s *PinSet) Add(pub ed25519.PublicKey) {
	if fp := Fingerprint(pub); fp != "" {
		s.add(fp)
	}
}

// AddFingerprint pins a fingerprint given in any form ParseFingerprint accepts.
func (s *PinSet) AddFingerprint(fp string) error {
	canon, err := ParseFingerprint(fp)
	if err != nil {
		return err
	}
	s.add(canon)
	return nil
}

func (s *PinSet) add(fp string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fp == nil {
		s.fp = make(map[string]struct{})
	}
	s.fp[fp] = struct{}{}
}

// Remove unpins a key.
func (s *PinSet) Remove(pub ed25519.PublicKey) {
	fp := Fingerprint(pub)
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.fp, fp)
}

// Allowed reports whether pub's fingerprint is pinned.
func (s *PinSet) Allowed(pub ed25519.PublicKey) bool {
	fp := Fingerprint(pub)
	if fp == "" {
		return false
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	_, ok := s.fp[fp]
	return ok
}

// Fingerprints lists the pinned fingerprints, sorted.
func (s *PinSet) Fingerprints() []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]string, 0, len(s.fp))
	for fp := range s.fp {
		out = append(out, fp)
	}
	slices.Sort(out)
	return out
}
