package storage

import (
	"context"

	"github.com/dgraph-io/badger/v4"
)

// Slots are small sealed key/value pairs in a namespace (per-peer cursors,
// sync states, identity keys, queues). Namespace and key are blinded on disk.
type Slots struct {
	s  *Store
	ns string
}

// Slots returns the handle of a namespace.
func (s *Store) Slots(namespace string) *Slots { return &Slots{s: s, ns: namespace} }

// Slot plaintext: u8 1 | str ns | str key | uv seq | bytes value.
// seq names the slot's liveness marker 'd' E 'v' seq, whose plaintext is
// u8 1 | u8 owner kind | bytes owner key (without the 6-byte prefix) | 24B
// owner nonce. An update deletes the old marker, so an older slot value
// replayed under the same key has no marker and fails with ErrCorrupt.
type slotVal struct {
	ns, key string
	seq     uint64
	value   []byte
}

func (v *slotVal) encode() []byte {
	w := wbuf{b: make([]byte, 0, 16+len(v.ns)+len(v.key)+len(v.value))}
	w.u8(1)
	w.str(v.ns)
	w.str(v.key)
	w.uv(v.seq)
	w.bytes(v.value)
	return w.b
}

func decodeSlot(b []byte) (*slotVal, error) {
	r := rbuf{b: b}
	v := &slotVal{}
	ver := r.u8()
	v.ns, v.key = r.str(maxNameLen), r.str(maxSlotKeyLen)
	v.seq = r.uv()
	v.value = r.bytes(maxValueLen)
	if ver != 1 || !r.done() || v.ns == "" || v.key == "" {
		return nil, ErrCorrupt
	}
	return v, nil
}

func encodeMarker(kind byte, ownerKey []byte, nonce [nonceSize]byte) []byte {
	w := wbuf{b: make([]byte, 0, 4+len(ownerKey)+nonceSize)}
	w.u8(1)
	w.u8(kind)
	w.bytes(ownerKey[prefixLen:])
	w.fixed(nonce[:])
	return w.b
}

// verifyMarker checks that the live marker seq exists and names the owner
// value (kind, key, nonce).
func verifyMarker(txn *badger.Txn, ek *epochKeys, kind byte, ownerKey []byte, seq uint64, nonce [nonceSize]byte) error {
	mk := seqKey(ek.epoch, kindMarker, seq)
	raw, ok, err := getValue(txn, mk)
	if err != nil {
		return err
	}
	if !ok {
		return corruptf("stale value")
	}
	pt, _, err := ek.open(nil, kindMarker, mk, raw)
	if err != nil {
		return corruptf("marker")
	}
	want := encodeMarker(kind, ownerKey, nonce)
	if string(pt) != string(want) {
		return corruptf("stale value")
	}
	return nil
}

// writeMarked writes an owner value that carries a liveness marker: a fresh
// seq, the sealed owner (built by mk from the seq) and its marker, deleting
// the previous marker (prevSeq, if live).
func (w *wtx) writeMarked(ek *epochKeys, kind byte, key []byte, prevLive bool, prevSeq, seq uint64, pt []byte) error {
	if prevLive {
		if err := w.del(seqKey(ek.epoch, kindMarker, prevSeq)); err != nil {
			return err
		}
	}
	nonce := newNonce()
	if err := w.set(key, ek.seal(make([]byte, 0, envOverhead+len(pt)), kind, key, nonce, pt)); err != nil {
		return err
	}
	mk := seqKey(ek.epoch, kindMarker, seq)
	mv, _ := ek.sealNew(kindMarker, mk, encodeMarker(kind, key, nonce))
	return w.set(mk, mv)
}

func validateSlotWrite(sw *SlotWrite) error {
	if err := checkName("namespace", sw.Namespace); err != nil {
		return err
	}
	if err := checkSlotKey(sw.Key); err != nil {
		return err
	}
	if len(sw.Value) > maxValueLen {
		return invalidf("slot value larger than %d bytes", maxValueLen)
	}
	return nil
}

