package storage

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"os"
	"path/filepath"
	"testing"

	"filippo.io/age"
	"golang.org/x/crypto/argon2"
	"golang.org/x/text/unicode/norm"
	"pgregory.net/rapid"
)

// The same visible passphrase in its two Unicode forms.
var (
	passNFC = []byte("caf\u00e9 cr\u00e8me br\u00fbl\u00e9e")                    // composed
	passNFD = []byte("cafe\u0301 cre\u0300me bru\u0302le\u0301e")                // decomposed
	passMix = []byte("caf\u00e9 cre\u0300me br\u00fbl\u00e9e")                   // some of each: neither form
	passBad = []byte("caf\u00e9 cre\u0300me \xff\xfe br\u00fbl\u00e9e \xcc\x81") // not UTF-8
)

func TestPassphraseFormsAreDistinctBytes(t *testing.T) {
	if bytes.Equal(passNFC, passNFD) || !norm.NFC.IsNormal(passNFC) || !norm.NFD.IsNormal(passNFD) ||
		!bytes.Equal(norm.NFC.Bytes(passNFD), passNFC) || norm.NFC.IsNormal(passMix) || norm.NFD.IsNormal(passMix) {
		t.Fatal("test passphrases are not what they claim")
	}
}

// TestStorePassphraseForms: a store made with either form opens with the
// other, and so does one whose passphrase was changed to either form.
func TestStorePassphraseForms(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name         string
		create, open []byte
	}{{"NFC then NFD", passNFC, passNFD}, {"NFD then NFC", passNFD, passNFC}, {"mixed then NFC", passMix, passNFC}} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s, err := Create(ctx, dir, Options{Passphrase: tc.create, KDF: TestKDF()})
			if err != nil {
				t.Fatal(err)
			}
			mustWrite(t, s, newDoc("c", "1").set(t, "f", "v"))
			s.Close()
			for _, p := range [][]byte{tc.open, tc.create} {
				s, err = Open(ctx, dir, Options{Passphrase: p})
				if err != nil {
					t.Fatalf("open with %q: %v", p, err)
				}
				if got := field(t, s, "c", "1", "f"); got != "v" {
					t.Fatalf("got %q", got)
				}
				s.Close()
			}
			// The new passphrase of ChangePassphrase is normalized too.
			s, err = Open(ctx, dir, Options{Passphrase: tc.open})
			if err != nil {
				t.Fatal(err)
			}
			if err := s.ChangePassphrase(ctx, Options{Passphrase: tc.create, KDF: TestKDF()}); err != nil {
				t.Fatal(err)
			}
			s.Close()
			s, err = Open(ctx, dir, Options{Passphrase: tc.open})
			if err != nil {
				t.Fatalf("open after passwd with the other form: %v", err)
			}
			s.Close()
		})
	}
}

// copyFixture copies a fixture store into a fresh temporary directory.
func copyFixture(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	copyDir(t, src, dst)
	return dst
}

func headerMode(t *testing.T, dir string) byte {
	t.Helper()
	h, err := readHeaderFile(dir)
	if err != nil {
		t.Fatal(err)
	}
	return h.mode
}

const legacyFixture = "testdata/legacy-nfd"

