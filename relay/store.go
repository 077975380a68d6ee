package relay

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"net/http"
	"slices"

	"github.com/dgraph-io/badger/v4"
)

// Badger layout (the relay's own database, nothing else in it):
//
//	"m" space                      -> spaceMeta (CBOR)
//	"b" space seq(8)               -> sealed bundle, exactly as pushed
//	"x" space sender(32) counter(8) -> seq(8) | SHA-256(bundle)   (live bundles)
//	"e" space epoch(8)             -> signed key-epoch record, as accepted
//	"c" creator key(32)            -> spaces created by that key (u64)
//	"g"                            -> number of spaces (u64)
//
// Every update of a space is one Badger transaction (optimistic; retried on
// conflict), so a push is either wholly stored with its metadata or not at
// all, and sequence numbers are dense.

type spaceMeta struct {
	Members []byte      `cbor:"1,keyasint"` // signed member list (wireSigned), as accepted
	Version uint64      `cbor:"2,keyasint"`
	Head    uint64      `cbor:"3,keyasint"` // last seq assigned
	Low     uint64      `cbor:"4,keyasint"` // every seq <= Low is compacted
	Bundles int64       `cbor:"5,keyasint"`
	Bytes   int64       `cbor:"6,keyasint"`
	Peers   []peerState `cbor:"7,keyasint"`
	Creator []byte      `cbor:"8,keyasint"`
	Epoch   uint64      `cbor:"9,keyasint,omitempty"` // newest key epoch recorded
}

// peerState is per key that is or was a member. A former member's entry
// keeps its counters so that it can be re-added; it is forgotten only once
// it holds no bundles and the list is over maxPeers.
type peerState struct {
	Key       []byte `cbor:"1,keyasint"`
	Member    bool   `cbor:"2,keyasint"`
	Cursor    uint64 `cbor:"3,keyasint"` // acknowledged seq
	HW        uint64 `cbor:"4,keyasint"` // highest counter stored
	Compacted uint64 `cbor:"5,keyasint"` // highest counter compacted
	Bytes     int64  `cbor:"6,keyasint"`
	Bundles   int64  `cbor:"7,keyasint"`
	LastAck   int64  `cbor:"8,keyasint,omitempty"` // unix ms of its last ack (or addition)
}

const maxPeers = 4 * MaxMembers

func (m *spaceMeta) peer(key []byte) *peerState {
	for i := range m.Peers {
		if bytes.Equal(m.Peers[i].Key, key) {
			return &m.Peers[i]
		}
	}
	return nil
}

// memberOr is the member state of key, or the refusal: errRemoved for a
// former member, errNoSpace for a key never in the list.
func (m *spaceMeta) memberOr(key []byte) (*peerState, error) {
	p := m.peer(key)
	switch {
	case p == nil:
		return nil, errNoSpace
	case !p.Member:
		return nil, errRemoved
	}
	return p, nil
}

// lowWater is the highest seq every member has acknowledged.
func (m *spaceMeta) lowWater() uint64 {
	low, any := uint64(0), false
	for _, p := range m.Peers {
		if p.Member && (!any || p.Cursor < low) {
			low, any = p.Cursor, true
		}
	}
	return min(low, m.Head)
}

func metaKey(space string) []byte { return append([]byte("m"), space...) }

func bundleKey(space string, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(append([]byte("b"), space...), seq)
}

func indexKey(space string, sender []byte, counter uint64) []byte {
	k := append(append([]byte("x"), space...), sender...)
	return binary.BigEndian.AppendUint64(k, counter)
}

func epochKey(space string, epoch uint64) []byte {
	return binary.BigEndian.AppendUint64(append([]byte("e"), space...), epoch)
}

func creatorKey(pub []byte) []byte { return append([]byte("c"), pub...) }

var globalKey = []byte("g")

// httpError is a refusal with its HTTP status and JSON error code.
type httpError struct {
	status   int
	code     string
	msg      string
	expected uint64
	now      int64 // relay time (unix ms), for stale timestamps
}

