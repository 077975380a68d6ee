package storage

import (
	"crypto/rand"
	"encoding/binary"
	"sync"
)

// Envelope format (every Badger value except none):
//
//	version (1 byte, = 1) | key epoch (u32 BE) | nonce (24 bytes) | XChaCha20-Poly1305 ciphertext+tag
//
// Associated data: version | epoch | value kind (1 byte) | the full Badger key.
const (
	envVersion   = 1
	envHeaderLen = 1 + 4 + nonceSize
	envOverhead  = envHeaderLen + tagSize
	maxADLen     = 128
)

var adPool = sync.Pool{New: func() any { b := make([]byte, 0, maxADLen); return &b }}

func envAD(dst []byte, epoch uint32, kind byte, key []byte) []byte {
	dst = append(dst, envVersion)
	dst = binary.BigEndian.AppendUint32(dst, epoch)
	dst = append(dst, kind)
	return append(dst, key...)
}

// newNonce returns a fresh random nonce.
func newNonce() (n [nonceSize]byte) {
	randRead(n[:])
	return n
}

// randRead fills b with random bytes.
func randRead(b []byte) { rand.Read(b) } // never fails (Go >= 1.24)

// envelopeFor returns an empty envelope buffer for sealInPlace: the room
// for the header, and capacity for n bytes of plaintext and the tag.
func envelopeFor(n int) []byte { return make([]byte, envHeaderLen, envOverhead+n) }

// sealInPlace seals the plaintext that follows the header room of env
// (from envelopeFor) in place and returns the envelope, as seal would.
func (k *epochKeys) sealInPlace(env []byte, kind byte, key []byte, nonce [nonceSize]byte) []byte {
	env[0] = envVersion
	binary.BigEndian.PutUint32(env[1:5], k.epoch)
	copy(env[5:envHeaderLen], nonce[:])
	adp := adPool.Get().(*[]byte)
	ad := envAD((*adp)[:0], k.epoch, kind, key)
	// The ciphertext overwrites the plaintext exactly (the AEAD allows it).
	env = k.aead.Seal(env[:envHeaderLen], nonce[:], env[envHeaderLen:], ad)
	*adp = ad[:0]
	adPool.Put(adp)
	return env
}

// seal appends the envelope of plaintext, stored under key as a value of the
// given kind, to dst, using the given nonce (which must be fresh).
func (k *epochKeys) seal(dst []byte, kind byte, key []byte, nonce [nonceSize]byte, plaintext []byte) []byte {
	dst = append(dst, envVersion)
	dst = binary.BigEndian.AppendUint32(dst, k.epoch)
	dst = append(dst, nonce[:]...)
	adp := adPool.Get().(*[]byte)
	ad := envAD((*adp)[:0], k.epoch, kind, key)
	dst = k.aead.Seal(dst, nonce[:], plaintext, ad)
	*adp = ad[:0]
	adPool.Put(adp)
	return dst
}

// sealNew seals with a fresh nonce into a new slice.
func (k *epochKeys) sealNew(kind byte, key, plaintext []byte) ([]byte, [nonceSize]byte) {
	n := newNonce()
	return k.seal(make([]byte, 0, envOverhead+len(plaintext)), kind, key, n, plaintext), n
}

// open authenticates and decrypts an envelope read from key. Any failure,
// whatever its cause, is ErrCorrupt. The plaintext is appended to dst.
func (k *epochKeys) open(dst []byte, kind byte, key, env []byte) ([]byte, [nonceSize]byte, error) {
	var nonce [nonceSize]byte
	if len(env) < envOverhead || env[0] != envVersion || binary.BigEndian.Uint32(env[1:5]) != k.epoch {
		return nil, nonce, ErrCorrupt
	}
	copy(nonce[:], env[5:envHeaderLen])
	adp := adPool.Get().(*[]byte)
	ad := envAD((*adp)[:0], k.epoch, kind, key)
	pt, err := k.aead.Open(dst, nonce[:], env[envHeaderLen:], ad)
	*adp = ad[:0]
	adPool.Put(adp)
	if err != nil {
		return nil, nonce, ErrCorrupt
	}
	return pt, nonce, nil
}
