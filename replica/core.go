package replica

import (
	"errors"
	"fmt"
)

// syncCore is one side of a sync session as a deterministic state machine,
// in the style of etcd-io/raft (docs/sync.md, "State machine"): the runner
// feeds it events with Step (a frame received, the result of an I/O
// request, the feed's current end), takes a Ready (frames to send, facts
// to persist, at most one I/O request, whether the session is over), does
// what it says, and calls Advance. The core makes every protocol
// decision: the hello's checks, whether to reconcile, which records to
// send and when (the window of unacknowledged batches), the records asked
// for in full (needs), what an acknowledgement tells about the peer,
// idles and the end, errors and protocol violations. It does no I/O,
// starts no goroutines, reads no clock and draws no random numbers (the
// hello's nonce comes in with the hello): the same events give the same
// Readys.
//
// The one thing it hands out to be run is the reconciliation engine: a
// reconStart or reconStep request carries the engine, and the runner runs
// it over the host's reconciliation index (reconData), as raft reads its
// log through its Storage; the engine's reads are deterministic given the
// index, and its results come back through Step like any other.
type syncCore struct {
	cfg  sessionConfig
	peer string // the identity the transport authenticated
	mine helloMsg

	state  coreState
	theirs *helloMsg
	p      *protocol
	stats  SyncStats

	pending [][]recordChanges // sent batches awaiting ack, oldest first
	needs   []needMsg         // records the peer asked for in full, not yet served
	asked   map[needMsg]bool  // records I asked the peer for, not yet received

	recon      *reconEngine // nil when the session does not reconcile
	reconColls []string     // the collections it covers
	reconSends []reconSend  // records reconciliation found the peer lacks, not yet sent
	// reconRecs counts the records (sends other than spans) in
	// reconSends, and reconPeak is the most it held at once: a batch and
	// an expansion at most (TestReconSendsStayBounded).
	reconRecs, reconPeak int

	req      *coreReq   // the request handed out and not yet answered
	applying *batchMsg  // the batch the outstanding apply request is for
	heldBack bool       // a record was awaited before that apply
	feedDry  bool       // this turn's feed read found nothing readable after sentUpTo
	rd       coreReady  // what the next Ready hands out
	handed   *coreReady // the Ready handed out and not yet advanced
}

type coreState uint8

const (
	stHello coreState = iota // hello sent, awaiting the peer's
	stAdmit                  // awaiting the host's verdict on the peer
	stRun                    // exchanging
	stDone                   // over (see coreReady.Err)
)

func (s coreState) String() string {
	return [...]string{"hello", "admit", "run", "done"}[s]
}

// reqKind names an I/O request of the core.
type reqKind uint8

const (
	// reqAdmit: check the peer's hello (host.checkPeer), find where to
	// start this side's feed (host.startFor with the peer's cursor) and,
	// when colls is not empty, begin a reconciliation over them
	// (host.reconBegin, host.coversAll). Answer: evAdmitted.
	reqAdmit reqKind = iota + 1
	// reqReconStart: the initiator's first reconciliation frames
	// (eng.start). Answer: evRecon.
	reqReconStart
	// reqReconStep: the engine's answer to the peer's frame msg
	// (eng.step). Answer: evRecon.
	reqReconStep
	// reqFull: the whole of record need, for a peer that asked for it
	// (host.full). Answer: evRecords.
	reqFull
	// reqReconBatch: records reconciliation found the peer lacks, from
	// sends (host.reconBatch). Answer: evRecords with used.
	reqReconBatch
	// reqFeed: this side's feed end (host.lastSeq) and then its next batch
	// after `after` (host.nextBatch). Answer: evRecords with upTo, lastSeq.
	reqFeed
	// reqApply: apply the peer's batch durably, cursor to batch.UpTo in
	// the same write (host.apply), then this side's feed end. Answer:
	// evApplied.
	reqApply
	// reqReconExpand: what the span send sends[0] stands for, its first
	// buckets' records then the span of the rest (eng.expand). Answer:
	// evRecon with sends, which replace the span in the core's queue.
	reqReconExpand
)

func (k reqKind) String() string {
	return [...]string{"?", "admit", "recon-start", "recon-step", "full", "recon-batch", "feed", "apply", "recon-expand"}[k]
}

