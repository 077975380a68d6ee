package relay

import (
	"bytes"
	"errors"
	"testing"
)

func TestBucketSizes(t *testing.T) {
	for _, tc := range []struct{ n, want int }{
		{0, 1024}, {1024 - bundleOverhead, 1024}, {1024 - bundleOverhead + 1, 2048},
		{100_000, 128 << 10}, {MaxPayload, MaxBundleSize}, {MaxPayload + 1, 0}, {-1, 0},
	} {
		if got := BucketSize(tc.n); got != tc.want {
			t.Errorf("BucketSize(%d) = %d, want %d", tc.n, got, tc.want)
		}
	}
}

func TestSealOpen(t *testing.T) {
	space := newSpace(t, "https://relay.example")
	k := newKey(t)
	for _, n := range []int{0, 1, 875, 876, 5000, 1 << 20} {
		p := bytes.Repeat([]byte{byte(n)}, n)
		sealed, err := Seal(space, k, 7, p)
		if err != nil {
			t.Fatal(err)
		}
		if len(sealed) != BucketSize(n) {
			t.Fatalf("payload %d sealed to %d bytes, want bucket %d", n, len(sealed), BucketSize(n))
		}
		b, err := Open(space, sealed)
		if err != nil {
			t.Fatalf("payload %d: %v", n, err)
		}
		if !bytes.Equal(b.Payload, p) || b.Counter != 7 || !b.Sender.Equal(pubOf(k)) {
			t.Fatalf("payload %d: opened %d bytes counter %d", n, len(b.Payload), b.Counter)
		}
	}
}

func TestSealRefuses(t *testing.T) {
	space := newSpace(t, "u")
	k := newKey(t)
	bad := space
	bad.ID = "aaaaaaaaaaaaaaaaaaaaaaaaaa"
	for name, f := range map[string]func() error{
		"counter 0":   func() error { _, err := Seal(space, k, 0, nil); return err },
		"too large":   func() error { _, err := Seal(space, k, 1, make([]byte, MaxPayload+1)); return err },
		"short key":   func() error { _, err := Seal(space, k[:10], 1, nil); return err },
		"id mismatch": func() error { _, err := Seal(bad, k, 1, nil); return err },
	} {
		if err := f(); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
}

// Every single-byte change, truncation, extension, another space's key or
// another signer is ErrTampered.
func TestOpenTampered(t *testing.T) {
	space := newSpace(t, "u")
	k := newKey(t)
	sealed, err := Seal(space, k, 3, []byte("hello"))
	if err != nil {
		t.Fatal(err)
	}
	check := func(name string, b []byte, sp Space) {
		t.Helper()
		got, err := Open(sp, b)
		if !errors.Is(err, ErrTampered) {
			t.Fatalf("%s: err %v payload %q, want ErrTampered", name, err, got.Payload)
		}
	}
	for i := 0; i < len(sealed); i += 7 {
		b := bytes.Clone(sealed)
		b[i] ^= 0x40
		check("flip", b, space)
	}
	check("truncated", sealed[:len(sealed)-1], space)
	check("extended", append(bytes.Clone(sealed), make([]byte, len(sealed))...), space)
	check("other space", sealed, newSpace(t, "u"))
	// Re-signed by another key with the header's sender swapped: AEAD fails.
	other := newKey(t)
	b := bytes.Clone(sealed[:len(sealed)-sigLen])
	copy(b[1:], pubOf(other))
	b = append(b, signFor(space, other, b)...)
	check("other sender", b, space)
}

func signFor(space Space, k []byte, body []byte) []byte {
	return edSign(k, sigMessage(space.ID, body))
}