// TestLegacyStoreFixture opens a store made by ferry before passphrases
// were normalized, with a decomposed passphrase (testdata/legacy-nfd).
func TestLegacyStoreFixture(t *testing.T) {
	ctx := context.Background()
	for _, first := range []struct {
		name string
		pass []byte
	}{{"bytes as made", passNFD}, {"other form", passNFC}} {
		t.Run(first.name, func(t *testing.T) {
			dir := copyFixture(t, filepath.Join(legacyFixture, "store"))
			if m := headerMode(t, dir); m != modePassphrase {
				t.Fatalf("fixture header mode %d, want %d (legacy)", m, modePassphrase)
			}
			s, err := Open(ctx, dir, Options{Passphrase: first.pass})
			if err != nil {
				t.Fatalf("legacy store: %v", err)
			}
			if _, _, err := s.Load(ctx, "notes", "n1"); err != nil {
				t.Fatalf("legacy record: %v", err)
			}
			s.Close()
			// The header was rewritten for the NFC form: either form opens it
			// now, and a wrong passphrase costs one Argon2 run again.
			if m := headerMode(t, dir); m != modePassphraseNFC {
				t.Fatalf("header mode %d after a legacy open, want %d", m, modePassphraseNFC)
			}
			for _, p := range [][]byte{passNFC, passNFD} {
				s, err := Open(ctx, dir, Options{Passphrase: p})
				if err != nil {
					t.Fatalf("after upgrade, open with %q: %v", p, err)
				}
				s.Close()
			}
			runs := kdfRuns.Load()
			_, err = Open(ctx, dir, Options{Passphrase: []byte("wr\u00f6ng")})
			wantErr(t, err, ErrWrongKey, "wrong passphrase")
			if n := kdfRuns.Load() - runs; n != 1 {
				t.Fatalf("wrong passphrase on an upgraded store ran Argon2 %d times, want 1", n)
			}
		})
	}
}

// TestLegacyWrongPassphraseCost: on a store not yet upgraded, a wrong
// passphrase costs one Argon2 run if it is the same in every form (ASCII),
// at most three otherwise, and changes no file.
func TestLegacyWrongPassphraseCost(t *testing.T) {
	ctx := context.Background()
	dir := copyFixture(t, filepath.Join(legacyFixture, "store"))
	before := dirDigest(t, dir)
	for _, tc := range []struct {
		pass []byte
		runs int64
	}{{[]byte("wrong"), 1}, {[]byte("wr\u00f6ng"), 2}, {[]byte("wro\u0308ng"), 2}, {[]byte("wr\u00f6no\u0308"), 3}} {
		runs := kdfRuns.Load()
		_, err := Open(ctx, dir, Options{Passphrase: tc.pass})
		wantErr(t, err, ErrWrongKey, string(tc.pass))
		if n := kdfRuns.Load() - runs; n != tc.runs {
			t.Fatalf("%q: %d Argon2 runs, want %d", tc.pass, n, tc.runs)
		}
	}
	after := dirDigest(t, dir)
	for k, v := range before {
		if after[k] != v {
			t.Fatalf("file %s changed after a wrong passphrase", k)
		}
	}
}

// legacyKEK is the derivation ferry used before normalization: Argon2id
// over the passphrase bytes exactly as given.
func legacyKEK(h *header, raw []byte) []byte {
	return argon2.IDKey(raw, h.salt[:], h.kdf.Time, h.kdf.MemoryKiB, h.kdf.Threads, keySize)
}

// legacyHeader makes a header as ferry wrote it before normalization.
func legacyHeader(t interface{ Fatal(...any) }, raw []byte, cur, next []byte) *header {
	h := &header{mode: modePassphrase, kdf: TestKDF(), gen: 4, curEpoch: 2}
	rand.Read(h.salt[:])
	if next != nil {
		h.rotating, h.nextEpoch = true, 3
	}
	kek := legacyKEK(h, raw)
	h.check = keyCheck(kek, h.salt)
	if err := h.wrapKeys(kek, cur, next); err != nil {
		t.Fatal(err)
	}
	return h
}

// makeLegacy turns the store in dir (closed) into one made before
// normalization with the passphrase raw.
func makeLegacy(t *testing.T, dir string, raw []byte) {
	t.Helper()
	h, err := readHeaderFile(dir)
	if err != nil {
		t.Fatal(err)
	}
	_, cur, next, _, err := h.unlock(&Options{Passphrase: raw})
	if err != nil {
		t.Fatal(err)
	}
	lh := legacyHeader(t, raw, cur, next)
	lh.salt, lh.kdf, lh.gen, lh.curEpoch, lh.rotating, lh.nextEpoch = h.salt, h.kdf, h.gen, h.curEpoch, h.rotating, h.nextEpoch
	kek := legacyKEK(lh, raw)
	lh.check = keyCheck(kek, lh.salt)
	if err := lh.wrapKeys(kek, cur, next); err != nil {
		t.Fatal(err)
	}
	if err := writeHeaderFile(dir, lh); err != nil {
		t.Fatal(err)
	}
}

