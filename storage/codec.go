package storage

import (
	"encoding/binary"
)

// wbuf and rbuf encode the small binary plaintexts sealed in envelopes
// (metas, feed entries, slots, ...). rbuf bounds every length against both a
// caller-given maximum and the remaining input before allocating, and never
// panics: a failure sets a sticky flag reported by done().

type wbuf struct{ b []byte }

func (w *wbuf) u8(v byte)      { w.b = append(w.b, v) }
func (w *wbuf) uv(v uint64)    { w.b = binary.AppendUvarint(w.b, v) }
func (w *wbuf) i64(v int64)    { w.b = binary.BigEndian.AppendUint64(w.b, uint64(v)) }
func (w *wbuf) fixed(p []byte) { w.b = append(w.b, p...) }
func (w *wbuf) bytes(p []byte) { w.uv(uint64(len(p))); w.b = append(w.b, p...) }
func (w *wbuf) str(s string)   { w.uv(uint64(len(s))); w.b = append(w.b, s...) }

type rbuf struct {
	b   []byte
	bad bool
}

func (r *rbuf) fail() { r.bad = true; r.b = nil }

func (r *rbuf) u8() byte {
	if len(r.b) < 1 {
		r.fail()
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

func (r *rbuf) uv() uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail()
		return 0
	}
	r.b = r.b[n:]
	return v
}

// count reads a uvarint element count bounded by max and by the remaining
// input divided by the minimum element size.
func (r *rbuf) count(max, minElem int) int {
	v := r.uv()
	if r.bad || v > uint64(max) || (minElem > 0 && v > uint64(len(r.b)/minElem)) {
		r.fail()
		return 0
	}
	return int(v)
}

func (r *rbuf) i64() int64 {
	if len(r.b) < 8 {
		r.fail()
		return 0
	}
	v := int64(binary.BigEndian.Uint64(r.b))
	r.b = r.b[8:]
	return v
}

func (r *rbuf) fixed(n int) []byte {
	if len(r.b) < n {
		r.fail()
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

// bytes returns a copy of a length-prefixed byte string of at most max bytes.
func (r *rbuf) bytes(max int) []byte {
	n := r.uv()
	if r.bad || n > uint64(max) || n > uint64(len(r.b)) {
		r.fail()
		return nil
	}
	if n == 0 {
		return nil
	}
	v := make([]byte, n)
	copy(v, r.b)
	r.b = r.b[n:]
	return v
}

func (r *rbuf) str(max int) string {
	n := r.uv()
	if r.bad || n > uint64(max) || n > uint64(len(r.b)) {
		r.fail()
		return ""
	}
	v := string(r.b[:n])
	r.b = r.b[n:]
	return v
}

// done reports whether everything decoded and nothing is left over.
func (r *rbuf) done() bool { return !r.bad && len(r.b) == 0 }
