package storage

import (
	"bytes"
	"context"
	"errors"

	"github.com/dgraph-io/badger/v4"
)

// ChangePassphrase rewraps the master key(s) under a new passphrase or raw
// key (newOpts.Passphrase or newOpts.Key, with newOpts.KDF). It is one atomic
// replacement of the header file: after a crash either the old or the new
// secret opens the store, never neither. Data is not rewritten.
func (s *Store) ChangePassphrase(ctx context.Context, newOpts Options) error {
	if err := newOpts.validate(); err != nil {
		return err
	}
	s.tryWritable()
	if err := s.begin(); err != nil {
		return err
	}
	defer s.end()
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := s.checkSpace(0); err != nil {
		return err
	}
	s.transMu.Lock()
	defer s.transMu.Unlock()
	h := *s.hdr
	kek, err := newHeaderParams(&h, &newOpts)
	if err != nil {
		return err
	}
	h.gen++
	st := s.state.Load()
	var next []byte
	if st.next != nil {
		next = st.next.master
	}
	if err := h.wrapKeys(kek, st.cur.master, next); err != nil {
		wipe(kek)
		return err
	}
	if !s.inMem {
		if err := writeHeaderFile(s.dir, &h); err != nil {
			wipe(kek)
			return err
		}
	}
	wipe(s.kek)
	s.kek, s.hdr = kek, &h
	return nil
}

// RotateKey replaces the master key: a new epoch key is wrapped into the
// header, then every value is moved from the old epoch's keyspace into the
// new one (re-blinded and re-sealed), in batches of one transaction each,
// and finally the header drops the old key. progress, if not nil, is called
// after each batch with the number of items moved and the total.
//
// The store stays usable meanwhile: reads look in both epochs and writes
// move the records they touch. If RotateKey is interrupted (ctx, Close,
// crash), the rotation stays pending: the next RotateKey or Open finishes
// it. Nothing is lost at any point: each batch writes the new copy and
// deletes the old in one transaction.
func (s *Store) RotateKey(ctx context.Context, progress func(done, total int)) error {
	s.tryWritable()
	if err := s.begin(); err != nil {
		return err
	}
	defer s.end()
	if err := s.checkSpace(0); err != nil {
		return err
	}
	s.rotMu.Lock()
	defer s.rotMu.Unlock()
	if err := s.alive(ctx); err != nil {
		return err
	}
	if s.state.Load().next == nil {
		if err := s.startRotation(); err != nil {
			return err
		}
	}
	return s.finishRotation(ctx, progress)
}

func (s *Store) startRotation() error {
	s.transMu.Lock()
	defer s.transMu.Unlock()
	st := s.state.Load()
	if st.cur.epoch == ^uint32(0) {
		return invalidf("key epochs exhausted")
	}
	next := randomKey()
	defer wipe(next)
	nk, err := newEpochKeys(st.cur.epoch+1, next)
	if err != nil {
		return err
	}
	h := *s.hdr
	h.gen++
	h.rotating, h.nextEpoch = true, nk.epoch
	if err := h.wrapKeys(s.kek, st.cur.master, next); err != nil {
		return err
	}
	// Header first: once any value is sealed under the new key, the key is
	// on disk.
	if !s.inMem {
		if err := writeHeaderFile(s.dir, &h); err != nil {
			return err
		}
	}
	s.hdr = &h
	return s.publish(&keyState{cur: st.cur, next: nk})
}

// rotation order: owners first (records carry chunks and feed entries,
// slots and log heads carry markers), then log entries and collections.
var rotateKinds = []byte{kindRec, kindSlot, kindLogHead, kindLogEntry, kindColl}

const (
	rotateBatchItems = 256
	rotateBatchBytes = 4 << 20
)

