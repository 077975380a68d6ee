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
// the sum (mod 2^256) of their item hashes, in pages of 16 buckets, updated
// in the same transaction as the record writes (once per touched page per
// transaction). The items are the records' metas themselves: a meta key is
// grouped by collection and bucket (keys.go metaKey), so one bucket's items
// are one prefix scan.
//
// Keys on disk are blinded like every other key: the bucket and page
// numbers are HMACed with the collection under the epoch's blinding key, so
// a reader of the raw files sees which records share a bucket, not which
// bucket.
//
//	'd' E 'Y' H(coll) H(coll,page)  -> u8 1 | u8 page | uv n | n x (u8 bucket-in-page | uv count | sum [32])
//
// Layout 1 (stores written before) kept one 'x' entry per record and one
// 'y' sum per bucket; Open upgrades it (layout.go).
const (
	kindReconPage = 'Y'
	kindReconSum  = 'y' // layout 1
	kindReconItem = 'x' // layout 1
)

// reconPageBuckets is the number of buckets per sum page: a batch of 1000
// new records touches all 64 pages of a collection (~40 KB in all) instead
// of ~630 separate bucket sums, and a single-record write rewrites one page
// of at most ~600 bytes.
const (
	reconPageBuckets = 16
	reconPages       = ReconBuckets / reconPageBuckets
)

// ReconBuckets is the number of buckets the key space is split into;
// ReconBucketBits is its base-2 logarithm.
const (
	ReconBucketBits = 10
	ReconBuckets    = 1 << ReconBucketBits
)

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

// bucketID is the blinded bucket number in coll (in every meta key; cached,
// at most maxCollCache entries).
func (k *epochKeys) bucketID(coll string, bucket uint16) []byte {
	cb := collBucket{coll, bucket}
	k.collMu.Lock()
	v, ok := k.bucketCache[cb]
	k.collMu.Unlock()
	if ok {
		return v[:]
	}
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], bucket)
	copy(v[:], k.mac(nil, 'b', coll, string(b[:])))
	k.collMu.Lock()
	if len(k.bucketCache) >= maxCollCache {
		clear(k.bucketCache)
	}
	k.bucketCache[cb] = v
	k.collMu.Unlock()
	return v[:]
}

func (k *epochKeys) reconPagePrefix(coll string) []byte {
	p := k.collPrefix(coll)
	return append(keyPrefix(make([]byte, 0, prefixLen+2*blindSize), k.epoch, kindReconPage), p[:]...)
}

func (k *epochKeys) reconPageKey(coll string, page int) []byte {
	return k.mac(k.reconPagePrefix(coll), 'p', coll, string([]byte{byte(page)}))
}

// reconPage is one page's non-empty bucket sums, by bucket within the page.
type reconPage map[uint8]ReconSum

func encodeReconPage(page int, p reconPage) []byte {
	idx := make([]int, 0, len(p))
	for i := range p {
		idx = append(idx, int(i))
	}
	slices.Sort(idx)
	w := wbuf{b: make([]byte, 0, 8+len(p)*(1+binary.MaxVarintLen64+32))}
	w.u8(1)
	w.u8(byte(page))
	w.uv(uint64(len(idx)))
	for _, i := range idx {
		s := p[uint8(i)]
		w.u8(byte(i))
		w.uv(s.Count)
		w.fixed(s.Sum[:])
	}
	return w.b
}

// decodeReconPage decodes a page: buckets strictly increasing within the
// page, counts at least 1, nothing left over.
func decodeReconPage(b []byte, page int) (reconPage, bool) {
	r := rbuf{b: b}
	if r.u8() != 1 || int(r.u8()) != page {
		return nil, false
	}
	n := r.count(reconPageBuckets, 1+1+32)
	p := make(reconPage, n)
	last := -1
	for i := 0; i < n; i++ {
		idx := int(r.u8())
		count := r.uv()
		sum := r.fixed(32)
		if r.bad || idx <= last || idx >= reconPageBuckets || count == 0 {
			return nil, false
		}
		last = idx
		s := ReconSum{Bucket: uint16(page*reconPageBuckets + idx), Count: count}
		copy(s.Sum[:], sum)
		p[uint8(idx)] = s
	}
	return p, r.done()
}

// bucketDelta is a transaction's pending change to one bucket's sum.
type bucketDelta struct {
	added, removed uint64
	add, sub       [32]byte
}

// pageDelta is a transaction's pending changes to one sum page, applied
// once by flushRecon (a batch of 1000 new records touches all 64 pages of
// its collection once instead of reading and sealing a sum per record).
type pageDelta struct {
	ek   *epochKeys
	coll string
	page int
	b    map[uint8]*bucketDelta
}

// addToBucket adds (add) or removes an item hash from its bucket's sum, in
// memory: flushRecon writes the pages before the transaction commits.
func (w *wtx) addToBucket(ek *epochKeys, coll string, bucket uint16, h [32]byte, add bool) {
	page := int(bucket) / reconPageBuckets
	pk := ek.reconPageKey(coll, page)
	if w.sums == nil {
		w.sums = make(map[string]*pageDelta)
	}
	d := w.sums[string(pk)]
	if d == nil {
		d = &pageDelta{ek: ek, coll: coll, page: page, b: make(map[uint8]*bucketDelta)}
		w.sums[string(pk)] = d
	}
	idx := uint8(int(bucket) % reconPageBuckets)
	bd := d.b[idx]
	if bd == nil {
		bd = &bucketDelta{}
		d.b[idx] = bd
	}
	if add {
		AddSum(&bd.add, h)
		bd.added++
	} else {
		AddSum(&bd.sub, h)
		bd.removed++
	}
}