// TestLegacyStoreAnyBytes: a legacy store whose passphrase is mixed-form or
// not even UTF-8 still opens with the same bytes, before and after the
// header is rewritten.
func TestLegacyStoreAnyBytes(t *testing.T) {
	ctx := context.Background()
	for _, raw := range [][]byte{passMix, passBad} {
		dir := t.TempDir()
		s, err := Create(ctx, dir, Options{Passphrase: raw, KDF: TestKDF()})
		if err != nil {
			t.Fatal(err)
		}
		mustWrite(t, s, newDoc("c", "1").set(t, "f", "v"))
		s.Close()
		makeLegacy(t, dir, raw)
		if !bytes.Equal(normalizePassphrase(raw), raw) {
			// The NFC form alone is not what the legacy key was made from.
			h, _ := readHeaderFile(dir)
			if c := keyCheck(argonKEK(h, normalizePassphrase(raw)), h.salt); c == h.check {
				t.Fatal("fixture: legacy header accepts the NFC form's key")
			}
		}
		for i := 0; i < 2; i++ {
			s, err := Open(ctx, dir, Options{Passphrase: raw})
			if err != nil {
				t.Fatalf("%q open %d: %v", raw, i, err)
			}
			if got := field(t, s, "c", "1", "f"); got != "v" {
				t.Fatalf("got %q", got)
			}
			s.Close()
			if m := headerMode(t, dir); m != modePassphraseNFC {
				t.Fatalf("header mode %d after open, want %d", m, modePassphraseNFC)
			}
		}
	}
}

// genPassphrase draws passphrases rich in what normalization changes:
// combining marks, precomposed letters, Hangul syllables and jamo,
// singletons (Angstrom sign, Kelvin), ligatures NFC keeps, emoji, NUL,
// and bytes that are not UTF-8.
func genPassphrase() *rapid.Generator[[]byte] {
	pieces := []string{"a", "e", "A", " ", "\u0301", "\u0300", "\u0308", "\u0327", "\u00e9", "\u00c5",
		"\u212b", "\u212a", "\u1100", "\u1161", "\u11a8", "\uac00", "\ufb01", "\U0001f600", "\x00",
		"\xff", "\x80", "\xcc", "\xed\xa0\x80", "\u0344", "\u0f73", "\u1e9b\u0323"}
	return rapid.Custom(func(t *rapid.T) []byte {
		n := rapid.IntRange(1, 12).Draw(t, "n")
		var b []byte
		for i := 0; i < n; i++ {
			b = append(b, rapid.SampledFrom(pieces).Draw(t, "piece")...)
		}
		return b
	})
}

