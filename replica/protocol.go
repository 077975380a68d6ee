package replica

// protocol is the deterministic core of one side of a sync session: it
// holds the session's positions and decides what to send next and when the
// session is over. It does no I/O, starts no goroutines and reads no clock;
// the session runner feeds it events and carries out its decisions, so its
// behaviour can be tested as a script of events.
//
// Positions are feed sequence numbers. "My feed" is this replica's change
// feed; "the peer's feed" is the other side's. The session ends when both
// sides have said, in matching idle messages, that each has sent all of its
// feed and applied all of the other's.
type protocol struct {
	window int // batches that may be unacknowledged at once

	lastSeq  uint64 // my feed's newest position (told by the runner)
	sentUpTo uint64 // my feed has been sent (or skipped) up to here
	acked    uint64 // the peer has applied my feed up to here
	inflight []uint64

	applied uint64 // I have applied the peer's feed up to here

	sentBatches uint64 // batch frames sent this session
	gotBatches  uint64 // batch frames received this session

	peerNeeds int // records the peer asked for and has not yet acknowledged
	myNeeds   int // records I asked for and have not yet received
	toServe   int // records the peer asked for that I have not yet sent

	reconBusy   bool // a reconciliation is under way on this side
	reconQueued int  // records reconciliation found the peer lacks, not yet sent

	peerIdle *idleMsg
	idleSent *idleMsg
	done     bool
}

func newProtocol(window int, myLastSeq, peerCursor, myCursor uint64) *protocol {
	if window <= 0 {
		window = 4
	}
	return &protocol{
		window:   window,
		lastSeq:  myLastSeq,
		sentUpTo: peerCursor,
		acked:    peerCursor,
		applied:  myCursor,
	}
}

// feedGrew records that my feed now reaches seq (a local write or a merge
// bumped it).
func (p *protocol) feedGrew(seq uint64) {
	if seq > p.lastSeq {
		p.lastSeq = seq
	}
}

// wantBatch reports whether the runner should read my feed after sentUpTo
// and send (or skip) the next batch.
func (p *protocol) wantBatch() bool {
	return !p.done && p.sentUpTo < p.lastSeq && len(p.inflight) < p.window
}

// batchSent records that my feed up to upTo has been handled: sent in a
// frame (sent=true) or skipped because the peer already had every record
// in it.
func (p *protocol) batchSent(upTo uint64, sent bool) {
	if upTo > p.sentUpTo {
		p.sentUpTo = upTo
	}
	if upTo > p.lastSeq {
		p.lastSeq = upTo
	}
	if sent {
		p.inflight = append(p.inflight, upTo)
		p.sentBatches++
	}
}

// onAck handles the peer's acknowledgement. It returns the positions of the
// batches it completes, oldest first, so the runner can record what the
// peer now holds.
func (p *protocol) onAck(a ackMsg) ([]uint64, error) {
	if a.Applied > p.sentUpTo {
		return nil, protoErr("ack of %d beyond sent %d", a.Applied, p.sentUpTo)
	}
	var done []uint64
	for len(p.inflight) > 0 && p.inflight[0] <= a.Applied {
		done = append(done, p.inflight[0])
		p.inflight = p.inflight[1:]
	}
	if a.Applied > p.acked {
		p.acked = a.Applied
	}
	p.peerNeeds = int(a.Asked)
	p.checkDone()
	return done, nil
}

// needAsked records that I asked the peer for n records in full, and
// needMet that n of them arrived and applied.
func (p *protocol) needAsked(n int) { p.myNeeds += n }
func (p *protocol) needMet(n int) {
	p.myNeeds -= n
	if p.myNeeds < 0 {
		p.myNeeds = 0
	}
	p.checkDone()
}

// setRecon records the state of this side's reconciliation: whether it
// still awaits the peer, and how many records it has yet to send.
func (p *protocol) setRecon(busy bool, queued int) {
	p.reconBusy, p.reconQueued = busy, queued
	p.checkDone()
}

// needQueued records that the peer asked for a record in full, and
// needServed that it went out.
func (p *protocol) needQueued() { p.toServe++ }
func (p *protocol) needServed() { p.toServe-- }

// onBatch checks an incoming batch's position before the runner applies
// it. Positions must not go backwards; a batch that repeats positions
// already applied is legal (a resend) and harmless.
func (p *protocol) onBatch(b *batchMsg) error {
	if p.done {
		return protoErr("batch after session end")
	}
	if p.peerIdle != nil && b.UpTo < p.peerIdle.Seq {
		return protoErr("batch for %d after idle at %d", b.UpTo, p.peerIdle.Seq)
	}
	return nil
}

// batchApplied records that the peer's feed up to upTo is durably applied.
func (p *protocol) batchApplied(upTo uint64) {
	p.gotBatches++
	if upTo > p.applied {
		p.applied = upTo
	}
}

// onIdle handles the peer's idle message. Frames arrive in order, so every
// batch up to idle.Seq has already been applied: the cursor may move to
// idle.Seq even past positions the peer skipped. It returns true when my
// cursor moved and should be persisted.
func (p *protocol) onIdle(m idleMsg) (bool, error) {
	if m.Applied > p.sentUpTo {
		return false, protoErr("peer claims %d applied, only %d sent", m.Applied, p.sentUpTo)
	}
	if p.peerIdle != nil && (m.Seq < p.peerIdle.Seq || m.Applied < p.peerIdle.Applied || m.Got < p.peerIdle.Got) {
		return false, protoErr("idle went backwards")
	}
	if m.Got > p.sentBatches {
		return false, protoErr("peer claims %d batches, %d sent", m.Got, p.sentBatches)
	}
	p.peerIdle = &m
	if m.Applied > p.acked {
		p.acked = m.Applied
	}
	// A peer whose feed ends below our cursor was restored from an older
	// copy: its feed positions were reused, so the cursor goes back too.
	moved := m.Seq != p.applied
	p.applied = m.Seq
	p.checkDone()
	return moved, nil
}

// idleToSend returns the idle message to send now, if any: when all of my
// feed is sent and acknowledged and my state differs from the last idle I
// sent.
func (p *protocol) idleToSend() *idleMsg {
	// An idle promises the peer this side has nothing more to do: not
	// while a record it asked for is still on its way.
	if p.done || p.sentUpTo < p.lastSeq || len(p.inflight) > 0 || p.toServe > 0 || p.myNeeds > 0 ||
		p.reconBusy || p.reconQueued > 0 {
		return nil
	}
	m := idleMsg{Seq: p.sentUpTo, Applied: p.applied, Got: p.gotBatches}
	if p.idleSent != nil && *p.idleSent == m {
		return nil
	}
	return &m
}

// idleSentNow records that m went out.
func (p *protocol) idleSentNow(m idleMsg) {
	p.idleSent = &m
	p.checkDone()
}

func (p *protocol) checkDone() {
	if p.peerIdle == nil || p.idleSent == nil {
		return
	}
	mine := idleMsg{Seq: p.sentUpTo, Applied: p.applied, Got: p.gotBatches}
	p.done = *p.idleSent == mine &&
		p.peerIdle.Got == p.sentBatches &&
		p.sentUpTo == p.lastSeq &&
		len(p.inflight) == 0 &&
		p.peerNeeds == 0 && p.myNeeds == 0 && p.toServe == 0 &&
		!p.reconBusy && p.reconQueued == 0 &&
		p.peerIdle.Seq == p.applied &&
		p.peerIdle.Applied == p.sentUpTo
}

// finished reports whether both sides have exchanged everything.
func (p *protocol) finished() bool { return p.done }
