package relay

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// JetStream layout (see docs/relay.md, "Storage on JetStream"):
//
//	stream FERRY_BUNDLES, subjects ferry.b.<space>.<seq>
//	    one message per bundle, exactly as pushed; the subject carries the
//	    space's dense sequence number. A push claims its slot by publishing
//	    with Nats-Expected-Last-Subject-Sequence: 0 (the subject must be
//	    empty), so two front-ends can never assign one seq twice. Pulls read
//	    slots by subject (direct get); compaction purges ferry.b.<space>.*
//	    up to a stream sequence.
//	stream FERRY_SPACES, one message per subject (a KV bucket in effect):
//	    ferry.s.m.<space>  -> jsMeta (CBOR): members, cursors, counters,
//	                          quotas, the last pushes (for duplicates)
//	    ferry.s.g          -> number of spaces (u64)
//	    ferry.s.c.<hex>    -> spaces created by that key (u64)
//	    ferry.s.e.<space>.<epoch> -> signed key-epoch record (newest MaxEpochs)
//	    Every update is a compare-and-set on the subject's last sequence
//	    (Nats-Expected-Last-Subject-Sequence). Reads go to the stream
//	    leader, so a front-end never acts on a stale copy.
//	stream FERRY_NONCES (front-ends on a cluster only): subject
//	    ferry.nonce, one message per request, deduplicated by Nats-Msg-Id
//	    over the authentication window: a replay through another
//	    front-end is refused.
//	core subject ferry.n.<space>: "a bundle was stored", wakes long-polls
//	    on every front-end; never stored.
//
// A bundle is stored before the space's metadata counts it. A front-end
// that dies in between leaves the bundle in its slot; every later read of
// the space rolls it forward (the bundle is the record of the push, the
// metadata a checkpoint), so an acknowledged push is never lost and the
// sequence numbers stay dense.
const (
	streamBundles = "FERRY_BUNDLES"
	streamSpaces  = "FERRY_SPACES"
	streamNonces  = "FERRY_NONCES"
	subjBundles   = "ferry.b."
	subjMeta      = "ferry.s.m."
	subjGlobal    = "ferry.s.g"
	subjCreator   = "ferry.s.c."
	subjEpoch     = "ferry.s.e."
	subjNonce     = "ferry.nonce"
	subjNotify    = "ferry.n."

	// recentPushes is how many pushes a space remembers the content hash
	// of, to answer a retried push with its first seq.
	recentPushes = 32
	// casAttempts bounds the compare-and-set retries of one operation.
	casAttempts = 64
)

// jsMeta is a space's metadata on JetStream: the Badger layout's
// spaceMeta and a ring of the last pushes (the Badger store kept an index
// entry per live bundle instead).
type jsMeta struct {
	M      spaceMeta    `cbor:"1,keyasint"`
	Recent []recentPush `cbor:"2,keyasint"`
}

type recentPush struct {
	Sender  []byte `cbor:"1,keyasint"`
	Counter uint64 `cbor:"2,keyasint"`
	Seq     uint64 `cbor:"3,keyasint"`
	Sum     []byte `cbor:"4,keyasint"` // SHA-256 of the bundle, first 16 bytes
}

func (m *jsMeta) recent(sender []byte, counter uint64) *recentPush {
	for i := range m.Recent {
		if m.Recent[i].Counter == counter && bytes.Equal(m.Recent[i].Sender, sender) {
			return &m.Recent[i]
		}
	}
	return nil
}

// apply counts the bundle stored at seq (seq = Head+1).
func (m *jsMeta) apply(seq uint64, data []byte) error {
	if len(data) < hdrLen {
		return fmt.Errorf("relay: corrupt bundle at seq %d", seq)
	}
	sender := data[1 : 1+ed25519.PublicKeySize]
	counter := binary.BigEndian.Uint64(data[1+ed25519.PublicKeySize:])
	p := m.M.peer(sender)
	if p == nil { // removed and forgotten between its push and now
		m.M.Peers = append(m.M.Peers, peerState{Key: bytes.Clone(sender)})
		p = &m.M.Peers[len(m.M.Peers)-1]
	}
	n := int64(len(data))
	p.HW = max(p.HW, counter)
	p.Bytes += n
	p.Bundles++
	m.M.Bytes += n
	m.M.Bundles++
	m.M.Head = seq
	sum := sha256.Sum256(data)
	m.Recent = append(m.Recent, recentPush{Sender: bytes.Clone(sender), Counter: counter, Seq: seq, Sum: sum[:16]})
	if len(m.Recent) > recentPushes {
		m.Recent = slices.Delete(m.Recent, 0, len(m.Recent)-recentPushes)
	}
	return nil
}

// storeLimits are the quotas a store enforces (from ServerOptions).
type storeLimits struct {
	maxSpaceBytes, maxClientBytes, maxSpaceBundles int64
	maxSpaces, maxSpacesPerKey                     int
}

