package transport

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultMemWindow is how many payload bytes an in-memory connection queues
// per direction before Send blocks (a frame larger than the window is still
// accepted when the queue is empty).
const DefaultMemWindow = 4 << 20

// Faults are the random faults of a MemNetwork. Every decision is drawn from
// a random stream derived from the network's seed (see NewMemNetwork). The
// zero value injects nothing.
type Faults struct {
	// Refuse is the probability that a dial is refused with ErrRefused.
	Refuse float64
	// Cut is the probability, per frame sent, that the connection is cut at
	// that frame: the Send fails with ErrCut, frames still held on the wire
	// (delayed) are lost, and both sides get ErrCut once they have received
	// the frames that had arrived.
	Cut float64
	// Drop is the probability, per frame sent, that the connection is dropped
	// at that frame: from then on it is a black hole in both directions.
	// Sends succeed and vanish, Close is not seen by the peer, and Recv blocks
	// (after the frames that had arrived) until its context ends or the
	// connection is closed, as on a real network that loses a path without a
	// reset. Only deadlines notice it.
	Drop float64
	// Delay is the probability, per frame, that the frame is held on the wire
	// for a random duration in (0, MaxDelay] of the network's fake clock (see
	// MemNetwork.Advance). Frames of one direction are never reordered: a
	// frame behind a held one waits for it.
	Delay float64
	// MaxDelay bounds Delay; it must be positive when Delay is.
	MaxDelay time.Duration
}

func (f Faults) validate() error {
	for _, p := range []struct {
		name string
		v    float64
	}{{"Refuse", f.Refuse}, {"Cut", f.Cut}, {"Drop", f.Drop}, {"Delay", f.Delay}} {
		if !(p.v >= 0 && p.v <= 1) {
			return fmt.Errorf("transport: Faults.%s = %v, want a probability in [0, 1]", p.name, p.v)
		}
	}
	if f.MaxDelay < 0 {
		return fmt.Errorf("transport: Faults.MaxDelay = %v, want >= 0", f.MaxDelay)
	}
	if f.Delay > 0 && f.MaxDelay == 0 {
		return errors.New("transport: Faults.Delay needs a positive MaxDelay")
	}
	return nil
}

// Plan scripts the faults of one future connection, for tests that need an
// exact schedule rather than probabilities. Frames are numbered from 1 in the
// order they are sent, counting both directions together.
type Plan struct {
	// From and To restrict the plan to dials from the named endpoint to the
	// named listener; "" matches any.
	From, To string
	// Refuse refuses the dial with ErrRefused.
	Refuse bool
	// CutAfter > 0 lets exactly CutAfter frames through; sending the next one
	// cuts the connection (that Send returns ErrCut). Use MemConn.Cut to cut
	// before any frame.
	CutAfter int
	// DropAfter > 0 lets exactly DropAfter frames through; from the next one
	// on the connection is a black hole (see Faults.Drop).
	DropAfter int
	// Delay holds the given frames on the wire for the given durations of
	// the fake clock.
	Delay map[int]time.Duration
}

func (p Plan) validate() error {
	if p.CutAfter < 0 || p.DropAfter < 0 {
		return errors.New("transport: Plan.CutAfter and Plan.DropAfter must be >= 0")
	}
	for n, d := range p.Delay {
		if n < 1 || d < 0 {
			return fmt.Errorf("transport: Plan.Delay[%d] = %v: want frame >= 1 and delay >= 0", n, d)
		}
	}
	return nil
}

func (p Plan) matches(from, to string) bool {
	return (p.From == "" || p.From == from) && (p.To == "" || p.To == to)
}

// MemNetwork is an in-memory network of named endpoints with fault
// injection. It starts no goroutines; Close releases every listener and
// connection. All methods are safe for concurrent use.
//
// Reproducibility: each random decision comes from a stream seeded by the
// network's seed and a label: dial refusals from the dialing endpoint's name,
// frame faults from the connection's endpoints, its ordinal among the dials
// between them, and the sending side. The same seed and the same sequence of
// operations per endpoint and per connection give the same faults, however
// goroutines interleave. Every injected fault is logged with the seed.
type MemNetwork struct {
	seed   int64
	logf   func(string)
	now    atomic.Int64 // the fake clock, in nanoseconds since creation
	faults atomic.Pointer[Faults]

	mu        sync.Mutex
	closed    bool
	limit     int
	window    int
	listeners map[string]*MemListener
	pins      map[string]Pins
	parts     map[[2]string]bool
	links     map[*link]bool
	dials     map[[2]string]int
	dialRNG   map[string]*rand.Rand
	plans     []Plan
}

