package relay

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"slices"
)

// Members is a space's member list: the Ed25519 keys allowed to push and
// pull, at a version that grows by one with each update.
type Members struct {
	Space   string
	Version uint64
	Keys    []ed25519.PublicKey
}

// Has reports whether pub is in the list.
func (m Members) Has(pub ed25519.PublicKey) bool {
	return slices.ContainsFunc(m.Keys, func(k ed25519.PublicKey) bool { return bytes.Equal(k, pub) })
}

// SignedMembers is a member list signed by one key: for a new space, a key
// of the list; for an update, a member of the current list.
type SignedMembers struct {
	Members
	Signer ed25519.PublicKey
	raw    []byte // the encoded list that was signed
	sig    []byte
}

// wireMembers is the signed part. Keys are sorted and unique.
type wireMembers struct {
	Space   string   `cbor:"1,keyasint"`
	Version uint64   `cbor:"2,keyasint"`
	Keys    [][]byte `cbor:"3,keyasint"`
}

// wireSigned carries the encoded list, the signer and the signature.
type wireSigned struct {
	List   []byte `cbor:"1,keyasint"`
	Signer []byte `cbor:"2,keyasint"`
	Sig    []byte `cbor:"3,keyasint"`
}

const membersLabel = "ferry-relay-members-v1"

// normalize sorts and checks a member list.
func (m Members) normalize() (Members, error) {
	if !validSpaceID(m.Space) {
		return m, errors.New("bad space ID")
	}
	if m.Version == 0 {
		return m, errors.New("version 0")
	}
	if len(m.Keys) == 0 || len(m.Keys) > MaxMembers {
		return m, fmt.Errorf("%d keys, want 1..%d", len(m.Keys), MaxMembers)
	}
	keys := make([]ed25519.PublicKey, 0, len(m.Keys))
	for _, k := range m.Keys {
		if len(k) != ed25519.PublicKeySize {
			return m, fmt.Errorf("key of %d bytes", len(k))
		}
		keys = append(keys, append(ed25519.PublicKey(nil), k...))
	}
	slices.SortFunc(keys, func(a, b ed25519.PublicKey) int { return bytes.Compare(a, b) })
	keys = slices.CompactFunc(keys, func(a, b ed25519.PublicKey) bool { return bytes.Equal(a, b) })
	m.Keys = keys
	return m, nil
}

// signMembers encodes and signs a member list.
func signMembers(m Members, signer ed25519.PrivateKey) ([]byte, error) {
	m, err := m.normalize()
	if err != nil {
		return nil, invalidf("member list: %s", err)
	}
	w := wireMembers{Space: m.Space, Version: m.Version}
	for _, k := range m.Keys {
		w.Keys = append(w.Keys, k)
	}
	list := marshal(w)
	sig := ed25519.Sign(signer, append([]byte(membersLabel), list...))
	return marshal(wireSigned{List: list, Signer: signer.Public().(ed25519.PublicKey), Sig: sig}), nil
}

// DecodeMembers decodes a signed member list and checks its form and its
// signature (not whether the signer was entitled to sign it: that depends
// on the previous list).
func DecodeMembers(b []byte) (SignedMembers, error) {
	var s wireSigned
	if len(b) > maxMembersBody {
		return SignedMembers{}, fmt.Errorf("%w: member list of %d bytes", ErrProtocol, len(b))
	}
	if err := wireDec.Unmarshal(b, &s); err != nil {
		return SignedMembers{}, fmt.Errorf("%w: member list: %w", ErrProtocol, err)
	}
	if len(s.Signer) != ed25519.PublicKeySize || len(s.Sig) != ed25519.SignatureSize {
		return SignedMembers{}, fmt.Errorf("%w: member list: malformed signer or signature", ErrProtocol)
	}
	if !ed25519.Verify(s.Signer, append([]byte(membersLabel), s.List...), s.Sig) {
		return SignedMembers{}, fmt.Errorf("%w: member list: bad signature", ErrProtocol)
	}
	var w wireMembers
	if err := wireDec.Unmarshal(s.List, &w); err != nil {
		return SignedMembers{}, fmt.Errorf("%w: member list: %w", ErrProtocol, err)
	}
	m := Members{Space: w.Space, Version: w.Version}
	for _, k := range w.Keys {
		m.Keys = append(m.Keys, ed25519.PublicKey(k))
	}
	n, err := m.normalize()
	if err != nil {
		return SignedMembers{}, fmt.Errorf("%w: member list: %s", ErrProtocol, err)
	}
	// Canonical: sorted, unique, as signed.
	if len(n.Keys) != len(m.Keys) || !slices.EqualFunc(n.Keys, m.Keys, func(a, b ed25519.PublicKey) bool { return bytes.Equal(a, b) }) {
		return SignedMembers{}, fmt.Errorf("%w: member list: keys not sorted and unique", ErrProtocol)
	}
	return SignedMembers{Members: n, Signer: ed25519.PublicKey(s.Signer), raw: s.List, sig: s.Sig}, nil
}
