package storage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// Limits checked before anything is stored or allocated.
const (
	maxNameLen  = 1024     // collection, id, namespace
	maxAttrsLen = 64 << 10 // RecordMeta.Attrs
	maxHeads    = 4096
	maxChunks   = 1 << 16
	maxValueLen = 256 << 20 // one chunk, slot value or log entry
	// inlineMax: a snapshot up to this size is kept inside the meta value
	// instead of its own chunk key (one Badger entry less per small record).
	inlineMax = 1024
)

// RecordMeta describes a stored record.
type RecordMeta struct {
	Collection, ID   string
	Created, Updated time.Time
	Deleted          bool
	Seq              uint64   // change-feed position of this record's latest change
	Heads            [][]byte // change hashes, HeadSize bytes each (opaque to storage)
	Size             int      // bytes of stored Automerge data (snapshot + incrementals)
	Attrs            []byte   // opaque small per-record bytes for upper layers (sealed with the meta)
}

// RecordWrite is one record change in a Batch.
type RecordWrite struct {
	Collection, ID string
	// Changes are Automerge incremental bytes to append (doc.SaveIncremental()
	// or automerge.SaveChanges output); may be empty for a meta-only write.
	// They should hold only changes not stored yet: automerge-go's
	// SaveIncremental right after Load returns the whole history
	// (crdt.Doc.SaveIncremental does not).
	Changes []byte
	// Snapshot returns the full doc.Save() including Changes. Storage calls it
	// when there is no snapshot yet or when it compacts (the incrementals
	// outweigh the snapshot); it may be called more than once if the
	// transaction is retried. If nil, the first write's Changes are stored
	// as the record's document (storage does not parse them: the caller
	// vouches they load), and the record is never compacted.
	Snapshot func() ([]byte, error)
	// Heads replace the stored heads; nil keeps them. Each is a change
	// hash of HeadSize bytes (storage does not interpret them); another
	// length is ErrInvalid.
	Heads [][]byte
	// Deleted and Attrs replace the stored values on every write.
	Deleted bool
	Attrs   []byte
	// Time is the Updated time (zero => Options.Now()). Created is set on the
	// first write.
	Time time.Time

	created time.Time // import: explicit Created for a new record
	ifSeq   *uint64   // import: the record's Seq must still be this (0 = absent)
}

// SlotWrite puts or deletes one slot in a Batch.
type SlotWrite struct {
	Namespace, Key string
	Value          []byte
	Delete         bool

	ifAbsent bool      // import: write only if the slot does not exist
	wrote    *bool     // import: reports whether it was written
	_        [0]func() // not comparable
}

// Batch is applied atomically, in one Badger transaction.
type Batch struct {
	Records []RecordWrite
	Slots   []SlotWrite
}

// errStale reports a failed ifSeq precondition.
var errStale = errors.New("storage: record changed concurrently")

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