// coreReq is an I/O request: the runner performs it and answers with the
// event its kind names.
type coreReq struct {
	kind       reqKind
	hello      *helloMsg    // reqAdmit: the peer's hello
	colls      []string     // reqAdmit: collections to reconcile (none: no reconciliation)
	eng        *reconEngine // reqReconStart, reqReconStep, reqReconExpand
	msg        *reconMsg    // reqReconStep
	need       needMsg      // reqFull
	sends      []reconSend  // reqReconBatch, reqReconExpand
	after      uint64       // reqFeed
	at         int          // reqReconExpand: the index of the span in the core's queue
	batch      *batchMsg    // reqApply
	maxRecords int          // reqReconBatch, reqFeed
	maxBytes   int          // reqReconBatch, reqFeed
}

// evKind names an event the core steps on.
type evKind uint8

const (
	// evFrame: a frame received from the peer (frame).
	evFrame evKind = iota + 1
	// evTurn: the runner begins a turn (it took the store's feed
	// notification first); lastSeq is this side's feed end now.
	evTurn
	// evAdmitted answers reqAdmit: start, reconUpTo, coversAll, lastSeq.
	evAdmitted
	// evRecon answers reqReconStart and reqReconStep: msgs, sends.
	evRecon
	// evRecords answers reqFull, reqReconBatch (used) and reqFeed (upTo,
	// lastSeq read before the feed).
	evRecords
	// evApplied answers reqApply: needs, conflicts, lastSeq after.
	evApplied
	// evFailed: the runner's I/O failed (err): the session ends.
	evFailed
)

func (k evKind) String() string {
	return [...]string{"?", "frame", "turn", "admitted", "recon", "records", "applied", "failed"}[k]
}

// coreEvent is one input of the core. Each result event carries err when
// its request failed; the session then ends with that error.
type coreEvent struct {
	kind      evKind
	frame     []byte
	lastSeq   uint64
	start     uint64 // evAdmitted: where this side's feed starts for the peer
	reconUpTo uint64 // evAdmitted: the feed position the reconciliation covers
	coversAll bool   // evAdmitted: it covers every collection the peer may see
	msgs      []*reconMsg
	sends     []reconSend
	recs      []recordChanges
	upTo      uint64
	used      int
	needs     []needMsg
	conflicts int
	err       error
}

// outFrame is a frame to send: the message and its encoding.
type outFrame struct {
	m *wireMsg
	b []byte
}

// coreReady is what the core asks of the runner, to be done in this
// order: persist Acked and Cursor, send Frames, then either finish
// (Finished: host.finished, then the session is over), end (Done with
// Err: the frames are the last words, sent best effort), or perform Req
// and Step its answer. With none of these, the runner waits for a frame,
// or, when WaitFeed, for a frame or the store's feed notification.
type coreReady struct {
	// Acked lists batches the peer acknowledged: it now holds these
	// records at the heads sent (host.acked, one call per batch).
	Acked [][]recordChanges
	// CursorMoved: persist Cursor as how far this side applied the
	// peer's feed (host.cursorMoved).
	CursorMoved bool
	Cursor      uint64
	Frames      []outFrame
	Req         *coreReq
	// WaitFeed: this side has feed entries to send that its last read
	// could not see yet (a write still committing).
	WaitFeed bool
	// Finished: both sides exchanged everything; the runner records it
	// (host.finished with PeerApplied) and the session is over.
	Finished    bool
	PeerApplied uint64
	// Done: the session is over; Err says why when it failed.
	Done bool
	Err  error
}

func (r *coreReady) empty() bool {
	// WaitFeed counts: a Ready that only says "wait for the feed too" must
	// reach the runner, or it waits for the peer's frames alone while its
	// own entries become readable (TestSessionFeedLagDoesNotStall stalled
	// in about 1 run in 40 when nothing else was in that Ready).
	return len(r.Acked) == 0 && !r.CursorMoved && len(r.Frames) == 0 && r.Req == nil &&
		!r.Finished && !r.Done && !r.WaitFeed
}

// errCoreMisuse: the runner stepped an event the core did not ask for.
var errCoreMisuse = errors.New("replica: session core: event out of turn")

// newSyncCore starts one side of a session with peer: mine is this side's
// hello (nonce included). The first Ready sends it.
func newSyncCore(cfg sessionConfig, peer string, mine helloMsg) *syncCore {
	cfg.defaults()
	c := &syncCore{cfg: cfg, peer: peer, mine: mine}
	c.stats.Peer = peer
	c.send(&wireMsg{T: msgHello, Hello: &c.mine})
	return c
}

