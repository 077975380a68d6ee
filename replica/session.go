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
	// orderSends puts a reconciliation step's sends, in place, in the
	// order this side reads them fastest (before the core keeps them).
	orderSends(ctx context.Context, sends []reconSend) error
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

// session is the runner of one sync session: a thin loop around the
// session's core (syncCore) that does the I/O the core asks for. It owns
// the one goroutine it starts (a frame reader) and stops it before
// returning.
type session struct {
	conn   transport.Conn
	host   sessionHost
	cfg    sessionConfig
	peer   string
	core   *syncCore
	frames chan frameOrErr
}

// runSession runs a sync session to its end: both sides have sent and
// applied everything. The caller owns conn.
func runSession(ctx context.Context, conn transport.Conn, host sessionHost, cfg sessionConfig) (SyncStats, error) {
	cfg.defaults()
	peer := transport.Fingerprint(conn.RemoteIdentity())
	s := &session{conn: conn, host: host, cfg: cfg, peer: peer}
	err := s.run(ctx)
	if s.core == nil {
		return SyncStats{Peer: peer}, err
	}
	return s.core.Stats(), err
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

// run is the runner's loop. Each turn takes the store's feed notification,
// tells the core the feed's end (so a write that committed before the
// notification was taken is seen now, and one that commits later wakes
// the wait), carries out what the core asks, and waits for a frame (or,
// when the core has feed entries it could not read yet, the notification).
func (s *session) run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	mine, err := s.host.hello(ctx, s.peer)
	if err != nil {
		// Tell the peer why, best effort, as the core would.
		if b, eerr := encodeMsg(&wireMsg{T: msgError, Err: &errMsg{Code: errCode(err), Text: truncate(err.Error(), maxMessageText)}}); eerr == nil && ctx.Err() == nil {
			sendCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
			_ = s.conn.Send(sendCtx, b)
			cancel()
		}
		return err
	}
	mine.Nonce = make([]byte, reconNonceLen)
	rand.Read(mine.Nonce) // never fails (Go >= 1.24)
	s.core = newSyncCore(s.cfg, s.peer, mine)

	s.frames = make(chan frameOrErr, 4*s.cfg.window+16)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			b, err := s.conn.Recv(ctx)
			select {
			case s.frames <- frameOrErr{b, err}:
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
		// Taken before the feed's end is read, so a write that commits
		// after this turn reads it wakes the wait below.
		grew := s.host.feedNotify()
		if err := s.core.Step(coreEvent{kind: evTurn, lastSeq: s.host.lastSeq()}); err != nil {
			return err
		}
		waitFeed, done, err := s.drain(ctx)
		if done {
			return err
		}
		// The feed can lag LastSeq for a moment while a concurrent write
		// (another session's apply, a local edit) finishes committing: then
		// there is something to send that cannot be read yet, and nothing
		// from the peer may ever wake this loop. The store wakes it when
		// the write has committed.
		var recheck <-chan struct{}
		if waitFeed {
			recheck = grew
		}
		var f frameOrErr
		select {
		case f = <-s.frames:
		case <-recheck:
			continue
		case <-ctx.Done():
			f.err = ctx.Err()
		}
		ev := coreEvent{kind: evFrame, frame: f.b}
		if f.err != nil {
			ev = coreEvent{kind: evFailed, err: lostConn(ctx, "receive", f.err)}
			if ctx.Err() != nil {
				ev.err = ctx.Err()
			}
		}
		if err := s.core.Step(ev); err != nil {
			return err
		}
		if _, done, err := s.drain(ctx); done {
			return err
		}
		if s.cfg.progress != nil {
			s.cfg.progress(s.core.Stats())
		}
	}
}

// drain carries out everything the core asks until it waits for a frame:
// persist, send, perform the one request and step its answer. It returns
// whether the core waits for the feed too, and whether the session is over
// (with its error).
func (s *session) drain(ctx context.Context) (waitFeed, done bool, err error) {
	for s.core.HasReady() {
		rd := s.core.Ready()
		if rd.Done && rd.Err != nil {
			// What the peer acknowledged stays true; then the last words:
			// tell the peer why, best effort.
			_ = s.persist(context.WithoutCancel(ctx), &rd)
			if len(rd.Frames) > 0 && ctx.Err() == nil {
				sendCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
				sent := true
				for _, f := range rd.Frames {
					if s.conn.Send(sendCtx, f.b) != nil {
						sent = false
						break
					}
				}
				cancel()
				if sent {
					s.core.Advance()
				}
			}
			return false, true, rd.Err
		}
		// A Ready that finishes the session (rd.Done without an error) comes
		// from a core that has ended and takes no more events: a failure to
		// persist or send it ends the session here. Handing it to the core
		// would be refused, and the session would wait for a frame that never
		// comes until its context ended.
		if err := s.persist(ctx, &rd); err != nil {
			if rd.Done {
				return false, true, err
			}
			s.fail(err)
			continue
		}
		if err := s.sendFrames(ctx, rd.Frames); err != nil {
			if rd.Done {
				return false, true, err
			}
			s.fail(err)
			continue
		}
		s.core.Advance()
		if rd.Finished {
			if err := s.host.finished(ctx, s.peer, rd.PeerApplied); err != nil {
				return false, true, err
			}
			return false, true, nil
		}
		if rd.Req != nil {
			if err := s.core.Step(s.perform(ctx, rd.Req)); err != nil {
				return false, true, err
			}
		}
		waitFeed = rd.WaitFeed
	}
	return waitFeed, false, nil
}