func (e *httpError) Error() string { return e.msg }

func herr(status int, code, format string, args ...any) *httpError {
	return &httpError{status: status, code: code, msg: fmt.Sprintf(format, args...)}
}

var (
	errNoSpace = herr(http.StatusForbidden, codeNotMember, "not a member of this space")
	errRemoved = herr(http.StatusForbidden, codeRemoved, "removed from this space")
)

func getValue(txn *badger.Txn, key []byte) ([]byte, bool, error) {
	it, err := txn.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	v, err := it.ValueCopy(nil)
	return v, err == nil, err
}

func getU64(txn *badger.Txn, key []byte) (uint64, error) {
	v, ok, err := getValue(txn, key)
	if err != nil || !ok {
		return 0, err
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("relay: corrupt counter")
	}
	return binary.BigEndian.Uint64(v), nil
}

func setU64(txn *badger.Txn, key []byte, n uint64) error {
	return txn.Set(key, binary.BigEndian.AppendUint64(nil, n))
}

func getMeta(txn *badger.Txn, space string) (*spaceMeta, error) {
	v, ok, err := getValue(txn, metaKey(space))
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, errNoSpace
	}
	var m spaceMeta
	if err := wireDec.Unmarshal(v, &m); err != nil {
		return nil, fmt.Errorf("relay: corrupt space metadata: %w", err)
	}
	return &m, nil
}

func putMeta(txn *badger.Txn, space string, m *spaceMeta) error {
	return txn.Set(metaKey(space), marshal(m))
}