// readSlot opens and verifies the slot at key under ek (nil if absent).
func readSlot(txn *badger.Txn, ek *epochKeys, key []byte, ns, k string) (*slotVal, error) {
	raw, ok, err := getValue(txn, key)
	if err != nil || !ok {
		return nil, err
	}
	pt, nonce, err := ek.open(nil, kindSlot, key, raw)
	if err != nil {
		return nil, corruptf("slot")
	}
	v, err := decodeSlot(pt)
	if err != nil || v.ns != ns || (k != "" && v.key != k) {
		return nil, corruptf("slot")
	}
	if err := verifyMarker(txn, ek, kindSlot, key, v.seq, nonce); err != nil {
		return nil, err
	}
	return v, nil
}

type slotState struct {
	key       []byte // in the write epoch
	exists    bool   // logically exists (in either epoch)
	inWrite   bool   // stored in the write epoch
	seq       uint64 // marker seq, if inWrite
	oldKey    []byte // stored in the old epoch (rotation), not yet moved
	oldSeq    uint64
	oldExists bool
}

func (w *wtx) loadSlot(ns, key string) (*slotState, error) {
	we := w.st.write()
	sk := we.slotKey(ns, key)
	if w.slots == nil {
		w.slots = make(map[string]*slotState)
	}
	if ss := w.slots[string(sk)]; ss != nil {
		return ss, nil
	}
	ss := &slotState{key: sk}
	v, err := readSlot(w.txn, we, sk, ns, key)
	if err != nil {
		return nil, err
	}
	if v != nil {
		ss.exists, ss.inWrite, ss.seq = true, true, v.seq
	} else if old := w.st.old(); old != nil {
		ok := old.slotKey(ns, key)
		ov, err := readSlot(w.txn, old, ok, ns, key)
		if err != nil {
			return nil, err
		}
		if ov != nil {
			ss.exists, ss.oldExists, ss.oldKey, ss.oldSeq = true, true, ok, ov.seq
		}
	}
	w.slots[string(sk)] = ss
	return ss, nil
}

func (w *wtx) writeSlot(sw *SlotWrite) error {
	ss, err := w.loadSlot(sw.Namespace, sw.Key)
	if err != nil {
		return err
	}
	we, old := w.st.write(), w.st.old()
	ns, key := sw.Namespace, sw.Key
	value := append([]byte(nil), sw.Value...)
	del, ifAbsent, wrote := sw.Delete, sw.ifAbsent, sw.wrote
	w.late = append(w.late, func(alloc func() uint64) error {
		if ifAbsent && ss.exists {
			return nil
		}
		if ss.oldExists {
			if err := w.del(ss.oldKey); err != nil {
				return err
			}
			if err := w.del(seqKey(old.epoch, kindMarker, ss.oldSeq)); err != nil {
				return err
			}
			ss.oldExists = false
		}
		if del {
			if ss.inWrite {
				if err := w.del(ss.key); err != nil {
					return err
				}
				if err := w.del(seqKey(we.epoch, kindMarker, ss.seq)); err != nil {
					return err
				}
			}
			ss.exists, ss.inWrite = false, false
			return nil
		}
		seq := alloc()
		pt := (&slotVal{ns: ns, key: key, seq: seq, value: value}).encode()
		if err := w.writeMarked(we, kindSlot, ss.key, ss.inWrite, ss.seq, seq, pt); err != nil {
			return err
		}
		ss.exists, ss.inWrite, ss.seq = true, true, seq
		if wrote != nil {
			*wrote = true
		}
		return nil
	})
	return nil
}

// Get returns the slot's value; ok is false if it does not exist.
func (n *Slots) Get(ctx context.Context, key string) (value []byte, ok bool, err error) {
	if err := validateSlotWrite(&SlotWrite{Namespace: n.ns, Key: key}); err != nil {
		return nil, false, err
	}
	err = n.s.view(ctx, "slot get", func(txn *badger.Txn, st *keyState) error {
		for _, ek := range st.reads() {
			v, err := readSlot(txn, ek, ek.slotKey(n.ns, key), n.ns, key)
			if err != nil {
				return err
			}
			if v != nil {
				value, ok = v.value, true
				return nil
			}
		}
		return nil
	})
	if err != nil {
		return nil, false, err
	}
	return value, ok, nil
}

// Put sets the slot's value.
func (n *Slots) Put(ctx context.Context, key string, value []byte) error {
	_, err := n.s.Write(ctx, Batch{Slots: []SlotWrite{{Namespace: n.ns, Key: key, Value: value}}})
	return err
}