func limitsOf(o ServerOptions) storeLimits {
	return storeLimits{o.MaxSpaceBytes, o.MaxClientBytes, o.MaxSpaceBundles, o.MaxSpaces, o.MaxSpacesPerKey}
}

// jsStore keeps the relay's state in JetStream (embedded or a cluster).
type jsStore struct {
	nc      *nats.Conn
	js      jetstream.JetStream
	bundles jetstream.Stream
	spaces  jetstream.Stream
	lim     storeLimits
	clock   Clock
	log     *slog.Logger
	window  time.Duration
	shared  bool // a cluster front-end: nonces are shared through FERRY_NONCES
	sub     *nats.Subscription
	onPush  func(space string)

	afterClaim func() error // tests: a front-end that dies after storing a bundle

	// The embedded relay is its store's only writer: it keeps each
	// space's metadata in memory (never across I/O under cmu) and
	// checkpoints it after checkpointEvery pushes, not after each one
	// (every read rolls the uncounted bundles forward anyway).
	cmu   sync.Mutex
	cache map[string]*cachedMeta

	closeOnce sync.Once
	closeFn   func() // shuts the embedded server down, if any
}

// cachedMeta is a space's metadata as last loaded or written: rev is the
// checkpoint it rolls forward from; dirty counts the pushes since.
type cachedMeta struct {
	raw   []byte // encoded jsMeta (a copy per use)
	rev   uint64
	head  uint64
	dirty int
}

// checkpointEvery is how many pushes may go uncounted in the stored
// metadata: 32 embedded; 8 on a cluster, where every read of a space
// rolls forward what is uncounted (a replicated write costs more than
// the reads).
func (s *jsStore) checkpointEvery() int {
	if s.shared {
		return 8
	}
	return 32
}

func (s *jsStore) cached(space string) (*jsMeta, uint64, int, bool) {
	if s.shared {
		return nil, 0, 0, false
	}
	s.cmu.Lock()
	c, ok := s.cache[space]
	s.cmu.Unlock()
	if !ok {
		return nil, 0, 0, false
	}
	var m jsMeta
	if err := wireDec.Unmarshal(c.raw, &m); err != nil {
		return nil, 0, 0, false
	}
	return &m, c.rev, c.dirty, true
}

// put caches m unless the cache holds a later state: a later checkpoint
// (rev), or the same one rolled further forward. Metadata revisions grow,
// so a load that raced with a write never replaces the write's state.
func (s *jsStore) put(space string, m *jsMeta, rev uint64, dirty int) {
	if s.shared {
		return
	}
	raw := marshal(m)
	s.cmu.Lock()
	defer s.cmu.Unlock()
	if c, ok := s.cache[space]; ok && (c.rev > rev || c.rev == rev && c.head > m.M.Head) {
		return
	}
	if s.cache == nil {
		s.cache = map[string]*cachedMeta{}
	}
	s.cache[space] = &cachedMeta{raw: raw, rev: rev, dirty: dirty, head: m.M.Head}
}

func (s *jsStore) forget(space string) {
	s.cmu.Lock()
	delete(s.cache, space)
	s.cmu.Unlock()
}

// jsConfig is what openJS needs besides the connection.
type jsConfig struct {
	replicas int
	shared   bool
	window   time.Duration
	maxMsg   int32
	clock    Clock
}

func openJS(ctx context.Context, nc *nats.Conn, cfg jsConfig, lim storeLimits, log *slog.Logger, onPush func(string)) (*jsStore, error) {
	js, err := jetstream.New(nc, jetstream.WithDefaultTimeout(10*time.Second))
	if err != nil {
		return nil, fmt.Errorf("relay: jetstream: %w", err)
	}
	s := &jsStore{nc: nc, js: js, lim: lim, clock: cfg.clock, log: log, window: cfg.window, shared: cfg.shared, onPush: onPush}
	bundles := jetstream.StreamConfig{
		Name:              streamBundles,
		Description:       "ferry relay: sealed bundles, ferry.b.<space>.<seq>",
		Subjects:          []string{subjBundles + ">"},
		Storage:           jetstream.FileStorage,
		Retention:         jetstream.LimitsPolicy,
		Discard:           jetstream.DiscardNew,
		MaxMsgsPerSubject: 1,
		MaxMsgSize:        cfg.maxMsg,
		Replicas:          cfg.replicas,
		AllowDirect:       true,
		DenyDelete:        false,
		Compression:       jetstream.NoCompression, // ciphertext
	}
	spaces := jetstream.StreamConfig{
		Name:              streamSpaces,
		Description:       "ferry relay: space metadata and counters, one message per subject",
		Subjects:          []string{"ferry.s.>"},
		Storage:           jetstream.FileStorage,
		Discard:           jetstream.DiscardOld,
		MaxMsgsPerSubject: 1,
		Replicas:          cfg.replicas,
		AllowDirect:       false, // reads from the leader: compare-and-set on fresh state
	}
	if s.bundles, err = ensureStream(ctx, js, bundles); err != nil {
		return nil, err
	}
	if s.spaces, err = ensureStream(ctx, js, spaces); err != nil {
		return nil, err
	}
	if cfg.shared {
		age := 2*cfg.window + time.Minute
		nonces := jetstream.StreamConfig{
			Name:        streamNonces,
			Description: "ferry relay: request nonces, deduplicated over the authentication window",
			Subjects:    []string{subjNonce},
			Storage:     jetstream.FileStorage,
			MaxAge:      age,
			Duplicates:  age,
			Replicas:    cfg.replicas,
		}
		if _, err = ensureStream(ctx, js, nonces); err != nil {
			return nil, err
		}
	}
	s.sub, err = nc.Subscribe(subjNotify+"*", func(m *nats.Msg) {
		if s.onPush != nil {
			s.onPush(m.Subject[len(subjNotify):])
		}
	})
	if err != nil {
		return nil, fmt.Errorf("relay: subscribe: %w", err)
	}
	if err := nc.FlushWithContext(ctx); err != nil {
		return nil, fmt.Errorf("relay: nats: %w", err)
	}
	return s, nil
}