func (s *Store) finishRotation(ctx context.Context, progress func(done, total int)) error {
	st := s.state.Load()
	from, to := st.cur, st.next
	total := 0
	err := s.view(ctx, "rotate", func(txn *badger.Txn, _ *keyState) error {
		total = 0
		for _, kind := range rotateKinds {
			prefix := keyPrefix(nil, from.epoch, kind)
			it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: false})
			for it.Rewind(); it.ValidForPrefix(prefix); it.Next() {
				total++
			}
			it.Close()
		}
		return nil
	})
	if err != nil {
		return err
	}
	done := 0
	limit := rotateBatchItems
	for _, kind := range rotateKinds {
		for {
			if err := s.alive(ctx); err != nil {
				return err
			}
			n, err := s.rotateBatch(ctx, kind, from, to, limit)
			if errors.Is(err, errTooBig) && limit > 1 {
				// Badger refuses a transaction over ~15% of a memtable; a
				// record moves with its chunks, which the batch's bounds
				// do not count: halve the batch and try again.
				limit /= 2
				continue
			}
			if err != nil {
				return err
			}
			if n == 0 {
				break
			}
			done = min(done+n, total)
			if progress != nil {
				progress(done, total)
			}
		}
	}
	// Anything left in the old keyspace is unreachable garbage or tampering:
	// refuse to drop the key it needs.
	err = s.view(ctx, "rotate", func(txn *badger.Txn, _ *keyState) error {
		prefix := keyPrefix(nil, from.epoch, 0)[:5]
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: false})
		defer it.Close()
		it.Rewind()
		if it.ValidForPrefix(prefix) {
			return corruptf("orphaned value in old key epoch")
		}
		return nil
	})
	if err != nil {
		return err
	}
	if !s.inMem {
		// With NoSync the moves may not be durable yet; the header must not
		// drop the old key before they are.
		if err := s.db.Sync(); err != nil {
			return mapBadgerErr("rotate", err)
		}
	}
	if err := s.finalizeRotation(from, to); err != nil {
		return err
	}
	// Every value of the old epoch is garbage now: the next value-log GC
	// round collects it without waiting for the value log to grow.
	s.gcForce.Store(true)
	if progress != nil {
		progress(total, total)
	}
	return nil
}

func (s *Store) finalizeRotation(from, to *epochKeys) error {
	s.transMu.Lock()
	defer s.transMu.Unlock()
	h := *s.hdr
	h.gen++
	h.curEpoch, h.rotating, h.nextEpoch = to.epoch, false, 0
	if err := h.wrapKeys(s.kek, to.master, nil); err != nil {
		return err
	}
	if !s.inMem {
		if err := writeHeaderFile(s.dir, &h); err != nil {
			return err
		}
	}
	s.hdr = &h
	// The old epoch's keys are not wiped here: a reader whose snapshot
	// predates this transition may still use them. They are dropped with
	// the last reference.
	return s.publish(&keyState{cur: to})
}

type kv struct{ k, v []byte }

// rotateBatch moves up to limit items (and about rotateBatchBytes of
// their values) of one kind in one transaction and returns how many it
// moved; errTooBig when they do not fit in one.
func (s *Store) rotateBatch(ctx context.Context, kind byte, from, to *epochKeys, limit int) (int, error) {
	moved := 0
	err := s.update(ctx, "rotate", func(w *wtx) error {
		moved = 0
		if w.st.next != to || w.st.cur != from {
			return corruptf("key state changed during rotation")
		}
		prefix := keyPrefix(nil, from.epoch, kind)
		var items []kv
		size := 0
		it := w.txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
		for it.Rewind(); it.ValidForPrefix(prefix) && len(items) < limit && size < rotateBatchBytes; it.Next() {
			item := it.Item()
			v, err := item.ValueCopy(nil)
			if err != nil {
				it.Close()
				return err
			}
			items = append(items, kv{item.KeyCopy(nil), v})
			size += len(v)
		}
		it.Close()
		for _, e := range items {
			var err error
			switch kind {
			case kindRec:
				err = w.rotateRecord(from, to, e)
			case kindSlot:
				err = w.rotateMarked(from, to, kindSlot, e)
			case kindLogHead:
				err = w.rotateMarked(from, to, kindLogHead, e)
			case kindLogEntry:
				err = w.rotateEntry(from, to, e)
			case kindColl:
				err = w.rotateColl(from, to, e)
			}
			if err != nil {
				return err
			}
		}
		moved = len(items)
		return nil
	})
	return moved, err
}

