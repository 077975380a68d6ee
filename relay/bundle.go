package relay

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/subtle"
	"encoding/binary"
	"fmt"

	"golang.org/x/crypto/chacha20poly1305"
)

// Bundle format, version 1 (all integers big-endian):
//
//	off   size  field
//	0     1     version (1)
//	1     32    sender Ed25519 public key
//	33    8     counter (>= 1)
//	41    24    XChaCha20-Poly1305 nonce (random)
//	65    n     ciphertext of: u32 payload length | payload | zero padding
//	65+n  64    Ed25519 signature by the sender
//
// The AEAD key is HKDF-SHA256(space key, "ferry-relay-bundle-key-v1"); the
// associated data is "ferry-relay-bundle-v1" | space ID | bytes 0..41 (the
// version, sender and counter). The signature covers
// "ferry-relay-bundle-sig-v1" | space ID | bytes 0..65+n, so the relay,
// which knows the space ID but not the key, can check who sent a bundle.
//
// Version 2 is the same layout for a space whose key was rotated: bytes
// 41..49 of the nonce field are the key epoch (u64, >= 1), the rest of the
// nonce random; the associated data then covers bytes 0..49 (version,
// sender, counter, epoch). A version 1 bundle is sealed under epoch 0.
//
// The whole sealed bundle is exactly one of the size buckets: 1 KiB, 2 KiB,
// 4 KiB, ... 4 MiB (powers of two). The relay learns at most which bucket.
const (
	bundleVersion  = 1
	bundleVersion2 = 2 // names its key epoch
	epochLen       = 8
	hdrLen         = 1 + ed25519.PublicKeySize + 8 // version, sender, counter
	nonceLen       = chacha20poly1305.NonceSizeX
	preLen         = hdrLen + nonceLen
	tagLen         = chacha20poly1305.Overhead
	sigLen         = ed25519.SignatureSize
	lenPrefix      = 4
	bundleOverhead = preLen + tagLen + sigLen + lenPrefix // 149

	// MinBundleSize is the smallest size bucket.
	MinBundleSize = 1 << 10
	// MaxBundleSize is the largest size bucket and the largest body the
	// relay accepts for a push.
	MaxBundleSize = 4 << 20
	// MaxPayload is the largest payload Seal accepts.
	MaxPayload = MaxBundleSize - bundleOverhead

	aadLabel = "ferry-relay-bundle-v1"
	sigLabel = "ferry-relay-bundle-sig-v1"
)

// BucketSize returns the sealed size of a bundle carrying n payload bytes,
// or 0 if n is larger than MaxPayload.
func BucketSize(n int) int {
	if n < 0 || n > MaxPayload {
		return 0
	}
	b := MinBundleSize
	for b-bundleOverhead < n {
		b <<= 1
	}
	return b
}

// isBucket reports whether n is a valid sealed size.
func isBucket(n int) bool {
	return n >= MinBundleSize && n <= MaxBundleSize && n&(n-1) == 0
}

// Bundle is an opened, verified bundle.
type Bundle struct {
	Sender  ed25519.PublicKey
	Counter uint64
	Payload []byte
}

// Seal encrypts payload for the members of space under its current key
// epoch, padded to its size bucket and signed by sender. counter numbers
// the sender's bundles in this space from 1, each used once (see Sender,
// which keeps it).
func Seal(space Space, sender ed25519.PrivateKey, counter uint64, payload []byte) ([]byte, error) {
	if err := space.check(); err != nil {
		return nil, err
	}
	if len(sender) != ed25519.PrivateKeySize {
		return nil, invalidf("sender key has %d bytes, want %d", len(sender), ed25519.PrivateKeySize)
	}
	if counter == 0 {
		return nil, invalidf("counter 0 (counters start at 1)")
	}
	size := BucketSize(len(payload))
	if size == 0 {
		return nil, invalidf("payload of %d bytes exceeds %d", len(payload), MaxPayload)
	}
	epoch, key := space.current()
	aead, err := chacha20poly1305.NewX(aeadKey(key))
	if err != nil {
		return nil, fmt.Errorf("relay: seal: %w", err)
	}
	out := make([]byte, preLen, size)
	out[0] = bundleVersion
	copy(out[1:], sender.Public().(ed25519.PublicKey))
	binary.BigEndian.PutUint64(out[1+ed25519.PublicKeySize:], counter)
	if _, err := rand.Read(out[hdrLen:preLen]); err != nil {
		return nil, fmt.Errorf("relay: seal: nonce: %w", err)
	}
	if epoch > 0 {
		out[0] = bundleVersion2
		binary.BigEndian.PutUint64(out[hdrLen:], epoch)
	}
	pt := make([]byte, size-preLen-tagLen-sigLen)
	binary.BigEndian.PutUint32(pt, uint32(len(payload)))
	copy(pt[lenPrefix:], payload)
	out = aead.Seal(out, out[hdrLen:preLen], pt, bundleAAD(space.ID, aadHeader(out)))
	sig := ed25519.Sign(sender, sigMessage(space.ID, out))
	return append(out, sig...), nil
}

