package crdt

import (
	"fmt"

	"github.com/automerge/automerge-go"
)

// HashSize is the length in bytes of one change hash.
const HashSize = 32

// Heads is a set of Automerge change hashes: a document's heads, or the
// heads a peer is known to hold. Order carries no meaning for Equal and
// Covers; Dedup keeps the first occurrence of each hash, so a caller that
// lists the newest first keeps them first.
type Heads []automerge.ChangeHash

// Covers reports whether every hash in want is in h (an empty want is
// covered by any h).
func (h Heads) Covers(want Heads) bool {
	if len(want) > 8 && len(h) > 8 {
		set := make(map[automerge.ChangeHash]struct{}, len(h))
		for _, x := range h {
			set[x] = struct{}{}
		}
		for _, w := range want {
			if _, ok := set[w]; !ok {
				return false
			}
		}
		return true
	}
	for _, w := range want {
		found := false
		for _, x := range h {
			if x == w {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// Equal reports whether h and o hold the same hashes (duplicates and order
// aside).
func (h Heads) Equal(o Heads) bool {
	return h.Covers(o) && o.Covers(h)
}

// Dedup returns h without repeated hashes, keeping the first occurrence of
// each in order. It does not modify h.
func (h Heads) Dedup() Heads {
	out := make(Heads, 0, len(h))
	seen := make(map[automerge.ChangeHash]struct{}, len(h))
	for _, x := range h {
		if _, ok := seen[x]; !ok {
			seen[x] = struct{}{}
			out = append(out, x)
		}
	}
	return out
}

// Bytes returns each hash as its own HashSize-byte slice (the form storage
// and the wire use).
func (h Heads) Bytes() [][]byte {
	out := make([][]byte, len(h))
	for i := range h {
		x := h[i]
		out[i] = x[:]
	}
	return out
}

// Encode returns the hashes concatenated: HashSize bytes each, in order.
func (h Heads) Encode() []byte {
	b := make([]byte, 0, HashSize*len(h))
	for _, x := range h {
		b = append(b, x[:]...)
	}
	return b
}

// HeadsFromBytes is the inverse of Bytes. A slice that is not HashSize
// bytes long is ErrBadDocument.
func HeadsFromBytes(bs [][]byte) (Heads, error) {
	out := make(Heads, len(bs))
	for i, b := range bs {
		if len(b) != HashSize {
			return nil, fmt.Errorf("%w: change hash of %d bytes, want %d", ErrBadDocument, len(b), HashSize)
		}
		copy(out[i][:], b)
	}
	return out, nil
}

// DecodeHeads is the inverse of Encode. A length that is not a multiple of
// HashSize is ErrBadDocument.
func DecodeHeads(b []byte) (Heads, error) {
	if len(b)%HashSize != 0 {
		return nil, fmt.Errorf("%w: %d bytes of change hashes, not a multiple of %d", ErrBadDocument, len(b), HashSize)
	}
	out := make(Heads, len(b)/HashSize)
	for i := range out {
		copy(out[i][:], b[i*HashSize:])
	}
	return out, nil
}