// Delete removes the slot (no error if it does not exist).
func (n *Slots) Delete(ctx context.Context, key string) error {
	_, err := n.s.Write(ctx, Batch{Slots: []SlotWrite{{Namespace: n.ns, Key: key, Delete: true}}})
	return err
}

// Range calls fn for every slot in the namespace, in unspecified order, from
// one consistent snapshot; fn returning an error stops and returns it.
func (n *Slots) Range(ctx context.Context, fn func(key string, value []byte) error) error {
	if err := checkName("namespace", n.ns); err != nil {
		return err
	}
	return n.s.view(ctx, "slot range", func(txn *badger.Txn, st *keyState) error {
		for _, ek := range st.reads() {
			prefix := ek.slotPrefix(n.ns)
			var keys [][]byte
			it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: false})
			for it.Rewind(); it.ValidForPrefix(prefix); it.Next() {
				keys = append(keys, it.Item().KeyCopy(nil))
			}
			it.Close()
			for i, k := range keys {
				if i%ctxCheckEvery == ctxCheckEvery-1 {
					if err := n.s.alive(ctx); err != nil {
						return err
					}
				}
				v, err := readSlot(txn, ek, k, n.ns, "")
				if err != nil {
					return err
				}
				if v == nil {
					return corruptf("slot")
				}
				if string(k) != string(ek.slotKey(n.ns, v.key)) {
					return corruptf("slot")
				}
				if err := fn(v.key, v.value); err != nil {
					return userErr{err}
				}
			}
		}
		return nil
	})
}

// Log head plaintext: u8 1 | str ns | uv last | uv seq (marker).
// Log entry plaintext: u8 1 | str ns | bytes value; the entry number is the
// last 8 bytes of the key.
type logHead struct {
	ns   string
	last uint64
	seq  uint64
}

func (h *logHead) encode() []byte {
	w := wbuf{}
	w.u8(1)
	w.str(h.ns)
	w.uv(h.last)
	w.uv(h.seq)
	return w.b
}

func decodeLogHead(b []byte) (*logHead, error) {
	r := rbuf{b: b}
	h := &logHead{}
	v := r.u8()
	h.ns = r.str(maxNameLen)
	h.last, h.seq = r.uv(), r.uv()
	if v != 1 || !r.done() || h.ns == "" {
		return nil, ErrCorrupt
	}
	return h, nil
}

func encodeEntry(ns string, value []byte) []byte {
	w := wbuf{b: make([]byte, 0, 8+len(ns)+len(value))}
	w.u8(1)
	w.str(ns)
	w.bytes(value)
	return w.b
}

func decodeEntry(b []byte) (string, []byte, error) {
	r := rbuf{b: b}
	v := r.u8()
	ns := r.str(maxNameLen)
	val := r.bytes(maxValueLen)
	if v != 1 || !r.done() || ns == "" {
		return "", nil, ErrCorrupt
	}
	return ns, val, nil
}

func readHead(txn *badger.Txn, ek *epochKeys, hk []byte, ns string) (*logHead, error) {
	raw, ok, err := getValue(txn, hk)
	if err != nil || !ok {
		return nil, err
	}
	pt, nonce, err := ek.open(nil, kindLogHead, hk, raw)
	if err != nil {
		return nil, corruptf("log head")
	}
	h, err := decodeLogHead(pt)
	if err != nil || (ns != "" && h.ns != ns) {
		return nil, corruptf("log head")
	}
	if err := verifyMarker(txn, ek, kindLogHead, hk, h.seq, nonce); err != nil {
		return nil, err
	}
	return h, nil
}