// update runs fn in a read-write transaction, retrying on conflicts.
func (s *Server) update(ctx context.Context, fn func(txn *badger.Txn) error) error {
	for i := 0; ; i++ {
		err := s.db.Update(fn)
		if !errors.Is(err, badger.ErrConflict) || i >= 64 {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
}

func (s *Server) createSpace(ctx context.Context, sm SignedMembers, raw []byte, creator ed25519.PublicKey) error {
	space := sm.Space
	return s.update(ctx, func(txn *badger.Txn) error {
		m, err := getMeta(txn, space)
		if err == nil {
			if bytes.Equal(m.Members, raw) {
				return nil // a retry of the same creation
			}
			return herr(http.StatusConflict, codeConflict, "space already exists")
		}
		if err != errNoSpace {
			return err
		}
		n, err := getU64(txn, globalKey)
		if err != nil {
			return err
		}
		if n >= uint64(s.opts.MaxSpaces) {
			return herr(http.StatusInsufficientStorage, codeQuota, "relay holds its maximum of %d spaces", s.opts.MaxSpaces)
		}
		c, err := getU64(txn, creatorKey(creator))
		if err != nil {
			return err
		}
		if c >= uint64(s.opts.MaxSpacesPerKey) {
			return herr(http.StatusInsufficientStorage, codeQuota, "key has created its maximum of %d spaces", s.opts.MaxSpacesPerKey)
		}
		m = &spaceMeta{Members: raw, Version: sm.Version, Creator: creator}
		now := s.opts.Clock.Now().UnixMilli()
		for _, k := range sm.Keys {
			m.Peers = append(m.Peers, peerState{Key: k, Member: true, LastAck: now})
		}
		if err := setU64(txn, globalKey, n+1); err != nil {
			return err
		}
		if err := setU64(txn, creatorKey(creator), c+1); err != nil {
			return err
		}
		return putMeta(txn, space, m)
	})
}

func (s *Server) updateMembers(ctx context.Context, sm SignedMembers, raw []byte) error {
	space := sm.Space
	return s.update(ctx, func(txn *badger.Txn) error {
		m, err := getMeta(txn, space)
		if err != nil {
			return err
		}
		if _, err := m.memberOr(sm.Signer); err != nil {
			return err
		}
		if sm.Version == m.Version && bytes.Equal(m.Members, raw) {
			return nil // a retry of the same update
		}
		if sm.Version != m.Version+1 {
			e := herr(http.StatusConflict, codeConflict, "member list version %d, relay has %d", sm.Version, m.Version)
			e.expected = m.Version + 1
			return e
		}
		// Who stays keeps its cursor; who is (re-)added starts at Low.
		was := make(map[string]bool, len(m.Peers))
		for i := range m.Peers {
			was[string(m.Peers[i].Key)] = m.Peers[i].Member
			m.Peers[i].Member = false
		}
		now := s.opts.Clock.Now().UnixMilli()
		for _, k := range sm.Keys {
			if p := m.peer(k); p != nil {
				if !was[string(k)] {
					p.Cursor = m.Low // a (re-)added member holds compaction until it acknowledges
					p.LastAck = now
				}
				p.Member = true
				continue
			}
			m.Peers = append(m.Peers, peerState{Key: k, Member: true, Cursor: m.Low, LastAck: now})
		}
		// Forget former members without bundles beyond the bound.
		for len(m.Peers) > maxPeers {
			i := slices.IndexFunc(m.Peers, func(p peerState) bool { return !p.Member && p.Bundles == 0 })
			if i < 0 {
				break
			}
			m.Peers = slices.Delete(m.Peers, i, i+1)
		}
		m.Members, m.Version = raw, sm.Version
		return putMeta(txn, space, m)
	})
}

// pushResult is the outcome of storing a bundle.
type pushResult struct {
	seq uint64
	dup bool
}

func (s *Server) storeBundle(ctx context.Context, space string, sender ed25519.PublicKey, counter uint64, data []byte) (pushResult, error) {
	var res pushResult
	sum := sha256.Sum256(data)
	err := s.update(ctx, func(txn *badger.Txn) error {
		res = pushResult{}
		m, err := getMeta(txn, space)
		if err != nil {
			return err
		}
		p, err := m.memberOr(sender)
		if err != nil {
			return err
		}
		if counter <= p.HW {
			v, ok, err := getValue(txn, indexKey(space, sender, counter))
			if err != nil {
				return err
			}
			switch {
			case ok && len(v) == 8+sha256.Size && bytes.Equal(v[8:], sum[:]):
				res = pushResult{seq: binary.BigEndian.Uint64(v), dup: true}
				return nil
			case !ok && counter <= p.Compacted:
				res = pushResult{dup: true} // stored, delivered and compacted long ago
				return nil
			}
			e := herr(http.StatusConflict, codeCounter, "counter %d already used with other content", counter)
			e.expected = p.HW + 1
			return e
		}
		if counter != p.HW+1 {
			e := herr(http.StatusConflict, codeCounter, "counter %d out of order, expected %d", counter, p.HW+1)
			e.expected = p.HW + 1
			return e
		}
		n := int64(len(data))
		switch {
		case m.Bytes+n > s.opts.MaxSpaceBytes:
			return herr(http.StatusInsufficientStorage, codeQuota, "space quota: %d of %d bytes held", m.Bytes, s.opts.MaxSpaceBytes)
		case p.Bytes+n > s.opts.MaxClientBytes:
			return herr(http.StatusInsufficientStorage, codeQuota, "client quota: %d of %d bytes held", p.Bytes, s.opts.MaxClientBytes)
		case m.Bundles >= s.opts.MaxSpaceBundles:
			return herr(http.StatusInsufficientStorage, codeQuota, "space quota: %d of %d bundles held", m.Bundles, s.opts.MaxSpaceBundles)
		}
		m.Head++
		seq := m.Head
		if err := txn.Set(bundleKey(space, seq), data); err != nil {
			return err
		}
		if err := txn.Set(indexKey(space, sender, counter), append(binary.BigEndian.AppendUint64(nil, seq), sum[:]...)); err != nil {
			return err
		}
		p.HW = counter
		p.Bytes += n
		p.Bundles++
		m.Bytes += n
		m.Bundles++
		res.seq = seq
		return putMeta(txn, space, m)
	})
	return res, err
}

// loadBundles returns the bundles after seq, at most maxN and about
// maxBytes (at least one bundle if any), with the head and low marks.
func (s *Server) loadBundles(space string, member ed25519.PublicKey, after uint64, maxN, maxBytes int) (pullResponse, error) {
	var out []wireEnvelope
	var head, low uint64
	err := s.db.View(func(txn *badger.Txn) error {
		m, err := getMeta(txn, space)
		if err != nil {
			return err
		}
		if _, err := m.memberOr(member); err != nil {
			return err
		}
		head, low = m.Head, m.Low
		if after >= m.Head {
			return nil
		}
		prefix := bundleKey(space, 0)[:1+len(space)]
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: true, PrefetchSize: 16})
		defer it.Close()
		total := 0
		for it.Seek(bundleKey(space, max(after, m.Low)+1)); it.ValidForPrefix(prefix) && len(out) < maxN; it.Next() {
			item := it.Item()
			if total > 0 && total+int(item.ValueSize()) > maxBytes {
				break
			}
			v, err := item.ValueCopy(nil)
			if err != nil {
				return err
			}
			if len(v) < hdrLen {
				return fmt.Errorf("relay: corrupt bundle")
			}
			seq := binary.BigEndian.Uint64(item.Key()[1+len(space):])
			out = append(out, wireEnvelope{Seq: seq, Sender: v[1 : 1+ed25519.PublicKeySize], Data: v})
			total += len(v)
		}
		return nil
	})
	return pullResponse{Envelopes: out, Head: head, Low: low}, err
}

