package storage

import (
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"hash"
	"sync"

	"golang.org/x/crypto/chacha20poly1305"
)

const (
	keySize   = 32
	nonceSize = chacha20poly1305.NonceSizeX // 24
	tagSize   = chacha20poly1305.Overhead   // 16
	blindSize = 16                          // truncated HMAC-SHA256 in Badger keys
)

// HKDF labels: one subkey per purpose, bound to the epoch.
const (
	labelSeal  = "ferry/storage/v1 seal"
	labelBlind = "ferry/storage/v1 blind"
)

// epochKeys is everything derived from one epoch's master key.
type epochKeys struct {
	epoch  uint32
	master []byte      // kept to rewrap under a new KEK; zeroed on Close
	aead   cipher.AEAD // XChaCha20-Poly1305 under the sealing subkey
	blind  []byte      // HMAC-SHA256 key for blinding names
	hpool  sync.Pool   // *hmacState

	collMu      sync.Mutex
	collCache   map[string][blindSize]byte // collection prefix cache (bounded)
	bucketCache map[collBucket][blindSize]byte
}

type collBucket struct {
	coll   string
	bucket uint16
}

type hmacState struct {
	h   hash.Hash
	buf []byte
	sum [sha256.Size]byte
}

func deriveKey(master []byte, label string, epoch uint32) ([]byte, error) {
	info := binary.BigEndian.AppendUint32([]byte(label), epoch)
	return hkdf.Key(sha256.New, master, nil, string(info), keySize)
}

func newEpochKeys(epoch uint32, master []byte) (*epochKeys, error) {
	if len(master) != keySize {
		return nil, fmt.Errorf("master key length: %w", ErrCorrupt)
	}
	sealKey, err := deriveKey(master, labelSeal, epoch)
	if err != nil {
		return nil, err
	}
	defer wipe(sealKey)
	blind, err := deriveKey(master, labelBlind, epoch)
	if err != nil {
		return nil, err
	}
	aead, err := chacha20poly1305.NewX(sealKey)
	if err != nil {
		return nil, err
	}
	k := &epochKeys{epoch: epoch, master: append([]byte(nil), master...), aead: aead, blind: blind,
		collCache: make(map[string][blindSize]byte), bucketCache: make(map[collBucket][blindSize]byte)}
	k.hpool.New = func() any { return &hmacState{h: hmac.New(sha256.New, k.blind)} }
	return k, nil
}

func (k *epochKeys) wipe() {
	wipe(k.master)
	wipe(k.blind)
}

func wipe(b []byte) { clear(b) }

// mac computes the truncated HMAC of macInput(tag, parts).
func (k *epochKeys) mac(dst []byte, tag byte, parts ...string) []byte {
	st := k.hpool.Get().(*hmacState)
	st.buf = macInput(st.buf[:0], tag, parts...)
	st.h.Reset()
	st.h.Write(st.buf)
	sum := st.h.Sum(st.sum[:0])
	dst = append(dst, sum[:blindSize]...)
	k.hpool.Put(st)
	return dst
}

// macInput appends tag || parts to dst, each part but the last
// length-prefixed (unsigned varint), so that for one tag (every tag has a
// fixed number of parts) different names never give the same input:
// H(coll, id) of ("a", "b\x00c") and ("a\x00b", "c") differ. Names may hold
// any bytes here; the rule for valid names is the replica's
// (internal/names). This is the on-disk key format: changing it would
// orphan every record of existing stores.
func macInput(dst []byte, tag byte, parts ...string) []byte {
	dst = append(dst, tag)
	for i, p := range parts {
		if i < len(parts)-1 {
			dst = binary.AppendUvarint(dst, uint64(len(p)))
		}
		dst = append(dst, p...)
	}
	return dst
}

const maxCollCache = 4096

// collPrefix is the blinded collection name; cached because collections are
// few and every record write needs it.
func (k *epochKeys) collPrefix(coll string) [blindSize]byte {
	k.collMu.Lock()
	v, ok := k.collCache[coll]
	k.collMu.Unlock()
	if ok {
		return v
	}
	copy(v[:], k.mac(nil, 'c', coll))
	k.collMu.Lock()
	if len(k.collCache) >= maxCollCache {
		clear(k.collCache)
	}
	k.collCache[coll] = v
	k.collMu.Unlock()
	return v
}

