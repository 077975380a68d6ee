package storage

import (
	"bytes"
	"errors"
	"testing"
)

func testHeader(t testing.TB, rotating bool) *header {
	o := testOpts()
	h := &header{gen: 3, curEpoch: 5}
	kek, err := newHeaderParams(h, &o)
	if err != nil {
		t.Fatal(err)
	}
	if rotating {
		h.rotating, h.nextEpoch = true, 6
	}
	if err := h.wrapKeys(kek, randomKey(), randomKey()); err != nil {
		t.Fatal(err)
	}
	return h
}

func TestHeaderRoundTrip(t *testing.T) {
	for _, rot := range []bool{false, true} {
		h := testHeader(t, rot)
		b := h.encode()
		if len(b) != headerLen {
			t.Fatalf("header is %d bytes", len(b))
		}
		got, err := decodeHeader(b)
		if err != nil || !headerEqual(got, h) {
			t.Fatalf("round trip (rotating=%v): %v", rot, err)
		}
		o := testOpts()
		if _, _, next, _, err := got.unlock(&o); err != nil || (next != nil) != rot {
			t.Fatalf("unlock: %v", err)
		}
		for i := 0; i < len(b); i++ {
			if _, err := decodeHeader(b[:i]); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("truncated header at %d: %v", i, err)
			}
		}
	}
}

// FuzzHeader decodes arbitrary bytes as a store header: never a panic, and
// anything accepted re-encodes to the same bytes.
func FuzzHeader(f *testing.F) {
	f.Add(testHeader(f, false).encode())
	f.Add(testHeader(f, true).encode())
	f.Add([]byte(headerMagic))
	f.Add(legacyHeader(f, []byte("cafe\u0301"), randomKey(), nil).encode())
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := decodeHeader(b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error not ErrCorrupt: %v", err)
			}
			return
		}
		if !bytes.Equal(h.encode(), b) {
			t.Fatal("accepted header does not re-encode to itself")
		}
		o := Options{Passphrase: []byte("x")}
		if (h.mode == modePassphrase || h.mode == modePassphraseNFC) && h.kdf.MemoryKiB > 1<<12 {
			return // too slow to derive in a fuzz loop
		}
		h.unlock(&o) // must not panic
	})
}