func (s *Server) ack(ctx context.Context, space string, member ed25519.PublicKey, seq uint64) error {
	err := s.update(ctx, func(txn *badger.Txn) error {
		m, err := getMeta(txn, space)
		if err != nil {
			return err
		}
		p, err := m.memberOr(member)
		if err != nil {
			return err
		}
		seq = min(seq, m.Head)
		// Every acknowledgement counts as a sign of life (the expiry
		// policy of members reads it), even one that moves nothing.
		p.LastAck = s.opts.Clock.Now().UnixMilli()
		p.Cursor = max(p.Cursor, seq)
		return putMeta(txn, space, m)
	})
	if err != nil {
		return err
	}
	return s.compact(ctx, space)
}

// compact deletes the bundles every member has acknowledged, in
// transactions of at most compactBatch bundles.
const compactBatch = 256

func (s *Server) compact(ctx context.Context, space string) error {
	for {
		done, n := false, 0
		err := s.update(ctx, func(txn *badger.Txn) error {
			done, n = false, 0
			m, err := getMeta(txn, space)
			if err != nil {
				return err
			}
			low := m.lowWater()
			if low <= m.Low {
				done = true
				return nil
			}
			prefix := bundleKey(space, 0)[:1+len(space)]
			type victim struct {
				key            []byte
				seq            uint64
				sender         []byte
				counter, bytes uint64
			}
			var vs []victim
			it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: true, PrefetchSize: 64})
			for it.Seek(bundleKey(space, m.Low+1)); it.ValidForPrefix(prefix) && len(vs) < compactBatch; it.Next() {
				item := it.Item()
				seq := binary.BigEndian.Uint64(item.Key()[1+len(space):])
				if seq > low {
					break
				}
				v, err := item.ValueCopy(nil)
				if err != nil || len(v) < hdrLen {
					it.Close()
					return fmt.Errorf("relay: corrupt bundle during compaction")
				}
				vs = append(vs, victim{
					key: item.KeyCopy(nil), seq: seq,
					sender: v[1 : 1+ed25519.PublicKeySize], counter: binary.BigEndian.Uint64(v[1+ed25519.PublicKeySize:]),
					bytes: uint64(len(v)),
				})
			}
			it.Close()
			newLow := low
			if len(vs) == compactBatch {
				newLow = vs[len(vs)-1].seq
			}
			for _, v := range vs {
				if err := txn.Delete(v.key); err != nil {
					return err
				}
				if err := txn.Delete(indexKey(space, v.sender, v.counter)); err != nil {
					return err
				}
				m.Bundles--
				m.Bytes -= int64(v.bytes)
				if p := m.peer(v.sender); p != nil {
					p.Bundles--
					p.Bytes -= int64(v.bytes)
					p.Compacted = max(p.Compacted, v.counter)
				}
			}
			n = len(vs)
			m.Low = newLow
			return putMeta(txn, space, m)
		})
		if err != nil {
			return err
		}
		if n > 0 {
			s.log.Info("relay compacted", "space", space, "bundles", n)
		}
		if done {
			return nil
		}
	}
}

