package storage

import (
	"bytes"
	"crypto/subtle"
	"fmt"

	"golang.org/x/text/unicode/norm"
)

// Passphrases are normalized to Unicode NFC before any key derivation (the
// store's Argon2id and a backup's scrypt), so the same visible passphrase
// opens the same store and the same backup whichever form a keyboard or
// operating system produces: "café" typed as U+00E9 or as "e" + U+0301.
// Bytes that are not valid UTF-8 are kept as they are.
//
// Stores made before normalization have header mode modePassphrase: their
// key was derived from the bytes as typed then. Opening one tries the NFC
// form first, then the bytes as given and their NFD form when they differ
// (at most three Argon2 runs, one when the passphrase is ASCII), and on
// success rewrites the header under the NFC form (modePassphraseNFC), so
// from then on either form opens it at the cost of one run. Backups carry
// no such mark: Import tries the same candidates.

// normalizePassphrase returns the NFC form of p.
func normalizePassphrase(p []byte) []byte { return norm.NFC.Bytes(p) }

// passphraseCandidates lists the byte strings that may have been used to
// derive a key from p: its NFC form first, then (when legacy) the bytes as
// given and their NFD form, without repeats.
func passphraseCandidates(p []byte, legacy bool) [][]byte {
	out := [][]byte{normalizePassphrase(p)}
	if !legacy {
		return out
	}
	for _, c := range [][]byte{p, norm.NFD.Bytes(p)} {
		dup := false
		for _, o := range out {
			dup = dup || bytes.Equal(o, c)
		}
		if !dup {
			out = append(out, c)
		}
	}
	return out
}

// findKEK derives the key-encryption key the caller's secret stands for
// under h and checks it against the header's key check. It returns
// ErrWrongKey if no candidate matches. nfc reports whether the key is the
// NFC form's (always true for raw keys and for modePassphraseNFC headers).
func (h *header) findKEK(o *Options) (kek []byte, nfc bool, err error) {
	if o.Key != nil {
		if h.mode != modeRawKey {
			return nil, false, fmt.Errorf("store uses a passphrase, not a raw key: %w", ErrWrongKey)
		}
		kek = append([]byte(nil), o.Key...)
		if c := keyCheck(kek, h.salt); subtle.ConstantTimeCompare(c[:], h.check[:]) != 1 {
			wipe(kek)
			return nil, false, ErrWrongKey
		}
		return kek, true, nil
	}
	if h.mode != modePassphrase && h.mode != modePassphraseNFC {
		return nil, false, fmt.Errorf("store uses a raw key, not a passphrase: %w", ErrWrongKey)
	}
	for i, p := range passphraseCandidates(o.Passphrase, h.mode == modePassphrase) {
		kek = argonKEK(h, p)
		if c := keyCheck(kek, h.salt); subtle.ConstantTimeCompare(c[:], h.check[:]) == 1 {
			return kek, i == 0, nil
		}
		wipe(kek)
	}
	return nil, false, ErrWrongKey
}

// normalizedHeader returns the header of a store made before normalization
// (mode modePassphrase) rewritten for the NFC form of o.Passphrase, with
// its key-encryption key and the master keys rewrapped under it. kek is
// the key the store opened with; nfc tells whether it is already the NFC
// form's (then no Argon2 runs again). The caller writes the header.
func (h *header) normalizedHeader(o *Options, kek []byte, nfc bool, cur, next []byte) (*header, []byte, error) {
	h2 := *h
	h2.mode = modePassphraseNFC
	h2.gen++
	nk := append([]byte(nil), kek...)
	if !nfc {
		wipe(nk)
		nk = argonKEK(&h2, normalizePassphrase(o.Passphrase))
	}
	h2.check = keyCheck(nk, h2.salt)
	if err := h2.wrapKeys(nk, cur, next); err != nil {
		wipe(nk)
		return nil, nil, err
	}
	return &h2, nk, nil
}

// normalizeOnOpen rewrites the header of a store made before normalization
// for the NFC form of the passphrase it just opened with, and returns the
// header and key-encryption key to use. The caller holds Badger's directory
// lock. It is best-effort: if the header changed on disk since it was read,
// or cannot be written (a read-only or full disk), the store opens under
// the old header and the next Open tries again.
func normalizeOnOpen(dir string, h *header, o *Options, kek []byte, nfc bool, cur, next []byte) (*header, []byte) {
	if onDisk, err := readHeaderFile(dir); err != nil || !headerEqual(onDisk, h) {
		return h, kek
	}
	h2, kek2, err := h.normalizedHeader(o, kek, nfc, cur, next)
	if err != nil {
		return h, kek
	}
	if err := writeHeaderFile(dir, h2); err != nil {
		wipe(kek2)
		return h, kek
	}
	wipe(kek)
	return h2, kek2
}
