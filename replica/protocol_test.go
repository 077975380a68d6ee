package replica

import (
	"errors"
	"testing"
)

// side pairs a protocol with the runner decisions the script makes.
type scriptSide struct {
	t    *testing.T
	name string
	p    *protocol
	out  []*wireMsg
}

func (s *scriptSide) pump() {
	if m := s.p.idleToSend(); m != nil {
		s.p.idleSentNow(*m)
		s.out = append(s.out, &wireMsg{T: msgIdle, Idle: m})
	}
}

func (s *scriptSide) take() *wireMsg {
	s.t.Helper()
	if len(s.out) == 0 {
		s.t.Fatalf("%s: nothing to send", s.name)
	}
	m := s.out[0]
	s.out = s.out[1:]
	return m
}

// TestProtocolOneSidedInitialSync scripts A (10 records) syncing with an
// empty B: B's merges grow B's feed, which B skips; both end after
// matching idles.
func TestProtocolOneSidedInitialSync(t *testing.T) {
	a := &scriptSide{t: t, name: "A", p: newProtocol(4, 10, 0, 0)}
	b := &scriptSide{t: t, name: "B", p: newProtocol(4, 0, 0, 0)}

	if !a.p.wantBatch() || b.p.wantBatch() {
		t.Fatalf("wantBatch: A %v B %v", a.p.wantBatch(), b.p.wantBatch())
	}
	a.p.batchSent(10, true)
	a.out = append(a.out, &wireMsg{T: msgBatch, Batch: &batchMsg{UpTo: 10}})
	a.pump() // inflight: no idle yet
	if len(a.out) != 1 {
		t.Fatalf("A idles with a batch in flight")
	}
	b.pump() // B has nothing: idle {0,0}
	if got := b.take(); got.T != msgIdle || *got.Idle != (idleMsg{}) {
		t.Fatalf("B first idle = %+v", got.Idle)
	}

	// B applies A's batch; the merges add 10 entries to B's feed.
	if err := b.p.onBatch(a.take().Batch); err != nil {
		t.Fatal(err)
	}
	b.p.batchApplied(10)
	b.p.feedGrew(10)
	b.out = append(b.out, &wireMsg{T: msgAck, Ack: &ackMsg{Applied: 10}})
	if !b.p.wantBatch() {
		t.Fatal("B should look at its grown feed")
	}
	b.p.batchSent(10, false) // every entry already at A's heads: skipped
	b.pump()
	if _, err := a.p.onIdle(idleMsg{}); err != nil { // B's first idle reaches A
		t.Fatal(err)
	}
	if a.p.finished() {
		t.Fatal("A finished before its batch was acknowledged")
	}
	done, err := a.p.onAck(*b.take().Ack)
	if err != nil || len(done) != 1 || done[0] != 10 {
		t.Fatalf("onAck = %v, %v", done, err)
	}
	a.pump() // A: idle {10, 0}
	moved, err := a.p.onIdle(*b.take().Idle)
	if err != nil || !moved {
		t.Fatalf("A onIdle(B's {10,10}) moved=%v err=%v", moved, err)
	}
	a.pump() // A's applied moved to 10: idle {10,10}
	if !a.p.finished() {
		t.Fatalf("A not finished: %+v", a.p)
	}
	for len(a.out) > 0 {
		m := a.take()
		if _, err := b.p.onIdle(*m.Idle); err != nil {
			t.Fatal(err)
		}
	}
	if !b.p.finished() {
		t.Fatalf("B not finished: %+v", b.p)
	}
}

// TestProtocolIdleResync: both sides already in sync end after one idle
// each way, with no batch.
func TestProtocolIdleResync(t *testing.T) {
	a := &scriptSide{t: t, name: "A", p: newProtocol(4, 500, 500, 700)}
	b := &scriptSide{t: t, name: "B", p: newProtocol(4, 700, 700, 500)}
	if a.p.wantBatch() || b.p.wantBatch() {
		t.Fatal("nothing to send, but a side wants a batch")
	}
	a.pump()
	b.pump()
	if _, err := a.p.onIdle(*b.take().Idle); err != nil {
		t.Fatal(err)
	}
	if _, err := b.p.onIdle(*a.take().Idle); err != nil {
		t.Fatal(err)
	}
	if !a.p.finished() || !b.p.finished() {
		t.Fatalf("finished A=%v B=%v", a.p.finished(), b.p.finished())
	}
	a.pump()
	b.pump()
	if len(a.out)+len(b.out) != 0 {
		t.Fatal("finished sides keep sending")
	}
}

// TestProtocolWindow: no more than window batches unacknowledged.
func TestProtocolWindow(t *testing.T) {
	p := newProtocol(2, 100, 0, 0)
	p.batchSent(10, true)
	p.batchSent(20, true)
	if p.wantBatch() {
		t.Fatal("window of 2 exceeded")
	}
	if p.idleToSend() != nil {
		t.Fatal("idle with batches in flight")
	}
	if _, err := p.onAck(ackMsg{Applied: 10}); err != nil {
		t.Fatal(err)
	}
	if !p.wantBatch() {
		t.Fatal("ack did not open the window")
	}
}

// TestProtocolRejects: a peer cannot acknowledge what was never sent, move
// its idle backwards, or send a batch after the end.
func TestProtocolRejects(t *testing.T) {
	p := newProtocol(4, 10, 0, 0)
	p.batchSent(5, true)
	if _, err := p.onAck(ackMsg{Applied: 6}); !errors.Is(err, ErrProtocol) {
		t.Fatalf("ack beyond sent: %v", err)
	}
	if _, err := p.onIdle(idleMsg{Seq: 3, Applied: 9}); !errors.Is(err, ErrProtocol) {
		t.Fatalf("idle applied beyond sent: %v", err)
	}
	if _, err := p.onIdle(idleMsg{Seq: 3, Applied: 5}); err != nil {
		t.Fatal(err)
	}
	if _, err := p.onIdle(idleMsg{Seq: 2, Applied: 5}); !errors.Is(err, ErrProtocol) {
		t.Fatalf("idle backwards: %v", err)
	}
	if err := p.onBatch(&batchMsg{UpTo: 1}); !errors.Is(err, ErrProtocol) {
		t.Fatalf("batch behind idle: %v", err)
	}
}