// aadHeader is the cleartext header the AEAD binds: version, sender and
// counter, and for version 2 the epoch.
func aadHeader(b []byte) []byte {
	if b[0] == bundleVersion2 {
		return b[:hdrLen+epochLen]
	}
	return b[:hdrLen]
}

// BundleEpoch returns the key epoch a sealed bundle names (0 for version
// 1), without verifying anything.
func BundleEpoch(b []byte) (uint64, bool) {
	if len(b) < preLen {
		return 0, false
	}
	switch b[0] {
	case bundleVersion:
		return 0, true
	case bundleVersion2:
		return binary.BigEndian.Uint64(b[hdrLen:]), true
	}
	return 0, false
}

func bundleAAD(spaceID string, hdr []byte) []byte {
	b := make([]byte, 0, len(aadLabel)+1+len(spaceID)+len(hdr))
	b = append(b, aadLabel...)
	b = append(b, byte(len(spaceID)))
	b = append(b, spaceID...)
	return append(b, hdr...)
}

func sigMessage(spaceID string, signed []byte) []byte {
	b := make([]byte, 0, len(sigLabel)+1+len(spaceID)+len(signed))
	b = append(b, sigLabel...)
	b = append(b, byte(len(spaceID)))
	b = append(b, spaceID...)
	return append(b, signed...)
}

// bundleHeader parses the cleartext part of a sealed bundle and checks its
// signature: what the relay can verify without the key.
func bundleHeader(spaceID string, b []byte) (ed25519.PublicKey, uint64, error) {
	if !isBucket(len(b)) {
		return nil, 0, fmt.Errorf("%w: size %d is not a bucket", ErrTampered, len(b))
	}
	if b[0] != bundleVersion && b[0] != bundleVersion2 {
		return nil, 0, fmt.Errorf("%w: version %d", ErrTampered, b[0])
	}
	if b[0] == bundleVersion2 && binary.BigEndian.Uint64(b[hdrLen:]) == 0 {
		return nil, 0, fmt.Errorf("%w: version 2 with epoch 0", ErrTampered)
	}
	sender := ed25519.PublicKey(b[1 : 1+ed25519.PublicKeySize])
	counter := binary.BigEndian.Uint64(b[1+ed25519.PublicKeySize : hdrLen])
	if counter == 0 {
		return nil, 0, fmt.Errorf("%w: counter 0", ErrTampered)
	}
	body := b[:len(b)-sigLen]
	if !ed25519.Verify(sender, sigMessage(spaceID, body), b[len(b)-sigLen:]) {
		return nil, 0, fmt.Errorf("%w: bad signature", ErrTampered)
	}
	return sender, counter, nil
}

// Open verifies and decrypts a sealed bundle of space. A bundle sealed
// under a key epoch space does not hold wraps ErrNoKey (a device removed
// from the space, or one that has not fetched the new key yet); every
// other failure wraps ErrTampered. The payload of a bundle that fails is
// never returned. Open does not know which counters were already seen: a
// Verifier does.
func Open(space Space, sealed []byte) (Bundle, error) {
	if err := space.check(); err != nil {
		return Bundle{}, err
	}
	sender, counter, err := bundleHeader(space.ID, sealed)
	if err != nil {
		return Bundle{}, err
	}
	epoch, _ := BundleEpoch(sealed)
	key, ok := space.keyFor(epoch)
	if !ok {
		return Bundle{}, fmt.Errorf("%w: key epoch %d (this device holds up to %d)", ErrNoKey, epoch, space.Epoch())
	}
	aead, err := chacha20poly1305.NewX(aeadKey(key))
	if err != nil {
		return Bundle{}, fmt.Errorf("relay: open: %w", err)
	}
	ct := sealed[preLen : len(sealed)-sigLen]
	pt, err := aead.Open(nil, sealed[hdrLen:preLen], ct, bundleAAD(space.ID, aadHeader(sealed)))
	if err != nil {
		return Bundle{}, fmt.Errorf("%w: decryption failed", ErrTampered)
	}
	n := binary.BigEndian.Uint32(pt)
	if uint64(n) > uint64(len(pt)-lenPrefix) {
		return Bundle{}, fmt.Errorf("%w: payload length", ErrTampered)
	}
	pad := pt[lenPrefix+int(n):]
	if subtle.ConstantTimeCompare(pad, make([]byte, len(pad))) != 1 {
		return Bundle{}, fmt.Errorf("%w: padding", ErrTampered)
	}
	// Canonical bucket: a payload that fits a smaller bucket is refused.
	if BucketSize(int(n)) != len(sealed) {
		return Bundle{}, fmt.Errorf("%w: bucket", ErrTampered)
	}
	return Bundle{
		Sender:  append(ed25519.PublicKey(nil), sender...),
		Counter: counter,
		Payload: pt[lenPrefix : lenPrefix+int(n) : lenPrefix+int(n)],
	}, nil
}