// readReconPage reads and opens a page (empty if absent).
func readReconPage(txn *badger.Txn, ek *epochKeys, pk []byte, page int) (reconPage, bool, error) {
	raw, ok, err := getValue(txn, pk)
	if err != nil || !ok {
		return reconPage{}, false, err
	}
	pt, _, err := ek.open(nil, kindReconPage, pk, raw)
	if err != nil {
		return nil, false, corruptf("reconciliation sum")
	}
	p, ok := decodeReconPage(pt, page)
	if !ok {
		return nil, false, corruptf("reconciliation sum")
	}
	return p, true, nil
}

// flushRecon applies the transaction's pending bucket-sum changes: one
// read, and one write or delete, per touched page. The result is exactly
// what applying each change in turn gives (addition mod 2^256 commutes); a
// count that would go below zero is ErrCorrupt.
func (w *wtx) flushRecon() error {
	keys := make([]string, 0, len(w.sums))
	for k := range w.sums {
		keys = append(keys, k)
	}
	slices.Sort(keys) // deterministic order of Badger writes
	for _, k := range keys {
		d := w.sums[k]
		pk := []byte(k)
		p, existed, err := readReconPage(w.txn, d.ek, pk, d.page)
		if err != nil {
			return err
		}
		for idx, bd := range d.b {
			s, ok := p[idx]
			if !ok {
				s = ReconSum{Bucket: uint16(d.page*reconPageBuckets + int(idx))}
			}
			if s.Count+bd.added < bd.removed {
				return corruptf("reconciliation sum")
			}
			s.Count = s.Count + bd.added - bd.removed
			AddSum(&s.Sum, bd.add)
			subSum(&s.Sum, bd.sub)
			if s.Count == 0 {
				delete(p, idx)
			} else {
				p[idx] = s
			}
		}
		if len(p) == 0 {
			if existed {
				if err := w.del(pk); err != nil {
					return err
				}
			}
			continue
		}
		v, _ := d.ek.sealNew(kindReconPage, pk, encodeReconPage(d.page, p))
		if err := w.set(pk, v); err != nil {
			return err
		}
	}
	w.sums = nil
	return nil
}

// unindex removes a record with these heads from the sums of epoch ek.
func (w *wtx) unindex(ek *epochKeys, coll, id string, heads [][]byte) {
	key := ReconKey(coll, id)
	w.addToBucket(ek, coll, ReconBucket(key), ReconHash(key, heads), false)
}

// index adds a record with these heads to the sums of epoch ek.
func (w *wtx) index(ek *epochKeys, coll, id string, heads [][]byte) {
	key := ReconKey(coll, id)
	w.addToBucket(ek, coll, ReconBucket(key), ReconHash(key, heads), true)
}

// ReconSums returns, for every non-empty bucket of collection, the count of
// its records and the sum of their item hashes (see ReconHash), ordered by
// bucket. It reads at most 64 small values per collection (twice that while a key
// rotation is in progress). A store of layout 1 opened read-only (too
// little free space for its upgrade, see Open) has no sums yet: ErrNoSpace.
func (s *Store) ReconSums(ctx context.Context, collection string) ([]ReconSum, error) {
	if err := checkName("collection", collection); err != nil {
		return nil, err
	}
	if err := s.needLayout2("reconciliation sums"); err != nil {
		return nil, err
	}
	var out []ReconSum
	err := s.view(ctx, "reconciliation sums", func(txn *badger.Txn, st *keyState) error {
		byBucket := map[uint16]*ReconSum{}
		for _, ek := range st.reads() {
			err := scanSealed(txn, ek, kindReconPage, ek.reconPagePrefix(collection), "reconciliation sum", func(k, pt []byte) error {
				if len(pt) < 2 || int(pt[1]) >= reconPages || !bytes.Equal(k, ek.reconPageKey(collection, int(pt[1]))) {
					return corruptf("reconciliation sum")
				}
				p, ok := decodeReconPage(pt, int(pt[1]))
				if !ok {
					return corruptf("reconciliation sum")
				}
				for _, rs := range p {
					if cur := byBucket[rs.Bucket]; cur != nil {
						cur.Count += rs.Count
						AddSum(&cur.Sum, rs.Sum)
					} else {
						byBucket[rs.Bucket] = &rs
					}
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
// keys, heads and item hashes, ordered by key. It reads (and
// authenticates) the bucket's metas. Like ReconSums, ErrNoSpace on a
// layout-1 store opened read-only.
func (s *Store) ReconItems(ctx context.Context, collection string, bucket uint16) ([]ReconItem, error) {
	if err := checkName("collection", collection); err != nil {
		return nil, err
	}
	if bucket >= ReconBuckets {
		return nil, invalidf("bucket %d of %d", bucket, ReconBuckets)
	}
	if err := s.needLayout2("reconciliation items"); err != nil {
		return nil, err
	}
	var out []ReconItem
	err := s.view(ctx, "reconciliation items", func(txn *badger.Txn, st *keyState) error {
		out = out[:0]
		for _, ek := range st.reads() {
			prefix := ek.metaBucketPrefix(collection, bucket)
			err := scanSealed(txn, ek, kindRec, prefix, "record meta", func(k, pt []byte) error {
				m, err := decodeMeta(pt)
				if err != nil || m.coll != collection || !bytes.Equal(k, ek.metaKey(m.coll, m.id, ek.recID(m.coll, m.id))) {
					return corruptf("record meta")
				}
				if ok, err := exists(txn, seqKey(ek.epoch, kindFeed, m.seq)); err != nil || !ok {
					if err != nil {
						return err
					}
					return corruptf("record meta (stale)")
				}
				key := ReconKey(collection, m.id)
				out = append(out, ReconItem{ID: m.id, Key: key, Heads: m.heads, Hash: ReconHash(key, m.heads)})
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