func (w *wtx) rotateRecord(from, to *epochKeys, e kv) error {
	m, nonce, err := openMeta(from, e.k, e.v)
	if err != nil {
		return err
	}
	orid := from.recID(m.coll, m.id)
	if !bytes.Equal(e.k, from.metaKey(m.coll, m.id, orid)) {
		return corruptf("record meta")
	}
	if err := verifyFeedLink(w.txn, from, m, nonce); err != nil {
		return err
	}
	rid := to.recID(m.coll, m.id)
	if err := w.moveRecord(from, orid, e.k, m, to, rid); err != nil {
		return err
	}
	mk := to.metaKey(m.coll, m.id, rid)
	mn := newNonce()
	pt := m.encode()
	if err := w.set(mk, to.seal(nil, kindRec, mk, mn, pt)); err != nil {
		return err
	}
	fk := seqKey(to.epoch, kindFeed, m.seq)
	fv, _ := to.sealNew(kindFeed, fk, encodeFeed(m.coll, m.id, mn))
	if err := w.set(fk, fv); err != nil {
		return err
	}
	w.index(to, m.coll, m.id, m.heads)
	return w.ensureCollIn(to, m.coll)
}

// ensureCollIn registers coll in epoch ek (used by rotation, which writes
// into the next epoch whatever the write epoch).
func (w *wtx) ensureCollIn(ek *epochKeys, coll string) error {
	ck := ek.collKey(coll)
	if w.colls == nil {
		w.colls = make(map[string]bool)
	}
	if w.colls[string(ck)] {
		return nil
	}
	w.colls[string(ck)] = true
	ok, err := exists(w.txn, ck)
	if err != nil || ok {
		return err
	}
	v, _ := ek.sealNew(kindColl, ck, encodeName(coll))
	return w.set(ck, v)
}

func (w *wtx) rotateMarked(from, to *epochKeys, kind byte, e kv) error {
	pt, nonce, err := from.open(nil, kind, e.k, e.v)
	if err != nil {
		return corruptf("rotate value")
	}
	var newKey []byte
	var seq uint64
	switch kind {
	case kindSlot:
		v, err := decodeSlot(pt)
		if err != nil || !bytes.Equal(e.k, from.slotKey(v.ns, v.key)) {
			return corruptf("slot")
		}
		newKey, seq = to.slotKey(v.ns, v.key), v.seq
	case kindLogHead:
		h, err := decodeLogHead(pt)
		if err != nil || !bytes.Equal(e.k, from.headKey(h.ns)) {
			return corruptf("log head")
		}
		newKey, seq = to.headKey(h.ns), h.seq
	}
	if err := verifyMarker(w.txn, from, kind, e.k, seq, nonce); err != nil {
		return err
	}
	if err := w.del(e.k); err != nil {
		return err
	}
	if err := w.del(seqKey(from.epoch, kindMarker, seq)); err != nil {
		return err
	}
	return w.writeMarked(to, kind, newKey, false, 0, seq, pt)
}

func (w *wtx) rotateEntry(from, to *epochKeys, e kv) error {
	pt, _, err := from.open(nil, kindLogEntry, e.k, e.v)
	if err != nil {
		return corruptf("log entry")
	}
	ns, _, err := decodeEntry(pt)
	if err != nil {
		return corruptf("log entry")
	}
	prefix := from.entryPrefix(ns)
	if len(e.k) != len(prefix)+8 || !bytes.HasPrefix(e.k, prefix) {
		return corruptf("log entry")
	}
	nk := entryKey(to.entryPrefix(ns), beU64(e.k[len(prefix):]))
	nv, _ := to.sealNew(kindLogEntry, nk, pt)
	if err := w.set(nk, nv); err != nil {
		return err
	}
	return w.del(e.k)
}

func (w *wtx) rotateColl(from, to *epochKeys, e kv) error {
	pt, _, err := from.open(nil, kindColl, e.k, e.v)
	if err != nil {
		return corruptf("collection entry")
	}
	name, err := decodeName(pt)
	if err != nil || !bytes.Equal(e.k, from.collKey(name)) {
		return corruptf("collection entry")
	}
	if err := w.ensureCollIn(to, name); err != nil {
		return err
	}
	return w.del(e.k)
}
