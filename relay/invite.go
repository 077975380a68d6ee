package relay

import (
	"bytes"
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/sha256"
	"fmt"
	"io"
	"strings"

	"filippo.io/age"
)

// An invitation carries a space (key, ID, relay URL, and the key epochs
// the inviter holds) to a new device,
// encrypted with age to the device's X25519 recipient, so it can travel
// through any channel (QR code, message, the relay itself): only that
// device can open it. The plaintext is CBOR (wireInvitation).

// Invitation is an opened invitation.
type Invitation struct {
	Space Space
	// Start is where the new device begins reading each sender's bundles
	// (the inviter's applied counters when it invited). Bundles at or
	// below these counters may already be compacted; the inviter's state,
	// which includes them, reaches the new device through later bundles.
	Start []Position
}

type wireInvitation struct {
	Version  uint64         `cbor:"1,keyasint"`
	Key      []byte         `cbor:"2,keyasint"`
	Space    string         `cbor:"3,keyasint"`
	RelayURL string         `cbor:"4,keyasint"`
	Start    []wirePosition `cbor:"5,keyasint"`
	Epochs   []wireEpochKey `cbor:"6,keyasint,omitempty"`
}

type wireEpochKey struct {
	Epoch uint64 `cbor:"1,keyasint"`
	Key   []byte `cbor:"2,keyasint"`
}

type wirePosition struct {
	Sender  []byte `cbor:"1,keyasint"`
	Counter uint64 `cbor:"2,keyasint"`
}

const (
	invitationVersion = 1
	maxInvitation     = 64 << 10 // sealed or opened
)

// Invite seals space for the device whose age X25519 recipient is to.
// start (optional) is the inviter's Verifier.Positions(), taken after the
// new device was added to the members, so the new device does not wait for
// bundles the relay may have compacted.
func Invite(space Space, to *age.X25519Recipient, start ...Position) ([]byte, error) {
	if err := space.check(); err != nil {
		return nil, err
	}
	if to == nil {
		return nil, invalidf("nil recipient")
	}
	if len(space.RelayURL) > maxURLLen || len(start) > MaxMembers*4 {
		return nil, invalidf("invitation too large")
	}
	w := wireInvitation{Version: invitationVersion, Key: space.Key[:], Space: space.ID, RelayURL: space.RelayURL}
	if len(space.Epochs) > MaxEpochs {
		return nil, invalidf("%d key epochs", len(space.Epochs))
	}
	for _, e := range space.Epochs {
		w.Epochs = append(w.Epochs, wireEpochKey{Epoch: e.Epoch, Key: e.Key[:]})
	}
	for _, p := range start {
		if len(p.Sender) != ed25519.PublicKeySize {
			return nil, invalidf("start position with a %d-byte sender", len(p.Sender))
		}
		w.Start = append(w.Start, wirePosition{Sender: p.Sender, Counter: p.Counter})
	}
	var buf bytes.Buffer
	wc, err := age.Encrypt(&buf, to)
	if err != nil {
		return nil, fmt.Errorf("relay: invite: %w", err)
	}
	if _, err := wc.Write(marshal(w)); err != nil {
		return nil, fmt.Errorf("relay: invite: %w", err)
	}
	if err := wc.Close(); err != nil {
		return nil, fmt.Errorf("relay: invite: %w", err)
	}
	return buf.Bytes(), nil
}

// AcceptInvitation opens an invitation with the device's age identity.
// Every failure wraps ErrInvitation.
func AcceptInvitation(sealed []byte, id *age.X25519Identity) (Invitation, error) {
	if id == nil {
		return Invitation{}, invalidf("nil identity")
	}
	if len(sealed) > maxInvitation {
		return Invitation{}, fmt.Errorf("%w: %d bytes", ErrInvitation, len(sealed))
	}
	r, err := age.Decrypt(bytes.NewReader(sealed), id)
	if err != nil {
		return Invitation{}, fmt.Errorf("%w: %w", ErrInvitation, err)
	}
	pt, err := io.ReadAll(io.LimitReader(r, maxInvitation+1))
	if err != nil {
		return Invitation{}, fmt.Errorf("%w: %w", ErrInvitation, err)
	}
	return decodeInvitation(pt)
}

