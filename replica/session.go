package replica

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/ferrysync/ferry/errkind"
	"github.com/ferrysync/ferry/transport"
)

// Errors a sync session reports. Each wraps the cause with %w.
var (
	// ErrPolicyMismatch: the peers' conflict policy sets differ, so they
	// would not decide conflicts alike; the session is refused.
	ErrPolicyMismatch = errkind.New("replica: policy sets differ", errkind.Forbidden)
	// ErrVersionMismatch: the peer speaks another protocol version.
	ErrVersionMismatch = errkind.New("replica: protocol version differs", errkind.Protocol)
	// ErrIdentityMismatch: the peer's hello names another identity than the
	// one its transport authenticated.
	ErrIdentityMismatch = errkind.New("replica: peer identity mismatch", errkind.Protocol)
	// ErrPeerError: the peer ended the session with an error message.
	ErrPeerError = errors.New("replica: peer reported an error")
	// ErrNoConsent: the peer holds no live grant to sync with this replica.
	ErrNoConsent = errkind.New("replica: no consent for this peer", errkind.Forbidden)
	// ErrDisconnected: the connection ended before the session did: the
	// peer went away (closed or reset the connection, its process died),
	// the network failed, or the transport timed out. The transport's own
	// error (io.EOF, a net.Error, transport.ErrCut...) is wrapped too.
	ErrDisconnected = errkind.New("replica: connection to the peer lost", errkind.Unavailable)
)

// lostConn classifies a transport failure during a session as
// ErrDisconnected, unless the session's own context ended (then the
// context's error says why) or the frame was too large (a protocol matter).
func lostConn(ctx context.Context, op string, err error) error {
	if ctx.Err() != nil || errors.Is(err, transport.ErrFrameTooLarge) {
		return fmt.Errorf("replica: %s: %w", op, err)
	}
	return fmt.Errorf("%w: %s: %w", ErrDisconnected, op, err)
}

// SyncStats counts what one session moved, on the wire, per direction. Both
// sides count alike, so one side's sent counts are the other's received
// counts for every frame that arrived.
type SyncStats struct {
	Peer            string `json:"peer"`             // the peer's identity fingerprint
	RecordsSent     int    `json:"records_sent"`     // records sent, full or delta (see countRecords)
	RecordsReceived int    `json:"records_received"` // records received, counted the same way
	BytesSent       int64  `json:"bytes_sent"`       // frame bytes sent
	BytesReceived   int64  `json:"bytes_received"`   // frame bytes received
	FramesSent      int    `json:"frames_sent"`      // frames sent
	FramesReceived  int    `json:"frames_received"`  // frames received
	Conflicts       int    `json:"conflicts"`        // semantic conflicts found while applying
	// InvalidNames counts records whose collection name or id breaks the
	// naming rule (docs/replica.md): received ones are refused, stored ones
	// (written before the rule) are not sent. Set when the session ends.
	InvalidNames int `json:"invalid_names,omitempty"`
	// ClockSkew lists the writers whose writes arrived in this session
	// stamped ahead of this replica's clock by more than
	// Options.MaxClockDrift (their times were clamped).
	ClockSkew []ClockSkew `json:"clock_skew,omitempty"`
}

