package replica

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"slices"
	"strings"

	"github.com/ferrysync/ferry/storage"
)

// Range-based set reconciliation (docs/sync.md, "Reconciliation").
//
// The set reconciled is the (record, heads) pairs of the collections both
// sides share with each other. Records are ordered by their key,
// storage.ReconKey(collection, id), and fall in storage.ReconBuckets
// buckets by its top bits; a range is an interval of buckets. A range's
// fingerprint is an HMAC, under the session's key, of its bounds, its count
// and the sum of its item hashes (storage keeps the per-bucket sums, so
// nothing is read per record to fingerprint). The initiator sends the
// fingerprint of the whole key space; a side that finds a fingerprint
// differing from its own splits the range and answers with the
// fingerprints of the parts, or, for a single bucket or a range it holds
// few records of, with its items (a key tag and a version tag each), or
// says it holds nothing there. A side comparing item lists knows which
// records the other lacks (it sends them), which it lacks (it says so) and
// which differ (it sends its heads); heads exchanges end in each side
// sending the changes the other lacks, through the ordinary batches.

const (
	reconNonceLen = 16
	reconTagLen   = 8
	reconFPLen    = 16
	reconItemLen  = 2 * reconTagLen
	// reconSplit is how many parts a differing range is split into.
	reconSplit = 16
	// reconListAt: a part holding at most this many of the sender's
	// records is sent as its items rather than a fingerprint.
	reconListAt = 2
	// reconMsgEntries and reconMsgBytes bound one recon frame's ranges,
	// heads entries and listed items; a longer answer takes several frames.
	reconMsgEntries = 2048
	reconMsgBytes   = 1 << 20
	// maxReconRounds is the highest heads round (see reconHeads).
	maxReconRounds = 2
)

// Range modes.
const (
	rangeFP    = 0 // FP is the sender's fingerprint of the range
	rangeItems = 1 // Items lists the sender's records in the range
	rangeEmpty = 2 // the sender holds no record in the range
)

// reconMsg is one step of a reconciliation.
type reconMsg struct {
	Ranges []reconRange `cbor:"1,keyasint,omitempty"`
	Heads  []reconHeads `cbor:"2,keyasint,omitempty"`
	// Reply marks the last frame of the answer to a frame that asked for
	// one (see asks).
	Reply bool `cbor:"3,keyasint,omitempty"`
}

// reconRange describes the sender's records in buckets [Lo, Hi).
type reconRange struct {
	Lo   uint16 `cbor:"1,keyasint,omitempty"`
	Hi   uint16 `cbor:"2,keyasint"`
	Mode uint8  `cbor:"3,keyasint,omitempty"`
	// FP is the keyed fingerprint (rangeFP).
	FP []byte `cbor:"4,keyasint,omitempty"`
	// Items holds, per record, its key tag then its version tag
	// (rangeItems), reconTagLen bytes each.
	Items []byte `cbor:"5,keyasint,omitempty"`
}

// reconHeads is about one record both sides know by its key tag. Lack: the
// sender does not hold it (send it whole). Otherwise Heads are the
// sender's heads for it; Round says how far the exchange went: 0 and 1
// ask for an answer when the receiver lacks some of the heads, 2 does not.
type reconHeads struct {
	Tag   []byte   `cbor:"1,keyasint"`
	Heads [][]byte `cbor:"2,keyasint,omitempty"`
	Round uint8    `cbor:"3,keyasint,omitempty"`
	Lack  bool     `cbor:"4,keyasint,omitempty"`
}

// asks reports whether the frame needs an answer: it holds a fingerprint
// or an item list, or a heads entry of round 0 or 1.
func (m *reconMsg) asks() bool {
	for _, r := range m.Ranges {
		if r.Mode != rangeEmpty {
			return true
		}
	}
	for _, h := range m.Heads {
		if !h.Lack && h.Round < maxReconRounds {
			return true
		}
	}
	return false
}