func (m *metaRec) encode() []byte {
	w := wbuf{b: make([]byte, 0, 64+len(m.coll)+len(m.id)+32*len(m.heads)+len(m.attrs)+32*len(m.chunks)+len(m.inline))}
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

func (m *metaRec) clone() metaRec {
	c := *m
	c.heads = cloneHeads(m.heads)
	c.attrs = slices.Clone(m.attrs)
	c.chunks = slices.Clone(m.chunks)
	c.inline = slices.Clone(m.inline)
	return c
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
	w := wbuf{b: make([]byte, 0, 8+len(coll)+len(id)+nonceSize)}
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

// recState is a record's state inside one transaction.
type recState struct {
	m        metaRec
	exists   bool   // a meta exists (committed or pending) in the write epoch
	feedLive bool   // a feed entry for feedSeq exists in the write epoch
	feedSeq  uint64 // seq of the live feed entry
	rid      []byte // blinded id in the write epoch
	mk       []byte // meta key in the write epoch
}

// readMeta opens and verifies the meta at mk under ek: the envelope, the
// names, and the binding to its feed entry (which detects a rolled-back
// meta). It returns nil, nil if mk is absent.
func readMeta(txn *badger.Txn, ek *epochKeys, mk []byte, coll, id string) (*metaRec, [nonceSize]byte, error) {
	var nonce [nonceSize]byte
	raw, ok, err := getValue(txn, mk)
	if err != nil || !ok {
		return nil, nonce, err
	}
	m, nonce, err := openMeta(ek, mk, raw)
	if err != nil {
		return nil, nonce, err
	}
	if m.coll != coll || m.id != id {
		return nil, nonce, corruptf("record meta")
	}
	if err := verifyFeedLink(txn, ek, m, nonce); err != nil {
		return nil, nonce, err
	}
	return m, nonce, nil
}

func openMeta(ek *epochKeys, mk, raw []byte) (*metaRec, [nonceSize]byte, error) {
	pt, nonce, err := ek.open(nil, kindMeta, mk, raw)
	if err != nil {
		return nil, nonce, corruptf("record meta")
	}
	m, err := decodeMeta(pt)
	if err != nil {
		return nil, nonce, corruptf("record meta")
	}
	return m, nonce, nil
}

func verifyFeedLink(txn *badger.Txn, ek *epochKeys, m *metaRec, nonce [nonceSize]byte) error {
	fk := seqKey(ek.epoch, kindFeed, m.seq)
	raw, ok, err := getValue(txn, fk)
	if err != nil {
		return err
	}
	if !ok {
		return corruptf("record meta (stale)")
	}
	pt, _, err := ek.open(nil, kindFeed, fk, raw)
	if err != nil {
		return corruptf("feed entry")
	}
	c, id, n, err := decodeFeed(pt)
	if err != nil || c != m.coll || id != m.id || n != nonce {
		return corruptf("record meta (stale)")
	}
	return nil
}

// readChunks appends the record's data to dst: the inline snapshot, then
// the chunks listed in m, each checked against the nonce and size pinned in
// the meta.
func readChunks(txn *badger.Txn, ek *epochKeys, rid []byte, m *metaRec, dst []byte) ([]byte, error) {
	dst = append(dst, m.inline...)
	for _, c := range m.chunks {
		ck := chunkKey(ek.epoch, rid, c.n)
		item, err := txn.Get(ck)
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil, corruptf("record chunk (missing)")
		}
		if err != nil {
			return nil, err
		}
		start := len(dst)
		err = item.Value(func(v []byte) error {
			var n [nonceSize]byte
			var oerr error
			dst, n, oerr = ek.open(dst, kindChunk, ck, v)
			if oerr != nil || n != c.nonce {
				return corruptf("record chunk")
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		if len(dst)-start != int(c.size) {
			return nil, corruptf("record chunk")
		}
	}
	return dst, nil
}

// Write applies the batch in one Badger transaction: every record's chunks,
// meta and change-feed entry, and every slot write. It returns the new metas
// in order.
func (s *Store) Write(ctx context.Context, b Batch) ([]RecordMeta, error) {
	for i := range b.Records {
		if err := validateRecordWrite(&b.Records[i]); err != nil {
			return nil, err
		}
	}
	for i := range b.Slots {
		if err := validateSlotWrite(&b.Slots[i]); err != nil {
			return nil, err
		}
	}
	out := make([]RecordMeta, len(b.Records))
	err := s.update(ctx, "write", func(w *wtx) error {
		for i := range b.Records {
			if err := w.writeRecord(&b.Records[i], &out[i]); err != nil {
				return err
			}
		}
		for i := range b.Slots {
			if err := w.writeSlot(&b.Slots[i]); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func validateRecordWrite(rw *RecordWrite) error {
	if err := checkName("collection", rw.Collection); err != nil {
		return err
	}
	if err := checkName("id", rw.ID); err != nil {
		return err
	}
	if len(rw.Attrs) > maxAttrsLen {
		return invalidf("attrs larger than %d bytes", maxAttrsLen)
	}
	if len(rw.Heads) > maxHeads {
		return invalidf("more than %d heads", maxHeads)
	}
	for _, h := range rw.Heads {
		if len(h) != HeadSize {
			return invalidf("a head of %d bytes, want %d", len(h), HeadSize)
		}
	}
	if len(rw.Changes) > maxValueLen {
		return invalidf("changes larger than %d bytes", maxValueLen)
	}
	return nil
}

func (w *wtx) loadRecord(coll, id string) (*recState, error) {
	we := w.st.write()
	rid := we.recID(coll, id)
	mk := we.metaKey(coll, rid)
	if w.recs == nil {
		w.recs = make(map[string]*recState)
	}
	if rs := w.recs[string(mk)]; rs != nil {
		return rs, nil
	}
	rs := &recState{rid: rid, mk: mk}
	m, _, err := readMeta(w.txn, we, mk, coll, id)
	if err != nil {
		return nil, err
	}
	if m != nil {
		rs.m, rs.exists, rs.feedLive, rs.feedSeq = *m, true, true, m.seq
	} else if old := w.st.old(); old != nil {
		// Rotation in progress: move the record into the write epoch.
		orid := old.recID(coll, id)
		omk := old.metaKey(coll, orid)
		om, _, err := readMeta(w.txn, old, omk, coll, id)
		if err != nil {
			return nil, err
		}
		if om != nil {
			if err := w.moveRecord(old, orid, omk, om, we, rid); err != nil {
				return nil, err
			}
			rs.m, rs.exists = *om, true
		}
	}
	w.recs[string(mk)] = rs
	return rs, nil
}

// moveRecord re-seals m's chunks from epoch `from` into `to` (updating the
// nonces in m) and deletes the old chunks, meta and feed entry. The caller
// writes the new meta and feed entry.
func (w *wtx) moveRecord(from *epochKeys, orid, omk []byte, m *metaRec, to *epochKeys, rid []byte) error {
	var buf []byte
	for i := range m.chunks {
		c := &m.chunks[i]
		one := metaRec{chunks: []chunkRef{*c}}
		var err error
		buf, err = readChunks(w.txn, from, orid, &one, buf[:0])
		if err != nil {
			return err
		}
		ck := chunkKey(to.epoch, rid, c.n)
		c.nonce = newNonce()
		if err := w.set(ck, to.seal(make([]byte, 0, envOverhead+len(buf)), kindChunk, ck, c.nonce, buf)); err != nil {
			return err
		}
		if err := w.del(chunkKey(from.epoch, orid, c.n)); err != nil {
			return err
		}
	}
	if err := w.del(omk); err != nil {
		return err
	}
	return w.del(seqKey(from.epoch, kindFeed, m.seq))
}

func (w *wtx) putChunk(rs *recState, data []byte, snap bool) error {
	if len(data) > maxValueLen {
		return invalidf("chunk larger than %d bytes", maxValueLen)
	}
	if snap && len(data) <= inlineMax && len(rs.m.chunks) == 0 && rs.m.inline == nil {
		rs.m.inline = slices.Clone(data)
		return nil
	}
	if rs.m.nextChunk == ^uint32(0) || len(rs.m.chunks) >= maxChunks {
		return invalidf("too many chunks")
	}
	we := w.st.write()
	c := chunkRef{n: rs.m.nextChunk, snap: snap, size: uint32(len(data)), nonce: newNonce()}
	rs.m.nextChunk++
	ck := chunkKey(we.epoch, rs.rid, c.n)
	if err := w.set(ck, we.seal(make([]byte, 0, envOverhead+len(data)), kindChunk, ck, c.nonce, data)); err != nil {
		return err
	}
	rs.m.chunks = append(rs.m.chunks, c)
	return nil
}

func (w *wtx) dropChunks(rs *recState) error {
	we := w.st.write()
	for _, c := range rs.m.chunks {
		if err := w.del(chunkKey(we.epoch, rs.rid, c.n)); err != nil {
			return err
		}
	}
	rs.m.chunks = rs.m.chunks[:0]
	rs.m.inline = nil
	return nil
}

func callSnapshot(f func() ([]byte, error)) (b []byte, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("snapshot callback panicked: %v", r)
		}
	}()
	b, err = f()
	if err != nil {
		return nil, userErr{fmt.Errorf("snapshot: %w", err)} // passed through as is
	}
	if len(b) == 0 {
		return nil, invalidf("snapshot returned no bytes")
	}
	return b, nil
}

func (w *wtx) writeRecord(rw *RecordWrite, out *RecordMeta) error {
	rs, err := w.loadRecord(rw.Collection, rw.ID)
	if err != nil {
		return err
	}
	if rw.ifSeq != nil {
		cur := uint64(0)
		if rs.exists {
			cur = rs.feedSeq
			if !rs.feedLive {
				cur = rs.m.seq
			}
		}
		if cur != *rw.ifSeq {
			return errStale
		}
	}
	t := rw.Time
	if t.IsZero() {
		t = w.s.now()
	}
	if !rs.exists {
		var snap []byte
		if rw.Snapshot != nil {
			if snap, err = callSnapshot(rw.Snapshot); err != nil {
				return err
			}
		} else {
			if len(rw.Changes) == 0 {
				return invalidf("first write of a record needs Changes or Snapshot")
			}
			snap = rw.Changes
		}
		created := t
		if !rw.created.IsZero() {
			created = rw.created
		}
		rs.m = metaRec{coll: rw.Collection, id: rw.ID, created: created.UnixNano()}
		if err := w.putChunk(rs, snap, true); err != nil {
			return err
		}
		rs.exists = true
	} else {
		if len(rw.Changes) > 0 {
			if err := w.putChunk(rs, rw.Changes, false); err != nil {
				return err
			}
		}
		if snapSize, inc := rs.m.sizes(); inc > snapSize {
			if err := w.compact(rs, rw.Snapshot); err != nil {
				return err
			}
		}
	}
	rs.m.updated = t.UnixNano()
	rs.m.deleted = rw.Deleted
	rs.m.attrs = slices.Clone(rw.Attrs)
	if rw.Heads != nil {
		rs.m.heads = cloneHeads(rw.Heads)
	}
	if err := w.ensureColl(rw.Collection); err != nil {
		return err
	}
	draft := rs.m.clone()
	we := w.st.write()
	w.late = append(w.late, func(alloc func() uint64) error {
		seq := alloc()
		if rs.feedLive {
			if err := w.del(seqKey(we.epoch, kindFeed, rs.feedSeq)); err != nil {
				return err
			}
		}
		draft.seq = seq
		nonce := newNonce()
		pt := draft.encode()
		if err := w.set(rs.mk, we.seal(make([]byte, 0, envOverhead+len(pt)), kindMeta, rs.mk, nonce, pt)); err != nil {
			return err
		}
		fk := seqKey(we.epoch, kindFeed, seq)
		fv, _ := we.sealNew(kindFeed, fk, encodeFeed(draft.coll, draft.id, nonce))
		if err := w.set(fk, fv); err != nil {
			return err
		}
		rs.feedLive, rs.feedSeq = true, seq
		w.maxFeed = seq
		*out = draft.toMeta()
		return nil
	})
	return nil
}

// compact replaces the record's chunks with one snapshot from the caller's
// Snapshot func; without one it leaves them.
func (w *wtx) compact(rs *recState, snapFn func() ([]byte, error)) error {
	var snap []byte
	var err error
	if snapFn != nil {
		snap, err = callSnapshot(snapFn)
	} else {
		// Storage holds documents as opaque bytes: without the caller's
		// snapshot the chunks stay as they are.
		return nil
	}
	if err != nil {
		return err
	}
	if err := w.dropChunks(rs); err != nil {
		return err
	}
	return w.putChunk(rs, snap, true)
}

func (w *wtx) ensureColl(coll string) error {
	we := w.st.write()
	ck := we.collKey(coll)
	if _, ok := w.s.knownColl.Load(string(ck)); ok {
		return nil
	}
	if w.colls == nil {
		w.colls = make(map[string]bool)
	}
	if w.colls[string(ck)] {
		return nil
	}
	w.colls[string(ck)] = true
	ok, err := exists(w.txn, ck)
	if err != nil {
		return err
	}
	if !ok {
		v, _ := we.sealNew(kindColl, ck, encodeName(coll))
		if err := w.set(ck, v); err != nil {
			return err
		}
	}
	w.onCommit = append(w.onCommit, func() { w.s.knownColl.Store(string(ck), struct{}{}) })
	return nil
}

// findRecord locates and verifies a record's meta in the read epochs.
func findRecord(txn *badger.Txn, st *keyState, coll, id string) (*epochKeys, []byte, *metaRec, error) {
	for _, ek := range st.reads() {
		rid := ek.recID(coll, id)
		m, _, err := readMeta(txn, ek, ek.metaKey(coll, rid), coll, id)
		if err != nil {
			return nil, nil, nil, err
		}
		if m != nil {
			return ek, rid, m, nil
		}
	}
	return nil, nil, nil, ErrNotFound
}

// Load returns the record's Automerge bytes (the snapshot followed by the
// incremental chunks; automerge.Load accepts the concatenation) and its meta.
// A deleted record is returned with Deleted set.
func (s *Store) Load(ctx context.Context, collection, id string) ([]byte, RecordMeta, error) {
	if err := checkNames(collection, id); err != nil {
		return nil, RecordMeta{}, err
	}
	var data []byte
	var meta RecordMeta
	err := s.view(ctx, "load", func(txn *badger.Txn, st *keyState) error {
		ek, rid, m, err := findRecord(txn, st, collection, id)
		if err != nil {
			return err
		}
		total := len(m.inline)
		for _, c := range m.chunks {
			total += int(c.size)
		}
		data, err = readChunks(txn, ek, rid, m, make([]byte, 0, total))
		meta = m.toMeta()
		return err
	})
	if err != nil {
		return nil, RecordMeta{}, err
	}
	return data, meta, nil
}

func checkNames(coll, id string) error {
	if err := checkName("collection", coll); err != nil {
		return err
	}
	return checkName("id", id)
}

// Meta returns a record's meta without reading its chunks.
func (s *Store) Meta(ctx context.Context, collection, id string) (RecordMeta, error) {
	if err := checkNames(collection, id); err != nil {
		return RecordMeta{}, err
	}
	var meta RecordMeta
	err := s.view(ctx, "meta", func(txn *badger.Txn, st *keyState) error {
		_, _, m, err := findRecord(txn, st, collection, id)
		if err == nil {
			meta = m.toMeta()
		}
		return err
	})
	return meta, err
}

const ctxCheckEvery = 256

// List calls fn for every record of the collection, in unspecified order,
// from one consistent snapshot. It decrypts only metas. fn returning an error
// stops the iteration and List returns that error.
func (s *Store) List(ctx context.Context, collection string, fn func(RecordMeta) error) error {
	if err := checkName("collection", collection); err != nil {
		return err
	}
	return s.view(ctx, "list", func(txn *badger.Txn, st *keyState) error {
		n := 0
		for _, ek := range st.reads() {
			prefix := ek.metaPrefix(collection)
			it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: false})
			for it.Rewind(); it.ValidForPrefix(prefix); it.Next() {
				if n++; n%ctxCheckEvery == 0 {
					if err := s.alive(ctx); err != nil {
						it.Close()
						return err
					}
				}
				item := it.Item()
				mk := item.KeyCopy(nil)
				raw, err := item.ValueCopy(nil)
				if err != nil {
					it.Close()
					return err
				}
				m, _, err := openMeta(ek, mk, raw)
				if err != nil || m.coll != collection || !bytes.Equal(mk, ek.metaKey(m.coll, ek.recID(m.coll, m.id))) {
					it.Close()
					return corruptf("record meta")
				}
				ok, err := exists(txn, seqKey(ek.epoch, kindFeed, m.seq))
				if err != nil || !ok {
					it.Close()
					if err != nil {
						return err
					}
					return corruptf("record meta (stale)")
				}
				if err := fn(m.toMeta()); err != nil {
					it.Close()
					return userErr{err}
				}
			}
			it.Close()
		}
		return nil
	})
}

// userErr carries a callback's error through mapBadgerErr untouched.
type userErr struct{ err error }

func (u userErr) Error() string { return u.err.Error() }
func (u userErr) Unwrap() error { return u.err }

// Collections returns the names of all collections that ever held a record,
// sorted.
func (s *Store) Collections(ctx context.Context) ([]string, error) {
	var names []string
	err := s.view(ctx, "collections", func(txn *badger.Txn, st *keyState) error {
		seen := map[string]bool{}
		names = names[:0]
		for _, ek := range st.reads() {
			prefix := keyPrefix(nil, ek.epoch, kindColl)
			it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
			for it.Rewind(); it.ValidForPrefix(prefix); it.Next() {
				item := it.Item()
				k := item.KeyCopy(nil)
				raw, err := item.ValueCopy(nil)
				if err != nil {
					it.Close()
					return err
				}
				pt, _, err := ek.open(nil, kindColl, k, raw)
				var name string
				if err == nil {
					name, err = decodeName(pt)
				}
				if err != nil || !bytes.Equal(k, ek.collKey(name)) {
					it.Close()
					return corruptf("collection entry")
				}
				if !seen[name] {
					seen[name] = true
					names = append(names, name)
				}
			}
			it.Close()
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	return names, nil
}

// FeedEntry is one record's newest change in the change feed.
type FeedEntry struct {
	Seq            uint64
	Collection, ID string
}

// Feed returns up to limit entries with Seq > afterSeq in ascending order
// (limit <= 0: no limit). Each record appears once, at its newest change.
func (s *Store) Feed(ctx context.Context, afterSeq uint64, limit int) ([]FeedEntry, error) {
	var out []FeedEntry
	err := s.view(ctx, "feed", func(txn *badger.Txn, st *keyState) error {
		out = out[:0]
		for _, ek := range st.reads() {
			prefix := keyPrefix(nil, ek.epoch, kindFeed)
			it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
			got := 0
			for it.Seek(seqKey(ek.epoch, kindFeed, afterSeq+1)); it.ValidForPrefix(prefix); it.Next() {
				if limit > 0 && got >= limit {
					break
				}
				if got++; got%ctxCheckEvery == 0 {
					if err := s.alive(ctx); err != nil {
						it.Close()
						return err
					}
				}
				item := it.Item()
				k := item.KeyCopy(nil)
				raw, err := item.ValueCopy(nil)
				if err != nil {
					it.Close()
					return err
				}
				pt, _, err := ek.open(nil, kindFeed, k, raw)
				var e FeedEntry
				if err == nil {
					e.Collection, e.ID, _, err = decodeFeed(pt)
				}
				if err != nil || len(k) != prefixLen+8 {
					it.Close()
					return corruptf("feed entry")
				}
				e.Seq = beU64(k[prefixLen:])
				out = append(out, e)
			}
			it.Close()
		}
		sort.Slice(out, func(i, j int) bool { return out[i].Seq < out[j].Seq })
		if limit > 0 && len(out) > limit {
			out = out[:limit]
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// LastSeq returns the newest change-feed sequence number (0 if none).
func (s *Store) LastSeq() uint64 { return s.lastFeed.Load() }

func unixNano(n int64) time.Time { return time.Unix(0, n).UTC() }
