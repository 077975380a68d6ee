package crdt

import (
	"bytes"
	"errors"
	"testing"

	"github.com/automerge/automerge-go"
	"pgregory.net/rapid"
)

// genHeads draws head sets from a small pool of hashes, so repeats,
// overlaps and empty sets are common.
func genHeads(pool []automerge.ChangeHash) *rapid.Generator[Heads] {
	return rapid.Custom(func(t *rapid.T) Heads {
		idx := rapid.SliceOfN(rapid.IntRange(0, len(pool)-1), 0, 12).Draw(t, "idx")
		h := make(Heads, len(idx))
		for i, j := range idx {
			h[i] = pool[j]
		}
		return h
	})
}

func hashPool() []automerge.ChangeHash {
	pool := make([]automerge.ChangeHash, 10)
	for i := range pool {
		pool[i][0] = byte(i) // hash 0 is all zero bytes
		pool[i][31] = byte(255 - i)
	}
	return pool
}

func setOf(h Heads) map[automerge.ChangeHash]bool {
	m := map[automerge.ChangeHash]bool{}
	for _, x := range h {
		m[x] = true
	}
	return m
}

// TestHeadsProperties checks the set operations against a map model and
// the byte forms round trip.
func TestHeadsProperties(t *testing.T) {
	pool := hashPool()
	rapid.Check(t, func(t *rapid.T) {
		a := genHeads(pool).Draw(t, "a")
		b := genHeads(pool).Draw(t, "b")
		sa, sb := setOf(a), setOf(b)
		covers := true
		for x := range sb {
			covers = covers && sa[x]
		}
		if a.Covers(b) != covers {
			t.Fatalf("Covers(%v, %v) = %v", a, b, !covers)
		}
		equal := covers && len(sa) == len(sb)
		if a.Equal(b) != equal || b.Equal(a) != equal {
			t.Fatalf("Equal(%v, %v) != %v", a, b, equal)
		}
		if SameHeads(a, b) != equal {
			t.Fatalf("SameHeads(%v, %v) != %v", a, b, equal)
		}
		d := a.Dedup()
		if len(d) != len(sa) || !d.Equal(a) {
			t.Fatalf("Dedup(%v) = %v", a, d)
		}
		// First occurrences, in order.
		seen := map[automerge.ChangeHash]bool{}
		k := 0
		for _, x := range a {
			if !seen[x] {
				seen[x] = true
				if d[k] != x {
					t.Fatalf("Dedup(%v) = %v: order", a, d)
				}
				k++
			}
		}
		got, err := DecodeHeads(a.Encode())
		if err != nil || !equalSeq(got, a) {
			t.Fatalf("Encode/DecodeHeads(%v) = %v %v", a, got, err)
		}
		got, err = HeadsFromBytes(a.Bytes())
		if err != nil || !equalSeq(got, a) {
			t.Fatalf("Bytes/HeadsFromBytes(%v) = %v %v", a, got, err)
		}
	})
}

func equalSeq(a, b Heads) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestHeadsBadBytes(t *testing.T) {
	for _, n := range []int{1, 31, 33, 63} {
		if _, err := DecodeHeads(make([]byte, n)); !errors.Is(err, ErrBadDocument) {
			t.Fatalf("DecodeHeads of %d bytes: %v", n, err)
		}
		if _, err := HeadsFromBytes([][]byte{make([]byte, 32), make([]byte, n)}); !errors.Is(err, ErrBadDocument) {
			t.Fatalf("HeadsFromBytes with a %d-byte hash: %v", n, err)
		}
	}
	if h, err := DecodeHeads(nil); err != nil || len(h) != 0 {
		t.Fatalf("DecodeHeads(nil) = %v %v", h, err)
	}
	// Bytes does not alias between hashes.
	h := Heads{{1}, {2}}
	bs := h.Bytes()
	if bs[0][0] != 1 || bs[1][0] != 2 {
		t.Fatalf("Bytes = %x", bs)
	}
}

// FuzzDecodeHeads: any bytes decode to a set that encodes back to them, or
// give ErrBadDocument.
func FuzzDecodeHeads(f *testing.F) {
	f.Add([]byte{})
	f.Add(make([]byte, 32))
	f.Add(make([]byte, 33))
	f.Add(bytes.Repeat([]byte{0xff}, 64))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := DecodeHeads(b)
		if err != nil {
			if !errors.Is(err, ErrBadDocument) {
				t.Fatal(err)
			}
			return
		}
		if !bytes.Equal(h.Encode(), b) {
			t.Fatal("round trip")
		}
	})
}