// fail ends the session with err through the core, which then says the
// last words.
func (s *session) fail(err error) {
	_ = s.core.Step(coreEvent{kind: evFailed, err: err})
}

func (s *session) persist(ctx context.Context, rd *coreReady) error {
	for _, recs := range rd.Acked {
		if err := s.host.acked(ctx, s.peer, recs); err != nil {
			return err
		}
	}
	if rd.CursorMoved {
		if err := s.host.cursorMoved(ctx, s.peer, rd.Cursor); err != nil {
			return err
		}
	}
	return nil
}

func (s *session) sendFrames(ctx context.Context, frames []outFrame) error {
	for _, f := range frames {
		if err := s.conn.Send(ctx, f.b); err != nil {
			return s.lastWords(ctx, lostConn(ctx, "send", err))
		}
	}
	return nil
}

// perform does the I/O of one request and returns the event answering it.
func (s *session) perform(ctx context.Context, r *coreReq) coreEvent {
	switch r.kind {
	case reqAdmit:
		ev := coreEvent{kind: evAdmitted}
		if ev.err = s.host.checkPeer(ctx, s.peer, r.hello); ev.err != nil {
			return ev
		}
		if ev.start, ev.err = s.host.startFor(ctx, s.peer, r.hello.Cursor); ev.err != nil {
			return ev
		}
		if len(r.colls) > 0 {
			if ev.reconUpTo, ev.err = s.host.reconBegin(ctx, s.peer, r.colls); ev.err != nil {
				return ev
			}
			ev.coversAll = s.host.coversAll(s.peer)
		}
		ev.lastSeq = s.host.lastSeq()
		return ev
	case reqReconStart:
		ev := coreEvent{kind: evRecon}
		ev.msgs, ev.err = r.eng.start(ctx, s.host)
		return ev
	case reqReconStep:
		ev := coreEvent{kind: evRecon}
		ev.msgs, ev.sends, ev.err = r.eng.step(ctx, s.host, r.msg)
		if ev.err == nil {
			ev.err = s.host.orderSends(ctx, ev.sends)
		}
		return ev
	case reqReconExpand:
		ev := coreEvent{kind: evRecon}
		ev.sends, ev.err = r.eng.expand(ctx, s.host, r.sends[0])
		return ev
	case reqFull:
		ev := coreEvent{kind: evRecords}
		ev.recs, ev.err = s.host.full(ctx, s.peer, r.need.Collection, r.need.ID)
		return ev
	case reqReconBatch:
		ev := coreEvent{kind: evRecords}
		ev.recs, ev.used, ev.err = s.host.reconBatch(ctx, s.peer, r.sends, r.maxRecords, r.maxBytes)
		return ev
	case reqFeed:
		ev := coreEvent{kind: evRecords, lastSeq: s.host.lastSeq()}
		ev.recs, ev.upTo, ev.err = s.host.nextBatch(ctx, s.peer, r.after, r.maxRecords, r.maxBytes)
		return ev
	case reqApply:
		ev := coreEvent{kind: evApplied}
		ev.needs, ev.conflicts, ev.err = s.host.apply(ctx, s.peer, r.batch.Records, r.batch.UpTo)
		ev.lastSeq = s.host.lastSeq()
		return ev
	}
	return coreEvent{kind: evFailed, err: fmt.Errorf("replica: unknown request %d", r.kind)}
}

// lastWords: a send failed, perhaps because the peer ended the session
// with an error message that is already on its way. Read what the peer
// sent (for at most a second) and report its error if it sent one.
func (s *session) lastWords(ctx context.Context, sendErr error) error {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	for {
		select {
		case f := <-s.frames:
			if f.err != nil {
				return sendErr
			}
			m, err := decodeMsg(f.b)
			if err == nil && m.T == msgError {
				return fmt.Errorf("%w: %w: %s", ErrPeerError, errForCode(m.Err.Code), m.Err.Text)
			}
		case <-ctx.Done():
			return sendErr
		}
	}
}