// sessionHost is everything a session needs from its replica. The replica
// implements it over storage, the CRDT and the policies; tests implement
// it in memory. Every method may do I/O and takes ctx first.
type sessionHost interface {
	// hello returns what this side says in its hello to peer (cursor = the
	// peer's feed position applied here).
	hello(ctx context.Context, peer string) (helloMsg, error)
	// checkPeer validates the peer's hello (policy fingerprint, consent).
	checkPeer(ctx context.Context, peer string, h *helloMsg) error
	// lastSeq is this side's newest feed position.
	lastSeq() uint64
	// feedNotify returns a channel closed by the next committed write to
	// this side's feed (take it before reading the feed).
	feedNotify() <-chan struct{}
	// nextBatch reads this side's feed after `after`, skips records the
	// peer already holds (or may not see), and returns at most maxRecords
	// entries and maxBytes of changes, plus the feed position covered.
	nextBatch(ctx context.Context, peer string, after uint64, maxRecords, maxBytes int) ([]recordChanges, uint64, error)
	// full returns the whole of one record, for a peer that asked for it.
	full(ctx context.Context, peer, collection, id string) ([]recordChanges, error)
	// apply merges a batch durably, advancing the cursor for peer to upTo in
	// the same write. It returns the records it could not apply because
	// their dependencies are missing, and the conflicts it found.
	apply(ctx context.Context, peer string, records []recordChanges, upTo uint64) (needs []needMsg, conflicts int, err error)
	// acked records that the peer now holds these records at these heads.
	acked(ctx context.Context, peer string, records []recordChanges) error
	// cursorMoved persists the cursor for peer after an idle moved it.
	cursorMoved(ctx context.Context, peer string, cursor uint64) error
	// startFor says where to start sending this side's feed, given the
	// peer's cursor (0 to rescan everything).
	startFor(ctx context.Context, peer string, cursor uint64) (uint64, error)
	// finished is called once a session has exchanged everything;
	// peerApplied is how far the peer has applied this side's feed.
	finished(ctx context.Context, peer string, peerApplied uint64) error

	// reconData reads this side's set for a reconciliation.
	reconData
	// reconBegin starts a reconciliation over colls and returns the feed
	// position up to which it covers them.
	reconBegin(ctx context.Context, peer string, colls []string) (uint64, error)
	// coversAll reports whether the reconciliation covers every
	// collection the peer may see.
	coversAll(peer string) bool
	// reconBatch prepares records the reconciliation found the peer
	// lacks, within the batch bounds, and says how many sends it used.
	reconBatch(ctx context.Context, peer string, sends []reconSend, maxRecords, maxBytes int) ([]recordChanges, int, error)
}

// sessionConfig bounds one session.
type sessionConfig struct {
	window     int // unacknowledged batches in flight
	maxRecords int // records per batch
	maxBytes   int // change bytes per batch
	progress   func(SyncStats)
}

func (c *sessionConfig) defaults() {
	if c.window <= 0 {
		c.window = 4
	}
	if c.maxRecords <= 0 {
		c.maxRecords = 512
	}
	if c.maxBytes <= 0 {
		c.maxBytes = 1 << 20
	}
}

// session runs one sync session over conn. It owns the one goroutine it
// starts (a frame reader) and stops it before returning.
type session struct {
	conn  transport.Conn
	host  sessionHost
	cfg   sessionConfig
	peer  string
	stats SyncStats

	pending [][]recordChanges // sent batches awaiting ack, oldest first
	needs   []needMsg         // records the peer asked for in full
	asked   map[needMsg]bool  // records I asked the peer for, not yet received

	recon      *reconEngine // nil when the session does not reconcile
	reconSends []reconSend  // records reconciliation found the peer lacks, not yet sent
}

// settleNeeds updates the records asked for after a batch was applied:
// those that applied are met, those that did not are asked for. A record
// that was asked for and fails again, in full, cannot be applied at all.
func (s *session) settleNeeds(p *protocol, recs []recordChanges, failed []needMsg) error {
	if s.asked == nil {
		s.asked = map[needMsg]bool{}
	}
	bad := make(map[needMsg]bool, len(failed))
	for _, n := range failed {
		bad[n] = true
	}
	met := 0
	for _, rc := range recs {
		n := needMsg{Collection: rc.Collection, ID: rc.ID}
		if s.asked[n] && bad[n] {
			return protoErr("record %s/%s cannot be applied even in full", n.Collection, n.ID)
		}
		if s.asked[n] && !rc.Partial {
			delete(s.asked, n)
			met++
		}
	}
	for n := range bad {
		if !s.asked[n] {
			s.asked[n] = true
			p.needAsked(1)
		}
	}
	p.needMet(met)
	return nil
}

// countRecords counts the records a batch carries, the same way on both
// sides: an entry that completes a record counts once (a record sent in
// parts counts at its last part), and an empty answer to a request for a
// record the sender could not serve counts not at all.
func countRecords(recs []recordChanges) int {
	n := 0
	for _, rc := range recs {
		if !rc.Partial && (len(rc.Changes) > 0 || len(rc.Heads) > 0) {
			n++
		}
	}
	return n
}

type frameOrErr struct {
	b   []byte
	err error
}

