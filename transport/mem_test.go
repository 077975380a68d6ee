package transport

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"io"
	"slices"
	"sync"
	"testing"
	"time"
)

var (
	keyA, keyB, keyC = testKey(1), testKey(2), testKey(3)
	pubA, pubB, pubC = pubOf(keyA), pubOf(keyB), pubOf(keyC)
)

func newMem(t *testing.T, seed int64) (*MemNetwork, *logLines) {
	t.Helper()
	lg := newLog(t)
	n := NewMemNetwork(seed, lg.log)
	t.Cleanup(func() { _ = n.Close() })
	return n, lg
}

// memPair dials from "a" (pubA) to listener "b" (pubB) and accepts.
func memPair(t *testing.T, n *MemNetwork, ln *MemListener) (a, b *MemConn) {
	t.Helper()
	ctx := context.Background()
	dc, err := n.Dialer("a", pubA).Dial(ctx, ln.Addr())
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	ac, err := ln.Accept(ctx)
	if err != nil {
		t.Fatalf("accept: %v", err)
	}
	return dc.(*MemConn), ac.(*MemConn)
}

func listenB(t *testing.T, n *MemNetwork) *MemListener {
	t.Helper()
	ln, err := n.Listen("b", pubB)
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

func TestMemInOrderBothWays(t *testing.T) {
	n, _ := newMem(t, 1)
	a, b := memPair(t, n, listenB(t, n))
	if !a.RemoteIdentity().Equal(pubB) || !b.RemoteIdentity().Equal(pubA) {
		t.Fatal("identities are not the registered ones")
	}
	for i := range 100 {
		mustSend(t, a, frameN(i))
		mustSend(t, b, frameN(1000+i))
	}
	for i := range 100 {
		mustRecv(t, b, frameN(i))
		mustRecv(t, a, frameN(1000+i))
	}
	mustSend(t, a, nil)
	if f, err := b.Recv(context.Background()); err != nil || f == nil || len(f) != 0 {
		t.Fatalf("empty frame came back as %#v, %v; want a non-nil empty slice", f, err)
	}
	// The receiver owns the frame; the sender may reuse its buffer.
	buf := []byte("mutable")
	mustSend(t, a, buf)
	copy(buf, "XXXXXXX")
	mustRecv(t, b, []byte("mutable"))

	want := Stats{FramesSent: 102, FramesRecv: 100, BytesSent: 100*10 + 7, BytesRecv: 100 * 10}
	if got := a.Stats(); got != want {
		t.Fatalf("a.Stats() = %+v, want %+v", got, want)
	}
	if err := a.Send(context.Background(), make([]byte, DefaultMaxFrame+1)); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatal("oversized Send not rejected with ErrFrameTooLarge")
	}
}