// Stats returns the session's counts so far: frames are counted once the
// Ready holding them is advanced.
func (c *syncCore) Stats() SyncStats { return c.stats }

// HasReady reports whether Ready has something for the runner.
func (c *syncCore) HasReady() bool { return !c.rd.empty() }

// Ready hands out what the core asks of the runner. Each Ready is handed
// out once; Advance acknowledges it once handled.
func (c *syncCore) Ready() coreReady {
	rd := c.rd
	c.rd = coreReady{}
	c.handed = &rd
	return rd
}

// Advance acknowledges that the last Ready handed out was handled: its
// frames went out (they count in the stats now).
func (c *syncCore) Advance() {
	if c.handed == nil {
		return
	}
	for _, f := range c.handed.Frames {
		c.stats.FramesSent++
		c.stats.BytesSent += int64(len(f.b))
		if f.m.T == msgBatch {
			c.stats.RecordsSent += countRecords(f.m.Batch.Records)
		}
	}
	c.handed = nil
}

// Done reports whether the session is over.
func (c *syncCore) Done() bool { return c.state == stDone }

// Step feeds one event to the core. It returns errCoreMisuse (and changes
// nothing) for an event out of turn: a frame or a turn while a request is
// outstanding, a result of a request not made, any event after the end.
// Everything else, including every fault of the peer, ends up in a Ready.
func (c *syncCore) Step(ev coreEvent) error {
	if c.state == stDone {
		return fmt.Errorf("%w: %s after the session ended", errCoreMisuse, ev.kind)
	}
	switch ev.kind {
	case evFailed:
		c.req, c.applying = nil, nil
		c.fail(ev.err)
		return nil
	case evFrame, evTurn:
		if c.req != nil {
			return fmt.Errorf("%w: %s while %s is outstanding", errCoreMisuse, ev.kind, c.req.kind)
		}
		if ev.kind == evTurn {
			c.turn(ev.lastSeq)
			return nil
		}
		c.frame(ev.frame)
		return nil
	}
	want := map[evKind][]reqKind{
		evAdmitted: {reqAdmit},
		evRecon:    {reqReconStart, reqReconStep, reqReconExpand},
		evRecords:  {reqFull, reqReconBatch, reqFeed},
		evApplied:  {reqApply},
	}[ev.kind]
	if c.req == nil || !containsKind(want, c.req.kind) {
		return fmt.Errorf("%w: %s answers no request", errCoreMisuse, ev.kind)
	}
	req := c.req
	c.req = nil
	if ev.err != nil {
		c.applying = nil
		c.fail(ev.err)
		return nil
	}
	switch req.kind {
	case reqAdmit:
		c.admitted(ev)
	case reqReconStart:
		c.reconSendFrames(ev.msgs)
		c.p.setRecon(c.recon.busy(), 0)
		c.state = stRun
		c.pump()
	case reqReconStep:
		c.reconSendFrames(ev.msgs)
		c.reconSends = append(c.reconSends, ev.sends...)
		c.queuedSends(ev.sends, 0)
	case reqFull:
		c.p.needServed()
		if len(ev.recs) > 0 {
			c.sendBatch(ev.recs, c.p.sentUpTo)
		}
		c.pump()
	case reqReconExpand:
		at := req.at
		c.reconSends = append(append(c.reconSends[:at:at], ev.sends...), c.reconSends[at+1:]...)
		c.queuedSends(ev.sends, 0) // the span replaced was no record
		c.pump()
	case reqReconBatch:
		if ev.used < 0 || ev.used > len(c.reconSends) {
			c.fail(fmt.Errorf("replica: reconciliation batch used %d of %d", ev.used, len(c.reconSends)))
			return nil
		}
		c.reconSends = c.reconSends[ev.used:]
		c.queuedSends(nil, ev.used) // a batch uses records only (the host sees none of the spans)
		if ev.used == 0 && len(ev.recs) == 0 {
			// A host that consumes nothing would be asked again for ever.
			c.fail(errors.New("replica: reconciliation batch consumed nothing"))
			return nil
		}
		if len(ev.recs) > 0 {
			c.sendBatch(ev.recs, c.p.sentUpTo)
		}
		c.pump()
	case reqFeed:
		c.p.feedGrew(ev.lastSeq)
		switch {
		case ev.upTo <= c.p.sentUpTo && len(ev.recs) == 0:
			c.feedDry = true // the feed holds nothing readable after sentUpTo
		case len(ev.recs) == 0:
			c.p.batchSent(ev.upTo, false)
		default:
			c.sendBatch(ev.recs, ev.upTo)
		}
		c.pump()
	case reqApply:
		c.applied(ev)
	}
	return nil
}