// NewMemNetwork returns an empty network whose random faults derive from
// seed. log, if not nil, receives one line per injected fault (and the seed
// first); it must be safe for concurrent use and must not call back into the
// network. Pass t.Logf-like functions so a failing run shows its seed.
func NewMemNetwork(seed int64, log func(string)) *MemNetwork {
	if log == nil {
		log = func(string) {}
	}
	n := &MemNetwork{
		seed:      seed,
		logf:      log,
		limit:     DefaultMaxFrame,
		window:    DefaultMemWindow,
		listeners: make(map[string]*MemListener),
		pins:      make(map[string]Pins),
		parts:     make(map[[2]string]bool),
		links:     make(map[*link]bool),
		dials:     make(map[[2]string]int),
		dialRNG:   make(map[string]*rand.Rand),
	}
	n.faults.Store(&Faults{})
	n.log("network seed=%d", seed)
	return n
}

func (n *MemNetwork) log(format string, args ...any) {
	n.logf(fmt.Sprintf("transport/mem: "+format, args...))
}

// Seed returns the seed the network's faults derive from.
func (n *MemNetwork) Seed() int64 { return n.seed }

// SetFaults replaces the random faults; they apply to later dials and frames
// on every connection.
func (n *MemNetwork) SetFaults(f Faults) error {
	if err := f.validate(); err != nil {
		return err
	}
	n.faults.Store(&f)
	n.log("faults %+v", f)
	return nil
}

// Script queues a plan for the next dial it matches (plans are tried in the
// order they were queued; each is used once).
func (n *MemNetwork) Script(p Plan) error {
	if err := p.validate(); err != nil {
		return err
	}
	if p.Delay != nil {
		delay := make(map[int]time.Duration, len(p.Delay))
		for k, v := range p.Delay {
			delay[k] = v
		}
		p.Delay = delay
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.plans = append(n.plans, p)
	return nil
}

// SetLimits sets the maximum frame size and the per-direction window of
// connections dialed later; values <= 0 restore the defaults.
func (n *MemNetwork) SetLimits(maxFrame, window int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.limit = maxOrDefault(maxFrame)
	n.window = window
	if window <= 0 {
		n.window = DefaultMemWindow
	}
}

// SetPins makes the endpoint name accept connections from, and dial, only
// peers whose identity pins allows (nil removes the restriction). A refused
// dial fails with ErrUnknownPeer and the listener never sees it.
func (n *MemNetwork) SetPins(name string, pins Pins) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if pins == nil {
		delete(n.pins, name)
	} else {
		n.pins[name] = pins
	}
}

// Now returns the fake clock: the total of every Advance.
func (n *MemNetwork) Now() time.Duration { return time.Duration(n.now.Load()) }

// Advance moves the fake clock forward by d, delivering the frames whose
// delay has passed, and returns the new time.
func (n *MemNetwork) Advance(d time.Duration) time.Duration {
	if d < 0 {
		d = 0
	}
	now := time.Duration(n.now.Add(int64(d)))
	for _, l := range n.liveLinks() {
		l.mu.Lock()
		l.broadcast()
		l.mu.Unlock()
	}
	return now
}

func pairKey(a, b string) [2]string {
	if a > b {
		a, b = b, a
	}
	return [2]string{a, b}
}

// Partition separates the endpoints a and b: dials between them (either
// way) are refused with ErrRefused and their live connections are cut.
func (n *MemNetwork) Partition(a, b string) {
	n.mu.Lock()
	key := pairKey(a, b)
	n.parts[key] = true
	n.log("partition %s | %s", key[0], key[1])
	links := n.liveLinksLocked()
	n.mu.Unlock()
	for _, l := range links {
		if pairKey(l.ends[0], l.ends[1]) == key {
			l.mu.Lock()
			l.cutLocked("partition")
			l.mu.Unlock()
		}
	}
}

// Heal ends the partition between a and b.
func (n *MemNetwork) Heal(a, b string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	key := pairKey(a, b)
	delete(n.parts, key)
	n.log("heal %s | %s", key[0], key[1])
}

