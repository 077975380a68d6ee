package storage

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync/atomic"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/chacha20poly1305"
)

// The store header lives in its own file, headerFile, next to Badger's files,
// replaced atomically (write temp, fsync, rename, fsync dir). It is read and
// the passphrase checked before Badger is opened, so a wrong passphrase
// leaves every file untouched.
//
// Layout (244 bytes, integers big-endian):
//
//	0   8  magic "FERRYHDR"
//	8   1  format version: 1 = record layout 1 (or a store no build that
//	       knows layout 2 has written to), 2 = record layout 2, 3 = layout 2
//	       whose metas may hold inline documents of up to 2 KiB (version 2
//	       builds read at most 1 KiB) (set by Create, and by a writable Open
//	       before it upgrades or writes)
//	9   1  mode: 1 = passphrase as given (Argon2id; stores made before
//	       normalization, rewritten as mode 3 when opened), 2 = raw 32-byte
//	       key, 3 = passphrase normalized to NFC (Argon2id)
//	10  4  Argon2 time          (0 in mode 2)
//	14  4  Argon2 memory KiB    (0 in mode 2)
//	18  1  Argon2 threads       (0 in mode 2)
//	19  16 salt (random)
//	35  8  generation (bumped on every header write)
//	43  4  current key epoch
//	47  1  rotating (0/1)
//	48  4  next key epoch (current+1 while rotating, else 0)
//	52  16 key check: HMAC-SHA256(KEK, "ferry/storage/v1 keycheck" || salt)[:16]
//	68  24 nonce for the current master key
//	92  48 current master key wrapped with XChaCha20-Poly1305 under the KEK
//	140 24 nonce for the next master key   (zero unless rotating)
//	164 48 next master key, wrapped        (zero unless rotating)
//	212 32 SHA-256 of bytes 0..211
//
// Wrapping associated data: bytes 0..67 || role ('c' or 'n') || epoch (u32),
// so changing any parameter (a KDF downgrade, another salt) fails to unwrap.
const (
	headerFile    = "ferry.header"
	headerTmpFile = "ferry.header.tmp"
	headerMagic   = "FERRYHDR"
	headerVersion = 3 // the newest format version this build reads and writes
	headerLayout1 = 1 // record layout 1: Open upgrades it (layout.go)
	headerLen     = 244
	hdrParamsLen  = 68
	hdrSumOff     = 212

	modePassphrase    = 1 // Argon2id over the passphrase bytes as given (stores made before normalization)
	modeRawKey        = 2
	modePassphraseNFC = 3 // Argon2id over the passphrase normalized to Unicode NFC

	wrappedLen = keySize + tagSize
)

type header struct {
	version   byte // 0 encodes as headerVersion
	mode      byte
	kdf       KDFParams
	salt      [16]byte
	gen       uint64
	curEpoch  uint32
	rotating  bool
	nextEpoch uint32
	check     [16]byte
	curNonce  [nonceSize]byte
	curWrap   [wrappedLen]byte
	nextNonce [nonceSize]byte
	nextWrap  [wrappedLen]byte
}

func (h *header) encode() []byte {
	b := make([]byte, 0, headerLen)
	b = append(b, headerMagic...)
	v := h.version
	if v == 0 {
		v = headerVersion
	}
	b = append(b, v, h.mode)
	b = binary.BigEndian.AppendUint32(b, h.kdf.Time)
	b = binary.BigEndian.AppendUint32(b, h.kdf.MemoryKiB)
	b = append(b, h.kdf.Threads)
	b = append(b, h.salt[:]...)
	b = binary.BigEndian.AppendUint64(b, h.gen)
	b = binary.BigEndian.AppendUint32(b, h.curEpoch)
	rot := byte(0)
	if h.rotating {
		rot = 1
	}
	b = append(b, rot)
	b = binary.BigEndian.AppendUint32(b, h.nextEpoch)
	b = append(b, h.check[:]...)
	b = append(b, h.curNonce[:]...)
	b = append(b, h.curWrap[:]...)
	b = append(b, h.nextNonce[:]...)
	b = append(b, h.nextWrap[:]...)
	sum := sha256.Sum256(b)
	return append(b, sum[:]...)
}

// decodeHeader parses and validates a header. A well-formed header of a
// format version above headerVersion is ErrNewerStore; any other problem
// is ErrCorrupt.
func decodeHeader(b []byte) (*header, error) {
	bad := corruptf("store header")
	if len(b) != headerLen || string(b[:8]) != headerMagic || b[8] == 0 {
		return nil, bad
	}
	sum := sha256.Sum256(b[:hdrSumOff])
	if subtle.ConstantTimeCompare(sum[:], b[hdrSumOff:]) != 1 {
		return nil, bad
	}
	if b[8] > headerVersion {
		return nil, fmt.Errorf("store format version %d, this build reads up to %d: %w", b[8], headerVersion, ErrNewerStore)
	}
	h := &header{version: b[8], mode: b[9]}
	h.kdf = KDFParams{Time: binary.BigEndian.Uint32(b[10:]), MemoryKiB: binary.BigEndian.Uint32(b[14:]), Threads: b[18]}
	copy(h.salt[:], b[19:35])
	h.gen = binary.BigEndian.Uint64(b[35:])
	h.curEpoch = binary.BigEndian.Uint32(b[43:])
	switch b[47] {
	case 0:
	case 1:
		h.rotating = true
	default:
		return nil, bad
	}
	h.nextEpoch = binary.BigEndian.Uint32(b[48:])
	copy(h.check[:], b[52:68])
	copy(h.curNonce[:], b[68:92])
	copy(h.curWrap[:], b[92:140])
	copy(h.nextNonce[:], b[140:164])
	copy(h.nextWrap[:], b[164:212])
	switch h.mode {
	case modePassphrase, modePassphraseNFC:
		if h.kdf.validate() != nil {
			return nil, bad
		}
	case modeRawKey:
		if h.kdf != (KDFParams{}) {
			return nil, bad
		}
	default:
		return nil, bad
	}
	if h.rotating {
		if h.curEpoch == ^uint32(0) || h.nextEpoch != h.curEpoch+1 {
			return nil, bad
		}
	} else if h.nextEpoch != 0 || h.nextNonce != [nonceSize]byte{} || h.nextWrap != [wrappedLen]byte{} {
		return nil, bad
	}
	return h, nil
}

