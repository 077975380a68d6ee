package relay

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha512"
	"fmt"
	"io"
	"math/big"
	"slices"
	"strings"

	"filippo.io/age"
)

// Key epochs. Removing a member rotates the space key: a member draws a
// new random key, seals it with age to every remaining member (and to no
// one else) and posts the sealed record, signed, to the relay (PutEpoch).
// The others fetch the records (Epochs), open the ones sealed to them and
// seal their next bundles under the new key; a removed device, even one
// the relay serves everything, cannot open the record and so no bundle
// sealed after it.
//
// Members are sealed to by their Ed25519 keys, which every member already
// knows from the member list: each key maps to an X25519 recipient (the
// Montgomery form of the Edwards point, as age's ssh-ed25519 recipients
// and libsodium do), and the device opens with the X25519 scalar of its
// Ed25519 seed. No other key needs distributing.
//
// Record (CBOR, signed like a member list, label "ferry-relay-epoch-v1"):
//
//	{1: space ID, 2: epoch, 3: age ciphertext of the 32-byte key,
//	 4: [{1: removed key, 2: last counter accepted from it}]}

// EpochRecord is a decoded key-epoch record.
type EpochRecord struct {
	Space string
	Epoch uint64
	// Signer is the member who rotated the key.
	Signer ed25519.PublicKey
	// Removed lists the keys removed at this epoch, each with the last of
	// its counters the rotating member accepted: later bundles from it are
	// forgeries (it still holds the older keys) and are refused.
	Removed []Position
	// Key is the epoch's key, set only when the record was sealed to the
	// device that opened it.
	Key    [SpaceKeySize]byte
	HasKey bool
}

type wireEpoch struct {
	Space   string         `cbor:"1,keyasint"`
	Epoch   uint64         `cbor:"2,keyasint"`
	Sealed  []byte         `cbor:"3,keyasint"`
	Removed []wirePosition `cbor:"4,keyasint,omitempty"`
}

const (
	epochLabel = "ferry-relay-epoch-v1"
	// maxEpochRecord bounds one signed record: 64 age stanzas of about
	// 200 bytes each, and the removed keys.
	maxEpochRecord = 32 << 10
	// maxEpochsBody bounds the answer listing a space's records.
	maxEpochsBody = MaxEpochs*maxEpochRecord + 4096
)

// NewEpochRecord seals key (the key of epoch, which must be the space's
// next epoch) to members and signs the record with signer. removed names
// the keys this rotation excludes. members must not include a removed key.
func NewEpochRecord(space Space, signer ed25519.PrivateKey, epoch uint64, key [SpaceKeySize]byte,
	members []ed25519.PublicKey, removed []Position) ([]byte, error) {
	if err := space.check(); err != nil {
		return nil, err
	}
	if len(signer) != ed25519.PrivateKeySize {
		return nil, invalidf("signer key has %d bytes", len(signer))
	}
	if epoch == 0 {
		return nil, invalidf("epoch 0 is the space's first key")
	}
	if len(members) == 0 || len(members) > MaxMembers || len(removed) > MaxMembers {
		return nil, invalidf("%d members and %d removed keys", len(members), len(removed))
	}
	var rs []age.Recipient
	for _, m := range members {
		if slices.ContainsFunc(removed, func(p Position) bool { return p.Sender.Equal(m) }) {
			return nil, invalidf("key %s is both a member and removed", fingerprint(m))
		}
		r, err := epochRecipient(m)
		if err != nil {
			return nil, err
		}
		rs = append(rs, r)
	}
	var buf bytes.Buffer
	wc, err := age.Encrypt(&buf, rs...)
	if err != nil {
		return nil, fmt.Errorf("relay: epoch record: %w", err)
	}
	if _, err := wc.Write(key[:]); err != nil {
		return nil, fmt.Errorf("relay: epoch record: %w", err)
	}
	if err := wc.Close(); err != nil {
		return nil, fmt.Errorf("relay: epoch record: %w", err)
	}
	w := wireEpoch{Space: space.ID, Epoch: epoch, Sealed: buf.Bytes()}
	for _, p := range removed {
		if len(p.Sender) != ed25519.PublicKeySize {
			return nil, invalidf("removed key of %d bytes", len(p.Sender))
		}
		w.Removed = append(w.Removed, wirePosition{Sender: p.Sender, Counter: p.Counter})
	}
	rec := marshal(w)
	sig := ed25519.Sign(signer, append([]byte(epochLabel), rec...))
	out := marshal(wireSigned{List: rec, Signer: signer.Public().(ed25519.PublicKey), Sig: sig})
	if len(out) > maxEpochRecord {
		return nil, invalidf("epoch record of %d bytes exceeds %d", len(out), maxEpochRecord)
	}
	return out, nil
}