// HealAll ends every partition.
func (n *MemNetwork) HealAll() {
	n.mu.Lock()
	defer n.mu.Unlock()
	clear(n.parts)
	n.log("heal all")
}

// Close closes every listener and connection of the network: pending calls
// return ErrClosed, later dials fail with ErrClosed.
func (n *MemNetwork) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	var lns []*MemListener
	for _, ln := range n.listeners {
		lns = append(lns, ln)
	}
	links := n.liveLinksLocked()
	n.mu.Unlock()
	for _, ln := range lns {
		_ = ln.Close()
	}
	for _, l := range links {
		l.mu.Lock()
		l.closed = [2]bool{true, true}
		l.broadcast()
		l.mu.Unlock()
	}
	n.mu.Lock()
	clear(n.links)
	n.mu.Unlock()
	return nil
}

func (n *MemNetwork) liveLinks() []*link {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.liveLinksLocked()
}

func (n *MemNetwork) liveLinksLocked() []*link {
	out := make([]*link, 0, len(n.links))
	for l := range n.links {
		out = append(out, l)
	}
	return out
}

func (n *MemNetwork) forget(l *link) {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.links, l)
}

// rngFor derives an independent random stream from the seed and a label.
func (n *MemNetwork) rngFor(label string) *rand.Rand {
	h := fnv.New64a()
	_, _ = io.WriteString(h, label)
	return rand.New(rand.NewPCG(uint64(n.seed), h.Sum64()))
}

// Listen registers a listener under name with the given identity (which
// dialers see as RemoteIdentity).
func (n *MemNetwork) Listen(name string, identity ed25519.PublicKey) (*MemListener, error) {
	if name == "" {
		return nil, errors.New("transport: listen: empty name")
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil, fmt.Errorf("%w (listen %q)", ErrClosed, name)
	}
	if _, ok := n.listeners[name]; ok {
		return nil, fmt.Errorf("transport: listen %q: name in use", name)
	}
	ln := &MemListener{n: n, name: name, id: identity, wake: make(chan struct{})}
	n.listeners[name] = ln
	return ln, nil
}

// Dialer returns a dialer for the endpoint name with the given identity
// (which listeners see as RemoteIdentity). Partitions and pins apply to it by
// name.
func (n *MemNetwork) Dialer(name string, identity ed25519.PublicKey) *MemDialer {
	return &MemDialer{n: n, name: name, id: identity}
}

// MemDialer dials listeners of a MemNetwork as one named endpoint.
type MemDialer struct {
	n    *MemNetwork
	name string
	id   ed25519.PublicKey
}

var _ Dialer = (*MemDialer)(nil)

// Dial connects to the listener named addr. It fails with ErrRefused when
// nothing listens there, the endpoints are partitioned, or a refusal is
// injected, and with ErrUnknownPeer when either side's pins reject the
// other.
func (d *MemDialer) Dial(ctx context.Context, addr string) (Conn, error) {
	c, err := d.n.dial(ctx, d.name, d.id, addr)
	if err != nil {
		return nil, err
	}
	return c, nil
}

