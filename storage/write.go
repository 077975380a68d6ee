package storage

import (
	"context"
	"errors"
	"fmt"
	"slices"
)

// The write side of records: Write applies a Batch in one transaction
// (metadata, chunks, feed entry, compaction, epoch moves).

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
	if err := s.writeSplit(ctx, b.Records, b.Slots, out); err != nil {
		return nil, err
	}
	return out, nil
}

// writeSplit writes recs, then slots, in one transaction. When they do not
// fit in one (Badger refuses a transaction over about 15% of a memtable:
// with the phone sizes a few hundred records of a sync batch, or a few
// thousand slots), it writes them in parts, in order: the first half of the
// records on its own and the rest with the slots, or, with at most one
// record left, the record with the first half of the slots and the rest of
// the slots after, halving again as needed. So the last slot (a sync
// cursor: callers put the slot that marks a batch done last) commits with
// or after every record and slot before it, never ahead of one. Each
// record is whole in one transaction; a crash between two leaves a prefix
// written, which a re-sent batch merges again. One record or slot that
// does not fit alone is refused (ErrInvalid).
func (s *Store) writeSplit(ctx context.Context, recs []RecordWrite, slots []SlotWrite, out []RecordMeta) error {
	err := s.update(ctx, "write", func(w *wtx) error {
		for i := range recs {
			if err := w.writeRecord(&recs[i], &out[i]); err != nil {
				return err
			}
		}
		for i := range slots {
			if err := w.writeSlot(&slots[i]); err != nil {
				return err
			}
		}
		return nil
	})
	if !errors.Is(err, errTooBig) {
		return err
	}
	switch {
	case len(recs) >= 2:
		h := len(recs) / 2
		if err := s.writeSplit(ctx, recs[:h], nil, out[:h]); err != nil {
			return err
		}
		return s.writeSplit(ctx, recs[h:], slots, out[h:])
	case len(slots) >= 2:
		h := len(slots) / 2
		if err := s.writeSplit(ctx, recs, slots[:h], out); err != nil {
			return err
		}
		return s.writeSplit(ctx, nil, slots[h:], nil)
	}
	return err
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
	mk := we.metaKey(coll, id, rid)
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
		rs.m, rs.exists, rs.feedLive, rs.feedSeq, rs.counted = *m, true, true, m.seq, true
	} else if old := w.st.old(); old != nil {
		// Rotation in progress: move the record into the write epoch.
		orid := old.recID(coll, id)
		omk := old.metaKey(coll, id, orid)
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
// nonces in m), deletes the old chunks, meta and feed entry, and takes the
// record out of from's reconciliation sums. The caller writes the new meta
// and feed entry, and counts the record in to's sums.
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
	w.unindex(from, m.coll, m.id, m.heads)
	return w.del(seqKey(from.epoch, kindFeed, m.seq))
}

func (w *wtx) putChunk(rs *recState, data []byte, snap bool) error {
	if len(data) > maxValueLen {
		return invalidf("chunk larger than %d bytes", maxValueLen)
	}
	if snap && len(data) <= inlineWrite && len(rs.m.chunks) == 0 && rs.m.inline == nil {
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
	var garbage int64 // bytes of the value log the deletes leave behind
	for _, c := range rs.m.chunks {
		if err := w.del(chunkKey(we.epoch, rs.rid, c.n)); err != nil {
			return err
		}
		if v := int64(c.size) + envOverhead; v >= w.s.valueThreshold {
			garbage += v
		}
	}
	if garbage > 0 {
		w.onCommit = append(w.onCommit, func() { w.s.gcGarbage.Add(garbage) })
	}
	rs.m.chunks = nil // not [:0]: a pending draft may share the array
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
	prevHeads := rs.m.heads // what the reconciliation sums count, if counted
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
	if !rs.counted || rw.Heads != nil {
		if rs.counted {
			w.unindex(w.st.write(), rw.Collection, rw.ID, prevHeads)
		}
		w.index(w.st.write(), rw.Collection, rw.ID, rs.m.heads)
		rs.counted = true
	}
	// A shallow copy is a snapshot: rs.m's slices are replaced, never
	// written in place, by later writes of this record in the batch
	// (dropChunks drops the slice; putChunk only appends past draft's
	// length).
	draft := rs.m
	we := w.st.write()
	w.late = append(w.late, func(alloc func() uint64) error {
		seq := alloc()
		if rs.feedLive {
			if err := w.del(seqKey(we.epoch, kindFeed, rs.feedSeq)); err != nil {
				return err
			}
		}
		draft.seq = seq
		// Meta and feed entry are encoded straight into their envelopes
		// and sealed in place: one buffer each.
		var nonces [2 * nonceSize]byte
		randRead(nonces[:])
		nonce, fnonce := [nonceSize]byte(nonces[:nonceSize]), [nonceSize]byte(nonces[nonceSize:])
		mv := we.sealInPlace(draft.appendEncoded(envelopeFor(draft.encodedSize())), kindRec, rs.mk, nonce)
		if err := w.set(rs.mk, mv); err != nil {
			return err
		}
		fk := seqKey(we.epoch, kindFeed, seq)
		fv := we.sealInPlace(appendFeed(envelopeFor(feedSize(draft.coll, draft.id)), draft.coll, draft.id, nonce), kindFeed, fk, fnonce)
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
	if w.lastColl == coll {
		return nil // a batch's records are mostly of one collection
	}
	we := w.st.write()
	ck := we.collKey(coll)
	if _, ok := w.s.knownColl.Load(string(ck)); ok {
		w.lastColl = coll
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
	w.lastColl = coll
	return nil
}