// DecodeEpochRecord checks a record's form and signature (not whether the
// signer was a member: the caller knows the member list) without opening
// the key. Failures wrap ErrTampered.
func DecodeEpochRecord(raw []byte) (EpochRecord, []byte, error) {
	var s wireSigned
	if len(raw) > maxEpochRecord {
		return EpochRecord{}, nil, fmt.Errorf("%w: epoch record of %d bytes", ErrTampered, len(raw))
	}
	if err := wireDec.Unmarshal(raw, &s); err != nil {
		return EpochRecord{}, nil, fmt.Errorf("%w: epoch record: %w", ErrTampered, err)
	}
	if len(s.Signer) != ed25519.PublicKeySize || len(s.Sig) != ed25519.SignatureSize ||
		!ed25519.Verify(s.Signer, append([]byte(epochLabel), s.List...), s.Sig) {
		return EpochRecord{}, nil, fmt.Errorf("%w: epoch record: bad signature", ErrTampered)
	}
	var w wireEpoch
	if err := wireDec.Unmarshal(s.List, &w); err != nil {
		return EpochRecord{}, nil, fmt.Errorf("%w: epoch record: %w", ErrTampered, err)
	}
	if !validSpaceID(w.Space) || w.Epoch == 0 || len(w.Sealed) == 0 || len(w.Removed) > MaxMembers {
		return EpochRecord{}, nil, fmt.Errorf("%w: malformed epoch record", ErrTampered)
	}
	r := EpochRecord{Space: w.Space, Epoch: w.Epoch, Signer: ed25519.PublicKey(s.Signer)}
	for _, p := range w.Removed {
		if len(p.Sender) != ed25519.PublicKeySize {
			return EpochRecord{}, nil, fmt.Errorf("%w: malformed epoch record", ErrTampered)
		}
		r.Removed = append(r.Removed, Position{Sender: ed25519.PublicKey(p.Sender), Counter: p.Counter})
	}
	return r, w.Sealed, nil
}

// OpenEpochRecord decodes a record of space and opens its key with the
// device's identity. A record for another space is ErrTampered; one not
// sealed to this device returns the record (Removed says whether this
// device was excluded) with an error wrapping ErrNoKey.
func OpenEpochRecord(space Space, raw []byte, identity ed25519.PrivateKey) (EpochRecord, error) {
	r, sealed, err := DecodeEpochRecord(raw)
	if err != nil {
		return EpochRecord{}, err
	}
	if r.Space != space.ID {
		return EpochRecord{}, fmt.Errorf("%w: epoch record for another space", ErrTampered)
	}
	id, err := epochIdentity(identity)
	if err != nil {
		return r, err
	}
	rd, err := age.Decrypt(bytes.NewReader(sealed), id)
	if err != nil {
		return r, fmt.Errorf("%w: epoch %d is not sealed to this device", ErrNoKey, r.Epoch)
	}
	k, err := io.ReadAll(io.LimitReader(rd, SpaceKeySize+1))
	if err != nil || len(k) != SpaceKeySize {
		return r, fmt.Errorf("%w: epoch record: key", ErrTampered)
	}
	copy(r.Key[:], k)
	r.HasKey = true
	return r, nil
}

// fieldP is 2^255 - 19.
var fieldP = new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), 255), big.NewInt(19))

// epochRecipient maps a member's Ed25519 public key to the X25519
// recipient its device opens with: u = (1 + y) / (1 - y) mod p.
func epochRecipient(pub ed25519.PublicKey) (*age.X25519Recipient, error) {
	if len(pub) != ed25519.PublicKeySize {
		return nil, invalidf("member key of %d bytes", len(pub))
	}
	le := slices.Clone([]byte(pub))
	le[31] &= 0x7f
	slices.Reverse(le)
	y := new(big.Int).SetBytes(le)
	if y.Cmp(fieldP) >= 0 {
		return nil, invalidf("member key is not a valid point")
	}
	den := new(big.Int).Sub(big.NewInt(1), y)
	den.Mod(den, fieldP)
	inv := new(big.Int).ModInverse(den, fieldP)
	if inv == nil {
		return nil, invalidf("member key is not a valid point")
	}
	u := new(big.Int).Add(big.NewInt(1), y)
	u.Mul(u, inv).Mod(u, fieldP)
	ub := make([]byte, 32)
	u.FillBytes(ub)
	slices.Reverse(ub)
	return age.ParseX25519Recipient(bech32Encode("age", ub))
}

// epochIdentity is the X25519 identity of a device's Ed25519 key: the
// scalar of its seed (SHA-512, first half; X25519 clamps it).
func epochIdentity(identity ed25519.PrivateKey) (*age.X25519Identity, error) {
	if len(identity) != ed25519.PrivateKeySize {
		return nil, invalidf("identity has %d bytes, want %d", len(identity), ed25519.PrivateKeySize)
	}
	h := sha512.Sum512(identity.Seed())
	return age.ParseX25519Identity(strings.ToUpper(bech32Encode("age-secret-key-", h[:32])))
}