func (n *MemNetwork) dial(ctx context.Context, from string, fromID ed25519.PublicKey, to string) (*MemConn, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("transport: dial %q: %w", to, err)
	}
	n.mu.Lock()
	ln, err := n.dialCheckLocked(from, to)
	if err != nil {
		n.mu.Unlock()
		return nil, err
	}
	var plan Plan
	for i, p := range n.plans {
		if p.matches(from, to) {
			plan = p
			n.plans = append(n.plans[:i:i], n.plans[i+1:]...)
			break
		}
	}
	rng := n.dialRNG[from]
	if rng == nil {
		rng = n.rngFor("dial|" + from)
		n.dialRNG[from] = rng
	}
	u := rng.Float64()
	if plan.Refuse || u < n.faults.Load().Refuse {
		why := "random"
		if plan.Refuse {
			why = "plan"
		}
		n.log("seed=%d dial %s->%s refused (%s)", n.seed, from, to, why)
		n.mu.Unlock()
		return nil, fmt.Errorf("%w (dial %q, injected)", ErrRefused, to)
	}
	fromPins, toPins := n.pins[from], n.pins[to]
	n.mu.Unlock()

	// Pins are the caller's code: consult them without holding the lock.
	if toPins != nil && !toPins.Allowed(fromID) {
		n.log("dial %s->%s: listener refused unknown peer %s", from, to, Fingerprint(fromID))
		return nil, fmt.Errorf("%w: listener refused our identity (dial %q)", ErrUnknownPeer, to)
	}
	if fromPins != nil && !fromPins.Allowed(ln.id) {
		n.log("dial %s->%s: refused unknown listener %s", from, to, Fingerprint(ln.id))
		return nil, fmt.Errorf("%w %s (dial %q)", ErrUnknownPeer, Fingerprint(ln.id), to)
	}

	n.mu.Lock()
	defer n.mu.Unlock()
	if ln2, err := n.dialCheckLocked(from, to); err != nil {
		return nil, err
	} else if ln2 != ln {
		return nil, fmt.Errorf("%w (dial %q, listener replaced)", ErrRefused, to)
	}
	key := [2]string{from, to}
	k := n.dials[key]
	n.dials[key] = k + 1
	l := &link{
		n:      n,
		name:   fmt.Sprintf("%s->%s#%d", from, to, k),
		ends:   [2]string{from, to},
		ids:    [2]ed25519.PublicKey{fromID, ln.id},
		plan:   plan,
		limit:  n.limit,
		window: n.window,
		wake:   make(chan struct{}),
	}
	for s := range 2 {
		l.rng[s] = n.rngFor(fmt.Sprintf("conn|%s|%s|%d|%d", from, to, k, s))
	}
	n.links[l] = true
	dc := &MemConn{l: l, side: 0}
	ln.queue = append(ln.queue, &MemConn{l: l, side: 1})
	ln.broadcastLocked()
	return dc, nil
}

func (n *MemNetwork) dialCheckLocked(from, to string) (*MemListener, error) {
	if n.closed {
		return nil, fmt.Errorf("%w (dial %q)", ErrClosed, to)
	}
	if n.parts[pairKey(from, to)] {
		n.log("dial %s->%s refused (partition)", from, to)
		return nil, fmt.Errorf("%w (dial %q, partitioned)", ErrRefused, to)
	}
	ln := n.listeners[to]
	if ln == nil {
		return nil, fmt.Errorf("%w (dial %q, nothing listens there)", ErrRefused, to)
	}
	return ln, nil
}

// MemListener accepts connections dialed to its name.
type MemListener struct {
	n    *MemNetwork
	name string
	id   ed25519.PublicKey
	// guarded by n.mu
	queue  []*MemConn
	closed bool
	wake   chan struct{}
}

var _ Listener = (*MemListener)(nil)

func (ln *MemListener) broadcastLocked() {
	close(ln.wake)
	ln.wake = make(chan struct{})
}

// Addr returns the listener's name.
func (ln *MemListener) Addr() string { return ln.name }

// Accept returns the next dialed connection.
func (ln *MemListener) Accept(ctx context.Context) (Conn, error) {
	n := ln.n
	n.mu.Lock()
	defer n.mu.Unlock()
	for {
		if ln.closed {
			return nil, fmt.Errorf("%w (accept %q)", ErrClosed, ln.name)
		}
		if len(ln.queue) > 0 {
			c := ln.queue[0]
			ln.queue[0] = nil
			ln.queue = ln.queue[1:]
			return c, nil
		}
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("transport: accept %q: %w", ln.name, err)
		}
		wake := ln.wake
		n.mu.Unlock()
		select {
		case <-wake:
		case <-ctx.Done():
		}
		n.mu.Lock()
	}
}

// Close unregisters the listener; connections dialed but not yet accepted
// are closed (their dialers see io.EOF).
func (ln *MemListener) Close() error {
	n := ln.n
	n.mu.Lock()
	if ln.closed {
		n.mu.Unlock()
		return nil
	}
	ln.closed = true
	if n.listeners[ln.name] == ln {
		delete(n.listeners, ln.name)
	}
	pending := ln.queue
	ln.queue = nil
	ln.broadcastLocked()
	n.mu.Unlock()
	for _, c := range pending {
		_ = c.Close()
	}
	return nil
}

type faultKind uint8

const (
	faultNone faultKind = iota
	faultCut
	faultDrop
)

type memFrame struct {
	b  []byte
	at int64 // fake-clock time from which it can be received
}