func (m *reconMsg) validate() error {
	if len(m.Ranges) > reconMsgEntries || len(m.Heads) > reconMsgEntries {
		return protoErr("recon frame of %d ranges, %d heads", len(m.Ranges), len(m.Heads))
	}
	for _, r := range m.Ranges {
		if r.Lo >= r.Hi || r.Hi > storage.ReconBuckets {
			return protoErr("recon range [%d, %d)", r.Lo, r.Hi)
		}
		switch r.Mode {
		case rangeFP:
			if len(r.FP) != reconFPLen || len(r.Items) != 0 {
				return protoErr("recon fingerprint of %d bytes", len(r.FP))
			}
		case rangeItems:
			if len(r.Items) == 0 || len(r.Items)%reconItemLen != 0 || len(r.FP) != 0 {
				return protoErr("recon items of %d bytes", len(r.Items))
			}
		case rangeEmpty:
			if len(r.Items) != 0 || len(r.FP) != 0 {
				return protoErr("empty recon range with a body")
			}
		default:
			return protoErr("recon range mode %d", r.Mode)
		}
	}
	for _, h := range m.Heads {
		if len(h.Tag) != reconTagLen || len(h.Heads) > maxHeads || h.Round > maxReconRounds ||
			h.Lack && len(h.Heads) > 0 || !h.Lack && len(h.Heads) == 0 {
			return protoErr("recon heads entry out of bounds")
		}
		for _, x := range h.Heads {
			if len(x) != 32 {
				return protoErr("head of %d bytes", len(x))
			}
		}
	}
	return nil
}

// reconItem is one record of the set, as this side holds it.
type reconItem struct {
	coll, id string
	key      [32]byte
	heads    [][]byte
	hash     [32]byte
}

// reconSend is a record to send the peer: the changes since the heads it
// holds (all of them when since is empty).
type reconSend struct {
	coll, id string
	since    [][]byte
}

// reconData is what reconciliation reads from its side.
type reconData interface {
	// reconSums returns, indexed by bucket (storage.ReconBuckets
	// entries), the count and sum over the session's collections.
	reconSums(ctx context.Context) ([]storage.ReconSum, error)
	// reconItems returns the records in buckets [lo, hi).
	reconItems(ctx context.Context, lo, hi uint16) ([]reconItem, error)
	// reconHeads decides, for a record the peer holds at theirs (a heads
	// entry of the given round), what to send it (nil: nothing) and
	// whether to answer with this side's heads at round answer.
	reconHeads(ctx context.Context, coll, id string, theirs [][]byte, round uint8) (send *reconSend, mine [][]byte, answer bool, err error)
}

type recRef struct{ coll, id string }

// reconEngine is one side's reconciliation state. It does no I/O of its
// own: it reads its side through reconData and returns the frames to send
// and the records to send.
type reconEngine struct {
	key      [32]byte
	sums     []storage.ReconSum
	tags     map[[reconTagLen]byte]recRef
	pending  bool // the peer starts, and its first frame has not come
	awaiting int  // frames sent that asked for an answer not yet complete
}

// reconKey derives the session's fingerprint key from both identities and
// both hello nonces, so fingerprints and tags differ in every session and
// mean nothing outside it.
func reconKey(a, b string, na, nb []byte) [32]byte {
	if a > b {
		a, b, na, nb = b, a, nb, na
	}
	h := sha256.New()
	h.Write([]byte("ferry/sync/v2 reconciliation\x00"))
	for _, p := range [][]byte{[]byte(a), []byte(b), na, nb} {
		h.Write(binary.AppendUvarint(nil, uint64(len(p))))
		h.Write(p)
	}
	var k [32]byte
	h.Sum(k[:0])
	return k
}

func newReconEngine(key [32]byte, initiator bool) *reconEngine {
	return &reconEngine{key: key, tags: map[[reconTagLen]byte]recRef{}, pending: !initiator}
}

// busy reports whether the reconciliation is still under way on this side.
func (e *reconEngine) busy() bool { return e.pending || e.awaiting > 0 }

func (e *reconEngine) mac(parts ...[]byte) []byte {
	m := hmac.New(sha256.New, e.key[:])
	for _, p := range parts {
		m.Write(p)
	}
	return m.Sum(nil)
}

func (e *reconEngine) fingerprint(lo, hi uint16, count uint64, sum [32]byte) []byte {
	var b [12]byte
	binary.BigEndian.PutUint16(b[0:], lo)
	binary.BigEndian.PutUint16(b[2:], hi)
	binary.BigEndian.PutUint64(b[4:], count)
	return e.mac([]byte{'f'}, b[:], sum[:])[:reconFPLen]
}

func (e *reconEngine) keyTag(key [32]byte) (t [reconTagLen]byte) {
	copy(t[:], e.mac([]byte{'k'}, key[:]))
	return t
}

func (e *reconEngine) verTag(hash [32]byte) (t [reconTagLen]byte) {
	copy(t[:], e.mac([]byte{'v'}, hash[:]))
	return t
}