// ensureStream creates the stream or updates it to cfg.
func ensureStream(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	var st jetstream.Stream
	err := retryNATS(ctx, func() error {
		var err error
		st, err = js.CreateOrUpdateStream(ctx, cfg)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("relay: stream %s: %w", cfg.Name, err)
	}
	return st, nil
}

// retryNATS retries fn while the cluster is without a leader or a
// connection (a node lost), for at most 30 seconds or until ctx ends.
func retryNATS(ctx context.Context, fn func() error) error {
	deadline := time.Now().Add(30 * time.Second)
	pause := 20 * time.Millisecond
	for {
		err := fn()
		if err == nil || !transientNATS(err) || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return errors.Join(err, ctx.Err())
		case <-time.After(pause):
		}
		pause = min(2*pause, 500*time.Millisecond)
	}
}

// transientNATS reports errors that a retry may cure: no responders or a
// timeout while a stream elects a leader, a connection being re-made.
func transientNATS(err error) bool {
	var api *jetstream.APIError
	if errors.As(err, &api) {
		switch api.ErrorCode {
		case jetstream.JSErrCodeStreamWrongLastSequence, jetstream.JSErrCodeMessageNotFound, jetstream.JSErrCodeStreamNotFound:
			return false
		}
		return api.Code == http.StatusServiceUnavailable || api.Code == http.StatusInternalServerError
	}
	return errors.Is(err, nats.ErrNoResponders) || errors.Is(err, nats.ErrTimeout) || errors.Is(err, jetstream.ErrNoStreamResponse) ||
		errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) ||
		errors.Is(err, nats.ErrConnectionReconnecting) || errors.Is(err, nats.ErrDisconnected) ||
		errors.Is(err, jetstream.ErrJetStreamNotEnabled) || errors.Is(err, nats.ErrJetStreamNotEnabled)
}

func wrongLast(err error) bool {
	var api *jetstream.APIError
	return errors.As(err, &api) && api.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence
}

func (s *jsStore) close() error {
	s.closeOnce.Do(func() {
		if s.sub != nil {
			_ = s.sub.Unsubscribe()
		}
		_ = s.nc.Drain()
		s.nc.Close()
		if s.closeFn != nil {
			s.closeFn()
		}
	})
	return nil
}

func bundleSubject(space string, seq uint64) string {
	return subjBundles + space + "." + strconv.FormatUint(seq, 10)
}

// getLast reads the last message on subject from the stream's leader;
// (nil, 0, nil) if there is none.
func (s *jsStore) getLast(ctx context.Context, st jetstream.Stream, subject string) ([]byte, uint64, error) {
	var msg *jetstream.RawStreamMsg
	err := retryNATS(ctx, func() error {
		var err error
		msg, err = st.GetLastMsgForSubject(ctx, subject)
		return err
	})
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("relay: read %s: %w", subject, err)
	}
	return msg.Data, msg.Sequence, nil
}

// getBundle reads the bundle at a space's seq, by direct get (any
// replica) unless leader; nil if the slot is empty. A direct get may come
// from a replica that lags: callers that know the bundle exists ask the
// leader when it is missing.
func (s *jsStore) getBundle(ctx context.Context, space string, seq uint64, leader bool) ([]byte, uint64, error) {
	subj := bundleSubject(space, seq)
	if !leader {
		var msg *jetstream.RawStreamMsg
		err := retryNATS(ctx, func() error {
			var err error
			msg, err = s.bundles.GetLastMsgForSubject(ctx, subj)
			return err
		})
		if err == nil {
			return msg.Data, msg.Sequence, nil
		}
		if !errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil, 0, fmt.Errorf("relay: read bundle: %w", err)
		}
	}
	var msg *jetstream.RawStreamMsg
	err := retryNATS(ctx, func() error {
		var err error
		msg, err = s.leaderGet(ctx, subj)
		return err
	})
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("relay: read bundle: %w", err)
	}
	return msg.Data, msg.Sequence, nil
}