// link is the shared state of one in-memory connection. Side 0 dialed, side
// 1 accepted; q[s] holds what side s sent and side 1-s has not received.
type link struct {
	n      *MemNetwork
	name   string
	ends   [2]string
	ids    [2]ed25519.PublicKey
	rng    [2]*rand.Rand // rng[s] decides the faults of frames side s sends
	plan   Plan
	limit  int
	window int

	mu     sync.Mutex
	q      [2][]memFrame
	qbytes [2]int
	eof    [2]bool // side s closed and its peer will see io.EOF after q[s]
	closed [2]bool // side s was closed locally
	frames int     // frames through so far (or vanished in a drop), both directions
	fault  faultKind
	wake   chan struct{}
}

func (l *link) broadcast() {
	close(l.wake)
	l.wake = make(chan struct{})
}

// wait releases l.mu until something changes or ctx ends.
func (l *link) wait(ctx context.Context) {
	wake := l.wake
	l.mu.Unlock()
	select {
	case <-wake:
	case <-ctx.Done():
	}
	l.mu.Lock()
}

// loseInFlight discards frames still held on the wire; the close marker
// behind them is lost too.
func (l *link) loseInFlight() (lost int) {
	now := l.n.now.Load()
	for s := range 2 {
		q := l.q[s]
		keep := len(q)
		for keep > 0 && q[keep-1].at > now {
			keep--
		}
		if keep == len(q) {
			continue
		}
		lost += len(q) - keep
		for _, f := range q[keep:] {
			l.qbytes[s] -= len(f.b)
		}
		clear(q[keep:])
		l.q[s] = q[:keep]
		l.eof[s] = false
	}
	return lost
}

func (l *link) cutLocked(why string) {
	if l.fault == faultCut || l.closed == [2]bool{true, true} {
		return
	}
	l.fault = faultCut
	lost := l.loseInFlight()
	l.n.log("seed=%d conn %s cut after %d frames (%s); %d frames lost in flight", l.n.seed, l.name, l.frames, why, lost)
	l.broadcast()
}

func (l *link) dropLocked(why string) {
	if l.fault != faultNone || l.closed == [2]bool{true, true} {
		return
	}
	l.fault = faultDrop
	lost := l.loseInFlight()
	l.n.log("seed=%d conn %s dropped after %d frames (%s); %d frames lost in flight", l.n.seed, l.name, l.frames, why, lost)
	l.broadcast()
}

// MemConn is one side of an in-memory connection.
type MemConn struct {
	l     *link
	side  int
	stats counters
}

var _ StatsConn = (*MemConn)(nil)

// String names the connection as the fault log does ("a->b#0").
func (c *MemConn) String() string { return c.l.name }

// RemoteIdentity returns the identity the peer registered with.
func (c *MemConn) RemoteIdentity() ed25519.PublicKey { return c.l.ids[1-c.side] }

// Stats reports what this side sent and received.
func (c *MemConn) Stats() Stats { return c.stats.stats() }

// Cut cuts the connection now (see Faults.Cut).
func (c *MemConn) Cut() {
	c.l.mu.Lock()
	defer c.l.mu.Unlock()
	c.l.cutLocked("manual")
}

// Drop turns the connection into a black hole now (see Faults.Drop).
func (c *MemConn) Drop() {
	c.l.mu.Lock()
	defer c.l.mu.Unlock()
	c.l.dropLocked("manual")
}