func (e *reconEngine) loadSums(ctx context.Context, d reconData) error {
	if e.sums != nil {
		return nil
	}
	s, err := d.reconSums(ctx)
	if err != nil {
		return err
	}
	e.sums = s
	return nil
}

func (e *reconEngine) rangeSum(lo, hi uint16) (uint64, [32]byte) {
	var n uint64
	var sum [32]byte
	for b := lo; b < hi; b++ {
		n += e.sums[b].Count
		storage.AddSum(&sum, e.sums[b].Sum)
	}
	return n, sum
}

// describe returns this side's description of [lo, hi): empty, its items
// (single buckets, or few records), or its fingerprint.
func (e *reconEngine) describe(ctx context.Context, d reconData, lo, hi uint16, listAt uint64) (reconRange, error) {
	n, sum := e.rangeSum(lo, hi)
	switch {
	case n == 0:
		return reconRange{Lo: lo, Hi: hi, Mode: rangeEmpty}, nil
	case n <= listAt:
		items, err := d.reconItems(ctx, lo, hi)
		if err != nil {
			return reconRange{}, err
		}
		if len(items) == 0 {
			return reconRange{Lo: lo, Hi: hi, Mode: rangeEmpty}, nil
		}
		buf := make([]byte, 0, len(items)*reconItemLen)
		for _, it := range items {
			kt, vt := e.keyTag(it.key), e.verTag(it.hash)
			e.tags[kt] = recRef{it.coll, it.id}
			buf = append(append(buf, kt[:]...), vt[:]...)
		}
		return reconRange{Lo: lo, Hi: hi, Mode: rangeItems, Items: buf}, nil
	}
	return reconRange{Lo: lo, Hi: hi, Mode: rangeFP, FP: e.fingerprint(lo, hi, n, sum)}, nil
}

// start returns the initiator's first frame: the fingerprint of the whole
// key space (or "empty", or the items when it holds few records).
func (e *reconEngine) start(ctx context.Context, d reconData) ([]*reconMsg, error) {
	if err := e.loadSums(ctx, d); err != nil {
		return nil, err
	}
	r, err := e.describe(ctx, d, 0, storage.ReconBuckets, reconListAt)
	if err != nil {
		return nil, err
	}
	var b reconBuilder
	b.addRange(r)
	return e.finish(&b, false), nil
}

// step handles one frame from the peer. It returns the frames to send
// (the answer, when the frame asked for one) and the records to send.
func (e *reconEngine) step(ctx context.Context, d reconData, m *reconMsg) ([]*reconMsg, []reconSend, error) {
	if m.Reply {
		if e.awaiting == 0 {
			return nil, nil, protoErr("recon answer to nothing")
		}
		e.awaiting--
	}
	e.pending = false
	if err := e.loadSums(ctx, d); err != nil {
		return nil, nil, err
	}
	var b reconBuilder
	var sends []reconSend
	for _, r := range m.Ranges {
		switch r.Mode {
		case rangeFP:
			n, sum := e.rangeSum(r.Lo, r.Hi)
			if n > 0 && hmac.Equal(e.fingerprint(r.Lo, r.Hi, n, sum), r.FP) {
				continue
			}
			if n == 0 {
				b.addRange(reconRange{Lo: r.Lo, Hi: r.Hi, Mode: rangeEmpty})
				continue
			}
			if r.Hi-r.Lo == 1 {
				rr, err := e.describe(ctx, d, r.Lo, r.Hi, ^uint64(0))
				if err != nil {
					return nil, nil, err
				}
				b.addRange(rr)
				continue
			}
			width := (r.Hi - r.Lo + reconSplit - 1) / reconSplit
			for lo := r.Lo; lo < r.Hi; lo += width {
				hi := min(lo+width, r.Hi)
				rr, err := e.describe(ctx, d, lo, hi, reconListAt)
				if err != nil {
					return nil, nil, err
				}
				b.addRange(rr)
			}
		case rangeEmpty:
			items, err := d.reconItems(ctx, r.Lo, r.Hi)
			if err != nil {
				return nil, nil, err
			}
			for _, it := range items {
				sends = append(sends, reconSend{coll: it.coll, id: it.id})
			}
		case rangeItems:
			theirs := make(map[[reconTagLen]byte][reconTagLen]byte, len(r.Items)/reconItemLen)
			order := make([][reconTagLen]byte, 0, len(r.Items)/reconItemLen)
			for i := 0; i < len(r.Items); i += reconItemLen {
				var kt, vt [reconTagLen]byte
				copy(kt[:], r.Items[i:])
				copy(vt[:], r.Items[i+reconTagLen:])
				if _, dup := theirs[kt]; !dup {
					order = append(order, kt)
				}
				theirs[kt] = vt
			}
			items, err := d.reconItems(ctx, r.Lo, r.Hi)
			if err != nil {
				return nil, nil, err
			}
			for _, it := range items {
				kt := e.keyTag(it.key)
				e.tags[kt] = recRef{it.coll, it.id}
				vt, ok := theirs[kt]
				switch {
				case !ok:
					sends = append(sends, reconSend{coll: it.coll, id: it.id})
				case vt != e.verTag(it.hash):
					b.addHeads(reconHeads{Tag: kt[:], Heads: it.heads})
				}
				delete(theirs, kt)
			}
			for _, kt := range order {
				if _, left := theirs[kt]; left {
					b.addHeads(reconHeads{Tag: slices.Clone(kt[:]), Lack: true})
				}
			}
		}
	}
	for _, h := range m.Heads {
		var kt [reconTagLen]byte
		copy(kt[:], h.Tag)
		ref, ok := e.tags[kt]
		if !ok {
			return nil, nil, protoErr("recon entry for a record not listed")
		}
		if h.Lack {
			sends = append(sends, reconSend{coll: ref.coll, id: ref.id})
			continue
		}
		send, mine, answer, err := d.reconHeads(ctx, ref.coll, ref.id, h.Heads, h.Round)
		if err != nil {
			return nil, nil, err
		}
		if send != nil {
			sends = append(sends, *send)
		}
		if answer && h.Round < maxReconRounds {
			b.addHeads(reconHeads{Tag: h.Tag, Heads: mine, Round: h.Round + 1})
		}
	}
	// Names in order: records sent together compress better when their
	// names are alike (ids are often sequential).
	slices.SortFunc(sends, func(x, y reconSend) int {
		if c := strings.Compare(x.coll, y.coll); c != 0 {
			return c
		}
		return strings.Compare(x.id, y.id)
	})
	return e.finish(&b, m.asks()), sends, nil
}

