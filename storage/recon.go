package storage

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"slices"

	"github.com/dgraph-io/badger/v4"
)

// The reconciliation index: what a sync session needs to compare the set of
// (record, heads) two stores hold without reading every record.
//
// Every record has a reconciliation key, ReconKey(collection, id): a plain
// SHA-256 of its names, the same in every store, and an item hash,
// ReconHash(key, heads). Keys fall into ReconBuckets buckets by their top
// bits. Per collection and bucket the store keeps the count of records and
// the sum (mod 2^256) of their item hashes, updated in the same transaction
// as each record write, plus one index entry per record (its id and heads)
// grouped by bucket, so one bucket's items are read without the others.
//
// Keys on disk are blinded like every other key: the bucket number is
// HMACed with the collection under the epoch's blinding key, so a reader of
// the raw files sees which records share a bucket, not which bucket.
//
//	'd' E 'y' H(coll) H(coll,bucket)            -> bucket u16 | count u64 | sum [32]
//	'd' E 'x' H(coll) H(coll,bucket) H(coll,id)  -> id | heads
//
// Stores written before the index existed build it on first use
// (ReconSums, ReconItems), in batches; the slot reconSlotNS/"built" marks
// it complete (a slot, so key rotation carries it).
const (
	kindReconSum  = 'y'
	kindReconItem = 'x'
)

// ReconBuckets is the number of buckets the key space is split into;
// ReconBucketBits is its base-2 logarithm.
const (
	ReconBucketBits = 10
	ReconBuckets    = 1 << ReconBucketBits
)

const reconSlotNS = "storage/recon"

// ReconKey is a record's reconciliation key: SHA-256 of its collection
// (length-prefixed) and id. Every store computes the same key.
func ReconKey(collection, id string) [32]byte {
	b := make([]byte, 0, 1+binary.MaxVarintLen64+len(collection)+len(id))
	b = macInput(b, 'k', collection, id)
	return sha256.Sum256(b)
}

// ReconBucket is the bucket of a key: its top ReconBucketBits bits.
func ReconBucket(key [32]byte) uint16 {
	return binary.BigEndian.Uint16(key[:2]) >> (16 - ReconBucketBits)
}

// ReconHash is the item hash of a record with this key at these heads
// (HeadSize bytes each, in any order): SHA-256 over the key and the sorted
// heads.
func ReconHash(key [32]byte, heads [][]byte) [32]byte {
	hs := slices.Clone(heads)
	slices.SortFunc(hs, bytes.Compare)
	h := sha256.New()
	h.Write([]byte{'i'})
	h.Write(key[:])
	for _, x := range hs {
		h.Write(x)
	}
	var out [32]byte
	h.Sum(out[:0])
	return out
}

// ReconSum is one bucket's count of records and sum of item hashes
// (big-endian, mod 2^256).
type ReconSum struct {
	Bucket uint16
	Count  uint64
	Sum    [32]byte
}

// ReconItem is one record in a bucket.
type ReconItem struct {
	ID    string
	Key   [32]byte
	Heads [][]byte
	Hash  [32]byte
}

// AddSum adds b to a (mod 2^256).
func AddSum(a *[32]byte, b [32]byte) {
	var carry uint16
	for i := 31; i >= 0; i-- {
		s := uint16(a[i]) + uint16(b[i]) + carry
		a[i] = byte(s)
		carry = s >> 8
	}
}

// subSum subtracts b from a (mod 2^256).
func subSum(a *[32]byte, b [32]byte) {
	var borrow int16
	for i := 31; i >= 0; i-- {
		d := int16(a[i]) - int16(b[i]) - borrow
		borrow = 0
		if d < 0 {
			d += 256
			borrow = 1
		}
		a[i] = byte(d)
	}
}

func (k *epochKeys) bucketID(coll string, bucket uint16) []byte {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], bucket)
	return k.mac(nil, 'b', coll, string(b[:]))
}

func (k *epochKeys) reconSumPrefix(coll string) []byte {
	p := k.collPrefix(coll)
	return append(keyPrefix(make([]byte, 0, prefixLen+2*blindSize), k.epoch, kindReconSum), p[:]...)
}

func (k *epochKeys) reconSumKey(coll string, bucket uint16) []byte {
	return append(k.reconSumPrefix(coll), k.bucketID(coll, bucket)...)
}

func (k *epochKeys) reconItemPrefix(coll string, bucket uint16) []byte {
	p := k.collPrefix(coll)
	b := append(keyPrefix(make([]byte, 0, prefixLen+3*blindSize), k.epoch, kindReconItem), p[:]...)
	return append(b, k.bucketID(coll, bucket)...)
}

func encodeReconItem(id string, heads [][]byte) []byte {
	w := wbuf{b: make([]byte, 0, 8+len(id)+HeadSize*len(heads))}
	w.str(id)
	w.uv(uint64(len(heads)))
	for _, h := range heads {
		w.fixed(h)
	}
	return w.b
}

