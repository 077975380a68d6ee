package replica

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferrysync/ferry/transport"
)

// cutConn is one end of a pipe whose connection is cut at once in both
// directions when one end has sent cutAfter frames and sends another: that
// Send and every later Send on either end fail with transport.ErrCut, and
// both ends receive what was sent before the cut and then an error (the
// MemNetwork's Plan.CutAfter, on the pipe, without its timing).
type cutConn struct {
	*pipeConn
	cut      *atomic.Bool // shared by both ends
	cutAfter int
	sent     int
}

func (c *cutConn) Send(ctx context.Context, b []byte) error {
	if c.cut.Load() {
		return transport.ErrCut
	}
	if c.sent >= c.cutAfter {
		c.cut.Store(true)
		c.Close()
		return transport.ErrCut
	}
	c.sent++
	return c.pipeConn.Send(ctx, b)
}

// TestSessionCutAtEveryFrameEndsAtOnce: a connection cut at any frame of
// either side ends both sessions with ErrDisconnected (or the peer's
// error), never with the context's deadline. (The interleaving of
// TestSessionFinishingFrameLost is rare here; that test pins it.)
func TestSessionCutAtEveryFrameEndsAtOnce(t *testing.T) {
	seed := func() (*modelHost, *modelHost) {
		a, b := newModelHost("a"), newModelHost("b")
		for i := range 6 {
			a.write(fmt.Sprintf("notes/%d", i), fmt.Sprintf("a%d", i))
			b.write(fmt.Sprintf("notes/%d", i+3), fmt.Sprintf("b%d", i))
		}
		return a, b
	}
	cfg := sessionConfig{maxRecords: 2, window: 1}
	a, b := seed()
	sa, sb := syncModel(t, a, b, cfg)
	frames := max(sa.FramesSent, sb.FramesSent) + 2
	for round := range 2 {
		for _, side := range []string{"a", "b"} {
			for cut := 0; cut <= frames; cut++ {
				a, b := seed()
				pa, pb := pipePair(a.key, b.key)
				var cutFlag atomic.Bool
				ca := &cutConn{pipeConn: pa, cut: &cutFlag, cutAfter: 1 << 30}
				cb := &cutConn{pipeConn: pb, cut: &cutFlag, cutAfter: 1 << 30}
				if side == "a" {
					ca.cutAfter = cut
				} else {
					cb.cutAfter = cut
				}
				// The deadline only bounds a regression: a cut session ends
				// long before it, with a connection error, not the context's.
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				errB := make(chan error, 1)
				go func() {
					_, err := runSession(ctx, cb, b, cfg)
					errB <- err
				}()
				_, errA := runSession(ctx, ca, a, cfg)
				eb := <-errB
				cancel()
				pa.Close()
				for who, err := range map[string]error{"a": errA, "b": eb} {
					// A session may end cleanly when the cut came after
					// everything it needed; one that did not must say the
					// connection was lost.
					if err != nil && !errors.Is(err, ErrDisconnected) && !errors.Is(err, ErrPeerError) {
						t.Errorf("round %d, cut %s's sends after %d frames: %s ended with %v, want ErrDisconnected or ErrPeerError", round, side, cut, who, err)
					}
				}
			}
		}
	}
}

// TestSessionFinishingFrameLost: the Ready that finishes a session (the
// core has ended: Finished, Done, no error) carries this side's last idle;
// its send fails because the connection was cut, and lastWords has taken
// the reader's error off the frames channel. The session must end now with
// ErrDisconnected. It used to hand the failure to the ended core (refused),
// find nothing ready, and wait for a frame that could never come until its
// context ended: TestPropertyReplicasConverge's cut sessions hit this now
// and then under the race detector (a goroutine dump showed the session in
// run's select with its reader gone), each waiting out its 1-minute context,
// as would a background-loop session its 2-minute SessionTimeout.
func TestSessionFinishingFrameLost(t *testing.T) {
	a, b := newModelHost("a"), newModelHost("b")
	pa, _ := pipePair(a.key, b.key)
	var cutFlag atomic.Bool
	cutFlag.Store(true)
	conn := &cutConn{pipeConn: pa, cut: &cutFlag}
	s := &session{conn: conn, host: a, peer: transport.Fingerprint(b.key)}
	s.cfg.defaults()
	s.core = newSyncCore(s.cfg, s.peer, helloMsg{Replica: a.name})
	s.core.Ready() // the hello, sent
	s.core.Advance()
	// The reader saw the cut and exited.
	s.frames = make(chan frameOrErr, 1)
	s.frames <- frameOrErr{err: transport.ErrCut}
	// The core's last Ready: its idle, and the end.
	idle := &wireMsg{T: msgIdle, Idle: &idleMsg{}}
	bs, err := encodeMsg(idle)
	if err != nil {
		t.Fatal(err)
	}
	s.core.state = stDone
	s.core.rd = coreReady{Frames: []outFrame{{m: idle, b: bs}}, Finished: true, Done: true}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, done, err := s.drain(ctx)
	if !done || !errors.Is(err, ErrDisconnected) {
		t.Fatalf("drain after the finishing frame failed: done %v, err %v; want done with ErrDisconnected", done, err)
	}
}