// finish cuts what the builder holds into frames, marks the last one as
// the answer when one is owed, and counts the frames that ask.
func (e *reconEngine) finish(b *reconBuilder, answer bool) []*reconMsg {
	out := b.frames()
	if answer {
		if len(out) == 0 {
			out = append(out, &reconMsg{})
		}
		out[len(out)-1].Reply = true
	}
	for _, m := range out {
		if m.asks() {
			e.awaiting++
		}
	}
	return out
}

// reconBuilder collects ranges and heads entries into frames within the
// per-frame bounds.
type reconBuilder struct {
	msgs []*reconMsg
	size int
}

func (b *reconBuilder) cur(add int) *reconMsg {
	if len(b.msgs) == 0 {
		b.msgs = append(b.msgs, &reconMsg{})
		b.size = 0
	}
	m := b.msgs[len(b.msgs)-1]
	if len(m.Ranges) >= reconMsgEntries || len(m.Heads) >= reconMsgEntries || b.size > 0 && b.size+add > reconMsgBytes {
		m = &reconMsg{}
		b.msgs = append(b.msgs, m)
		b.size = 0
	}
	b.size += add
	return m
}

func (b *reconBuilder) addRange(r reconRange) {
	if n := len(b.msgs); n > 0 && r.Mode == rangeEmpty {
		// Adjacent empty ranges merge into one.
		m := b.msgs[n-1]
		if k := len(m.Ranges); k > 0 && m.Ranges[k-1].Mode == rangeEmpty && m.Ranges[k-1].Hi == r.Lo {
			m.Ranges[k-1].Hi = r.Hi
			return
		}
	}
	m := b.cur(16 + len(r.FP) + len(r.Items))
	m.Ranges = append(m.Ranges, r)
}

func (b *reconBuilder) addHeads(h reconHeads) {
	m := b.cur(16 + 32*len(h.Heads))
	m.Heads = append(m.Heads, h)
}

func (b *reconBuilder) frames() []*reconMsg { return b.msgs }

// sortItems orders items by key (then collection) so both sides list a
// range alike.
func sortItems(items []reconItem) {
	slices.SortFunc(items, func(a, b reconItem) int {
		if c := bytes.Compare(a.key[:], b.key[:]); c != 0 {
			return c
		}
		return bytes.Compare([]byte(a.coll), []byte(b.coll))
	})
}