func decodeReconItem(b []byte) (string, [][]byte, bool) {
	r := rbuf{b: b}
	id := r.str(maxNameLen)
	n := r.count(maxHeads, HeadSize)
	heads := make([][]byte, 0, n)
	for i := 0; i < n; i++ {
		heads = append(heads, slices.Clone(r.fixed(HeadSize)))
	}
	return id, heads, r.done()
}

func encodeReconSum(s *ReconSum) []byte {
	b := binary.BigEndian.AppendUint16(nil, s.Bucket)
	b = binary.BigEndian.AppendUint64(b, s.Count)
	return append(b, s.Sum[:]...)
}

func decodeReconSum(b []byte) (ReconSum, bool) {
	if len(b) != 2+8+32 {
		return ReconSum{}, false
	}
	s := ReconSum{Bucket: binary.BigEndian.Uint16(b), Count: binary.BigEndian.Uint64(b[2:])}
	copy(s.Sum[:], b[10:])
	return s, true
}

// reconItemHash reads the index entry of coll/id in ek: its item hash and
// whether it exists.
func (w *wtx) reconEntry(ek *epochKeys, coll, id string) ([]byte, [32]byte, bool, error) {
	key := ReconKey(coll, id)
	bucket := ReconBucket(key)
	ik := append(ek.reconItemPrefix(coll, bucket), ek.recID(coll, id)...)
	raw, ok, err := getValue(w.txn, ik)
	if err != nil || !ok {
		return ik, [32]byte{}, false, err
	}
	pt, _, err := ek.open(nil, kindReconItem, ik, raw)
	if err != nil {
		return nil, [32]byte{}, false, corruptf("reconciliation index")
	}
	gotID, heads, ok := decodeReconItem(pt)
	if !ok || gotID != id {
		return nil, [32]byte{}, false, corruptf("reconciliation index")
	}
	return ik, ReconHash(key, heads), true, nil
}

// addToBucket adds (sign > 0) or removes an item hash from its bucket sum.
func (w *wtx) addToBucket(ek *epochKeys, coll string, bucket uint16, h [32]byte, add bool) error {
	sk := ek.reconSumKey(coll, bucket)
	s := ReconSum{Bucket: bucket}
	raw, ok, err := getValue(w.txn, sk)
	if err != nil {
		return err
	}
	if ok {
		pt, _, err := ek.open(nil, kindReconSum, sk, raw)
		if err != nil {
			return corruptf("reconciliation sum")
		}
		if s, ok = decodeReconSum(pt); !ok || s.Bucket != bucket {
			return corruptf("reconciliation sum")
		}
	}
	if add {
		AddSum(&s.Sum, h)
		s.Count++
	} else {
		if s.Count == 0 {
			return corruptf("reconciliation sum")
		}
		subSum(&s.Sum, h)
		s.Count--
	}
	if s.Count == 0 {
		return w.del(sk)
	}
	v, _ := ek.sealNew(kindReconSum, sk, encodeReconSum(&s))
	return w.set(sk, v)
}

// unindex removes coll/id from the index of epoch ek, if it is there.
func (w *wtx) unindex(ek *epochKeys, coll, id string) error {
	ik, h, ok, err := w.reconEntry(ek, coll, id)
	if err != nil || !ok {
		return err
	}
	if err := w.del(ik); err != nil {
		return err
	}
	return w.addToBucket(ek, coll, ReconBucket(ReconKey(coll, id)), h, false)
}

// index sets coll/id's entry in the index of epoch ek to heads.
func (w *wtx) index(ek *epochKeys, coll, id string, heads [][]byte) error {
	if err := w.unindex(ek, coll, id); err != nil {
		return err
	}
	key := ReconKey(coll, id)
	bucket := ReconBucket(key)
	ik := append(ek.reconItemPrefix(coll, bucket), ek.recID(coll, id)...)
	v, _ := ek.sealNew(kindReconItem, ik, encodeReconItem(id, heads))
	if err := w.set(ik, v); err != nil {
		return err
	}
	return w.addToBucket(ek, coll, bucket, ReconHash(key, heads), true)
}

// reconBuilt reports whether the index is complete.
func (s *Store) reconBuilt(ctx context.Context) (bool, error) {
	_, ok, err := s.Slots(reconSlotNS).Get(ctx, "built")
	return ok, err
}