// Append adds value to the namespace's append-only log and returns its
// entry number (1, 2, 3, ...).
func (s *Store) Append(ctx context.Context, namespace string, value []byte) (uint64, error) {
	if err := checkName("namespace", namespace); err != nil {
		return 0, err
	}
	if len(value) > maxValueLen {
		return 0, invalidf("log value larger than %d bytes", maxValueLen)
	}
	var n uint64
	err := s.update(ctx, "append", func(w *wtx) error {
		we, old := w.st.write(), w.st.old()
		hk := we.headKey(namespace)
		h, err := readHead(w.txn, we, hk, namespace)
		if err != nil {
			return err
		}
		inWrite := h != nil
		if h == nil && old != nil {
			ohk := old.headKey(namespace)
			if h, err = readHead(w.txn, old, ohk, namespace); err != nil {
				return err
			}
			if h != nil {
				if err := w.del(ohk); err != nil {
					return err
				}
				if err := w.del(seqKey(old.epoch, kindMarker, h.seq)); err != nil {
					return err
				}
			}
		}
		if h == nil {
			h = &logHead{ns: namespace}
		}
		n = h.last + 1
		// The head must be the newest: no entry may exist past it.
		for _, ek := range w.st.reads() {
			ok, err := exists(w.txn, entryKey(ek.entryPrefix(namespace), n))
			if err != nil {
				return err
			}
			if ok {
				return corruptf("log head (stale)")
			}
		}
		ek := entryKey(we.entryPrefix(namespace), n)
		ev, _ := we.sealNew(kindLogEntry, ek, encodeEntry(namespace, value))
		if err := w.set(ek, ev); err != nil {
			return err
		}
		prevSeq := h.seq
		w.late = append(w.late, func(alloc func() uint64) error {
			seq := alloc()
			nh := logHead{ns: namespace, last: n, seq: seq}
			return w.writeMarked(we, kindLogHead, hk, inWrite, prevSeq, seq, nh.encode())
		})
		return nil
	})
	if err != nil {
		return 0, err
	}
	return n, nil
}

// ScanLog calls fn for every entry with seq > afterSeq, in order, from one
// consistent snapshot. A missing, extra or altered entry is ErrCorrupt.
func (s *Store) ScanLog(ctx context.Context, namespace string, afterSeq uint64, fn func(seq uint64, value []byte) error) error {
	if err := checkName("namespace", namespace); err != nil {
		return err
	}
	return s.view(ctx, "scan log", func(txn *badger.Txn, st *keyState) error {
		var h *logHead
		for _, ek := range st.reads() {
			var err error
			if h, err = readHead(txn, ek, ek.headKey(namespace), namespace); err != nil {
				return err
			}
			if h != nil {
				break
			}
		}
		last := uint64(0)
		if h != nil {
			last = h.last
		}
		type cursor struct {
			ek     *epochKeys
			prefix []byte
			it     *badger.Iterator
		}
		var curs []*cursor
		defer func() {
			for _, c := range curs {
				c.it.Close()
			}
		}()
		for _, ek := range st.reads() {
			p := ek.entryPrefix(namespace)
			c := &cursor{ek: ek, prefix: p, it: txn.NewIterator(badger.IteratorOptions{Prefix: p})}
			c.it.Seek(entryKey(p, afterSeq+1))
			curs = append(curs, c)
		}
		num := func(c *cursor) (uint64, bool) {
			if !c.it.ValidForPrefix(c.prefix) {
				return 0, false
			}
			k := c.it.Item().Key()
			if len(k) != len(c.prefix)+8 {
				return 0, true // malformed key: reported as corrupt below
			}
			return beU64(k[len(c.prefix):]), true
		}
		for want := afterSeq + 1; want <= last; want++ {
			if want%ctxCheckEvery == 0 {
				if err := s.alive(ctx); err != nil {
					return err
				}
			}
			var hit *cursor
			for _, c := range curs {
				if n, ok := num(c); ok {
					if n < want {
						return corruptf("log entry")
					}
					if n == want {
						if hit != nil {
							return corruptf("log entry (duplicate)")
						}
						hit = c
					}
				}
			}
			if hit == nil {
				return corruptf("log entry (missing)")
			}
			item := hit.it.Item()
			k := item.KeyCopy(nil)
			raw, err := item.ValueCopy(nil)
			if err != nil {
				return err
			}
			pt, _, err := hit.ek.open(nil, kindLogEntry, k, raw)
			if err != nil {
				return corruptf("log entry")
			}
			ens, val, err := decodeEntry(pt)
			if err != nil || ens != namespace {
				return corruptf("log entry")
			}
			if err := fn(want, val); err != nil {
				return userErr{err}
			}
			hit.it.Next()
		}
		for _, c := range curs {
			if _, ok := num(c); ok {
				return corruptf("log entry (beyond head)")
			}
		}
		return nil
	})
}