// runSession runs a sync session to its end: both sides have sent and
// applied everything. The caller owns conn and closes it.
func runSession(ctx context.Context, conn transport.Conn, host sessionHost, cfg sessionConfig) (SyncStats, error) {
	cfg.defaults()
	peer := transport.Fingerprint(conn.RemoteIdentity())
	s := &session{conn: conn, host: host, cfg: cfg, peer: peer}
	s.stats.Peer = peer
	err := s.run(ctx)
	if err != nil {
		// Tell the peer why, best effort; the session is over either way.
		code := uint16(errCodeInternal)
		switch {
		case errors.Is(err, ErrPolicyMismatch):
			code = errCodePolicy
		case errors.Is(err, ErrVersionMismatch):
			code = errCodeVersion
		case errors.Is(err, ErrIdentityMismatch):
			code = errCodeIdentity
		case errors.Is(err, ErrProtocol):
			code = errCodeProtocol
		case errors.Is(err, ErrNoConsent):
			code = errCodeConsent
		}
		if !errors.Is(err, ErrPeerError) && ctx.Err() == nil {
			sendCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
			_ = s.send(sendCtx, &wireMsg{T: msgError, Err: &errMsg{Code: code, Text: truncate(err.Error(), maxMessageText)}})
			cancel()
		}
	}
	return s.stats, err
}