func containsKind(ks []reqKind, k reqKind) bool {
	for _, x := range ks {
		if x == k {
			return true
		}
	}
	return false
}

// request hands out r; nothing else happens until its answer is stepped.
func (c *syncCore) request(r *coreReq) {
	c.req = r
	c.rd.Req = r
}

func (c *syncCore) send(m *wireMsg) {
	b, err := encodeMsg(m)
	if err != nil {
		c.fail(err)
		return
	}
	c.rd.Frames = append(c.rd.Frames, outFrame{m: m, b: b})
}

// fail ends the session with err. The peer is told why (the code keeps
// the error's class), unless the peer itself ended it with an error.
func (c *syncCore) fail(err error) {
	if c.state == stDone {
		return
	}
	if err == nil {
		err = errors.New("replica: session failed")
	}
	c.state = stDone
	c.rd.Req = nil
	c.rd.WaitFeed = false
	if !errors.Is(err, ErrPeerError) {
		m := &wireMsg{T: msgError, Err: &errMsg{Code: errCode(err), Text: truncate(err.Error(), maxMessageText)}}
		if b, eerr := encodeMsg(m); eerr == nil {
			c.rd.Frames = append(c.rd.Frames, outFrame{m: m, b: b})
		}
	}
	c.rd.Done, c.rd.Err = true, err
}

// errCode is the code an Error frame carries for err, so the peer
// classifies the failure alike (see errForCode).
func errCode(err error) uint16 {
	switch {
	case errors.Is(err, ErrPolicyMismatch):
		return errCodePolicy
	case errors.Is(err, ErrVersionMismatch):
		return errCodeVersion
	case errors.Is(err, ErrIdentityMismatch):
		return errCodeIdentity
	case errors.Is(err, ErrProtocol):
		return errCodeProtocol
	case errors.Is(err, ErrNoConsent):
		return errCodeConsent
	}
	return errCodeInternal
}

// frame handles one frame from the peer.
func (c *syncCore) frame(b []byte) {
	c.stats.FramesReceived++
	c.stats.BytesReceived += int64(len(b))
	m, err := decodeMsg(b)
	if err != nil {
		c.fail(err)
		return
	}
	if m.T == msgError {
		c.fail(fmt.Errorf("%w: %w: %s", ErrPeerError, errForCode(m.Err.Code), m.Err.Text))
		return
	}
	switch c.state {
	case stHello:
		c.hello(m)
	case stRun:
		c.handle(m)
	default:
		c.fail(fmt.Errorf("replica: session core: frame in state %s", c.state))
	}
}

// hello checks the peer's hello: the identity the transport authenticated,
// the policy set; then the host checks consent and where to start.
func (c *syncCore) hello(m *wireMsg) {
	if m.T != msgHello {
		c.fail(protoErr("first message is type %d, not hello", m.T))
		return
	}
	theirs := m.Hello
	if theirs.Replica != c.peer {
		c.fail(fmt.Errorf("%w: hello says %s, transport authenticated %s", ErrIdentityMismatch, theirs.Replica, c.peer))
		return
	}
	if theirs.Policy != c.mine.Policy {
		c.fail(fmt.Errorf("%w: ours %s, theirs %s", ErrPolicyMismatch, c.mine.Policy, theirs.Policy))
		return
	}
	c.theirs = theirs
	// Reconcile the collections both sides share with each other when
	// either asks, or when one side's store lost sessions (its generation
	// is behind): then no cursor or shared heads can be trusted.
	colls := intersect(c.mine.Colls, theirs.Colls)
	if len(colls) > 0 && (c.mine.Recon || theirs.Recon || c.mine.Gen != theirs.Gen) {
		c.reconColls = colls
	}
	c.state = stAdmit
	c.request(&coreReq{kind: reqAdmit, hello: theirs, colls: c.reconColls})
}