// buildRecon indexes every record not yet in the index (a store written
// before the index existed), in batches, then marks the index complete.
// Concurrent writes index their records themselves; a record already in
// the index is left as it is.
func (s *Store) buildRecon(ctx context.Context) error {
	if ok, err := s.reconBuilt(ctx); err != nil || ok {
		return err
	}
	type mref struct {
		epoch uint32
		mk    []byte
	}
	var refs []mref
	err := s.view(ctx, "reconciliation index", func(txn *badger.Txn, st *keyState) error {
		refs = refs[:0]
		for _, ek := range st.reads() {
			prefix := keyPrefix(nil, ek.epoch, kindMeta)
			it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: false})
			for it.Rewind(); it.ValidForPrefix(prefix); it.Next() {
				refs = append(refs, mref{ek.epoch, it.Item().KeyCopy(nil)})
			}
			it.Close()
		}
		return nil
	})
	if err != nil {
		return err
	}
	const per = 512
	for len(refs) > 0 {
		n := min(per, len(refs))
		part := refs[:n]
		refs = refs[n:]
		err := s.update(ctx, "reconciliation index", func(w *wtx) error {
			for _, r := range part {
				var ek *epochKeys
				for _, e := range w.st.reads() {
					if e.epoch == r.epoch {
						ek = e
					}
				}
				if ek == nil {
					continue // rotated away meanwhile: indexed by the rotation
				}
				raw, ok, err := getValue(w.txn, r.mk)
				if err != nil {
					return err
				}
				if !ok {
					continue
				}
				m, _, err := openMeta(ek, r.mk, raw)
				if err != nil {
					return err
				}
				if _, _, ok, err := w.reconEntry(ek, m.coll, m.id); err != nil || ok {
					if err != nil {
						return err
					}
					continue
				}
				if err := w.index(ek, m.coll, m.id, m.heads); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	_, err = s.Write(ctx, Batch{Slots: []SlotWrite{{Namespace: reconSlotNS, Key: "built", Value: []byte{1}}}})
	return err
}

// ReconSums returns, for every non-empty bucket of collection, the count of
// its records and the sum of their item hashes (see ReconHash), ordered by
// bucket. The first call on a store written before the index existed builds
// the index (it reads every record once); later calls read at most
// ReconBuckets small values per collection.
func (s *Store) ReconSums(ctx context.Context, collection string) ([]ReconSum, error) {
	if err := checkName("collection", collection); err != nil {
		return nil, err
	}
	if err := s.buildRecon(ctx); err != nil {
		return nil, err
	}
	var out []ReconSum
	err := s.view(ctx, "reconciliation sums", func(txn *badger.Txn, st *keyState) error {
		byBucket := map[uint16]*ReconSum{}
		for _, ek := range st.reads() {
			err := scanSealed(txn, ek, kindReconSum, ek.reconSumPrefix(collection), "reconciliation sum", func(k, pt []byte) error {
				rs, ok := decodeReconSum(pt)
				if !ok || rs.Bucket >= ReconBuckets || !bytes.Equal(k, ek.reconSumKey(collection, rs.Bucket)) {
					return corruptf("reconciliation sum")
				}
				if cur := byBucket[rs.Bucket]; cur != nil {
					cur.Count += rs.Count
					AddSum(&cur.Sum, rs.Sum)
				} else {
					byBucket[rs.Bucket] = &rs
				}
				return nil
			})
			if err != nil {
				return err
			}
		}
		out = out[:0]
		for _, v := range byBucket {
			out = append(out, *v)
		}
		slices.SortFunc(out, func(a, b ReconSum) int { return int(a.Bucket) - int(b.Bucket) })
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// ReconItems returns the records of collection in one bucket, with their
// keys, heads and item hashes, ordered by key.
func (s *Store) ReconItems(ctx context.Context, collection string, bucket uint16) ([]ReconItem, error) {
	if err := checkName("collection", collection); err != nil {
		return nil, err
	}
	if bucket >= ReconBuckets {
		return nil, invalidf("bucket %d of %d", bucket, ReconBuckets)
	}
	if err := s.buildRecon(ctx); err != nil {
		return nil, err
	}
	var out []ReconItem
	err := s.view(ctx, "reconciliation items", func(txn *badger.Txn, st *keyState) error {
		out = out[:0]
		for _, ek := range st.reads() {
			prefix := ek.reconItemPrefix(collection, bucket)
			err := scanSealed(txn, ek, kindReconItem, prefix, "reconciliation index", func(k, pt []byte) error {
				id, heads, ok := decodeReconItem(pt)
				if !ok || !bytes.Equal(k[len(prefix):], ek.recID(collection, id)) {
					return corruptf("reconciliation index")
				}
				key := ReconKey(collection, id)
				out = append(out, ReconItem{ID: id, Key: key, Heads: heads, Hash: ReconHash(key, heads)})
				return nil
			})
			if err != nil {
				return err
			}
		}
		slices.SortFunc(out, func(a, b ReconItem) int { return bytes.Compare(a.Key[:], b.Key[:]) })
		out = slices.CompactFunc(out, func(a, b ReconItem) bool { return a.Key == b.Key })
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
