package storage

import (
	"encoding/binary"
	"slices"
	"time"
)

// The on-disk form of a record's metadata, its feed entry and the names
// they carry, and the limits checked on them.

// chunkRef lists one stored chunk in the meta. The meta is the only way to
// reach chunks, and it pins each chunk's envelope nonce, so an older or
// foreign chunk value under the same key is detected.
type chunkRef struct {
	n     uint32
	snap  bool
	size  uint32
	nonce [nonceSize]byte
}

// metaRec is the sealed record meta. Plaintext encoding (v1):
//
//	u8 1 | str coll | str id | i64 created ns | i64 updated ns | u8 flags(1=deleted)
//	| uv seq | uv nheads, 32B each | bytes attrs | uv nextChunk
//	| uv nchunks, each: uv n | u8 snap | uv size | 24B nonce
//	| bytes inline snapshot (empty unless the snapshot is <= inlineMax)
type metaRec struct {
	coll, id         string
	created, updated int64
	deleted          bool
	seq              uint64
	heads            [][]byte
	attrs            []byte
	nextChunk        uint32
	chunks           []chunkRef
	inline           []byte // small snapshot kept in the meta; comes before the chunks
}

func (m *metaRec) encode() []byte { return m.appendEncoded(make([]byte, 0, m.encodedSize())) }

// encodedSize is an upper bound of the length of m's encoding.
func (m *metaRec) encodedSize() int {
	return 80 + len(m.coll) + len(m.id) + HeadSize*len(m.heads) + len(m.attrs) + 40*len(m.chunks) + len(m.inline)
}

// appendEncoded appends m's encoding to dst.
func (m *metaRec) appendEncoded(dst []byte) []byte {
	w := wbuf{b: dst}
	w.u8(1)
	w.str(m.coll)
	w.str(m.id)
	w.i64(m.created)
	w.i64(m.updated)
	f := byte(0)
	if m.deleted {
		f = 1
	}
	w.u8(f)
	w.uv(m.seq)
	w.uv(uint64(len(m.heads)))
	for _, h := range m.heads {
		w.fixed(h)
	}
	w.bytes(m.attrs)
	w.uv(uint64(m.nextChunk))
	w.uv(uint64(len(m.chunks)))
	for _, c := range m.chunks {
		w.uv(uint64(c.n))
		s := byte(0)
		if c.snap {
			s = 1
		}
		w.u8(s)
		w.uv(uint64(c.size))
		w.fixed(c.nonce[:])
	}
	w.bytes(m.inline)
	return w.b
}

func decodeMeta(b []byte) (*metaRec, error) {
	r := rbuf{b: b}
	m := &metaRec{}
	if r.u8() != 1 {
		return nil, ErrCorrupt
	}
	m.coll = r.str(maxNameLen)
	m.id = r.str(maxNameLen)
	m.created = r.i64()
	m.updated = r.i64()
	switch r.u8() {
	case 0:
	case 1:
		m.deleted = true
	default:
		return nil, ErrCorrupt
	}
	m.seq = r.uv()
	nh := r.count(maxHeads, 32)
	if nh > 0 {
		m.heads = make([][]byte, nh)
		for i := range m.heads {
			m.heads[i] = slices.Clone(r.fixed(HeadSize))
		}
	}
	m.attrs = r.bytes(maxAttrsLen)
	nc := r.uv()
	if nc > 1<<32-1 {
		return nil, ErrCorrupt
	}
	m.nextChunk = uint32(nc)
	n := r.count(maxChunks, 3+nonceSize)
	if n > 0 {
		m.chunks = make([]chunkRef, n)
		for i := range m.chunks {
			c := &m.chunks[i]
			cn, snap, size := r.uv(), r.u8(), r.uv()
			if cn >= nc || snap > 1 || size > maxValueLen {
				return nil, ErrCorrupt
			}
			c.n, c.snap, c.size = uint32(cn), snap == 1, uint32(size)
			copy(c.nonce[:], r.fixed(nonceSize))
		}
	}
	m.inline = r.bytes(inlineMax)
	if !r.done() || m.coll == "" || m.id == "" || len(m.chunks) == 0 && len(m.inline) == 0 {
		return nil, ErrCorrupt
	}
	return m, nil
}

// HeadSize is the length of one head (an Automerge change hash) in
// RecordWrite.Heads and RecordMeta.Heads.
const HeadSize = 32

func cloneHeads(hs [][]byte) [][]byte {
	if hs == nil {
		return nil
	}
	out := make([][]byte, len(hs))
	for i, h := range hs {
		out[i] = slices.Clone(h)
	}
	return out
}

func (m *metaRec) toMeta() RecordMeta {
	rm := RecordMeta{
		Collection: m.coll, ID: m.id,
		Created: time.Unix(0, m.created).UTC(), Updated: time.Unix(0, m.updated).UTC(),
		Deleted: m.deleted, Seq: m.seq, Heads: cloneHeads(m.heads),
	}
	if len(m.attrs) > 0 {
		rm.Attrs = slices.Clone(m.attrs)
	}
	rm.Size = len(m.inline)
	for _, c := range m.chunks {
		rm.Size += int(c.size)
	}
	return rm
}

// sizes returns the snapshot size and the total of the incrementals.
func (m *metaRec) sizes() (snap, inc int) {
	snap = len(m.inline)
	for _, c := range m.chunks {
		if c.snap {
			snap += int(c.size)
		} else {
			inc += int(c.size)
		}
	}
	return
}

// Feed entry plaintext: u8 1 | str coll | str id | 24B nonce of the meta it
// belongs to. The entry doubles as the meta's liveness marker.
func encodeFeed(coll, id string, metaNonce [nonceSize]byte) []byte {
	return appendFeed(make([]byte, 0, feedSize(coll, id)), coll, id, metaNonce)
}

// feedSize is an upper bound of the length of a feed entry's encoding.
func feedSize(coll, id string) int {
	return 1 + 2*binary.MaxVarintLen64 + len(coll) + len(id) + nonceSize
}

func appendFeed(dst []byte, coll, id string, metaNonce [nonceSize]byte) []byte {
	w := wbuf{b: dst}
	w.u8(1)
	w.str(coll)
	w.str(id)
	w.fixed(metaNonce[:])
	return w.b
}

func decodeFeed(b []byte) (coll, id string, nonce [nonceSize]byte, err error) {
	r := rbuf{b: b}
	v := r.u8()
	coll, id = r.str(maxNameLen), r.str(maxNameLen)
	copy(nonce[:], r.fixed(nonceSize))
	if v != 1 || !r.done() || coll == "" || id == "" {
		return "", "", nonce, ErrCorrupt
	}
	return coll, id, nonce, nil
}

func encodeName(s string) []byte {
	w := wbuf{}
	w.u8(1)
	w.str(s)
	return w.b
}

func decodeName(b []byte) (string, error) {
	r := rbuf{b: b}
	v := r.u8()
	s := r.str(maxNameLen)
	if v != 1 || !r.done() || s == "" {
		return "", ErrCorrupt
	}
	return s, nil
}

func checkName(what, s string) error {
	if s == "" || len(s) > maxNameLen {
		return invalidf("%s must be 1..%d bytes", what, maxNameLen)
	}
	return nil
}

// maxSlotKeyLen bounds a slot key, which may join two names and a little
// more (a replica keys its per-record slots by collection and id).
const maxSlotKeyLen = 4 * maxNameLen

func checkSlotKey(s string) error {
	if s == "" || len(s) > maxSlotKeyLen {
		return invalidf("slot key must be 1..%d bytes", maxSlotKeyLen)
	}
	return nil
}