// Send queues a copy of frame for the peer. It blocks while the direction's
// window is full.
func (c *MemConn) Send(ctx context.Context, frame []byte) error {
	l, s := c.l, c.side
	if len(frame) > l.limit {
		return fmt.Errorf("%w: send of %d bytes, limit %d", ErrFrameTooLarge, len(frame), l.limit)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for {
		switch {
		case l.closed[s]:
			return fmt.Errorf("%w (send)", ErrClosed)
		case l.fault == faultCut:
			return fmt.Errorf("%w (send on %s)", ErrCut, l.name)
		case l.eof[1-s]:
			return fmt.Errorf("%w by the peer (send)", ErrClosed)
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("transport: send: %w", err)
		}
		if l.fault == faultDrop || l.qbytes[s] == 0 || l.qbytes[s]+len(frame) <= l.window {
			break
		}
		l.wait(ctx)
	}

	num := l.frames + 1 // this frame's number
	f := l.n.faults.Load()
	// Draw every variate for every frame so one probability does not shift
	// the stream of the others.
	r := l.rng[s]
	uCut, uDrop, uDelay, uAmount := r.Float64(), r.Float64(), r.Float64(), r.Float64()
	if l.fault == faultDrop {
		l.frames++
		c.stats.sent(len(frame))
		return nil
	}
	switch {
	case l.plan.CutAfter > 0 && num > l.plan.CutAfter:
		l.cutLocked(fmt.Sprintf("plan, at frame %d", num))
		return fmt.Errorf("%w (send on %s)", ErrCut, l.name)
	case uCut < f.Cut:
		l.cutLocked(fmt.Sprintf("random, at frame %d", num))
		return fmt.Errorf("%w (send on %s)", ErrCut, l.name)
	case l.plan.DropAfter > 0 && num > l.plan.DropAfter:
		l.dropLocked(fmt.Sprintf("plan, at frame %d", num))
		l.frames++
		c.stats.sent(len(frame))
		return nil
	case uDrop < f.Drop:
		l.dropLocked(fmt.Sprintf("random, at frame %d", num))
		l.frames++
		c.stats.sent(len(frame))
		return nil
	}
	l.frames++

	at := l.n.now.Load()
	if d, ok := l.plan.Delay[num]; ok {
		at += int64(d)
		l.n.log("seed=%d conn %s frame %d delayed %v (plan)", l.n.seed, l.name, num, d)
	} else if uDelay < f.Delay {
		d := time.Duration(uAmount*float64(f.MaxDelay)) + 1
		d = min(d, f.MaxDelay)
		at += int64(d)
		l.n.log("seed=%d conn %s frame %d delayed %v (random)", l.n.seed, l.name, num, d)
	}
	if q := l.q[s]; len(q) > 0 {
		at = max(at, q[len(q)-1].at)
	}
	if at < 0 { // overflow guard for absurd delays
		at = math.MaxInt64
	}
	b := make([]byte, len(frame)) // never nil, like a frame read from a stream
	copy(b, frame)
	l.q[s] = append(l.q[s], memFrame{b: b, at: at})
	l.qbytes[s] += len(frame)
	c.stats.sent(len(frame))
	l.broadcast()
	return nil
}

// Recv returns the next frame that has arrived, waiting for one.
func (c *MemConn) Recv(ctx context.Context) ([]byte, error) {
	frame, _, err := c.recv(ctx, true)
	return frame, err
}

// TryRecv is Recv without waiting: ok is false (and err nil) when no frame
// has arrived and the connection is still open. It lets single-goroutine
// tests drive both ends of a connection.
func (c *MemConn) TryRecv() (frame []byte, ok bool, err error) {
	return c.recv(context.Background(), false)
}

func (c *MemConn) recv(ctx context.Context, block bool) ([]byte, bool, error) {
	l, s := c.l, c.side
	p := 1 - s
	l.mu.Lock()
	defer l.mu.Unlock()
	for {
		if l.closed[s] {
			return nil, false, fmt.Errorf("%w (recv)", ErrClosed)
		}
		if err := ctx.Err(); err != nil {
			return nil, false, fmt.Errorf("transport: recv: %w", err)
		}
		q := l.q[p]
		if len(q) > 0 && q[0].at <= l.n.now.Load() {
			f := q[0]
			q[0] = memFrame{}
			l.q[p] = q[1:]
			l.qbytes[p] -= len(f.b)
			c.stats.recv(len(f.b))
			l.broadcast()
			return f.b, true, nil
		}
		if len(q) == 0 {
			if l.eof[p] {
				return nil, false, io.EOF
			}
			if l.fault == faultCut {
				return nil, false, fmt.Errorf("%w (recv on %s)", ErrCut, l.name)
			}
		}
		if !block {
			return nil, false, nil
		}
		l.wait(ctx)
	}
}

// Close closes this side. The peer receives the frames already sent, then
// io.EOF (unless the connection was cut or dropped); frames the peer sent
// that this side had not received are discarded.
func (c *MemConn) Close() error {
	l, s := c.l, c.side
	l.mu.Lock()
	if l.closed[s] {
		l.mu.Unlock()
		return nil
	}
	l.closed[s] = true
	if l.fault == faultNone {
		l.eof[s] = true
	}
	l.q[1-s] = nil
	l.qbytes[1-s] = 0
	l.broadcast()
	both := l.closed == [2]bool{true, true}
	l.mu.Unlock()
	if both {
		l.n.forget(l)
	}
	return nil
}
