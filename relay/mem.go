package relay

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"fmt"
	"slices"
	"sync"
	"time"
)

// MemRelay is an in-memory relay for tests: the semantics of Server
// (spaces created by their first member, signed member lists whose next
// version a current member signs, per-sender counters that must follow
// on, idempotent pushes, per-member acknowledgements and compaction of
// what every member acknowledged) without HTTP, request signatures, disk
// or quotas. Devices reach it through Client(identity). Safe for
// concurrent use.
type MemRelay struct {
	mu      sync.Mutex
	spaces  map[string]*memSpace
	changed chan struct{} // closed and replaced on every stored bundle
	// Fail, if set, is called before every operation with its name
	// ("create", "members", "update", "push", "pull", "ack", "status",
	// "epochs", "epoch");
	// a non-nil error is returned instead of performing it (fault
	// injection: ErrQuota, ErrUnavailable...). Set or change it only
	// while no operation is running.
	Fail func(op string) error
	// Now is the relay's clock (members' last acknowledgements); default
	// time.Now. Set it before the first operation.
	Now func() time.Time
}

type memSpace struct {
	raw      []byte // the signed member list as submitted
	version  uint64
	peers    []*memPeer
	bundles  []Envelope // seq ascending, all > low
	head     uint64
	low      uint64
	bytes    int64
	counters map[string]memIndex // sender|counter -> stored bundle
	epochs   [][]byte            // key-epoch records, oldest first
	epoch    uint64              // newest epoch recorded
}

type memPeer struct {
	key       ed25519.PublicKey
	member    bool
	cursor    uint64 // acknowledged seq
	hw        uint64 // highest counter stored
	compacted uint64 // highest counter compacted
	lastAck   int64  // unix ms of the last ack, or of its addition
}

type memIndex struct {
	seq uint64
	sum [sha256.Size]byte
}

// NewMemRelay returns an empty in-memory relay.
func NewMemRelay() *MemRelay {
	return &MemRelay{spaces: map[string]*memSpace{}, changed: make(chan struct{})}
}

// Client returns the API of device identity at m.
func (m *MemRelay) Client(identity ed25519.PrivateKey) *MemClient {
	return &MemClient{relay: m, id: identity}
}

// MemClient is one device's view of a MemRelay; it implements API.
type MemClient struct {
	relay *MemRelay
	id    ed25519.PrivateKey
}

// SigningKey returns the device's identity.
func (c *MemClient) SigningKey() ed25519.PrivateKey { return c.id }

func (c *MemClient) pub() ed25519.PublicKey { return publicOf(c.id) }

var (
	errMemNotMember = fmt.Errorf("%w (in-memory relay)", ErrNotMember)
	errMemRemoved   = fmt.Errorf("%w: %w (in-memory relay)", ErrRemoved, ErrNotMember)
)

func (m *MemRelay) now() int64 {
	if m.Now != nil {
		return m.Now().UnixMilli()
	}
	return time.Now().UnixMilli()
}