func decodeInvitation(pt []byte) (Invitation, error) {
	if len(pt) > maxInvitation {
		return Invitation{}, fmt.Errorf("%w: too large", ErrInvitation)
	}
	var w wireInvitation
	if err := wireDec.Unmarshal(pt, &w); err != nil {
		return Invitation{}, fmt.Errorf("%w: %w", ErrInvitation, err)
	}
	if w.Version != invitationVersion || len(w.Key) != SpaceKeySize || len(w.RelayURL) > maxURLLen ||
		strings.ContainsAny(w.RelayURL, "\x00\r\n") || len(w.Start) > MaxMembers*4 {
		return Invitation{}, fmt.Errorf("%w: malformed", ErrInvitation)
	}
	var k [SpaceKeySize]byte
	copy(k[:], w.Key)
	inv := Invitation{Space: SpaceFromKey(k, w.RelayURL)}
	if inv.Space.ID != w.Space {
		return Invitation{}, fmt.Errorf("%w: space ID does not match the key", ErrInvitation)
	}
	if len(w.Epochs) > MaxEpochs {
		return Invitation{}, fmt.Errorf("%w: malformed", ErrInvitation)
	}
	for i, e := range w.Epochs {
		if e.Epoch == 0 || len(e.Key) != SpaceKeySize || (i > 0 && e.Epoch <= w.Epochs[i-1].Epoch) {
			return Invitation{}, fmt.Errorf("%w: malformed key epoch", ErrInvitation)
		}
		ek := EpochKey{Epoch: e.Epoch}
		copy(ek.Key[:], e.Key)
		inv.Space.Epochs = append(inv.Space.Epochs, ek)
	}
	for _, p := range w.Start {
		if len(p.Sender) != ed25519.PublicKeySize {
			return Invitation{}, fmt.Errorf("%w: malformed start position", ErrInvitation)
		}
		inv.Start = append(inv.Start, Position{Sender: ed25519.PublicKey(p.Sender), Counter: p.Counter})
	}
	return inv, nil
}

// NewInviteIdentity returns a random age X25519 identity for a device.
// Store id.String() sealed; give id.Recipient().String() ("age1...") to
// the inviter.
func NewInviteIdentity() (*age.X25519Identity, error) {
	return age.GenerateX25519Identity()
}

// DeriveInviteIdentity derives a device's age X25519 identity from its
// Ed25519 identity (HKDF-SHA256 of the seed, label
// "ferry-relay-invite-x25519-v1"), so a device that keeps its Ed25519 key
// has nothing more to store. The result opens with the standard age tool
// too (id.String() is an AGE-SECRET-KEY-1... string).
func DeriveInviteIdentity(identity ed25519.PrivateKey) (*age.X25519Identity, error) {
	if len(identity) != ed25519.PrivateKeySize {
		return nil, invalidf("identity has %d bytes, want %d", len(identity), ed25519.PrivateKeySize)
	}
	scalar, err := hkdf.Key(sha256.New, identity.Seed(), nil, "ferry-relay-invite-x25519-v1", 32)
	if err != nil {
		return nil, fmt.Errorf("relay: derive invite identity: %w", err)
	}
	return age.ParseX25519Identity(strings.ToUpper(bech32Encode("age-secret-key-", scalar)))
}

// ParseInviteRecipient parses a device's "age1..." recipient string.
func ParseInviteRecipient(s string) (*age.X25519Recipient, error) {
	r, err := age.ParseX25519Recipient(s)
	if err != nil {
		return nil, invalidf("recipient: %s", err)
	}
	return r, nil
}

// ParseInviteIdentity parses a stored "AGE-SECRET-KEY-1..." identity.
func ParseInviteIdentity(s string) (*age.X25519Identity, error) {
	id, err := age.ParseX25519Identity(s)
	if err != nil {
		return nil, invalidf("identity: malformed")
	}
	return id, nil
}

// bech32Encode is BIP-173 bech32 (the checksum constant 1), as age uses.
func bech32Encode(hrp string, data []byte) string {
	const charset = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
	var values []byte
	acc, bits := 0, 0
	for _, b := range data {
		acc = acc<<8 | int(b)
		bits += 8
		for bits >= 5 {
			bits -= 5
			values = append(values, byte(acc>>bits&31))
		}
	}
	if bits > 0 {
		values = append(values, byte(acc<<(5-bits)&31))
	}
	exp := make([]byte, 0, 2*len(hrp)+1+len(values)+6)
	for i := 0; i < len(hrp); i++ {
		exp = append(exp, hrp[i]>>5)
	}
	exp = append(exp, 0)
	for i := 0; i < len(hrp); i++ {
		exp = append(exp, hrp[i]&31)
	}
	exp = append(exp, values...)
	exp = append(exp, 0, 0, 0, 0, 0, 0)
	chk := uint32(1)
	gen := [5]uint32{0x3b6a57b2, 0x26508e6d, 0x1ea119fa, 0x3d4233dd, 0x2a1462b3}
	for _, v := range exp {
		top := chk >> 25
		chk = (chk&0x1ffffff)<<5 ^ uint32(v)
		for i := range 5 {
			if top>>i&1 == 1 {
				chk ^= gen[i]
			}
		}
	}
	chk ^= 1
	var sb strings.Builder
	sb.WriteString(hrp)
	sb.WriteByte('1')
	for _, v := range values {
		sb.WriteByte(charset[v])
	}
	for i := range 6 {
		sb.WriteByte(charset[chk>>(5*(5-i))&31])
	}
	return sb.String()
}