func TestMemCloseSemantics(t *testing.T) {
	n, _ := newMem(t, 1)
	ln := listenB(t, n)
	a, b := memPair(t, n, ln)
	ctx := context.Background()
	for i := range 3 {
		mustSend(t, a, frameN(i))
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := a.Send(ctx, []byte("x")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Send after Close: %v, want ErrClosed", err)
	}
	if _, err := a.Recv(ctx); !errors.Is(err, ErrClosed) {
		t.Fatalf("Recv after Close: %v, want ErrClosed", err)
	}
	// The peer drains what was sent, then sees io.EOF.
	for i := range 3 {
		mustRecv(t, b, frameN(i))
	}
	if _, err := b.Recv(ctx); err != io.EOF {
		t.Fatalf("Recv after peer closed: %v, want io.EOF", err)
	}
	if err := b.Send(ctx, []byte("x")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Send to a closed peer: %v, want ErrClosed", err)
	}

	// A pending Recv is released by Close.
	c, d := memPair(t, n, ln)
	errc := make(chan error, 1)
	go func() { _, err := c.Recv(ctx); errc <- err }()
	_ = c.Close()
	if err := <-errc; !errors.Is(err, ErrClosed) {
		t.Fatalf("pending Recv after Close: %v, want ErrClosed", err)
	}
	_ = d.Close()

	// A dialed but never accepted connection is closed with its listener.
	dc, err := n.Dialer("a", pubA).Dial(ctx, "b")
	if err != nil {
		t.Fatal(err)
	}
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := dc.Recv(ctx); err != io.EOF {
		t.Fatalf("Recv on a conn its listener dropped: %v, want io.EOF", err)
	}
	if _, err := ln.Accept(ctx); !errors.Is(err, ErrClosed) {
		t.Fatalf("Accept after Close: %v, want ErrClosed", err)
	}
	if _, err := n.Dialer("a", pubA).Dial(ctx, "b"); !errors.Is(err, ErrRefused) {
		t.Fatalf("Dial to a closed listener: %v, want ErrRefused", err)
	}

	// Closing the network closes everything.
	ln2, _ := n.Listen("b", pubB)
	e, f := memPair(t, n, ln2)
	go func() { _, err := f.Recv(ctx); errc <- err }()
	_ = n.Close()
	if err := <-errc; !errors.Is(err, ErrClosed) {
		t.Fatalf("pending Recv after network Close: %v, want ErrClosed", err)
	}
	if err := e.Send(ctx, []byte("x")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Send after network Close: %v, want ErrClosed", err)
	}
	if _, err := n.Dialer("a", pubA).Dial(ctx, "b"); !errors.Is(err, ErrClosed) {
		t.Fatalf("Dial after network Close: %v, want ErrClosed", err)
	}
	if _, err := ln2.Accept(ctx); !errors.Is(err, ErrClosed) {
		t.Fatalf("Accept after network Close: %v, want ErrClosed", err)
	}
}

func TestMemContextCancellation(t *testing.T) {
	n, _ := newMem(t, 1)
	n.SetLimits(0, 10)
	ln := listenB(t, n)
	a, b := memPair(t, n, ln)

	// A pending Recv returns when its context is cancelled...
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { _, err := b.Recv(ctx); errc <- err }()
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("Recv after cancel: %v, want context.Canceled", err)
	}
	// ...and the connection stays usable.
	mustSend(t, a, []byte("after"))
	mustRecv(t, b, []byte("after"))

	// A Send blocked on a full window returns when cancelled.
	mustSend(t, a, make([]byte, 10)) // fills the 10-byte window
	ctx, cancel = context.WithCancel(context.Background())
	go func() { errc <- a.Send(ctx, []byte("more")) }()
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("blocked Send after cancel: %v, want context.Canceled", err)
	}
	// Receiving opens the window again.
	go func() { errc <- a.Send(context.Background(), []byte("more")) }()
	mustRecv(t, b, make([]byte, 10))
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	mustRecv(t, b, []byte("more"))

	// Accept honours its context too.
	ctx, cancel = context.WithCancel(context.Background())
	go func() { _, err := ln.Accept(ctx); errc <- err }()
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("Accept after cancel: %v, want context.Canceled", err)
	}
	if _, err := n.Dialer("a", pubA).Dial(cancelledCtx(), "b"); !errors.Is(err, context.Canceled) {
		t.Fatalf("Dial with a cancelled context: %v", err)
	}
}

func TestMemCutAfterN(t *testing.T) {
	n, lg := newMem(t, 7)
	ln := listenB(t, n)
	if err := n.Script(Plan{CutAfter: 3}); err != nil {
		t.Fatal(err)
	}
	a, b := memPair(t, n, ln)
	ctx := context.Background()
	// Frames count in both directions.
	mustSend(t, a, frameN(0))
	mustSend(t, b, frameN(1))
	mustSend(t, a, frameN(2))
	if err := a.Send(ctx, frameN(3)); !errors.Is(err, ErrCut) {
		t.Fatalf("4th frame: %v, want ErrCut", err)
	}
	// What had arrived is still received, then both sides see ErrCut.
	mustRecv(t, b, frameN(0))
	mustRecv(t, b, frameN(2))
	if _, err := b.Recv(ctx); !errors.Is(err, ErrCut) {
		t.Fatalf("b.Recv after cut: %v, want ErrCut", err)
	}
	mustRecv(t, a, frameN(1))
	if _, err := a.Recv(ctx); !errors.Is(err, ErrCut) {
		t.Fatalf("a.Recv after cut: %v, want ErrCut", err)
	}
	if err := b.Send(ctx, []byte("x")); !errors.Is(err, ErrCut) {
		t.Fatalf("b.Send after cut: %v, want ErrCut", err)
	}
	// Closing a cut side does not turn the peer's ErrCut into io.EOF.
	_ = a.Close()
	if _, err := b.Recv(ctx); !errors.Is(err, ErrCut) {
		t.Fatalf("b.Recv after cut and peer close: %v, want ErrCut", err)
	}
	if !lg.contains("seed=7 conn a->b#0 cut after 3 frames (plan, at frame 4)") {
		t.Fatalf("the cut was not logged with its seed: %q", lg.lines())
	}
	// The plan applied to one connection only.
	c, d := memPair(t, n, ln)
	for i := range 10 {
		mustSend(t, c, frameN(i))
		mustRecv(t, d, frameN(i))
	}
}