// begin checks the space and the fault hook and locks the relay.
func (c *MemClient) begin(ctx context.Context, op string, space Space) error {
	if err := space.check(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if c.relay.Fail != nil {
		if err := c.relay.Fail(op); err != nil {
			return err
		}
	}
	c.relay.mu.Lock()
	return nil
}

func (c *MemClient) member(space Space) (*memSpace, *memPeer, error) {
	s := c.relay.spaces[space.ID]
	if s == nil {
		return nil, nil, errMemNotMember
	}
	for _, p := range s.peers {
		if p.key.Equal(c.pub()) {
			if !p.member {
				return nil, nil, errMemRemoved
			}
			return s, p, nil
		}
	}
	return nil, nil, errMemNotMember
}

// CreateSpace implements API.
func (c *MemClient) CreateSpace(ctx context.Context, space Space) error {
	raw, err := signMembers(Members{Space: space.ID, Version: 1, Keys: []ed25519.PublicKey{c.pub()}}, c.id)
	if err != nil {
		return err
	}
	if err := c.begin(ctx, "create", space); err != nil {
		return err
	}
	defer c.relay.mu.Unlock()
	if s := c.relay.spaces[space.ID]; s != nil {
		if bytes.Equal(s.raw, raw) {
			return nil
		}
		return fmt.Errorf("%w: space already exists", ErrConflict)
	}
	c.relay.spaces[space.ID] = &memSpace{raw: raw, version: 1, peers: []*memPeer{{key: c.pub(), member: true, lastAck: c.relay.now()}},
		counters: map[string]memIndex{}}
	return nil
}

// Members implements API.
func (c *MemClient) Members(ctx context.Context, space Space) (SignedMembers, error) {
	if err := c.begin(ctx, "members", space); err != nil {
		return SignedMembers{}, err
	}
	s, _, err := c.member(space)
	var raw []byte
	if err == nil {
		raw = slices.Clone(s.raw)
	}
	c.relay.mu.Unlock()
	if err != nil {
		return SignedMembers{}, err
	}
	return DecodeMembers(raw)
}

// UpdateMembers implements API.
func (c *MemClient) UpdateMembers(ctx context.Context, space Space, add, remove []ed25519.PublicKey) (Members, error) {
	for _, k := range slices.Concat(add, remove) {
		if len(k) != ed25519.PublicKeySize {
			return Members{}, invalidf("member key of %d bytes", len(k))
		}
	}
	cur, err := c.Members(ctx, space)
	if err != nil {
		return Members{}, err
	}
	next := Members{Space: space.ID, Version: cur.Version + 1}
	for _, k := range append(cur.Keys, add...) {
		if !slices.ContainsFunc(remove, func(r ed25519.PublicKey) bool { return r.Equal(k) }) {
			next.Keys = append(next.Keys, k)
		}
	}
	raw, err := signMembers(next, c.id)
	if err != nil {
		return Members{}, err
	}
	sm, err := DecodeMembers(raw)
	if err != nil {
		return Members{}, err
	}
	if err := c.begin(ctx, "update", space); err != nil {
		return Members{}, err
	}
	defer c.relay.mu.Unlock()
	s, _, err := c.member(space)
	if err != nil {
		return Members{}, err
	}
	if sm.Version != s.version+1 {
		return Members{}, fmt.Errorf("%w: member list version %d, relay has %d", ErrConflict, sm.Version, s.version)
	}
	was := make(map[*memPeer]bool, len(s.peers))
	for _, p := range s.peers {
		was[p] = p.member
		p.member = false
	}
	now := c.relay.now()
	for _, k := range sm.Keys {
		i := slices.IndexFunc(s.peers, func(p *memPeer) bool { return p.key.Equal(k) })
		if i < 0 {
			s.peers = append(s.peers, &memPeer{key: k, member: true, cursor: s.low, lastAck: now})
			continue
		}
		if !was[s.peers[i]] {
			s.peers[i].cursor = s.low
			s.peers[i].lastAck = now
		}
		s.peers[i].member = true
	}
	s.raw, s.version = raw, sm.Version
	s.compact() // a removed member no longer holds compaction back
	return sm.Members, nil
}

// compact deletes what every member acknowledged.
func (s *memSpace) compact() {
	low, any := uint64(0), false
	for _, q := range s.peers {
		if q.member && (!any || q.cursor < low) {
			low, any = q.cursor, true
		}
	}
	if low = min(low, s.head); low > s.low {
		i := 0
		for i < len(s.bundles) && s.bundles[i].Seq <= low {
			b := s.bundles[i]
			s.bytes -= int64(len(b.Data))
			if j := slices.IndexFunc(s.peers, func(p *memPeer) bool { return p.key.Equal(b.Sender) }); j >= 0 {
				s.peers[j].compacted = max(s.peers[j].compacted, beUint64(b.Data[1+ed25519.PublicKeySize:]))
			}
			i++
		}
		s.bundles = slices.Delete(s.bundles, 0, i)
		s.low = low
	}
}

// Push implements API.
func (c *MemClient) Push(ctx context.Context, space Space, sealed []byte) (uint64, error) {
	if !isBucket(len(sealed)) {
		return 0, invalidf("not a sealed bundle (%d bytes)", len(sealed))
	}
	sender, counter, err := bundleHeader(space.ID, sealed)
	if err != nil {
		return 0, fmt.Errorf("%w: %w", ErrProtocol, err)
	}
	if !sender.Equal(c.pub()) {
		return 0, fmt.Errorf("%w: bundle sealed by another key", ErrProtocol)
	}
	if err := c.begin(ctx, "push", space); err != nil {
		return 0, err
	}
	defer c.relay.mu.Unlock()
	s, p, err := c.member(space)
	if err != nil {
		return 0, err
	}
	sum := sha256.Sum256(sealed)
	key := string(sender) + fmt.Sprint(counter)
	if counter <= p.hw {
		if ix, ok := s.counters[key]; ok && ix.sum == sum {
			if ix.seq <= s.low {
				return 0, nil // stored, delivered to everyone and compacted
			}
			return ix.seq, nil
		}
		return 0, &CounterError{Got: counter, Expected: p.hw + 1}
	}
	if counter != p.hw+1 {
		return 0, &CounterError{Got: counter, Expected: p.hw + 1}
	}
	s.head++
	s.bundles = append(s.bundles, Envelope{Seq: s.head, Sender: slices.Clone(sender), Data: slices.Clone(sealed)})
	s.counters[key] = memIndex{seq: s.head, sum: sum}
	s.bytes += int64(len(sealed))
	p.hw = counter
	close(c.relay.changed)
	c.relay.changed = make(chan struct{})
	return s.head, nil
}

// memPullBytes bounds one page, as Client.MaxPullBytes's default.
const memPullBytes = 8 << 20

// PullPage implements API. A wait is on the wall clock (tests pass 0).
func (c *MemClient) PullPage(ctx context.Context, space Space, after uint64, wait time.Duration) (Page, error) {
	var timeout <-chan time.Time
	for {
		if err := c.begin(ctx, "pull", space); err != nil {
			return Page{}, err
		}
		s, _, err := c.member(space)
		if err != nil {
			c.relay.mu.Unlock()
			return Page{}, err
		}
		p := Page{Head: s.head, Low: s.low}
		total := 0
		for _, e := range s.bundles {
			if e.Seq <= after {
				continue
			}
			if total > 0 && total+len(e.Data) > memPullBytes {
				break
			}
			p.Envelopes = append(p.Envelopes, Envelope{Seq: e.Seq, Sender: slices.Clone(e.Sender), Data: slices.Clone(e.Data)})
			total += len(e.Data)
		}
		changed := c.relay.changed
		c.relay.mu.Unlock()
		if len(p.Envelopes) > 0 || wait <= 0 {
			return p, nil
		}
		if timeout == nil {
			timeout = time.After(wait)
		}
		select {
		case <-changed:
		case <-timeout:
			return p, nil
		case <-ctx.Done():
			return Page{}, ctx.Err()
		}
	}
}

// Ack implements API.
func (c *MemClient) Ack(ctx context.Context, space Space, seq uint64) error {
	if err := c.begin(ctx, "ack", space); err != nil {
		return err
	}
	defer c.relay.mu.Unlock()
	s, p, err := c.member(space)
	if err != nil {
		return err
	}
	if seq = min(seq, s.head); seq > p.cursor {
		p.cursor = seq
	}
	p.lastAck = c.relay.now()
	s.compact()
	return nil
}

// Status implements API.
func (c *MemClient) Status(ctx context.Context, space Space) (SpaceStatus, error) {
	if err := c.begin(ctx, "status", space); err != nil {
		return SpaceStatus{}, err
	}
	defer c.relay.mu.Unlock()
	s, _, err := c.member(space)
	if err != nil {
		return SpaceStatus{}, err
	}
	st := SpaceStatus{Space: space.ID, Version: s.version, Head: s.head, Low: s.low,
		Bundles: int64(len(s.bundles)), Bytes: s.bytes, Cursors: map[string]uint64{}, Epoch: s.epoch, Now: c.relay.now()}
	for _, p := range s.peers {
		if p.member {
			st.Members++
			st.Cursors[fingerprint(p.key)] = p.cursor
		}
		var held int64
		for _, b := range s.bundles {
			if b.Sender.Equal(p.key) {
				held++
			}
		}
		st.Peers = append(st.Peers, PeerStatus{Key: slices.Clone(p.key), Member: p.member, Cursor: p.cursor, LastAck: p.lastAck,
			Counter: p.hw, Compacted: p.compacted, Bundles: held})
	}
	return st, nil
}

// Epochs implements API.
func (c *MemClient) Epochs(ctx context.Context, space Space) ([][]byte, error) {
	if err := c.begin(ctx, "epochs", space); err != nil {
		return nil, err
	}
	defer c.relay.mu.Unlock()
	s, _, err := c.member(space)
	if err != nil {
		return nil, err
	}
	out := make([][]byte, len(s.epochs))
	for i, r := range s.epochs {
		out[i] = slices.Clone(r)
	}
	return out, nil
}

// PutEpoch implements API.
func (c *MemClient) PutEpoch(ctx context.Context, space Space, record []byte) error {
	rec, _, err := DecodeEpochRecord(record)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrProtocol, err)
	}
	if rec.Space != space.ID || !rec.Signer.Equal(c.pub()) {
		return fmt.Errorf("%w: key-epoch record for another space or signer", ErrProtocol)
	}
	if err := c.begin(ctx, "epoch", space); err != nil {
		return err
	}
	defer c.relay.mu.Unlock()
	s, _, err := c.member(space)
	if err != nil {
		return err
	}
	if rec.Epoch == s.epoch && len(s.epochs) > 0 && bytes.Equal(s.epochs[len(s.epochs)-1], record) {
		return nil
	}
	if rec.Epoch != s.epoch+1 {
		return fmt.Errorf("%w: key epoch %d, relay has %d", ErrConflict, rec.Epoch, s.epoch)
	}
	s.epochs = append(s.epochs, slices.Clone(record))
	if len(s.epochs) > MaxEpochs {
		s.epochs = s.epochs[len(s.epochs)-MaxEpochs:]
	}
	s.epoch = rec.Epoch
	return nil
}