// leaderGet is STREAM.MSG.GET (answered by the leader only).
func (s *jsStore) leaderGet(ctx context.Context, subject string) (*jetstream.RawStreamMsg, error) {
	// The stream handle uses direct gets when AllowDirect is set; the
	// leader's answer needs the plain API.
	return leaderGetMsg(ctx, s.nc, streamBundles, subject)
}

// publish stores data on subject if the subject's last sequence is
// expect (0: the subject is empty). It returns the stream sequence.
func (s *jsStore) publish(ctx context.Context, subject string, data []byte, expect uint64) (uint64, error) {
	msg := &nats.Msg{Subject: subject, Data: data, Header: nats.Header{}}
	var ack *jetstream.PubAck
	err := retryNATS(ctx, func() error {
		var err error
		ack, err = s.js.PublishMsg(ctx, msg, jetstream.WithExpectLastSequencePerSubject(expect))
		return err
	})
	if err != nil {
		return 0, err
	}
	return ack.Sequence, nil
}

// loadMeta reads a space's metadata and rolls forward the bundles stored
// beyond its head. rev is the metadata's stream sequence, for the
// compare-and-set.
func (s *jsStore) loadMeta(ctx context.Context, space string, leader bool) (*jsMeta, uint64, error) {
	m, rev, _, err := s.loadMetaDirty(ctx, space, leader)
	return m, rev, err
}

// loadMetaDirty is loadMeta that also returns how many bundles the
// stored metadata does not count.
func (s *jsStore) loadMetaDirty(ctx context.Context, space string, leader bool) (*jsMeta, uint64, int, error) {
	if m, rev, dirty, ok := s.cached(space); ok && !leader {
		return m, rev, dirty, nil
	}
	m, rev, dirty, err := s.loadStored(ctx, space, leader)
	if err == nil {
		s.put(space, m, rev, dirty)
	}
	return m, rev, dirty, err
}

func (s *jsStore) loadStored(ctx context.Context, space string, leader bool) (*jsMeta, uint64, int, error) {
	raw, rev, err := s.getLast(ctx, s.spaces, subjMeta+space)
	if err != nil {
		return nil, 0, 0, err
	}
	if raw == nil {
		return nil, 0, 0, errNoSpace
	}
	var m jsMeta
	if err := wireDec.Unmarshal(raw, &m); err != nil {
		return nil, 0, 0, fmt.Errorf("relay: corrupt space metadata: %w", err)
	}
	for dirty := 0; ; dirty++ {
		data, _, err := s.getBundle(ctx, space, m.M.Head+1, leader)
		if err != nil {
			return nil, 0, 0, err
		}
		if data == nil {
			return &m, rev, dirty, nil
		}
		if err := m.apply(m.M.Head+1, data); err != nil {
			return nil, 0, 0, err
		}
	}
}

// saveMeta is the compare-and-set of a space's metadata; ok is false if
// another writer came first.
func (s *jsStore) saveMeta(ctx context.Context, space string, m *jsMeta, rev uint64) (bool, error) {
	nrev, err := s.publish(ctx, subjMeta+space, marshal(m), rev)
	if err != nil {
		s.forget(space)
		if wrongLast(err) {
			return false, nil
		}
		return false, fmt.Errorf("relay: write space metadata: %w", err)
	}
	s.put(space, m, nrev, 0)
	return true, nil
}

