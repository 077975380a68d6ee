package replica

import (
	"bytes"
	"cmp"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"math/bits"
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
// fingerprints of the parts, or, for a range it holds few records of,
// with its items (a key tag and a version tag each), or says it holds
// nothing there. A single bucket holding many records is split further,
// like negentropy splits a range of items: its records are ordered by
// their key tags, which are uniform over 64 bits, and a part of a bucket is
// one of 16^d equal intervals of that tag space; its fingerprint is over
// the records in it, read from the bucket (local I/O; only the parts that
// differ travel). A side comparing item lists knows which
// records the other lacks (it sends them), which it lacks (it says so) and
// which differ (it sends its heads); heads exchanges end in each side
// sending the changes the other lacks, through the ordinary batches.

const (
	reconNonceLen = 8
	reconTagLen   = 8
	reconFPLen    = 16
	reconItemLen  = 2 * reconTagLen
	// reconSplit is how many parts a differing range is split into.
	reconSplit = 16
	// reconListAt: a part holding at most this many of the sender's
	// records is sent as its items rather than a fingerprint.
	reconListAt = 2
	// reconSubMaxDepth is the deepest split of a bucket by key tag: 16^15
	// parts of 2^4 tags each; a part that deep is always listed.
	reconSubMaxDepth = 15
	// reconMsgEntries and reconMsgBytes bound one recon frame's ranges,
	// heads entries and listed items; a longer answer takes several frames.
	reconMsgEntries = 2048
	reconMsgBytes   = 1 << 20
	// maxReconRounds is the highest heads round (see reconHeads).
	maxReconRounds = 2
)

// reconListSmall: a side finding a single bucket (or a part of one)
// differing lists its records there when it holds at most this many, and
// splits it in 16 parts by key tag otherwise. Listing costs 16 bytes a
// record; a split costs about 16 fingerprints and a round trip. A
// variable so tests can make small sets split.
var reconListSmall = 16

// Range modes.
const (
	rangeFP    = 0 // FP is the sender's fingerprint of the range
	rangeItems = 1 // Items lists the sender's records in the range
	rangeEmpty = 2 // the sender holds no record in the range
	// rangeSplit: the sender split the range into its parts (see
	// splitParts) and describes each: Parts holds one byte per part
	// (partFP, partEmpty, or partItems+c-1 for c listed records), FP the
	// parts' fingerprints and Items the parts' items, each in part order.
	// One split costs 17 bytes a part where separate ranges cost 25-30.
	rangeSplit = 3
)

// Part descriptions in a split (reconRange.Parts).
const (
	partFP    = 0
	partEmpty = 1
	partItems = 2 // and above: partItems + c - 1 lists c records (parts list at most reconListAt)
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
	// Sub, when not 0, narrows a single bucket (Hi = Lo+1) to one part of
	// the key tag space: Sub = 16^d + i names the i-th of 16^d equal
	// intervals of the 64-bit tags (1 <= d <= reconSubMaxDepth), the
	// records whose tag's top 4d bits are i. Part j of Sub is Sub*16 + j
	// (Sub 0 counting as 1: the whole bucket).
	Sub uint64 `cbor:"6,keyasint,omitempty"`
	// Parts describes the parts of a split (rangeSplit).
	Parts []byte `cbor:"7,keyasint,omitempty"`
}

// splitParts returns the parts a range is split into, their bounds set: a
// range of several buckets into 16 runs of equal width (fewer when it
// spans fewer than 16 buckets, the last one shorter), a bucket or a part
// of one into its 16 parts by key tag. None for a part at the deepest
// level, which is never split.
func splitParts(lo, hi uint16, sub uint64) []reconRange {
	if hi-lo > 1 {
		width := (hi - lo + reconSplit - 1) / reconSplit
		out := make([]reconRange, 0, reconSplit)
		for l := lo; l < hi; l += width {
			out = append(out, reconRange{Lo: l, Hi: min(l+width, hi)})
		}
		return out
	}
	if d, _ := subDepth(sub); d >= reconSubMaxDepth {
		return nil
	}
	out := make([]reconRange, reconSplit)
	for j := range out {
		out[j] = reconRange{Lo: lo, Hi: hi, Sub: subChild(sub, j)}
	}
	return out
}

// expand returns the parts a split describes, each as the range it would
// be on its own; an error when the description does not fit the split.
func (r *reconRange) expand() ([]reconRange, error) {
	parts := splitParts(r.Lo, r.Hi, r.Sub)
	if len(parts) == 0 || len(r.Parts) != len(parts) {
		return nil, protoErr("recon split of [%d, %d) part %#x into %d parts", r.Lo, r.Hi, r.Sub, len(r.Parts))
	}
	fp, items := r.FP, r.Items
	for i, p := range r.Parts {
		switch {
		case p == partFP:
			if len(fp) < reconFPLen {
				return nil, protoErr("recon split short of fingerprints")
			}
			parts[i].Mode, parts[i].FP, fp = rangeFP, fp[:reconFPLen:reconFPLen], fp[reconFPLen:]
		case p == partEmpty:
			parts[i].Mode = rangeEmpty
		default:
			n := (int(p) - partItems + 1) * reconItemLen
			if len(items) < n {
				return nil, protoErr("recon split short of items")
			}
			parts[i].Mode, parts[i].Items, items = rangeItems, items[:n:n], items[n:]
		}
	}
	if len(fp) != 0 || len(items) != 0 {
		return nil, protoErr("recon split with %d bytes left over", len(fp)+len(items))
	}
	return parts, nil
}

// ranges returns the frame's ranges with every split expanded into its
// parts (validate has checked that they expand).
func (m *reconMsg) ranges() []reconRange {
	out := make([]reconRange, 0, len(m.Ranges))
	for _, r := range m.Ranges {
		if r.Mode != rangeSplit {
			out = append(out, r)
			continue
		}
		parts, _ := r.expand()
		out = append(out, parts...)
	}
	return out
}

// subDepth returns the depth of a Sub value (0 for the whole bucket) and
// whether it is well formed.
func subDepth(sub uint64) (int, bool) {
	if sub == 0 {
		return 0, true
	}
	n := bits.Len64(sub) - 1
	if n == 0 || n%4 != 0 || n/4 > reconSubMaxDepth {
		return 0, false
	}
	return n / 4, true
}

// subChild is part j (0..15) of the part sub of a bucket.
func subChild(sub uint64, j int) uint64 {
	if sub == 0 {
		sub = 1
	}
	return sub<<4 + uint64(j)
}

// subHolds reports whether a record with key tag t falls in part sub.
func subHolds(sub uint64, t [reconTagLen]byte) bool {
	d, _ := subDepth(sub)
	if d == 0 {
		return true
	}
	return binary.BigEndian.Uint64(t[:])>>(64-4*d) == sub-1<<(4*d)
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
	for _, r := range m.ranges() {
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
		if _, ok := subDepth(r.Sub); !ok || r.Sub != 0 && r.Hi-r.Lo != 1 {
			return protoErr("recon part %#x of [%d, %d)", r.Sub, r.Lo, r.Hi)
		}
		if r.Mode != rangeSplit && len(r.Parts) != 0 {
			return protoErr("recon parts outside a split")
		}
		switch r.Mode {
		case rangeSplit:
			if _, err := r.expand(); err != nil {
				return err
			}
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
// holds (all of them when since is empty). When span is set it stands
// instead for every record this side holds in the span that the peer
// lacks (expand turns it into records a few buckets at a time, or
// through the feed).
type reconSend struct {
	coll, id string
	since    [][]byte
	span     *reconSpan
}

// reconSpan is a range the peer holds nothing of but the records whose
// key tags are in except (the records it listed there, which the heads
// exchange handles): buckets [lo, hi), narrowed to part sub when it is
// one bucket (sub 0: whole buckets). A step that finds such a range
// queues its span rather than its records, and the span is expanded as
// the records are sent: at a first meeting with an empty peer the whole
// key space is one span, so the session holds an expansion's records at
// a time (about 256), never all N (measured at 1,000,000 records: the
// sender's queue of sends, its read order and the index entries read at
// once took its anonymous memory to 383 MiB).
type reconSpan struct {
	lo, hi uint16
	sub    uint64
	except map[[reconTagLen]byte]bool
	// feed: the span is expanded in the order of this side's feed from
	// position at on (reconFeeder), not bucket by bucket.
	feed bool
	at   uint64
}

// reconFeeder is a reconData that can list its reconciled records in the
// order of its feed, the order its store reads them fastest.
type reconFeeder interface {
	// reconFeed returns the reconciled collections' records whose feed
	// entries lie after position after, up to the position the
	// reconciliation began at, reading at most limit entries; next is the
	// last position read, and done says nothing is left to read.
	reconFeed(ctx context.Context, after uint64, limit int) (refs []recRef, next uint64, done bool, err error)
}

// feedSpanFrac: a span holding at least this share of this side's
// records (by its bucket counts) is expanded through the feed when
// reconData can (reconFeeder): reading every feed entry once costs less
// than reading that many records out of write order (at a first meeting
// with an empty peer the records of a bucket, read by name, took 1.4x the
// time and 1.12x the bytes on the wire of the feed's order: gate runs of
// 19.4-22.5 s against 15.1-15.4).
const feedSpanFrac = 2

// feedSpan makes sp a feed span when it holds at least 1/feedSpanFrac of
// this side's records and d can list them in feed order.
func (e *reconEngine) feedSpan(d reconData, sp *reconSpan) *reconSpan {
	if _, ok := d.(reconFeeder); !ok || e.sums == nil {
		return sp
	}
	n, _ := e.rangeSum(sp.lo, sp.hi)
	all, _ := e.rangeSum(0, storage.ReconBuckets)
	if sp.sub == 0 && n > 0 && n*feedSpanFrac >= all {
		sp.feed = true
	}
	return sp
}

// expandMin is how many of this side's records (by its bucket counts)
// one expansion of a span takes at least, unless the span ends first:
// whole buckets, so one bucket's records more at most.
const expandMin = 256

// expand returns what the span send s stands for, its first buckets'
// records first: those of buckets [s.span.lo, k) (narrowed to its part)
// the peer lacks, in name order, k the first bucket at which they add up
// to expandMin records by this side's counts; then, when the span holds
// more buckets, the span of the rest.
func (e *reconEngine) expand(ctx context.Context, d reconData, s reconSend) ([]reconSend, error) {
	sp := s.span
	if sp == nil || sp.lo >= sp.hi {
		return nil, nil
	}
	if err := e.loadSums(ctx, d); err != nil {
		return nil, err
	}
	if f, ok := d.(reconFeeder); ok && sp.feed {
		return e.expandFeed(ctx, f, sp)
	}
	hi := sp.lo + 1
	if sp.sub == 0 {
		n, _ := e.rangeSum(sp.lo, hi)
		for hi < sp.hi && n < expandMin {
			m, _ := e.rangeSum(hi, hi+1)
			n += m
			hi++
		}
	}
	items, err := e.partItems(ctx, d, sp.lo, hi, sp.sub)
	if err != nil {
		return nil, err
	}
	out := make([]reconSend, 0, len(items)+1)
	for _, it := range items {
		if !sp.except[it.tag] {
			out = append(out, reconSend{coll: it.coll, id: it.id})
		}
	}
	slices.SortFunc(out, compareSends)
	if hi < sp.hi {
		out = append(out, reconSend{span: &reconSpan{lo: hi, hi: sp.hi, sub: sp.sub, except: sp.except}})
	}
	return out, nil
}

// expandFeed expands a feed span: the records of the next feed entries
// that fall in it, until there are expandMin of them or the feed is read
// up to the reconciliation's start, then the span of the rest.
func (e *reconEngine) expandFeed(ctx context.Context, f reconFeeder, sp *reconSpan) ([]reconSend, error) {
	var out []reconSend
	at := sp.at
	for len(out) < expandMin {
		refs, next, done, err := f.reconFeed(ctx, at, expandMin-len(out))
		if err != nil {
			return nil, err
		}
		for _, r := range refs {
			key := storage.ReconKey(r.coll, r.id)
			if b := storage.ReconBucket(key); b < sp.lo || b >= sp.hi {
				continue
			}
			if len(sp.except) > 0 && sp.except[e.keyTag(key)] {
				continue
			}
			out = append(out, reconSend{coll: r.coll, id: r.id})
		}
		if done || next <= at {
			return out, nil
		}
		at = next
	}
	rest := *sp
	rest.at = at
	return append(out, reconSend{span: &rest}), nil
}

// compareSends orders sends by name, spans after records, by bucket.
func compareSends(x, y reconSend) int {
	if (x.span == nil) != (y.span == nil) {
		if x.span == nil {
			return -1
		}
		return 1
	}
	if x.span != nil {
		if c := cmp.Compare(x.span.lo, y.span.lo); c != 0 {
			return c
		}
		return cmp.Compare(x.span.sub, y.span.sub)
	}
	if c := strings.Compare(x.coll, y.coll); c != 0 {
		return c
	}
	return strings.Compare(x.id, y.id)
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
	// listSmall is reconListSmall when the engine was made.
	listSmall uint64
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
	return &reconEngine{key: key, tags: map[[reconTagLen]byte]recRef{}, pending: !initiator,
		listSmall: uint64(max(reconListSmall, 1))}
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

func (e *reconEngine) fingerprint(lo, hi uint16, sub, count uint64, sum [32]byte) []byte {
	var b [20]byte
	binary.BigEndian.PutUint16(b[0:], lo)
	binary.BigEndian.PutUint16(b[2:], hi)
	binary.BigEndian.PutUint64(b[4:], count)
	binary.BigEndian.PutUint64(b[12:], sub)
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

// taggedItem is a record of this side with its key tag.
type taggedItem struct {
	reconItem
	tag [reconTagLen]byte
}

// partItems returns this side's records in buckets [lo, hi), narrowed to
// part sub, with their key tags.
func (e *reconEngine) partItems(ctx context.Context, d reconData, lo, hi uint16, sub uint64) ([]taggedItem, error) {
	items, err := d.reconItems(ctx, lo, hi)
	if err != nil {
		return nil, err
	}
	out := make([]taggedItem, 0, len(items))
	for _, it := range items {
		t := e.keyTag(it.key)
		if subHolds(sub, t) {
			out = append(out, taggedItem{it, t})
		}
	}
	return out, nil
}

func sumItems(items []taggedItem) (uint64, [32]byte) {
	var sum [32]byte
	for _, it := range items {
		storage.AddSum(&sum, it.hash)
	}
	return uint64(len(items)), sum
}

// list describes a range by its items (empty when there are none), and
// remembers their tags: the peer's heads entries name them.
func (e *reconEngine) list(lo, hi uint16, sub uint64, items []taggedItem) reconRange {
	if len(items) == 0 {
		return reconRange{Lo: lo, Hi: hi, Sub: sub, Mode: rangeEmpty}
	}
	buf := make([]byte, 0, len(items)*reconItemLen)
	for _, it := range items {
		vt := e.verTag(it.hash)
		e.tags[it.tag] = recRef{it.coll, it.id}
		buf = append(append(buf, it.tag[:]...), vt[:]...)
	}
	return reconRange{Lo: lo, Hi: hi, Sub: sub, Mode: rangeItems, Items: buf}
}

// describe returns this side's description of buckets [lo, hi): empty,
// its items (when it holds at most listAt records there), or its
// fingerprint.
func (e *reconEngine) describe(ctx context.Context, d reconData, lo, hi uint16, listAt uint64) (reconRange, error) {
	n, sum := e.rangeSum(lo, hi)
	switch {
	case n == 0:
		return reconRange{Lo: lo, Hi: hi, Mode: rangeEmpty}, nil
	case n <= listAt:
		items, err := e.partItems(ctx, d, lo, hi, 0)
		if err != nil {
			return reconRange{}, err
		}
		return e.list(lo, hi, 0, items), nil
	}
	return reconRange{Lo: lo, Hi: hi, Mode: rangeFP, FP: e.fingerprint(lo, hi, 0, n, sum)}, nil
}

// describePart is describe for part sub of bucket lo, from its items.
func (e *reconEngine) describePart(lo uint16, sub uint64, items []taggedItem) reconRange {
	if uint64(len(items)) <= reconListAt {
		return e.list(lo, lo+1, sub, items)
	}
	n, sum := sumItems(items)
	return reconRange{Lo: lo, Hi: lo + 1, Sub: sub, Mode: rangeFP, FP: e.fingerprint(lo, lo+1, sub, n, sum)}
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

// answerFP answers the peer's fingerprint of r: nothing when it equals
// this side's, "empty" when this side holds nothing there, its items when
// it holds few, else the parts of r split in 16 (buckets while r spans
// several, then parts of the bucket by key tag).
func (e *reconEngine) answerFP(ctx context.Context, d reconData, b *reconBuilder, r reconRange) error {
	var n uint64
	var sum [32]byte
	var items []taggedItem
	if r.Sub == 0 {
		n, sum = e.rangeSum(r.Lo, r.Hi)
	} else {
		var err error
		if items, err = e.partItems(ctx, d, r.Lo, r.Hi, r.Sub); err != nil {
			return err
		}
		n, sum = sumItems(items)
	}
	if n > 0 && hmac.Equal(e.fingerprint(r.Lo, r.Hi, r.Sub, n, sum), r.FP) {
		return nil
	}
	if n == 0 {
		b.addRange(reconRange{Lo: r.Lo, Hi: r.Hi, Sub: r.Sub, Mode: rangeEmpty})
		return nil
	}
	if r.Hi-r.Lo > 1 {
		parts := splitParts(r.Lo, r.Hi, 0)
		for i, p := range parts {
			rr, err := e.describe(ctx, d, p.Lo, p.Hi, reconListAt)
			if err != nil {
				return err
			}
			parts[i] = rr
		}
		b.addRange(joinParts(r, parts))
		return nil
	}
	if items == nil {
		var err error
		if items, err = e.partItems(ctx, d, r.Lo, r.Hi, 0); err != nil {
			return err
		}
	}
	depth, _ := subDepth(r.Sub)
	if uint64(len(items)) <= e.listSmall || depth >= reconSubMaxDepth {
		b.addRange(e.list(r.Lo, r.Hi, r.Sub, items))
		return nil
	}
	var byPart [reconSplit][]taggedItem
	for _, it := range items {
		j := binary.BigEndian.Uint64(it.tag[:]) >> (60 - 4*depth) & (reconSplit - 1)
		byPart[j] = append(byPart[j], it)
	}
	parts := make([]reconRange, reconSplit)
	for j, p := range byPart {
		parts[j] = e.describePart(r.Lo, subChild(r.Sub, j), p)
	}
	b.addRange(joinParts(r, parts))
	return nil
}

// joinParts describes the split of r into parts (each described on its
// own, listing at most reconListAt records) as one rangeSplit.
func joinParts(r reconRange, parts []reconRange) reconRange {
	out := reconRange{Lo: r.Lo, Hi: r.Hi, Sub: r.Sub, Mode: rangeSplit, Parts: make([]byte, len(parts))}
	for i, p := range parts {
		switch p.Mode {
		case rangeFP:
			out.Parts[i] = partFP
			out.FP = append(out.FP, p.FP...)
		case rangeEmpty:
			out.Parts[i] = partEmpty
		case rangeItems:
			out.Parts[i] = byte(partItems + len(p.Items)/reconItemLen - 1)
			out.Items = append(out.Items, p.Items...)
		}
	}
	return out
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
	for _, r := range m.ranges() {
		switch r.Mode {
		case rangeFP:
			if err := e.answerFP(ctx, d, &b, r); err != nil {
				return nil, nil, err
			}
		case rangeEmpty:
			sends = append(sends, reconSend{span: e.feedSpan(d, &reconSpan{lo: r.Lo, hi: r.Hi, sub: r.Sub})})
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
			// The records the peer listed are compared here; the rest of
			// this side's records in the range go as a span (expand). The
			// range is read a bucket at a time: a peer listing its few
			// records over a wide range (an initiator holding at most
			// reconListAt lists the whole key space) must not make this
			// side hold every record of the range at once.
			var except map[[reconTagLen]byte]bool
			rest := false
			for lo := r.Lo; lo < r.Hi; lo++ {
				items, err := e.partItems(ctx, d, lo, lo+1, r.Sub)
				if err != nil {
					return nil, nil, err
				}
				for _, it := range items {
					kt := it.tag
					vt, ok := theirs[kt]
					if !ok {
						rest = true
						continue
					}
					if except == nil {
						except = make(map[[reconTagLen]byte]bool, len(theirs))
					}
					except[kt] = true
					if vt != e.verTag(it.hash) {
						e.tags[kt] = recRef{it.coll, it.id}
						b.addHeads(reconHeads{Tag: slices.Clone(kt[:]), Heads: it.heads})
					}
					delete(theirs, kt)
				}
			}
			if rest {
				sends = append(sends, reconSend{span: e.feedSpan(d, &reconSpan{lo: r.Lo, hi: r.Hi, sub: r.Sub, except: except})})
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
	// names are alike (ids are often sequential). The session's host
	// puts them in its store's read order instead (host.orderSends).
	slices.SortFunc(sends, compareSends)
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
	if n := len(b.msgs); n > 0 && r.Mode == rangeEmpty && r.Sub == 0 {
		// Adjacent empty ranges of whole buckets merge into one.
		m := b.msgs[n-1]
		if k := len(m.Ranges); k > 0 && m.Ranges[k-1].Mode == rangeEmpty && m.Ranges[k-1].Sub == 0 && m.Ranges[k-1].Hi == r.Lo {
			m.Ranges[k-1].Hi = r.Hi
			return
		}
	}
	m := b.cur(24 + len(r.FP) + len(r.Items) + len(r.Parts))
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