// errForCode is the sentinel a peer's error code stands for, so a refusal
// by the peer is classified like the same refusal here.
func errForCode(code uint16) error {
	switch code {
	case errCodeVersion:
		return ErrVersionMismatch
	case errCodePolicy:
		return ErrPolicyMismatch
	case errCodeIdentity:
		return ErrIdentityMismatch
	case errCodeProtocol:
		return ErrProtocol
	case errCodeConsent:
		return ErrNoConsent
	}
	return errors.New("the peer failed")
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

func (s *session) send(ctx context.Context, m *wireMsg) error {
	b, err := encodeMsg(m)
	if err != nil {
		return err
	}
	if err := s.conn.Send(ctx, b); err != nil {
		return lostConn(ctx, "send", err)
	}
	s.stats.FramesSent++
	s.stats.BytesSent += int64(len(b))
	return nil
}

func (s *session) received(b []byte) (*wireMsg, error) {
	s.stats.FramesReceived++
	s.stats.BytesReceived += int64(len(b))
	m, err := decodeMsg(b)
	if err != nil {
		return nil, err
	}
	if m.T == msgError {
		return nil, fmt.Errorf("%w: %w: %s", ErrPeerError, errForCode(m.Err.Code), m.Err.Text)
	}
	return m, nil
}

func (s *session) run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	mine, err := s.host.hello(ctx, s.peer)
	if err != nil {
		return err
	}
	mine.Nonce = make([]byte, reconNonceLen)
	rand.Read(mine.Nonce) // never fails (Go >= 1.24)
	if err := s.send(ctx, &wireMsg{T: msgHello, Hello: &mine}); err != nil {
		return err
	}
	first, err := s.conn.Recv(ctx)
	if err != nil {
		return lostConn(ctx, "receive hello", err)
	}
	m, err := s.received(first)
	if err != nil {
		return err
	}
	if m.T != msgHello {
		return protoErr("first message is type %d, not hello", m.T)
	}
	theirs := m.Hello
	if theirs.Replica != s.peer {
		return fmt.Errorf("%w: hello says %s, transport authenticated %s", ErrIdentityMismatch, theirs.Replica, s.peer)
	}
	if theirs.Policy != mine.Policy {
		return fmt.Errorf("%w: ours %s, theirs %s", ErrPolicyMismatch, mine.Policy, theirs.Policy)
	}
	if err := s.host.checkPeer(ctx, s.peer, theirs); err != nil {
		return err
	}

	start, err := s.host.startFor(ctx, s.peer, theirs.Cursor)
	if err != nil {
		return err
	}
	// Reconcile the collections both sides share with each other when
	// either asks, or when one side's store lost sessions (its generation
	// is behind): then no cursor or shared heads can be trusted.
	colls := intersect(mine.Colls, theirs.Colls)
	if len(colls) > 0 && (mine.Recon || theirs.Recon || mine.Gen != theirs.Gen) {
		upTo, err := s.host.reconBegin(ctx, s.peer, colls)
		if err != nil {
			return err
		}
		if s.host.coversAll(s.peer) && start < upTo {
			start = upTo
		}
		s.recon = newReconEngine(reconKey(mine.Replica, theirs.Replica, mine.Nonce, theirs.Nonce), mine.Replica < theirs.Replica)
	}
	myCursor := mine.Cursor
	if myCursor > theirs.Seq {
		// The peer's feed is shorter than what this side applied of it:
		// its store went back, and its positions will be reused. The peer
		// rescans (or reconciles) for this side, which starts from 0.
		myCursor = 0
	}
	p := newProtocol(s.cfg.window, s.host.lastSeq(), start, myCursor)
	if s.recon != nil {
		if !s.recon.pending {
			msgs, err := s.recon.start(ctx, s.host)
			if err != nil {
				return err
			}
			for _, m := range msgs {
				if err := s.send(ctx, &wireMsg{T: msgRecon, Recon: m}); err != nil {
					return err
				}
			}
		}
		p.setRecon(s.recon.busy(), 0)
	}

	frames := make(chan frameOrErr, 4*s.cfg.window+16)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			b, err := s.conn.Recv(ctx)
			select {
			case frames <- frameOrErr{b, err}:
			case <-ctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	defer wg.Wait()
	defer cancel()

	for {
		// Taken before the feed is read, so a write that commits while
		// this turn reads it wakes the next wait.
		grew := s.host.feedNotify()
		if err := s.sendWork(ctx, p); err != nil {
			return s.lastWords(ctx, frames, err)
		}
		if p.finished() {
			return s.host.finished(ctx, s.peer, p.acked)
		}
		// The feed can lag LastSeq for a moment while a concurrent write
		// (another session's apply, a local edit) finishes committing: then
		// there is something to send that cannot be read yet, and nothing
		// from the peer may ever wake this loop. The store wakes it when
		// the write has committed.
		var recheck <-chan struct{}
		if p.wantBatch() {
			recheck = grew
		}
		var f frameOrErr
		select {
		case f = <-frames:
		case <-recheck:
			continue
		case <-ctx.Done():
			return ctx.Err()
		}
		if f.err != nil {
			return lostConn(ctx, "receive", f.err)
		}
		m, err := s.received(f.b)
		if err != nil {
			return err
		}
		if err := s.handle(ctx, p, m); err != nil {
			return err
		}
		if s.cfg.progress != nil {
			s.cfg.progress(s.stats)
		}
	}
}

// sendWork sends whatever the protocol allows now: records the peer asked
// for, feed batches within the window, and an idle when all is sent.
// lastWords: a send failed, perhaps because the peer ended the session
// with an error message that is already on its way. Read what the peer
// sent (for at most a second) and report its error if it sent one.
func (s *session) lastWords(ctx context.Context, frames <-chan frameOrErr, sendErr error) error {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	for {
		select {
		case f := <-frames:
			if f.err != nil {
				return sendErr
			}
			if m, err := s.received(f.b); err != nil && errors.Is(err, ErrPeerError) {
				return err
			} else if err == nil && m.T == msgError {
				return sendErr
			}
		case <-ctx.Done():
			return sendErr
		}
	}
}

func (s *session) sendWork(ctx context.Context, p *protocol) error {
	for len(s.needs) > 0 && len(p.inflight) < p.window {
		n := s.needs[0]
		s.needs = s.needs[1:]
		recs, err := s.host.full(ctx, s.peer, n.Collection, n.ID)
		if err != nil {
			return err
		}
		p.needServed()
		if len(recs) == 0 {
			continue
		}
		if err := s.sendBatch(ctx, p, recs, p.sentUpTo); err != nil {
			return err
		}
	}
	for len(s.reconSends) > 0 && len(p.inflight) < p.window {
		recs, used, err := s.host.reconBatch(ctx, s.peer, s.reconSends, s.cfg.maxRecords, s.cfg.maxBytes)
		if err != nil {
			return err
		}
		s.reconSends = s.reconSends[used:]
		p.setRecon(s.recon.busy(), len(s.reconSends))
		if len(recs) == 0 {
			continue
		}
		if err := s.sendBatch(ctx, p, recs, p.sentUpTo); err != nil {
			return err
		}
	}
	// Learn the feed's end before deciding whether to read it: writes
	// that committed since the last turn fired a notification this turn no
	// longer waits on, so a turn that left them for "the next turn" could
	// wait for ever (TestSessionSendWorkReadsGrownFeed).
	p.feedGrew(s.host.lastSeq())
	for p.wantBatch() {
		p.feedGrew(s.host.lastSeq())
		recs, upTo, err := s.host.nextBatch(ctx, s.peer, p.sentUpTo, s.cfg.maxRecords, s.cfg.maxBytes)
		if err != nil {
			return err
		}
		if upTo <= p.sentUpTo && len(recs) == 0 {
			break // the feed holds nothing more after sentUpTo
		}
		if len(recs) == 0 {
			p.batchSent(upTo, false)
			continue
		}
		if err := s.sendBatch(ctx, p, recs, upTo); err != nil {
			return err
		}
	}
	p.feedGrew(s.host.lastSeq())
	if p.wantBatch() {
		// The feed grew while this turn read it: those writes committed
		// after the runner took the notification, which wakes the next
		// turn to send them.
		return nil
	}
	if m := p.idleToSend(); m != nil {
		if err := s.send(ctx, &wireMsg{T: msgIdle, Idle: m}); err != nil {
			return err
		}
		p.idleSentNow(*m)
	}
	return nil
}

// sendBatch sends records in as many frames as their size needs; only
// the last frame moves the peer's cursor to upTo.
func (s *session) sendBatch(ctx context.Context, p *protocol, recs []recordChanges, upTo uint64) error {
	groups, err := splitBatch(recs, frameBudget)
	if err != nil {
		return err
	}
	for i, g := range groups {
		u := p.sentUpTo
		if i == len(groups)-1 {
			u = upTo
		}
		if err := s.send(ctx, &wireMsg{T: msgBatch, Batch: &batchMsg{Records: g, UpTo: u}}); err != nil {
			return err
		}
		s.stats.RecordsSent += countRecords(g)
		p.batchSent(u, true)
		s.pending = append(s.pending, g)
	}
	return nil
}

func (s *session) handle(ctx context.Context, p *protocol, m *wireMsg) error {
	switch m.T {
	case msgBatch:
		if err := p.onBatch(m.Batch); err != nil {
			return err
		}
		s.stats.RecordsReceived += countRecords(m.Batch.Records)
		needs, conflicts, err := s.host.apply(ctx, s.peer, m.Batch.Records, m.Batch.UpTo)
		if err != nil {
			return err
		}
		s.stats.Conflicts += conflicts
		held := len(s.asked) > 0 || len(needs) > 0
		if err := s.settleNeeds(p, m.Batch.Records, needs); err != nil {
			return err
		}
		p.batchApplied(m.Batch.UpTo)
		p.feedGrew(s.host.lastSeq())
		if held && len(s.asked) == 0 {
			// Every record asked for has arrived: the cursor, held back
			// while one was missing, may move now.
			if err := s.host.cursorMoved(ctx, s.peer, p.applied); err != nil {
				return err
			}
		}
		if err := s.send(ctx, &wireMsg{T: msgAck, Ack: &ackMsg{Applied: p.applied, Need: needs, Asked: uint32(len(s.asked))}}); err != nil {
			return err
		}
	case msgAck:
		done, err := p.onAck(*m.Ack)
		if err != nil {
			return err
		}
		needed := make(map[needMsg]bool, len(m.Ack.Need))
		for _, n := range m.Ack.Need {
			needed[n] = true
		}
		for range done {
			recs := s.pending[0]
			s.pending = s.pending[1:]
			// A record the peer could not apply is not held there.
			held := recs[:0:0]
			for _, rc := range recs {
				if !needed[needMsg{Collection: rc.Collection, ID: rc.ID}] {
					held = append(held, rc)
				}
			}
			if err := s.host.acked(ctx, s.peer, held); err != nil {
				return err
			}
		}
		if len(s.needs)+len(m.Ack.Need) > maxRecordsPerBatch {
			return protoErr("too many records asked for")
		}
		for _, n := range m.Ack.Need {
			s.needs = append(s.needs, n)
			p.needQueued()
		}
	case msgIdle:
		moved, err := p.onIdle(*m.Idle)
		if err != nil {
			return err
		}
		if moved && len(s.asked) == 0 {
			if err := s.host.cursorMoved(ctx, s.peer, p.applied); err != nil {
				return err
			}
		}
	case msgRecon:
		if s.recon == nil {
			return protoErr("reconciliation frame in a session without one")
		}
		msgs, sends, err := s.recon.step(ctx, s.host, m.Recon)
		if err != nil {
			return err
		}
		for _, r := range msgs {
			if err := s.send(ctx, &wireMsg{T: msgRecon, Recon: r}); err != nil {
				return err
			}
		}
		s.reconSends = append(s.reconSends, sends...)
		p.setRecon(s.recon.busy(), len(s.reconSends))
	case msgHello:
		return protoErr("second hello")
	default:
		return protoErr("unexpected message type %d", m.T)
	}
	return nil
}