// updateMeta runs fn on the space's metadata and stores the result,
// retrying on concurrent writers. fn returns false to store nothing.
func (s *jsStore) updateMeta(ctx context.Context, space string, fn func(m *jsMeta) (bool, error)) error {
	leader := false
	for range casAttempts {
		m, rev, err := s.loadMeta(ctx, space, leader)
		if err != nil {
			return err
		}
		write, err := fn(m)
		if err != nil || !write {
			return err
		}
		ok, err := s.saveMeta(ctx, space, m, rev)
		if err != nil || ok {
			return err
		}
		leader = true
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	return herr(http.StatusServiceUnavailable, codeBusy, "space busy, retry")
}

// addCount adds delta to the counter at subject if the result stays
// within [0, limit]; ok is false if it would not.
func (s *jsStore) addCount(ctx context.Context, subject string, delta int64, limit uint64) (bool, error) {
	for range casAttempts {
		raw, rev, err := s.getLast(ctx, s.spaces, subject)
		if err != nil {
			return false, err
		}
		var n uint64
		if raw != nil {
			if len(raw) != 8 {
				return false, fmt.Errorf("relay: corrupt counter %s", subject)
			}
			n = binary.BigEndian.Uint64(raw)
		}
		switch {
		case delta > 0 && n+uint64(delta) > limit:
			return false, nil
		case delta < 0 && uint64(-delta) > n:
			n = 0
		default:
			n = uint64(int64(n) + delta)
		}
		_, err = s.publish(ctx, subject, binary.BigEndian.AppendUint64(nil, n), rev)
		if err == nil {
			return true, nil
		}
		if !wrongLast(err) {
			return false, fmt.Errorf("relay: write %s: %w", subject, err)
		}
	}
	return false, herr(http.StatusServiceUnavailable, codeBusy, "relay busy, retry")
}

func (s *jsStore) createSpace(ctx context.Context, sm SignedMembers, raw []byte, creator ed25519.PublicKey) error {
	space := sm.Space
	exists := func() error {
		m, _, err := s.loadMeta(ctx, space, true)
		if err == errNoSpace {
			return nil
		}
		if err != nil {
			return err
		}
		if bytes.Equal(m.M.Members, raw) {
			return errDone // a retry of the same creation
		}
		return herr(http.StatusConflict, codeConflict, "space already exists")
	}
	if err := exists(); err != nil {
		if err == errDone {
			return nil
		}
		return err
	}
	ckey := subjCreator + hex.EncodeToString(creator)
	ok, err := s.addCount(ctx, ckey, 1, uint64(s.lim.maxSpacesPerKey))
	if err != nil {
		return err
	}
	if !ok {
		return herr(http.StatusInsufficientStorage, codeQuota, "key has created its maximum of %d spaces", s.lim.maxSpacesPerKey)
	}
	undo := func(global bool) {
		// Best effort: a front-end dying here leaves the count one high.
		ctx := context.WithoutCancel(ctx)
		if _, err := s.addCount(ctx, ckey, -1, 0); err != nil {
			s.log.Warn("relay: undo space count", "err", err)
		}
		if global {
			if _, err := s.addCount(ctx, subjGlobal, -1, 0); err != nil {
				s.log.Warn("relay: undo space count", "err", err)
			}
		}
	}
	ok, err = s.addCount(ctx, subjGlobal, 1, uint64(s.lim.maxSpaces))
	if err != nil || !ok {
		undo(false)
		if err != nil {
			return err
		}
		return herr(http.StatusInsufficientStorage, codeQuota, "relay holds its maximum of %d spaces", s.lim.maxSpaces)
	}
	m := &jsMeta{M: spaceMeta{Members: raw, Version: sm.Version, Creator: creator}}
	now := s.clock.Now().UnixMilli()
	for _, k := range sm.Keys {
		m.M.Peers = append(m.M.Peers, peerState{Key: k, Member: true, LastAck: now})
	}
	ok, err = s.saveMeta(ctx, space, m, 0)
	if err != nil || !ok {
		undo(true)
		if err != nil {
			return err
		}
		if err := exists(); err != nil { // created concurrently
			if err == errDone {
				return nil
			}
			return err
		}
		return herr(http.StatusServiceUnavailable, codeBusy, "space busy, retry")
	}
	return nil
}

var errDone = errors.New("done")

func (s *jsStore) updateMembers(ctx context.Context, sm SignedMembers, raw []byte) error {
	return s.updateMeta(ctx, sm.Space, func(j *jsMeta) (bool, error) {
		m := &j.M
		if _, err := m.memberOr(sm.Signer); err != nil {
			return false, err
		}
		if sm.Version == m.Version && bytes.Equal(m.Members, raw) {
			return false, nil // a retry of the same update
		}
		if sm.Version != m.Version+1 {
			e := herr(http.StatusConflict, codeConflict, "member list version %d, relay has %d", sm.Version, m.Version)
			e.expected = m.Version + 1
			return false, e
		}
		// Who stays keeps its cursor; who is (re-)added starts at Low.
		was := make(map[string]bool, len(m.Peers))
		for i := range m.Peers {
			was[string(m.Peers[i].Key)] = m.Peers[i].Member
			m.Peers[i].Member = false
		}
		now := s.clock.Now().UnixMilli()
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
		for len(m.Peers) > maxPeers {
			i := slices.IndexFunc(m.Peers, func(p peerState) bool { return !p.Member && p.Bundles == 0 })
			if i < 0 {
				break
			}
			m.Peers = slices.Delete(m.Peers, i, i+1)
		}
		m.Members, m.Version = raw, sm.Version
		return true, nil
	})
}

func (s *jsStore) storeBundle(ctx context.Context, space string, sender ed25519.PublicKey, counter uint64, data []byte) (pushResult, error) {
	sum := sha256.Sum256(data)
	var claimed uint64 // the slot this call wrote, if any
	leader := false
	for range casAttempts {
		j, rev, dirty, err := s.loadMetaDirty(ctx, space, leader)
		if err != nil {
			return pushResult{}, err
		}
		m := &j.M
		p, err := m.memberOr(sender)
		if err != nil {
			return pushResult{}, err
		}
		if counter <= p.HW {
			r := j.recent(sender, counter)
			switch {
			case r != nil && bytes.Equal(r.Sum, sum[:16]):
				if r.Seq == claimed { // ours, counted by another writer's roll-forward
					return pushResult{seq: r.Seq}, nil
				}
				if r.Seq <= m.Low {
					return pushResult{dup: true}, nil
				}
				return pushResult{seq: r.Seq, dup: true}, nil
			case r == nil && counter <= p.Compacted:
				return pushResult{dup: true}, nil // stored, delivered and compacted long ago
			}
			e := herr(http.StatusConflict, codeCounter, "counter %d already used with other content", counter)
			e.expected = p.HW + 1
			return pushResult{}, e
		}
		if counter != p.HW+1 {
			e := herr(http.StatusConflict, codeCounter, "counter %d out of order, expected %d", counter, p.HW+1)
			e.expected = p.HW + 1
			return pushResult{}, e
		}
		n := int64(len(data))
		switch {
		case m.Bytes+n > s.lim.maxSpaceBytes:
			return pushResult{}, herr(http.StatusInsufficientStorage, codeQuota, "space quota: %d of %d bytes held", m.Bytes, s.lim.maxSpaceBytes)
		case p.Bytes+n > s.lim.maxClientBytes:
			return pushResult{}, herr(http.StatusInsufficientStorage, codeQuota, "client quota: %d of %d bytes held", p.Bytes, s.lim.maxClientBytes)
		case m.Bundles >= s.lim.maxSpaceBundles:
			return pushResult{}, herr(http.StatusInsufficientStorage, codeQuota, "space quota: %d of %d bundles held", m.Bundles, s.lim.maxSpaceBundles)
		}
		seq := m.Head + 1
		if _, err := s.publish(ctx, bundleSubject(space, seq), data, 0); err != nil {
			s.forget(space)
			if wrongLast(err) { // another push took the slot: roll it forward
				leader = true
				continue
			}
			return pushResult{}, fmt.Errorf("relay: store bundle: %w", err)
		}
		claimed = seq
		if s.afterClaim != nil {
			if err := s.afterClaim(); err != nil {
				return pushResult{}, err
			}
		}
		if err := j.apply(seq, data); err != nil {
			return pushResult{}, err
		}
		if dirty+1 < s.checkpointEvery() {
			// Stored: the bundle itself is the record of the push.
			s.put(space, j, rev, dirty+1)
			s.notify(space)
			return pushResult{seq: seq}, nil
		}
		ok, err := s.saveMeta(ctx, space, j, rev)
		if err != nil {
			// The bundle is stored; the next read of the space counts it.
			return pushResult{}, err
		}
		if ok {
			s.notify(space)
			return pushResult{seq: seq}, nil
		}
		leader = true
	}
	return pushResult{}, herr(http.StatusServiceUnavailable, codeBusy, "space busy, retry")
}

// notify tells every front-end that space has a new bundle.
func (s *jsStore) notify(space string) {
	if err := s.nc.Publish(subjNotify+space, nil); err != nil {
		s.log.Warn("relay: notify", "err", err)
	}
}

func (s *jsStore) loadBundles(ctx context.Context, space string, member ed25519.PublicKey, after uint64, maxN, maxBytes int) (pullResponse, error) {
	j, _, err := s.loadMeta(ctx, space, false)
	if err != nil {
		return pullResponse{}, err
	}
	m := &j.M
	if _, err := m.memberOr(member); err != nil {
		return pullResponse{}, err
	}
	resp := pullResponse{Head: m.Head, Low: m.Low}
	bs, err := s.getRange(ctx, space, max(after, m.Low)+1, m.Head, maxN, maxBytes)
	if err != nil {
		return pullResponse{}, err
	}
	for _, b := range bs {
		resp.Envelopes = append(resp.Envelopes, wireEnvelope{Seq: b.seq, Sender: b.data[1 : 1+ed25519.PublicKeySize], Data: b.data})
	}
	return resp, nil
}

func (s *jsStore) ack(ctx context.Context, space string, member ed25519.PublicKey, seq uint64) error {
	return s.updateMeta(ctx, space, func(j *jsMeta) (bool, error) {
		m := &j.M
		p, err := m.memberOr(member)
		if err != nil {
			return false, err
		}
		seq = min(seq, m.Head)
		// Every acknowledgement counts as a sign of life (the expiry
		// policy of members reads it), even one that moves nothing.
		p.LastAck = s.clock.Now().UnixMilli()
		p.Cursor = max(p.Cursor, seq)
		return true, nil
	})
}

// compact deletes the bundles every member has acknowledged, at most
// compactBatch per step: it counts them out of the metadata, then purges
// them from the stream.
func (s *jsStore) compact(ctx context.Context, space string) (int, error) {
	total := 0
	for {
		var purgeTo uint64 // stream sequence of the last bundle compacted
		n := 0
		err := s.updateMeta(ctx, space, func(j *jsMeta) (bool, error) {
			m := &j.M
			purgeTo, n = 0, 0
			low := m.lowWater()
			if low <= m.Low {
				return false, nil
			}
			bs, err := s.getRange(ctx, space, m.Low+1, min(low, m.Low+compactBatch), compactBatch, 64<<20)
			if err != nil {
				return false, err
			}
			end := m.Low
			for _, b := range bs {
				v, sseq := b.data, b.sseq
				end = b.seq
				sender := v[1 : 1+ed25519.PublicKeySize]
				counter := binary.BigEndian.Uint64(v[1+ed25519.PublicKeySize:])
				m.Bundles--
				m.Bytes -= int64(len(v))
				if p := m.peer(sender); p != nil {
					p.Bundles--
					p.Bytes -= int64(len(v))
					p.Compacted = max(p.Compacted, counter)
				}
				purgeTo = sseq
				n++
			}
			m.Low = end
			return true, nil
		})
		if err != nil {
			return total, err
		}
		if n == 0 {
			return total, nil
		}
		total += n
		err = retryNATS(ctx, func() error {
			return s.bundles.Purge(ctx, jetstream.WithPurgeSubject(subjBundles+space+".*"), jetstream.WithPurgeSequence(purgeTo+1))
		})
		if err != nil {
			return total, fmt.Errorf("relay: purge: %w", err)
		}
	}
}

func (s *jsStore) status(ctx context.Context, space string, member ed25519.PublicKey) (SpaceStatus, error) {
	j, _, err := s.loadMeta(ctx, space, false)
	if err != nil {
		return SpaceStatus{}, err
	}
	m := &j.M
	if _, err := m.memberOr(member); err != nil {
		return SpaceStatus{}, err
	}
	st := SpaceStatus{Space: space, Version: m.Version, Head: m.Head, Low: m.Low, Bundles: m.Bundles, Bytes: m.Bytes, Cursors: map[string]uint64{},
		Epoch: m.Epoch, Now: s.clock.Now().UnixMilli()}
	for _, p := range m.Peers {
		if p.Member {
			st.Members++
			st.Cursors[fingerprint(p.Key)] = p.Cursor
		}
		st.Peers = append(st.Peers, PeerStatus{Key: p.Key, Member: p.Member, Cursor: p.Cursor, LastAck: p.LastAck,
			Counter: p.HW, Compacted: p.Compacted, Bundles: p.Bundles})
	}
	return st, nil
}

func (s *jsStore) members(ctx context.Context, space string, member ed25519.PublicKey) ([]byte, error) {
	j, _, err := s.loadMeta(ctx, space, false)
	if err != nil {
		return nil, err
	}
	if _, err := j.M.memberOr(member); err != nil {
		return nil, err
	}
	return j.M.Members, nil
}

func epochSubject(space string, epoch uint64) string {
	return subjEpoch + space + "." + strconv.FormatUint(epoch, 10)
}

// putEpoch stores a space's next key-epoch record on its own subject
// (claimed with an expected last sequence of 0, like a bundle slot), then
// counts it in the metadata. A record stored by a front-end that died
// before counting it is counted by the next putEpoch, which then refuses
// its own record as a conflict: the first record of an epoch wins.
func (s *jsStore) putEpoch(ctx context.Context, space string, member ed25519.PublicKey, epoch uint64, raw []byte) error {
	var lost *httpError // another record of this epoch came first
	err := s.updateMeta(ctx, space, func(j *jsMeta) (bool, error) {
		lost = nil
		m := &j.M
		if _, err := m.memberOr(member); err != nil {
			return false, err
		}
		conflict := func() error {
			e := herr(http.StatusConflict, codeConflict, "key epoch %d, relay has %d", epoch, m.Epoch)
			e.expected = m.Epoch + 1
			return e
		}
		if epoch == m.Epoch && epoch > 0 {
			old, _, err := s.getLast(ctx, s.spaces, epochSubject(space, epoch))
			if err != nil {
				return false, err
			}
			if bytes.Equal(old, raw) {
				return false, nil // a retry
			}
		}
		if epoch != m.Epoch+1 {
			return false, conflict()
		}
		_, err := s.publish(ctx, epochSubject(space, epoch), raw, 0)
		if wrongLast(err) {
			old, _, gerr := s.getLast(ctx, s.spaces, epochSubject(space, epoch))
			if gerr != nil {
				return false, gerr
			}
			if !bytes.Equal(old, raw) { // another record came first: count it, refuse ours
				lost = herr(http.StatusConflict, codeConflict, "key epoch %d taken by another record", epoch)
				lost.expected = epoch + 1
			}
		} else if err != nil {
			return false, fmt.Errorf("relay: store key epoch: %w", err)
		}
		if epoch > MaxEpochs {
			err := retryNATS(ctx, func() error {
				return s.spaces.Purge(ctx, jetstream.WithPurgeSubject(epochSubject(space, epoch-MaxEpochs)))
			})
			if err != nil {
				return false, fmt.Errorf("relay: drop old key epoch: %w", err)
			}
		}
		m.Epoch = epoch
		return true, nil
	})
	if err == nil && lost != nil {
		return lost
	}
	return err
}

func (s *jsStore) epochs(ctx context.Context, space string, member ed25519.PublicKey) ([][]byte, error) {
	j, _, err := s.loadMeta(ctx, space, false)
	if err != nil {
		return nil, err
	}
	m := &j.M
	if _, err := m.memberOr(member); err != nil {
		return nil, err
	}
	var out [][]byte
	for e := max(m.Epoch, MaxEpochs) - MaxEpochs + 1; e <= m.Epoch; e++ {
		raw, _, err := s.getLast(ctx, s.spaces, epochSubject(space, e))
		if err != nil {
			return nil, err
		}
		if raw != nil {
			out = append(out, raw)
		}
	}
	return out, nil
}

// seenNonce records a request nonce for the cluster; seen is true if some
// front-end recorded it already (a replay).
func (s *jsStore) seenNonce(ctx context.Context, key []byte, nonce []byte) (bool, error) {
	h := sha256.New()
	h.Write(key)
	h.Write(nonce)
	id := hex.EncodeToString(h.Sum(nil)[:16])
	var ack *jetstream.PubAck
	err := retryNATS(ctx, func() error {
		var err error
		ack, err = s.js.Publish(ctx, subjNonce, nil, jetstream.WithMsgID(id))
		return err
	})
	if err != nil {
		return false, fmt.Errorf("relay: record nonce: %w", err)
	}
	return ack.Duplicate, nil
}

// storedBundle is a bundle read from the stream: the space's seq, the
// stream's sequence and the sealed bytes.
type storedBundle struct {
	seq, sseq uint64
	data      []byte
}

// getRange reads the bundles from..to of a space (all present), at most
// maxN and about maxBytes (at least one): the first by subject, the rest
// in one batched direct get from its stream sequence on (a space's
// bundles are in the stream in seq order: a slot is claimed only after
// the one before it is stored). Anything the batch lacks (a lagging
// replica) is read one by one from the leader.
func (s *jsStore) getRange(ctx context.Context, space string, from, to uint64, maxN, maxBytes int) ([]storedBundle, error) {
	if from > to || maxN <= 0 {
		return nil, nil
	}
	one := func(seq uint64) (storedBundle, error) {
		v, sseq, err := s.getBundle(ctx, space, seq, false)
		if err == nil && v == nil {
			v, sseq, err = s.getBundle(ctx, space, seq, true) // a lagging replica
		}
		if err != nil {
			return storedBundle{}, err
		}
		if len(v) < hdrLen {
			return storedBundle{}, fmt.Errorf("relay: bundle %d of a space missing", seq)
		}
		return storedBundle{seq: seq, sseq: sseq, data: v}, nil
	}
	first, err := one(from)
	if err != nil {
		return nil, err
	}
	out := []storedBundle{first}
	total := len(first.data)
	want := min(uint64(maxN), to-from+1)
	if uint64(len(out)) < want && total < maxBytes {
		batch, err := s.batchGet(ctx, space, first.sseq+1, int(want)-1, maxBytes-total)
		if err != nil {
			return nil, err
		}
		for _, b := range batch {
			if b.seq != out[len(out)-1].seq+1 || b.seq > to {
				break
			}
			out = append(out, b)
			total += len(b.data)
		}
	}
	for uint64(len(out)) < want && total < maxBytes {
		b, err := one(out[len(out)-1].seq + 1)
		if err != nil {
			return nil, err
		}
		if total+len(b.data) > maxBytes {
			break
		}
		out = append(out, b)
		total += len(b.data)
	}
	// The batch may overshoot maxBytes by its last bundle.
	for len(out) > 1 && total > maxBytes {
		total -= len(out[len(out)-1].data)
		out = out[:len(out)-1]
	}
	return out, nil
}

// batchGet is one batched direct get: up to n messages of the space from
// stream sequence sseq on, at most about maxBytes.
func (s *jsStore) batchGet(ctx context.Context, space string, sseq uint64, n, maxBytes int) ([]storedBundle, error) {
	req, _ := json.Marshal(map[string]any{"seq": sseq, "next_by_subj": subjBundles + space + ".*", "batch": n, "max_bytes": max(maxBytes, 1)})
	inbox := s.nc.NewRespInbox()
	sub, err := s.nc.SubscribeSync(inbox)
	if err != nil {
		return nil, fmt.Errorf("relay: batch get: %w", err)
	}
	defer sub.Unsubscribe()
	if err := s.nc.PublishRequest("$JS.API.DIRECT.GET."+streamBundles, inbox, req); err != nil {
		return nil, fmt.Errorf("relay: batch get: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var out []storedBundle
	prefix := subjBundles + space + "."
	for {
		msg, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			if len(out) > 0 || transientNATS(err) {
				return out, nil // what arrived; the caller reads the rest one by one
			}
			return nil, fmt.Errorf("relay: batch get: %w", err)
		}
		if st := msg.Header.Get("Status"); st != "" {
			return out, nil // 204 end of batch, 404 nothing (more)
		}
		subj := msg.Header.Get(jetstream.SubjectHeader)
		seq, err1 := strconv.ParseUint(strings.TrimPrefix(subj, prefix), 10, 64)
		ss, err2 := strconv.ParseUint(msg.Header.Get(jetstream.SequenceHeader), 10, 64)
		if !strings.HasPrefix(subj, prefix) || err1 != nil || err2 != nil {
			return out, nil
		}
		out = append(out, storedBundle{seq: seq, sseq: ss, data: msg.Data})
	}
}