func TestMemCutUnblocksRecvAndLosesHeldFrames(t *testing.T) {
	n, lg := newMem(t, 3)
	ln := listenB(t, n)
	if err := n.Script(Plan{Delay: map[int]time.Duration{2: time.Second}}); err != nil {
		t.Fatal(err)
	}
	a, b := memPair(t, n, ln)
	mustSend(t, a, frameN(0))
	mustSend(t, a, frameN(1)) // held on the wire
	mustSend(t, a, frameN(2)) // behind the held one
	mustRecv(t, b, frameN(0))
	errc := make(chan error, 1)
	go func() { _, err := b.Recv(context.Background()); errc <- err }()
	a.Cut()
	if err := <-errc; !errors.Is(err, ErrCut) {
		t.Fatalf("pending Recv on a cut conn: %v, want ErrCut", err)
	}
	n.Advance(time.Hour)
	if _, err := b.Recv(context.Background()); !errors.Is(err, ErrCut) {
		t.Fatalf("held frames survived the cut: %v", err)
	}
	if !lg.contains("2 frames lost in flight") {
		t.Fatalf("lost frames not logged: %q", lg.lines())
	}
}

func TestMemDelayOnFakeClock(t *testing.T) {
	n, _ := newMem(t, 1)
	ln := listenB(t, n)
	if err := n.Script(Plan{Delay: map[int]time.Duration{1: 5 * time.Second}}); err != nil {
		t.Fatal(err)
	}
	a, b := memPair(t, n, ln)
	mustSend(t, a, frameN(0))
	mustSend(t, a, frameN(1))
	if _, ok, err := b.TryRecv(); ok || err != nil {
		t.Fatalf("a delayed frame arrived at once (ok=%v err=%v)", ok, err)
	}
	n.Advance(4 * time.Second)
	if _, ok, _ := b.TryRecv(); ok {
		t.Fatal("a frame delayed 5s arrived after 4s")
	}
	// A blocked Recv is woken by the clock, and order is kept.
	got := make(chan []byte, 1)
	go func() { f, _ := b.Recv(context.Background()); got <- f }()
	if now := n.Advance(time.Second); now != 5*time.Second {
		t.Fatalf("Advance returned %v", now)
	}
	if f := <-got; !bytes.Equal(f, frameN(0)) {
		t.Fatalf("first frame after the delay = %q", f)
	}
	mustRecv(t, b, frameN(1))

	// Random delays: everything arrives in order once the clock has passed
	// MaxDelay.
	if err := n.SetFaults(Faults{Delay: 0.5, MaxDelay: time.Minute}); err != nil {
		t.Fatal(err)
	}
	held := 0
	for i := range 50 {
		mustSend(t, a, frameN(i))
		if _, ok, _ := b.TryRecv(); !ok {
			held++
			break
		}
	}
	if held == 0 {
		t.Fatal("no frame was delayed at probability 0.5")
	}
	_ = a.Close()
	n.Advance(time.Minute)
	var frames [][]byte
	for {
		f, err := b.Recv(context.Background())
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		frames = append(frames, f)
	}
	for i, f := range frames {
		if !bytes.Equal(f, frameN(i)) {
			t.Fatalf("frame %d = %q: reordered", i, f)
		}
	}
}

