package storage

import (
	"bytes"
	"errors"
	"testing"
)

func fixedKeys(t testing.TB, epoch uint32) *epochKeys {
	master := bytes.Repeat([]byte{0x42}, keySize)
	ek, err := newEpochKeys(epoch, master)
	if err != nil {
		t.Fatal(err)
	}
	return ek
}

var fuzzEnvKey = []byte("d\x00\x00\x00\x01mKEYKEYKEYKEYKEYK")

func TestEnvelopeBinding(t *testing.T) {
	ek, ek2 := fixedKeys(t, 1), fixedKeys(t, 2)
	key := []byte("d\x00\x00\x00\x01m-some-key")
	env, nonce := ek.sealNew(kindMeta, key, []byte("hello"))
	if len(env) != envOverhead+5 || env[0] != envVersion {
		t.Fatalf("envelope layout: %x", env)
	}
	pt, n, err := ek.open(nil, kindMeta, key, env)
	if err != nil || string(pt) != "hello" || n != nonce {
		t.Fatalf("open: %q %v", pt, err)
	}
	other := append([]byte(nil), key...)
	other[len(other)-1] ^= 1
	for name, f := range map[string]func() error{
		"other key":   func() error { _, _, err := ek.open(nil, kindMeta, other, env); return err },
		"other kind":  func() error { _, _, err := ek.open(nil, kindChunk, key, env); return err },
		"other epoch": func() error { _, _, err := ek2.open(nil, kindMeta, key, env); return err },
	} {
		if err := f(); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("%s: %v", name, err)
		}
	}
	for i := range env {
		if _, _, err := ek.open(nil, kindMeta, key, flip(env, i)); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("flip at %d accepted", i)
		}
	}
	// Two seals of the same plaintext differ (fresh nonces).
	env2, _ := ek.sealNew(kindMeta, key, []byte("hello"))
	if bytes.Equal(env, env2) {
		t.Fatal("nonce reuse")
	}
}

func TestMetaCodec(t *testing.T) {
	m := &metaRec{coll: "c", id: "i", created: 1, updated: 2, deleted: true, seq: 9, attrs: []byte("a"),
		nextChunk: 3, chunks: []chunkRef{{n: 1, snap: true, size: 10}, {n: 2, size: 4}}}
	m.heads = [][]byte{make([]byte, HeadSize), make([]byte, HeadSize)}
	m.heads[1][0] = 7
	got, err := decodeMeta(m.encode())
	if err != nil {
		t.Fatal(err)
	}
	if got.coll != "c" || got.id != "i" || got.seq != 9 || !got.deleted || len(got.chunks) != 2 || got.chunks[1].size != 4 || got.heads[1][0] != 7 {
		t.Fatalf("round trip: %+v", got)
	}
	enc := m.encode()
	for i := 0; i < len(enc); i++ {
		decodeMeta(enc[:i]) // must not panic
	}
	if _, err := decodeMeta(append(enc, 0)); err == nil {
		t.Fatal("trailing byte accepted")
	}
	// Version-3 metas written before the 1 KiB value threshold hold
	// inline documents of up to inlineMax (2 KiB), more than ferry now
	// writes inline (inlineWrite): they still decode; one byte more does
	// not.
	for _, n := range []int{inlineWrite + 1, inlineMax, inlineMax + 1} {
		m := &metaRec{coll: "c", id: "i", inline: bytes.Repeat([]byte{'d'}, n)}
		got, err := decodeMeta(m.encode())
		if n <= inlineMax && (err != nil || !bytes.Equal(got.inline, m.inline)) {
			t.Fatalf("inline document of %d bytes: %v", n, err)
		}
		if n > inlineMax && err == nil {
			t.Fatalf("inline document of %d bytes (over inlineMax) accepted", n)
		}
	}
}

// FuzzEnvelope opens arbitrary bytes as an envelope under a fixed key: it
// never panics, and whatever opens is byte-for-byte a seal of its plaintext.
func FuzzEnvelope(f *testing.F) {
	ek := fixedKeys(f, 1)
	for _, pt := range [][]byte{nil, []byte("x"), bytes.Repeat([]byte("ab"), 100)} {
		env, _ := ek.sealNew(kindMeta, fuzzEnvKey, pt)
		f.Add(env)
	}
	f.Add([]byte{envVersion, 0, 0, 0, 1})
	f.Fuzz(func(t *testing.T, env []byte) {
		pt, nonce, err := ek.open(nil, kindMeta, fuzzEnvKey, env)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error not ErrCorrupt: %v", err)
			}
			return
		}
		if again := ek.seal(nil, kindMeta, fuzzEnvKey, nonce, pt); !bytes.Equal(again, env) {
			t.Fatal("opened an envelope that is not a seal of its plaintext")
		}
		// The decoders behind the envelope must not panic either.
		decodeMeta(pt)
		decodeFeed(pt)
		decodeSlot(pt)
		decodeLogHead(pt)
		decodeEntry(pt)
		decodeName(pt)
	})
}

// TestSealInPlace: sealing a plaintext encoded into an envelope buffer
// gives byte for byte what seal gives, for every length (including ones
// that overflow the buffer's capacity estimate), and opens to it.
func TestSealInPlace(t *testing.T) {
	ek := fixedKeys(t, 3)
	key := []byte("d\x00\x00\x00\x03m-in-place")
	nonce := newNonce()
	for n := 0; n < 300; n += 7 {
		pt := bytes.Repeat([]byte{byte(n)}, n)
		want := ek.seal(nil, kindMeta, key, nonce, pt)
		for _, capHint := range []int{n, n / 2, 0} {
			env := append(envelopeFor(capHint), pt...)
			got := ek.sealInPlace(env, kindMeta, key, nonce)
			if !bytes.Equal(got, want) {
				t.Fatalf("n=%d cap=%d: in place %x, seal %x", n, capHint, got, want)
			}
			back, gotNonce, err := ek.open(nil, kindMeta, key, got)
			if err != nil || !bytes.Equal(back, pt) || gotNonce != nonce {
				t.Fatalf("n=%d: open: %v", n, err)
			}
		}
	}
	m := metaRec{coll: "c", id: "i", chunks: []chunkRef{{n: 1 << 31, size: maxValueLen}}, nextChunk: ^uint32(0), seq: ^uint64(0)}
	if got := len(m.encode()); got > m.encodedSize() {
		t.Fatalf("meta encoding %d bytes, bound %d", got, m.encodedSize())
	}
	if got := len(encodeFeed("c", "i", nonce)); got > feedSize("c", "i") {
		t.Fatalf("feed encoding %d bytes, bound %d", got, feedSize("c", "i"))
	}
}