// admitted: the host accepted the peer. Set up the positions and, when the
// session reconciles, the engine.
func (c *syncCore) admitted(ev coreEvent) {
	start := ev.start
	if c.reconColls != nil {
		if ev.coversAll && start < ev.reconUpTo {
			start = ev.reconUpTo
		}
		c.recon = newReconEngine(reconKey(c.mine.Replica, c.theirs.Replica, c.mine.Nonce, c.theirs.Nonce), c.mine.Replica < c.theirs.Replica)
	}
	myCursor := c.mine.Cursor
	if myCursor > c.theirs.Seq {
		// The peer's feed is shorter than what this side applied of it:
		// its store went back, and its positions will be reused. The peer
		// rescans (or reconciles) for this side, which starts from 0.
		myCursor = 0
	}
	c.p = newProtocol(c.cfg.window, ev.lastSeq, start, myCursor)
	if c.recon != nil {
		if !c.recon.pending {
			c.request(&coreReq{kind: reqReconStart, eng: c.recon})
			return
		}
		c.p.setRecon(c.recon.busy(), 0)
	}
	c.state = stRun
	c.pump()
}

func (c *syncCore) reconSendFrames(msgs []*reconMsg) {
	for _, m := range msgs {
		c.send(&wireMsg{T: msgRecon, Recon: m})
	}
}

// turn begins a runner's turn: the feed may have grown (lastSeq), and
// this side sends what it can.
func (c *syncCore) turn(lastSeq uint64) {
	if c.state != stRun {
		return
	}
	c.feedDry = false
	c.p.feedGrew(lastSeq)
	c.pump()
}

// queuedSends counts the records added to and removed from reconSends
// and tells the protocol how many sends are queued.
func (c *syncCore) queuedSends(added []reconSend, removed int) {
	for _, s := range added {
		if s.span == nil {
			c.reconRecs++
		}
	}
	c.reconRecs -= removed
	c.reconPeak = max(c.reconPeak, c.reconRecs)
	c.p.setRecon(c.recon.busy(), len(c.reconSends))
}

// pump sends whatever the protocol allows now, one request at a time:
// records the peer asked for, records reconciliation found it lacks, feed
// batches within the window; then an idle when all is sent, and the end
// when both sides are done.
func (c *syncCore) pump() {
	if c.state != stRun || c.req != nil {
		return
	}
	if len(c.needs) > 0 && len(c.p.inflight) < c.p.window {
		n := c.needs[0]
		c.needs = c.needs[1:]
		c.request(&coreReq{kind: reqFull, need: n})
		return
	}
	if len(c.reconSends) > 0 && len(c.p.inflight) < c.p.window {
		// The records before the first span; spans are expanded until
		// they fill a batch, and a host never sees one.
		k := 0
		for k < len(c.reconSends) && c.reconSends[k].span == nil {
			k++
		}
		if k < len(c.reconSends) && k < c.cfg.maxRecords {
			c.request(&coreReq{kind: reqReconExpand, eng: c.recon, sends: c.reconSends[k : k+1], at: k})
			return
		}
		c.request(&coreReq{kind: reqReconBatch, sends: c.reconSends[:k], maxRecords: c.cfg.maxRecords, maxBytes: c.cfg.maxBytes})
		return
	}
	if !c.feedDry && c.p.wantBatch() {
		c.request(&coreReq{kind: reqFeed, after: c.p.sentUpTo, maxRecords: c.cfg.maxRecords, maxBytes: c.cfg.maxBytes})
		return
	}
	if c.p.wantBatch() {
		c.rd.WaitFeed = true // entries counted but not readable yet
		return
	}
	if m := c.p.idleToSend(); m != nil {
		c.send(&wireMsg{T: msgIdle, Idle: m})
		c.p.idleSentNow(*m)
	}
	if c.p.finished() {
		c.state = stDone
		c.rd.Finished, c.rd.PeerApplied, c.rd.Done = true, c.p.acked, true
	}
}