func TestMemDrop(t *testing.T) {
	n, lg := newMem(t, 5)
	ln := listenB(t, n)
	if err := n.Script(Plan{DropAfter: 2}); err != nil {
		t.Fatal(err)
	}
	a, b := memPair(t, n, ln)
	for i := range 5 {
		mustSend(t, a, frameN(i)) // frames after the drop vanish silently
	}
	mustRecv(t, b, frameN(0))
	mustRecv(t, b, frameN(1))
	if f, ok, err := b.TryRecv(); ok || err != nil {
		t.Fatalf("dropped conn delivered %q / %v", f, err)
	}
	_ = a.Close() // not seen by the peer either
	if f, ok, err := b.TryRecv(); ok || err != nil {
		t.Fatalf("close crossed a dropped conn: %q / %v", f, err)
	}
	// Only the caller's deadline ends the wait.
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { _, err := b.Recv(ctx); errc <- err }()
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("Recv on a dropped conn: %v, want context.Canceled", err)
	}
	if !lg.contains("seed=5 conn a->b#0 dropped after 2 frames (plan, at frame 3)") {
		t.Fatalf("drop not logged: %q", lg.lines())
	}
	if st := a.Stats(); st.FramesSent != 5 {
		t.Fatalf("sender counted %d frames, want 5 (it cannot tell)", st.FramesSent)
	}
}

func TestMemPartitionAndHeal(t *testing.T) {
	n, lg := newMem(t, 1)
	ctx := context.Background()
	lnB := listenB(t, n)
	lnA, err := n.Listen("a", pubA)
	if err != nil {
		t.Fatal(err)
	}
	lnC, err := n.Listen("c", pubC)
	if err != nil {
		t.Fatal(err)
	}
	a, b := memPair(t, n, lnB)
	ac, err := n.Dialer("a", pubA).Dial(ctx, "c")
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := lnC.Accept(ctx)

	n.Partition("b", "a") // order does not matter
	for _, c := range []*MemConn{a, b} {
		if err := c.Send(ctx, []byte("x")); !errors.Is(err, ErrCut) {
			t.Fatalf("Send across a partition: %v, want ErrCut", err)
		}
		if _, err := c.Recv(ctx); !errors.Is(err, ErrCut) {
			t.Fatalf("Recv across a partition: %v, want ErrCut", err)
		}
	}
	if _, err := n.Dialer("a", pubA).Dial(ctx, "b"); !errors.Is(err, ErrRefused) {
		t.Fatalf("dial a->b across a partition: %v, want ErrRefused", err)
	}
	if _, err := n.Dialer("b", pubB).Dial(ctx, "a"); !errors.Is(err, ErrRefused) {
		t.Fatalf("dial b->a across a partition: %v, want ErrRefused", err)
	}
	// Other pairs are untouched.
	mustSend(t, ac, []byte("still here"))
	mustRecv(t, ca, []byte("still here"))

	n.Heal("a", "b")
	a2, b2 := memPair(t, n, lnB)
	mustSend(t, a2, []byte("healed"))
	mustRecv(t, b2, []byte("healed"))
	go func() { _, _ = n.Dialer("b", pubB).Dial(ctx, "a") }()
	if c, err := lnA.Accept(ctx); err != nil || !c.RemoteIdentity().Equal(pubB) {
		t.Fatalf("dial b->a after heal: %v", err)
	}

	n.Partition("a", "c")
	n.HealAll()
	if _, err := n.Dialer("a", pubA).Dial(ctx, "c"); err != nil {
		t.Fatalf("dial after HealAll: %v", err)
	}
	if !lg.contains("cut after 0 frames (partition)") || !lg.contains("partition a | b") {
		t.Fatalf("partition not logged: %q", lg.lines())
	}
}