// kdfRuns counts Argon2 invocations (tests check a wrong passphrase costs one).
var kdfRuns atomic.Int64

// argonKEK stretches passphrase bytes into the key-encryption key for h.
func argonKEK(h *header, p []byte) []byte {
	kdfRuns.Add(1)
	return argon2.IDKey(p, h.salt[:], h.kdf.Time, h.kdf.MemoryKiB, h.kdf.Threads, keySize)
}

func keyCheck(kek []byte, salt [16]byte) (c [16]byte) {
	m := hmac.New(sha256.New, kek)
	m.Write([]byte("ferry/storage/v1 keycheck"))
	m.Write(salt[:])
	copy(c[:], m.Sum(nil))
	return c
}

// newHeaderParams fills mode, KDF, salt and key check for a new secret. A
// passphrase is normalized to NFC (see passphrase.go).
func newHeaderParams(h *header, o *Options) ([]byte, error) {
	h.salt = [16]byte{}
	rand.Read(h.salt[:])
	var kek []byte
	if o.Key != nil {
		h.mode, h.kdf = modeRawKey, KDFParams{}
		kek = append([]byte(nil), o.Key...)
	} else {
		h.mode, h.kdf = modePassphraseNFC, o.kdf()
		kek = argonKEK(h, normalizePassphrase(o.Passphrase))
	}
	h.check = keyCheck(kek, h.salt)
	return kek, nil
}

func (h *header) wrapAD(role byte, epoch uint32) []byte {
	enc := h.encode()
	ad := append(enc[:hdrParamsLen:hdrParamsLen], role)
	return binary.BigEndian.AppendUint32(ad, epoch)
}

// wrapKeys (re)wraps the master keys under kek with fresh nonces. It must be
// called after every change to the header's parameters, epochs or generation.
func (h *header) wrapKeys(kek, cur, next []byte) error {
	aead, err := chacha20poly1305.NewX(kek)
	if err != nil {
		return err
	}
	h.curNonce = newNonce()
	aead.Seal(h.curWrap[:0], h.curNonce[:], cur, h.wrapAD('c', h.curEpoch))
	h.nextNonce, h.nextWrap = [nonceSize]byte{}, [wrappedLen]byte{}
	if h.rotating {
		h.nextNonce = newNonce()
		aead.Seal(h.nextWrap[:0], h.nextNonce[:], next, h.wrapAD('n', h.nextEpoch))
	}
	return nil
}

// unlock checks the secret and unwraps the master keys (next is nil unless
// rotating). The KEK is returned for later rewrapping; nfc reports whether
// it is the NFC form's (false only for a store made before normalization
// that opened with the passphrase's bytes as given or their NFD form).
func (h *header) unlock(o *Options) (kek, cur, next []byte, nfc bool, err error) {
	kek, nfc, err = h.findKEK(o)
	if err != nil {
		return nil, nil, nil, false, err
	}
	aead, err := chacha20poly1305.NewX(kek)
	if err != nil {
		wipe(kek)
		return nil, nil, nil, false, err
	}
	cur, err = aead.Open(nil, h.curNonce[:], h.curWrap[:], h.wrapAD('c', h.curEpoch))
	if err != nil {
		wipe(kek)
		return nil, nil, nil, false, corruptf("store header")
	}
	if h.rotating {
		next, err = aead.Open(nil, h.nextNonce[:], h.nextWrap[:], h.wrapAD('n', h.nextEpoch))
		if err != nil {
			wipe(kek)
			wipe(cur)
			return nil, nil, nil, false, corruptf("store header")
		}
	}
	return kek, cur, next, nfc, nil
}

func readHeaderFile(dir string) (*header, error) {
	b, err := os.ReadFile(filepath.Join(dir, headerFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrNoStore
	}
	if err != nil {
		return nil, fmt.Errorf("read store header: %w", err)
	}
	return decodeHeader(b)
}

// writeHeaderFile replaces the header atomically and durably: after it
// returns the new header is on disk; after a crash, either the old or the new
// header is, never a mix.
func writeHeaderFile(dir string, h *header) error {
	b := h.encode()
	tmp := filepath.Join(dir, headerTmpFile)
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		if isNoSpace(err) {
			return fmt.Errorf("write store header: %w", ErrNoSpace)
		}
		return fmt.Errorf("write store header: %w", err)
	}
	if _, err = f.Write(b); err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(dir, headerFile))
	}
	if err == nil {
		err = syncDir(dir)
	}
	if err != nil {
		os.Remove(tmp)
		if isNoSpace(err) {
			return fmt.Errorf("write store header: %w", ErrNoSpace)
		}
		return fmt.Errorf("write store header: %w", err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

func headerEqual(a, b *header) bool { return bytes.Equal(a.encode(), b.encode()) }