// sendBatch sends records in as many frames as their size needs; only
// the last frame moves the peer's cursor to upTo.
func (c *syncCore) sendBatch(recs []recordChanges, upTo uint64) {
	groups, err := splitBatch(recs, frameBudget)
	if err != nil {
		c.fail(err)
		return
	}
	for i, g := range groups {
		u := c.p.sentUpTo
		if i == len(groups)-1 {
			u = upTo
		}
		c.send(&wireMsg{T: msgBatch, Batch: &batchMsg{Records: g, UpTo: u}})
		c.p.batchSent(u, true)
		c.pending = append(c.pending, g)
	}
}

// handle handles one frame of a running session.
func (c *syncCore) handle(m *wireMsg) {
	switch m.T {
	case msgBatch:
		if err := c.p.onBatch(m.Batch); err != nil {
			c.fail(err)
			return
		}
		c.stats.RecordsReceived += countRecords(m.Batch.Records)
		c.applying = m.Batch
		c.heldBack = len(c.asked) > 0
		c.request(&coreReq{kind: reqApply, batch: m.Batch})
	case msgAck:
		done, err := c.p.onAck(*m.Ack)
		if err != nil {
			c.fail(err)
			return
		}
		needed := make(map[needMsg]bool, len(m.Ack.Need))
		for _, n := range m.Ack.Need {
			needed[n] = true
		}
		for range done {
			recs := c.pending[0]
			c.pending = c.pending[1:]
			// A record the peer could not apply is not held there.
			held := recs[:0:0]
			for _, rc := range recs {
				if !needed[needMsg{Collection: rc.Collection, ID: rc.ID}] {
					held = append(held, rc)
				}
			}
			c.rd.Acked = append(c.rd.Acked, held)
		}
		if len(c.needs)+len(m.Ack.Need) > maxRecordsPerBatch {
			c.fail(protoErr("too many records asked for"))
			return
		}
		for _, n := range m.Ack.Need {
			c.needs = append(c.needs, n)
			c.p.needQueued()
		}
	case msgIdle:
		moved, err := c.p.onIdle(*m.Idle)
		if err != nil {
			c.fail(err)
			return
		}
		if moved && len(c.asked) == 0 {
			c.rd.CursorMoved, c.rd.Cursor = true, c.p.applied
		}
	case msgRecon:
		if c.recon == nil {
			c.fail(protoErr("reconciliation frame in a session without one"))
			return
		}
		c.request(&coreReq{kind: reqReconStep, eng: c.recon, msg: m.Recon})
	case msgHello:
		c.fail(protoErr("second hello"))
	default:
		c.fail(protoErr("unexpected message type %d", m.T))
	}
}

// applied: the batch being applied is durable; settle the records asked
// for, and acknowledge.
func (c *syncCore) applied(ev coreEvent) {
	b := c.applying
	c.applying = nil
	c.stats.Conflicts += ev.conflicts
	held := c.heldBack || len(ev.needs) > 0
	if err := c.settleNeeds(b.Records, ev.needs); err != nil {
		c.fail(err)
		return
	}
	c.p.batchApplied(b.UpTo)
	c.p.feedGrew(ev.lastSeq)
	if held && len(c.asked) == 0 {
		// Every record asked for has arrived: the cursor, held back
		// while one was missing, may move now.
		c.rd.CursorMoved, c.rd.Cursor = true, c.p.applied
	}
	c.send(&wireMsg{T: msgAck, Ack: &ackMsg{Applied: c.p.applied, Need: ev.needs, Asked: uint32(len(c.asked))}})
}

// settleNeeds updates the records asked for after a batch was applied:
// those that applied are met, those that did not are asked for. A record
// that was asked for and fails again, in full, cannot be applied at all.
func (c *syncCore) settleNeeds(recs []recordChanges, failed []needMsg) error {
	if c.asked == nil {
		c.asked = map[needMsg]bool{}
	}
	bad := make(map[needMsg]bool, len(failed))
	for _, n := range failed {
		bad[n] = true
	}
	met := 0
	for _, rc := range recs {
		n := needMsg{Collection: rc.Collection, ID: rc.ID}
		if c.asked[n] && bad[n] {
			return protoErr("record %s/%s cannot be applied even in full", n.Collection, n.ID)
		}
		if c.asked[n] && !rc.Partial {
			delete(c.asked, n)
			met++
		}
	}
	// In the order the host reported them, so the core stays
	// deterministic (a map's order is not).
	for _, n := range failed {
		if !c.asked[n] {
			c.asked[n] = true
			c.p.needAsked(1)
		}
	}
	c.p.needMet(met)
	return nil
}
