package storage

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"
)

// Record layouts. Layout 1 kept a record's meta under
// 'd' E 'm' H(coll) H(coll,id), and the reconciliation index as one 'x'
// entry per record (its id and heads) and one 'y' sum per bucket: four
// Badger entries per new record, three of them under random keys. Layout 2
// keeps the meta under 'd' E 'r' H(coll) H(coll,bucket) H(coll,id), so the
// metas are the index's items, and the sums in 64 pages per collection
// (recon.go): a new record is its meta and its feed entry, plus its share
// of the pages, written once per transaction.
//
// A store is in layout 1 while any layout-1 entry ('m', 'x' or 'y')
// remains in a read epoch. Open upgrades it, in batches, before returning
// (upgradeLayout): metas first, then the sum pages computed from them,
// then the layout-1 index entries deleted last; each step can be cut short
// by a crash and the next Open runs the upgrade again (moving what is left,
// computing the pages again). A store that opens read-only for lack of
// space is not upgraded: its records are read under both layouts (Load,
// Meta, List, Export), its writes fail with ErrNoSpace as for any
// read-only store (it stays read-only until opened again with space), and
// ReconSums/ReconItems fail with ErrNoSpace.

// The header's format version (header.go) says which layout a store may
// hold: a store with a version-1 header may be in layout 1; a writable Open
// writes version 2 (bumpVersion) before it upgrades or writes anything, so
// a build that knows only layout 1 (and so only version 1) refuses the
// store ("store header: corrupt") instead of opening it and finding none of
// its layout-2 records. A build that finds a version above its own refuses
// with ErrNewerStore.

// bumpVersion rewrites the header with format version headerVersion (its
// master keys rewrapped: the version is in the wrapping's associated data)
// and returns it. The caller holds Badger's directory lock and has checked
// that the store is writable.
func bumpVersion(dir string, h *header, kek, cur, next []byte) (*header, error) {
	h2 := *h
	h2.version = headerVersion
	h2.gen++
	if err := h2.wrapKeys(kek, cur, next); err != nil {
		return nil, err
	}
	if err := writeHeaderFile(dir, &h2); err != nil {
		return nil, fmt.Errorf("mark the store's format version: %w", err)
	}
	return &h2, nil
}

// upgradeBatch is how many records one upgrade transaction moves at most
// (a meta with an inline snapshot is at most ~2.2 KiB: within a
// transaction with the default sizes; with smaller memtables the upgrade
// halves its batch until Badger takes it; a variable for tests).
var upgradeBatch = 256

// upgradeHook, when set (tests), is called after each committed step of
// the upgrade, with the step's name.
var upgradeHook func(step string)

// isLegacy reports whether any layout-1 entry is left.
func (s *Store) isLegacy(ctx context.Context) (bool, error) {
	found := false
	err := s.view(ctx, "open", func(txn *badger.Txn, st *keyState) error {
		found = false
		for _, ek := range st.reads() {
			for _, kind := range []byte{kindMeta, kindReconItem, kindReconSum} {
				prefix := keyPrefix(nil, ek.epoch, kind)
				it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: false})
				it.Rewind()
				found = found || it.ValidForPrefix(prefix)
				it.Close()
			}
		}
		return nil
	})
	return found, err
}

// openLayout brings a store just opened to layout 2, or marks it legacy
// if it opened read-only.
func (s *Store) openLayout(ctx context.Context) error {
	legacy, err := s.isLegacy(ctx)
	if err != nil || !legacy {
		return err
	}
	if s.readOnly.Load() {
		s.legacy.Store(true)
		return nil
	}
	return s.upgradeLayout(ctx)
}

// needLayout2 refuses what a store of layout 1 opened read-only cannot do.
func (s *Store) needLayout2(op string) error {
	if s.legacy.Load() {
		return fmt.Errorf("%s: the store needs its one-time upgrade, which needs free space (open it again with space): %w", op, ErrNoSpace)
	}
	return nil
}

// upgradeLayout converts a layout-1 store (no concurrent operation: Open
// runs it before returning the store): metas move to their layout-2 keys,
// re-sealed with fresh nonces, with their feed entries re-sealed to link
// the new nonces; the sum pages are computed from all metas (replacing any
// a cut-short upgrade wrote); then the layout-1 index entries and sums are
// deleted, which marks the store as upgraded.
func (s *Store) upgradeLayout(ctx context.Context) error {
	limit := upgradeBatch
	for {
		n, err := s.upgradeMetas(ctx, limit)
		if errors.Is(err, errTooBig) && limit > 1 {
			limit /= 2 // small memtables: Badger refuses the transaction
			continue
		}
		if err != nil {
			return fmt.Errorf("upgrade record layout: %w", err)
		}
		if n == 0 {
			break
		}
		if upgradeHook != nil {
			upgradeHook("metas")
		}
	}
	if err := s.deleteKind(ctx, kindReconPage); err != nil {
		return fmt.Errorf("upgrade record layout: %w", err)
	}
	if err := s.writeReconPages(ctx); err != nil {
		return fmt.Errorf("upgrade record layout: %w", err)
	}
	if upgradeHook != nil {
		upgradeHook("pages")
	}
	for _, kind := range []byte{kindReconItem, kindReconSum} {
		if err := s.deleteKind(ctx, kind); err != nil {
			return fmt.Errorf("upgrade record layout: %w", err)
		}
	}
	return nil
}

