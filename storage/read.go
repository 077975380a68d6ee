package storage

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"hash/maphash"
	"math"
	"sort"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// The read side of records: loading a record's metadata and chunks inside a
// transaction, and Load, Meta, List, Collections and Feed.

// recState is a record's state inside one transaction.
type recState struct {
	m        metaRec
	exists   bool   // a meta exists (committed or pending) in the write epoch
	feedLive bool   // a feed entry for feedSeq exists in the write epoch
	feedSeq  uint64 // seq of the live feed entry
	// counted: the record's heads (m.heads) are in the write epoch's
	// reconciliation sums (it had a meta there, or was written in this
	// transaction).
	counted bool
	rid     []byte // blinded id in the write epoch
	mk      []byte // meta key in the write epoch
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

// openMeta opens a meta read from mk, of layout 2 (kindRec) or 1
// (kindMeta), as mk says (the kind is part of the key and of the AD).
func openMeta(ek *epochKeys, mk, raw []byte) (*metaRec, [nonceSize]byte, error) {
	kind := byte(kindRec)
	if len(mk) > prefixLen && mk[prefixLen-1] == kindMeta {
		kind = kindMeta
	}
	pt, nonce, err := ek.open(nil, kind, mk, raw)
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

// findRecord locates and verifies a record's meta in the read epochs (and
// under its layout-1 key too while the store is not upgraded).
func (s *Store) findRecord(txn *badger.Txn, st *keyState, coll, id string) (*epochKeys, []byte, *metaRec, error) {
	legacy := s.legacy.Load()
	for _, ek := range st.reads() {
		rid := ek.recID(coll, id)
		m, _, err := readMeta(txn, ek, ek.metaKey(coll, id, rid), coll, id)
		if err == nil && m == nil && legacy {
			m, _, err = readMeta(txn, ek, ek.legacyMetaKey(coll, rid), coll, id)
		}
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
		ek, rid, m, err := s.findRecord(txn, st, collection, id)
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
		_, _, m, err := s.findRecord(txn, st, collection, id)
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
		for _, mp := range s.metaPrefixes(st, collection) {
			ek, prefix := mp.ek, mp.prefix
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
				if err != nil || m.coll != collection || !bytes.Equal(mk, mp.key(m)) {
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

// metaScan is one prefix of meta keys to scan in one epoch, and the key a
// meta found there must have.
type metaScan struct {
	ek     *epochKeys
	prefix []byte
	legacy bool
}

func (mp metaScan) key(m *metaRec) []byte {
	rid := mp.ek.recID(m.coll, m.id)
	if mp.legacy {
		return mp.ek.legacyMetaKey(m.coll, rid)
	}
	return mp.ek.metaKey(m.coll, m.id, rid)
}

// metaPrefixes lists the meta prefixes of coll (all collections if coll is
// empty) in the read epochs: layout 2's, and layout 1's while the store is
// not upgraded.
func (s *Store) metaPrefixes(st *keyState, coll string) []metaScan {
	var out []metaScan
	legacy := s.legacy.Load()
	for _, ek := range st.reads() {
		if coll == "" {
			out = append(out, metaScan{ek: ek, prefix: keyPrefix(nil, ek.epoch, kindRec)})
		} else {
			out = append(out, metaScan{ek: ek, prefix: ek.metaPrefix(coll)})
		}
		if legacy {
			p := keyPrefix(nil, ek.epoch, kindMeta)
			if coll != "" {
				cp := ek.collPrefix(coll)
				p = append(p, cp[:]...)
			}
			out = append(out, metaScan{ek: ek, prefix: p, legacy: true})
		}
	}
	return out
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
			err := scanSealed(txn, ek, kindColl, keyPrefix(nil, ek.epoch, kindColl), "collection entry", func(k, pt []byte) error {
				name, err := decodeName(pt)
				if err != nil || !bytes.Equal(k, ek.collKey(name)) {
					return corruptf("collection entry")
				}
				if !seen[name] {
					seen[name] = true
					names = append(names, name)
				}
				return nil
			})
			if err != nil {
				return err
			}
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

// scanSealed calls fn with the key and opened plaintext of every item under
// prefix in one epoch, in key order. A value that does not open under kind
// is ErrCorrupt naming what; an error from fn stops the scan and is
// returned.
func scanSealed(txn *badger.Txn, ek *epochKeys, kind byte, prefix []byte, what string, fn func(k, pt []byte) error) error {
	it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
	defer it.Close()
	for it.Rewind(); it.ValidForPrefix(prefix); it.Next() {
		item := it.Item()
		k := item.KeyCopy(nil)
		raw, err := item.ValueCopy(nil)
		if err != nil {
			return err
		}
		pt, _, err := ek.open(nil, kind, k, raw)
		if err != nil {
			return corruptf(what)
		}
		if err := fn(k, pt); err != nil {
			return err
		}
	}
	return nil
}

// ReadOrder returns a function that maps a record to its place in the
// store: the byte order of the keys it returns (8 bytes each) is the order
// in which the records were last written, which is the order of their
// feed entries and of their documents in the value log (Badger appends
// values of ValueThreshold or more, 1 KiB by default, to its *.vlog files
// as they are written; the metas, smaller, stay in the LSM tree). A
// caller about to load many records (a sync sender at a first meeting,
// which sends every record) reads each value-log page once in that order,
// rather than once per record on it when the pages do not stay resident
// (Sizes.MappedBudget): in name order, or the metas' blinded order, each
// record is a read at a random place in the value log. It reads the write
// epoch's feed once (one sealed entry of about 100 bytes per record) and
// holds 8 bytes of a hash and 8 of a position per record until the
// function is dropped. A record written after the read, or whose names
// collide in the hash, is only placed worse (last, or beside another):
// the order is advice. Errors: the store's (ErrClosed), ctx's, ErrCorrupt
// for a feed entry that does not open.
func (s *Store) ReadOrder(ctx context.Context) (func(collection, id string) []byte, error) {
	seed := maphash.MakeSeed()
	var at map[uint64]uint64
	err := s.view(ctx, "read order", func(txn *badger.Txn, st *keyState) error {
		at = map[uint64]uint64{}
		ek := st.write()
		prefix := keyPrefix(nil, ek.epoch, kindFeed)
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
		defer it.Close()
		n := 0
		for it.Rewind(); it.ValidForPrefix(prefix); it.Next() {
			if n++; n%ctxCheckEvery == 0 {
				if err := s.alive(ctx); err != nil {
					return err
				}
			}
			item := it.Item()
			k := item.Key()
			raw, err := item.ValueCopy(nil)
			if err != nil {
				return err
			}
			pt, _, err := ek.open(nil, kindFeed, k, raw)
			if err != nil {
				return corruptf("feed entry")
			}
			coll, id, _, err := decodeFeed(pt)
			if err != nil {
				return corruptf("feed entry")
			}
			at[nameHash(seed, coll, id)] = binary.BigEndian.Uint64(k[len(k)-8:])
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return func(coll, id string) []byte {
		p, ok := at[nameHash(seed, coll, id)]
		if !ok {
			p = math.MaxUint64
		}
		return binary.BigEndian.AppendUint64(make([]byte, 0, 8), p)
	}, nil
}

// nameHash hashes a record's names (ReadOrder).
func nameHash(seed maphash.Seed, coll, id string) uint64 {
	var h maphash.Hash
	h.SetSeed(seed)
	h.WriteString(coll)
	h.WriteByte(0)
	h.WriteString(id)
	return h.Sum64()
}