// Badger key layout. Every data key is
//
//	'd' | epoch (u32 BE) | kind | kind-specific blinded suffix
//
// and the only other key is stateKey.
const (
	keyData      = 'd'
	kindRec      = 'r' // 'd' E 'r' H(coll) H(coll,bucket) H(coll,id) -> meta (layout 2)
	kindMeta     = 'm' // 'd' E 'm' H(coll) H(coll,id)      -> meta (layout 1: upgraded on Open)
	kindChunk    = 'c' // 'd' E 'c' H(coll,id) n(u32)        -> Automerge bytes
	kindFeed     = 'f' // 'd' E 'f' seq(u64)                 -> feed entry
	kindColl     = 'C' // 'd' E 'C' H(coll)                  -> collection name
	kindSlot     = 's' // 'd' E 's' H(ns) H(ns,key)          -> slot
	kindMarker   = 'v' // 'd' E 'v' seq(u64)                 -> live marker of a slot/log head
	kindLogHead  = 'h' // 'd' E 'h' H(ns)                    -> log head
	kindLogEntry = 'l' // 'd' E 'l' H(ns) n(u64)             -> log entry
	kindState    = 'S' // stateKey                           -> key-state generation
	kindHeader   = 'H' // header file (wrapped master keys)
)

// stateKey is bumped on every key-state transition (rotation start/finish);
// every transaction reads it so that Badger's conflict detection orders
// operations against transitions.
var stateKey = []byte{0}

const prefixLen = 6 // 'd' + epoch + kind

func keyPrefix(dst []byte, epoch uint32, kind byte) []byte {
	dst = append(dst, keyData)
	dst = binary.BigEndian.AppendUint32(dst, epoch)
	return append(dst, kind)
}

func (k *epochKeys) collKey(coll string) []byte {
	p := k.collPrefix(coll)
	return append(keyPrefix(make([]byte, 0, prefixLen+blindSize), k.epoch, kindColl), p[:]...)
}

// metaPrefix is the prefix of every meta key of coll (List).
func (k *epochKeys) metaPrefix(coll string) []byte {
	p := k.collPrefix(coll)
	return append(keyPrefix(make([]byte, 0, prefixLen+3*blindSize), k.epoch, kindRec), p[:]...)
}

// metaBucketPrefix is the prefix of the meta keys of coll's records in one
// reconciliation bucket (ReconItems).
func (k *epochKeys) metaBucketPrefix(coll string, bucket uint16) []byte {
	return append(k.metaPrefix(coll), k.bucketID(coll, bucket)...)
}

func (k *epochKeys) recID(coll, id string) []byte { return k.mac(nil, 'r', coll, id) }

// metaKey is the key of a record's meta: grouped by collection, then by
// reconciliation bucket, so that the metas are the reconciliation index's
// items. rid is recID(coll, id).
func (k *epochKeys) metaKey(coll, id string, rid []byte) []byte {
	return append(k.metaBucketPrefix(coll, ReconBucket(ReconKey(coll, id))), rid...)
}

// legacyMetaKey is where layout 1 kept a record's meta.
func (k *epochKeys) legacyMetaKey(coll string, rid []byte) []byte {
	p := k.collPrefix(coll)
	b := append(keyPrefix(make([]byte, 0, prefixLen+2*blindSize), k.epoch, kindMeta), p[:]...)
	return append(b, rid...)
}

func chunkKey(epoch uint32, rid []byte, n uint32) []byte {
	b := keyPrefix(make([]byte, 0, prefixLen+blindSize+4), epoch, kindChunk)
	b = append(b, rid...)
	return binary.BigEndian.AppendUint32(b, n)
}

func seqKey(epoch uint32, kind byte, seq uint64) []byte {
	b := keyPrefix(make([]byte, 0, prefixLen+8), epoch, kind)
	return binary.BigEndian.AppendUint64(b, seq)
}

func (k *epochKeys) nsID(ns string) []byte { return k.mac(nil, 'n', ns) }

func (k *epochKeys) slotPrefix(ns string) []byte {
	return append(keyPrefix(make([]byte, 0, prefixLen+2*blindSize), k.epoch, kindSlot), k.nsID(ns)...)
}

func (k *epochKeys) slotKey(ns, key string) []byte {
	return k.mac(k.slotPrefix(ns), 'k', ns, key)
}

func (k *epochKeys) headKey(ns string) []byte {
	return append(keyPrefix(make([]byte, 0, prefixLen+blindSize), k.epoch, kindLogHead), k.nsID(ns)...)
}

func (k *epochKeys) entryPrefix(ns string) []byte {
	return append(keyPrefix(make([]byte, 0, prefixLen+blindSize+8), k.epoch, kindLogEntry), k.nsID(ns)...)
}

func entryKey(prefix []byte, n uint64) []byte {
	return binary.BigEndian.AppendUint64(append(make([]byte, 0, len(prefix)+8), prefix...), n)
}

// keyEpoch returns the epoch and kind of a data key.
func keyEpoch(key []byte) (uint32, byte, bool) {
	if len(key) < prefixLen || key[0] != keyData {
		return 0, 0, false
	}
	return binary.BigEndian.Uint32(key[1:5]), key[5], true
}

func randomKey() []byte {
	k := make([]byte, keySize)
	rand.Read(k) // never fails (Go >= 1.24)
	return k
}