// upgradeMetas moves up to limit layout-1 metas (any read epoch) to
// their layout-2 keys in one transaction and returns how many.
func (s *Store) upgradeMetas(ctx context.Context, limit int) (int, error) {
	moved := 0
	err := s.update(ctx, "upgrade", func(w *wtx) error {
		moved = 0
		for _, ek := range w.st.reads() {
			prefix := keyPrefix(nil, ek.epoch, kindMeta)
			var items []kv
			it := w.txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
			for it.Rewind(); it.ValidForPrefix(prefix) && moved+len(items) < limit; it.Next() {
				v, err := it.Item().ValueCopy(nil)
				if err != nil {
					it.Close()
					return err
				}
				items = append(items, kv{it.Item().KeyCopy(nil), v})
			}
			it.Close()
			for _, e := range items {
				if err := w.upgradeMeta(ek, e); err != nil {
					return err
				}
			}
			moved += len(items)
		}
		return nil
	})
	return moved, err
}

func (w *wtx) upgradeMeta(ek *epochKeys, e kv) error {
	m, nonce, err := openMeta(ek, e.k, e.v)
	if err != nil {
		return err
	}
	rid := ek.recID(m.coll, m.id)
	if !bytes.Equal(e.k, ek.legacyMetaKey(m.coll, rid)) {
		return corruptf("record meta")
	}
	if err := verifyFeedLink(w.txn, ek, m, nonce); err != nil {
		return err
	}
	mk := ek.metaKey(m.coll, m.id, rid)
	mn := newNonce()
	if err := w.set(mk, ek.seal(nil, kindRec, mk, mn, m.encode())); err != nil {
		return err
	}
	fk := seqKey(ek.epoch, kindFeed, m.seq)
	fv, _ := ek.sealNew(kindFeed, fk, encodeFeed(m.coll, m.id, mn))
	if err := w.set(fk, fv); err != nil {
		return err
	}
	return w.del(e.k)
}

// deleteKind deletes every entry of one kind in every read epoch, in
// batches.
func (s *Store) deleteKind(ctx context.Context, kind byte) error {
	for {
		n := 0
		err := s.update(ctx, "upgrade", func(w *wtx) error {
			n = 0
			for _, ek := range w.st.reads() {
				prefix := keyPrefix(nil, ek.epoch, kind)
				var keys [][]byte
				it := w.txn.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: false})
				for it.Rewind(); it.ValidForPrefix(prefix) && n+len(keys) < 4*upgradeBatch; it.Next() {
					keys = append(keys, it.Item().KeyCopy(nil))
				}
				it.Close()
				for _, k := range keys {
					if err := w.del(k); err != nil {
						return err
					}
				}
				n += len(keys)
			}
			return nil
		})
		if err != nil || n == 0 {
			return err
		}
	}
}

// writeReconPages computes every collection's bucket sums from its metas
// and writes them as pages, one transaction per collection and epoch.
func (s *Store) writeReconPages(ctx context.Context) error {
	type ecoll struct {
		epoch uint32
		coll  string
	}
	sums := map[ecoll]*[ReconBuckets]ReconSum{}
	var order []ecoll
	err := s.view(ctx, "upgrade", func(txn *badger.Txn, st *keyState) error {
		clear(sums)
		order = order[:0]
		for _, ek := range st.reads() {
			prefix := keyPrefix(nil, ek.epoch, kindRec)
			err := scanSealed(txn, ek, kindRec, prefix, "record meta", func(k, pt []byte) error {
				m, err := decodeMeta(pt)
				if err != nil || !bytes.Equal(k, ek.metaKey(m.coll, m.id, ek.recID(m.coll, m.id))) {
					return corruptf("record meta")
				}
				ec := ecoll{ek.epoch, m.coll}
				b := sums[ec]
				if b == nil {
					b = new([ReconBuckets]ReconSum)
					sums[ec] = b
					order = append(order, ec)
				}
				key := ReconKey(m.coll, m.id)
				r := &b[ReconBucket(key)]
				r.Count++
				AddSum(&r.Sum, ReconHash(key, m.heads))
				return nil
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, ec := range order {
		b := sums[ec]
		err := s.update(ctx, "upgrade", func(w *wtx) error {
			var ek *epochKeys
			for _, e := range w.st.reads() {
				if e.epoch == ec.epoch {
					ek = e
				}
			}
			if ek == nil {
				return corruptf("key epoch changed during upgrade")
			}
			for page := 0; page < reconPages; page++ {
				p := reconPage{}
				for i := 0; i < reconPageBuckets; i++ {
					bucket := page*reconPageBuckets + i
					if r := b[bucket]; r.Count > 0 {
						r.Bucket = uint16(bucket)
						p[uint8(i)] = r
					}
				}
				if len(p) == 0 {
					continue
				}
				pk := ek.reconPageKey(ec.coll, page)
				v, _ := ek.sealNew(kindReconPage, pk, encodeReconPage(page, p))
				if err := w.set(pk, v); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}