func TestMemRefuse(t *testing.T) {
	n, lg := newMem(t, 11)
	ctx := context.Background()
	ln := listenB(t, n)
	d := n.Dialer("a", pubA)
	if _, err := d.Dial(ctx, "nobody"); !errors.Is(err, ErrRefused) {
		t.Fatalf("dial to an unknown name: %v, want ErrRefused", err)
	}
	if err := n.Script(Plan{From: "x", Refuse: true}); err != nil { // does not match "a"
		t.Fatal(err)
	}
	if err := n.Script(Plan{To: "b", Refuse: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Dial(ctx, "b"); !errors.Is(err, ErrRefused) {
		t.Fatalf("scripted refusal: %v, want ErrRefused", err)
	}
	if _, err := d.Dial(ctx, "b"); err != nil {
		t.Fatalf("the refusal applied twice: %v", err)
	}
	if _, err := n.Dialer("x", pubC).Dial(ctx, "b"); !errors.Is(err, ErrRefused) {
		t.Fatalf("plan for x: %v, want ErrRefused", err)
	}
	if err := n.SetFaults(Faults{Refuse: 1}); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		if _, err := d.Dial(ctx, "b"); !errors.Is(err, ErrRefused) {
			t.Fatalf("dial at Refuse=1: %v, want ErrRefused", err)
		}
	}
	_ = n.SetFaults(Faults{})
	if _, err := d.Dial(ctx, "b"); err != nil {
		t.Fatalf("dial without faults: %v", err)
	}
	// Accept sees exactly the two successful dials from a.
	for range 2 {
		c, err := ln.Accept(ctx)
		if err != nil || !c.RemoteIdentity().Equal(pubA) {
			t.Fatalf("accept: %v", err)
		}
	}
	if _, err := ln.Accept(cancelledCtx()); !errors.Is(err, context.Canceled) {
		t.Fatalf("a refused dial reached the listener: %v", err)
	}
	if !lg.contains("seed=11 dial a->b refused (random)") || !lg.contains("dial a->b refused (plan)") {
		t.Fatalf("refusals not logged: %q", lg.lines())
	}
}

func TestMemPins(t *testing.T) {
	n, _ := newMem(t, 1)
	ctx := context.Background()
	ln := listenB(t, n)
	n.SetPins("b", NewPinSet(pubA))
	if _, err := n.Dialer("c", pubC).Dial(ctx, "b"); !errors.Is(err, ErrUnknownPeer) {
		t.Fatalf("unpinned dialer: %v, want ErrUnknownPeer", err)
	}
	n.SetPins("a", PinFunc(func(ed25519.PublicKey) bool { return false }))
	if _, err := n.Dialer("a", pubA).Dial(ctx, "b"); !errors.Is(err, ErrUnknownPeer) {
		t.Fatalf("dialer that pins nothing: %v, want ErrUnknownPeer", err)
	}
	n.SetPins("a", nil)
	a, b := memPair(t, n, ln)
	if !b.RemoteIdentity().Equal(pubA) || !a.RemoteIdentity().Equal(pubB) {
		t.Fatal("wrong identities")
	}
	if _, err := ln.Accept(cancelledCtx()); !errors.Is(err, context.Canceled) {
		t.Fatalf("a refused peer reached Accept: %v", err)
	}
}

func TestMemValidation(t *testing.T) {
	n, _ := newMem(t, 1)
	bad := []Faults{{Cut: -0.1}, {Drop: 1.5}, {Delay: 0.5}, {MaxDelay: -1}, {Refuse: nan()}}
	for _, f := range bad {
		if err := n.SetFaults(f); err == nil {
			t.Errorf("SetFaults(%+v) accepted", f)
		}
	}
	if err := n.Script(Plan{CutAfter: -1}); err == nil {
		t.Error("negative CutAfter accepted")
	}
	if err := n.Script(Plan{Delay: map[int]time.Duration{0: time.Second}}); err == nil {
		t.Error("delay of frame 0 accepted")
	}
	if _, err := n.Listen("", pubA); err == nil {
		t.Error("empty name accepted")
	}
	if _, err := n.Listen("b", pubB); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Listen("b", pubB); err == nil {
		t.Error("duplicate listener accepted")
	}
}

func nan() float64 { var z float64; return z / z }

// runScenario drives a fixed random-fault scenario and returns every outcome.
func runScenario(t *testing.T, seed int64) ([]string, []string) {
	lg := newLog(t)
	n := NewMemNetwork(seed, lg.log)
	defer n.Close()
	if err := n.SetFaults(Faults{Refuse: 0.2, Cut: 0.05, Drop: 0.02, Delay: 0.3, MaxDelay: time.Second}); err != nil {
		t.Fatal(err)
	}
	n.SetLimits(0, 1<<30)
	ln, _ := n.Listen("b", pubB)
	var out []string
	ctx := context.Background()
	for k := range 20 {
		dc, err := n.Dialer("a", pubA).Dial(ctx, "b")
		if err != nil {
			out = append(out, err.Error())
			continue
		}
		ac, _ := ln.Accept(ctx)
		a, b := dc.(*MemConn), ac.(*MemConn)
		for i := range 30 {
			if err := a.Send(ctx, frameN(k*100+i)); err != nil {
				out = append(out, err.Error())
				break
			}
		}
		n.Advance(time.Second)
		for {
			f, ok, err := b.TryRecv()
			if err != nil || !ok {
				out = append(out, string(f), errString(err))
				break
			}
			out = append(out, string(f))
		}
		_ = a.Close()
		_ = b.Close()
	}
	return out, lg.lines()
}

func errString(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}

func TestMemFaultsReproducibleFromSeed(t *testing.T) {
	out1, log1 := runScenario(t, 42)
	out2, log2 := runScenario(t, 42)
	if !slices.Equal(out1, out2) || !slices.Equal(log1, log2) {
		t.Fatal("the same seed gave different faults")
	}
	out3, _ := runScenario(t, 43)
	if slices.Equal(out1, out3) {
		t.Fatal("seeds 42 and 43 gave identical runs; the seed is not used")
	}
	kinds := 0
	for _, k := range []string{"refused (random)", "cut after", "dropped after", "delayed"} {
		if slices.ContainsFunc(log1, func(s string) bool { return bytes.Contains([]byte(s), []byte(k)) }) {
			kinds++
		}
	}
	if kinds != 4 {
		t.Fatalf("scenario exercised %d of 4 fault kinds; pick other probabilities", kinds)
	}
}

// TestMemConcurrentNoSilentLoss runs senders and receivers on their own
// goroutines under random cuts and refusals: every receiver must see a
// prefix of what its sender sent, then io.EOF (all of it) or ErrCut.
func TestMemConcurrentNoSilentLoss(t *testing.T) {
	n, _ := newMem(t, 99)
	if err := n.SetFaults(Faults{Refuse: 0.1, Cut: 0.01}); err != nil {
		t.Fatal(err)
	}
	n.SetLimits(0, 256) // small window: senders block on receivers
	ln := listenB(t, n)
	ctx := context.Background()
	const conns, frames = 16, 200

	var wg sync.WaitGroup
	results := make(chan error, 2*conns)
	for k := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := n.Dialer("a", pubA).Dial(ctx, "b")
			if err != nil {
				if !errors.Is(err, ErrRefused) {
					results <- err
				}
				return
			}
			defer c.Close()
			if err := c.Send(ctx, []byte{byte(k)}); err != nil {
				return
			}
			for i := range frames {
				if err := c.Send(ctx, frameN(i)); err != nil {
					if !errors.Is(err, ErrCut) {
						results <- err
					}
					return
				}
			}
		}()
	}
	var rwg sync.WaitGroup
	acceptDone := make(chan struct{})
	go func() {
		defer close(acceptDone)
		for {
			c, err := ln.Accept(ctx)
			if err != nil {
				return
			}
			rwg.Add(1)
			go func() {
				defer rwg.Done()
				defer c.Close()
				if _, err := c.Recv(ctx); err != nil {
					return // cut before the header frame
				}
				for i := 0; ; i++ {
					f, err := c.Recv(ctx)
					switch {
					case err == io.EOF:
						if i != frames {
							results <- errors.New("io.EOF after " + string(frameN(i)) + ": frames lost silently")
						}
						return
					case errors.Is(err, ErrCut):
						return
					case err != nil:
						results <- err
						return
					}
					if !bytes.Equal(f, frameN(i)) {
						results <- errors.New("got " + string(f) + ", want " + string(frameN(i)))
						return
					}
				}
			}()
		}
	}()
	wg.Wait()
	_ = ln.Close()
	<-acceptDone
	rwg.Wait()
	close(results)
	for err := range results {
		t.Error(err)
	}
}