func (s *Server) status(space string, member ed25519.PublicKey) (SpaceStatus, error) {
	var st SpaceStatus
	err := s.db.View(func(txn *badger.Txn) error {
		m, err := getMeta(txn, space)
		if err != nil {
			return err
		}
		if _, err := m.memberOr(member); err != nil {
			return err
		}
		st = SpaceStatus{Space: space, Version: m.Version, Head: m.Head, Low: m.Low, Bundles: m.Bundles, Bytes: m.Bytes, Cursors: map[string]uint64{},
			Epoch: m.Epoch, Now: s.opts.Clock.Now().UnixMilli()}
		for _, p := range m.Peers {
			if p.Member {
				st.Members++
				st.Cursors[fingerprint(p.Key)] = p.Cursor
			}
			st.Peers = append(st.Peers, PeerStatus{Key: p.Key, Member: p.Member, Cursor: p.Cursor, LastAck: p.LastAck,
				Counter: p.HW, Compacted: p.Compacted, Bundles: p.Bundles})
		}
		return nil
	})
	return st, err
}

func (s *Server) members(space string, member ed25519.PublicKey) ([]byte, error) {
	var raw []byte
	err := s.db.View(func(txn *badger.Txn) error {
		m, err := getMeta(txn, space)
		if err != nil {
			return err
		}
		if _, err := m.memberOr(member); err != nil {
			return err
		}
		raw = m.Members
		return nil
	})
	return raw, err
}

// putEpoch stores a space's next key-epoch record (rec.Epoch must be the
// newest recorded + 1; the same record again is a retry and succeeds),
// keeping the newest MaxEpochs. The caller checked the record's form,
// signature and signer.
func (s *Server) putEpoch(ctx context.Context, space string, member ed25519.PublicKey, epoch uint64, raw []byte) error {
	return s.update(ctx, func(txn *badger.Txn) error {
		m, err := getMeta(txn, space)
		if err != nil {
			return err
		}
		if _, err := m.memberOr(member); err != nil {
			return err
		}
		if epoch == m.Epoch {
			old, ok, err := getValue(txn, epochKey(space, epoch))
			if err != nil {
				return err
			}
			if ok && bytes.Equal(old, raw) {
				return nil
			}
		}
		if epoch != m.Epoch+1 {
			e := herr(http.StatusConflict, codeConflict, "key epoch %d, relay has %d", epoch, m.Epoch)
			e.expected = m.Epoch + 1
			return e
		}
		if err := txn.Set(epochKey(space, epoch), raw); err != nil {
			return err
		}
		if epoch > MaxEpochs {
			if err := txn.Delete(epochKey(space, epoch-MaxEpochs)); err != nil {
				return err
			}
		}
		m.Epoch = epoch
		return putMeta(txn, space, m)
	})
}

// epochs returns a space's key-epoch records, oldest first.
func (s *Server) epochs(space string, member ed25519.PublicKey) ([][]byte, error) {
	var out [][]byte
	err := s.db.View(func(txn *badger.Txn) error {
		m, err := getMeta(txn, space)
		if err != nil {
			return err
		}
		if _, err := m.memberOr(member); err != nil {
			return err
		}
		prefix := append([]byte("e"), space...)
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: true, PrefetchSize: 8})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			out = append(out, v)
		}
		return nil
	})
	return out, err
}