// TestPropLegacyHeaderNormalization: for any passphrase bytes, a legacy
// header opens with those bytes (and with the other form when they were in
// NFC or NFD); rewritten for NFC it opens with the bytes, NFC and NFD forms,
// unwrapping the same master keys; a passphrase of another NFC form fails.
func TestPropLegacyHeaderNormalization(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		p := genPassphrase().Draw(t, "p")
		q := genPassphrase().Draw(t, "q")
		cur := randomKey()
		var next []byte
		if rapid.Bool().Draw(t, "rotating") {
			next = randomKey()
		}
		h := legacyHeader(t, p, cur, next)
		h2, err := decodeHeader(h.encode())
		if err != nil {
			t.Fatalf("legacy header does not decode: %v", err)
		}
		nfc, nfd := norm.NFC.Bytes(p), norm.NFD.Bytes(p)
		opens := [][]byte{p}
		if bytes.Equal(p, nfc) || bytes.Equal(p, nfd) {
			opens = append(opens, nfc, nfd)
		}
		var kek []byte
		var isNFC bool
		for i, in := range opens {
			k, c, n, nf, err := h2.unlock(&Options{Passphrase: in})
			if err != nil || !bytes.Equal(c, cur) || !bytes.Equal(n, next) {
				t.Fatalf("legacy header, passphrase %q: %v", in, err)
			}
			if i == 0 {
				kek, isNFC = k, nf
			}
		}
		up, upKEK, err := h2.normalizedHeader(&Options{Passphrase: p}, kek, isNFC, cur, next)
		if err != nil {
			t.Fatal(err)
		}
		up, err = decodeHeader(up.encode())
		if err != nil || up.mode != modePassphraseNFC {
			t.Fatalf("rewritten header: %v", err)
		}
		for _, in := range [][]byte{p, nfc, nfd} {
			k, c, n, _, err := up.unlock(&Options{Passphrase: in})
			if err != nil || !bytes.Equal(c, cur) || !bytes.Equal(n, next) || !bytes.Equal(k, upKEK) {
				t.Fatalf("rewritten header, passphrase %q: %v", in, err)
			}
		}
		if !bytes.Equal(norm.NFC.Bytes(q), nfc) {
			for _, hd := range []*header{h2, up} {
				if _, _, _, _, err := hd.unlock(&Options{Passphrase: q}); err != ErrWrongKey {
					t.Fatalf("mode %d header opened with %q (set with %q): %v", hd.mode, q, p, err)
				}
			}
		}
	})
}

// TestBackupPassphraseForms: a backup made with either form opens with the
// other; backups made before normalization (the fixture, with a decomposed
// passphrase, and ones made here by the old code path with mixed and
// non-UTF-8 bytes) open with the bytes they were made with, and the pure
// forms with either form.
func TestBackupPassphraseForms(t *testing.T) {
	ctx := context.Background()
	s := newMemStore(t)
	populate(t, s, 3)
	for _, tc := range [][2][]byte{{passNFC, passNFD}, {passNFD, passNFC}, {passMix, passNFD}} {
		b := exportPass(t, s, string(tc[0]))
		for _, p := range tc {
			if _, err := s.Import(ctx, bytes.NewReader(b), ImportOptions{Passphrase: p}, amImporter{s}); err != nil {
				t.Fatalf("backup made with %q, import with %q: %v", tc[0], p, err)
			}
		}
	}
	// The old code path: an age scrypt recipient over the bytes as given.
	for _, raw := range [][]byte{passMix, passBad, passNFD} {
		r, err := age.NewScryptRecipient(string(raw))
		if err != nil {
			t.Fatal(err)
		}
		r.SetWorkFactor(testWorkFactor)
		var buf bytes.Buffer
		if _, err := s.Export(ctx, &buf, ExportOptions{Recipients: []age.Recipient{r}}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Import(ctx, bytes.NewReader(buf.Bytes()), ImportOptions{Passphrase: raw}, amImporter{s}); err != nil {
			t.Fatalf("legacy backup with %q: %v", raw, err)
		}
	}
	fixture, err := os.ReadFile(filepath.Join(legacyFixture, "backup.age"))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range [][]byte{passNFD, passNFC} {
		st, err := s.Import(ctx, bytes.NewReader(fixture), ImportOptions{Passphrase: p}, amImporter{s})
		if err != nil || st.Records != 1 {
			t.Fatalf("fixture backup with %q: %+v %v", p, st, err)
		}
	}
	_, err = s.Import(ctx, bytes.NewReader(fixture), ImportOptions{Passphrase: []byte("caf\u00e9")}, amImporter{s})
	wantErr(t, err, ErrWrongKey, "fixture backup, wrong passphrase")
	_, err = s.Import(ctx, io.LimitReader(bytes.NewReader(fixture), int64(len(fixture)-5)), ImportOptions{Passphrase: passNFC}, amImporter{s})
	wantErr(t, err, ErrBadBackup, "fixture backup, truncated")
}
