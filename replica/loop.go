package replica

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"syscall"
	"time"

	"github.com/ferrysync/ferry/transport"
)

// Backoff is the retry schedule: the delay doubles from Base with every
// failure in a row, up to Max, and each delay is drawn uniformly from
// [d*(1-Jitter), d] so that replicas that failed together do not retry
// together (PouchDB's randomized doubling).
type Backoff struct {
	Base   time.Duration // first delay (1s when zero)
	Max    time.Duration // cap (5m when zero)
	Jitter float64       // 0..1 (0.5 when zero)
}

func (b Backoff) withDefaults() Backoff {
	if b.Base <= 0 {
		b.Base = time.Second
	}
	if b.Max <= 0 {
		b.Max = 5 * time.Minute
	}
	if b.Jitter <= 0 || b.Jitter > 1 {
		b.Jitter = 0.5
	}
	return b
}

// Delay returns the wait after attempt failures in a row (attempt >= 1);
// u is a uniform random number in [0,1).
func (b Backoff) Delay(attempt int, u float64) time.Duration {
	b = b.withDefaults()
	d := b.Base
	for i := 1; i < attempt && d < b.Max; i++ {
		d *= 2
	}
	if d > b.Max {
		d = b.Max
	}
	return d - time.Duration(float64(d)*b.Jitter*u)
}

// Peer is a peer the background loop keeps in sync.
type Peer struct {
	// ID is the peer's identity fingerprint, if known; status is reported
	// under it (under Addr until a session names the peer otherwise).
	ID     string
	Addr   string           // what Dialer dials
	Dialer transport.Dialer // how to reach it
}

// LoopOptions configure the background sync loop.
type LoopOptions struct {
	Peers []Peer
	// Interval between syncs with a peer when nothing changes (1m when zero).
	Interval time.Duration
	Backoff  Backoff
	// After returns a channel that fires after d (time.After when nil);
	// tests pass a fake clock's.
	After func(d time.Duration) <-chan time.Time
	// Rand draws the jitter (a seeded source when nil).
	Rand *rand.Rand
	// SessionTimeout bounds one session (2m when zero).
	SessionTimeout time.Duration
	// SweepInterval is how often the loop lets the fallback policy decide
	// conflicts past their deadline (SweepConflicts): once at start, then
	// at this interval (Interval when zero).
	SweepInterval time.Duration
	// SweepAfter is After for the sweep's timer (time.After when nil), kept
	// apart so a test can drive the sync timers and the sweep separately.
	SweepAfter func(d time.Duration) <-chan time.Time
}

// StartSync starts the background loop: one goroutine per peer that syncs
// when this replica changes, when the interval passes, and after failures
// on the backoff schedule. Close (or StopSync) stops and waits for them.
func (r *Replica) StartSync(opts LoopOptions) error {
	if r.isClosed() {
		return ErrClosed
	}
	if opts.Interval <= 0 {
		opts.Interval = time.Minute
	}
	if opts.After == nil {
		opts.After = time.After
	}
	if opts.Rand == nil {
		opts.Rand = rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 0x5eed))
	}
	if opts.SessionTimeout <= 0 {
		opts.SessionTimeout = 2 * time.Minute
	}
	if opts.SweepInterval <= 0 {
		opts.SweepInterval = opts.Interval
	}
	if opts.SweepAfter == nil {
		opts.SweepAfter = time.After
	}
	for _, p := range opts.Peers {
		if p.Dialer == nil || p.Addr == "" {
			return fmt.Errorf("%w: peer needs an address and a dialer", ErrInvalid)
		}
	}
	r.loopMu.Lock()
	defer r.loopMu.Unlock()
	events := r.events.subscribe(256)
	kicks := make([]chan struct{}, len(opts.Peers))
	for i := range kicks {
		kicks[i] = make(chan struct{}, 1)
		kicks[i] <- struct{}{} // sync once at start
	}
	ctx := r.loopCtx
	r.loopWG.Add(1)
	go func() {
		defer r.loopWG.Done()
		defer r.events.unsubscribe(events)
		for {
			select {
			case <-ctx.Done():
				return
			case e, ok := <-events:
				if !ok {
					return
				}
				if e.Kind != EventRecord {
					continue
				}
				for _, k := range kicks {
					select {
					case k <- struct{}{}:
					default:
					}
				}
			}
		}
	}()
	r.loopWG.Add(1)
	go func() {
		defer r.loopWG.Done()
		r.sweepLoop(ctx, opts)
	}()
	var mu = make(chan struct{}, 1) // serialises the jitter source
	draw := func() float64 {
		mu <- struct{}{}
		defer func() { <-mu }()
		return opts.Rand.Float64()
	}
	for i, p := range opts.Peers {
		r.loopWG.Add(1)
		go func() {
			defer r.loopWG.Done()
			r.peerLoop(ctx, p, kicks[i], opts, draw)
		}()
	}
	return nil
}

// StopSync stops the background loop and waits for it; the replica stays
// open. StartSync may be called again afterwards.
func (r *Replica) StopSync() {
	r.loopMu.Lock()
	defer r.loopMu.Unlock()
	r.stopLoops()
	r.loopWG.Wait()
	r.loopCtx, r.stopLoops = context.WithCancel(context.Background())
}

func (r *Replica) peerLoop(ctx context.Context, p Peer, kick <-chan struct{}, opts LoopOptions, draw func() float64) {
	var timer <-chan time.Time
	attempt := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-kick:
		case <-timer:
		}
		err := r.syncOnce(ctx, p, opts.SessionTimeout)
		if ctx.Err() != nil {
			return
		}
		var wait time.Duration
		if err != nil {
			attempt++
			wait = opts.Backoff.Delay(attempt, draw())
		} else {
			attempt = 0
			wait = opts.Interval
		}
		next := r.opts.Now().Add(wait)
		r.status.scheduled(p.key(), next)
		timer = opts.After(wait)
	}
}

// sweepLoop decides expired conflicts at start and then every
// SweepInterval, by the replica's clock, until ctx ends. A failed sweep is
// retried at the next tick (what it decided stays decided).
func (r *Replica) sweepLoop(ctx context.Context, opts LoopOptions) {
	for {
		_, _ = r.SweepConflicts(ctx)
		select {
		case <-ctx.Done():
			return
		case <-opts.SweepAfter(opts.SweepInterval):
		}
	}
}

func (r *Replica) syncOnce(ctx context.Context, p Peer, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := p.Dialer.Dial(ctx, p.Addr)
	if err != nil {
		r.status.failedDial(p.key(), err, time.Time{})
		r.publishStatus(p.key())
		return err
	}
	defer conn.Close()
	_, err = r.Sync(ctx, conn)
	return err
}

func (p Peer) key() string {
	if p.ID != "" {
		return p.ID
	}
	return p.Addr
}

// isNetErr reports a network failure. A bare syscall.Errno also
// implements net.Error, so a file system error (a *fs.PathError around
// EIO, EISDIR, EACCES...) would pass for one; an errno counts only when it
// is a network errno.
func isNetErr(err error) bool {
	var oe *net.OpError
	if errors.As(err, &oe) {
		return true
	}
	var ne net.Error
	if !errors.As(err, &ne) {
		return false
	}
	if errno, ok := ne.(syscall.Errno); ok {
		switch errno {
		case syscall.ECONNREFUSED, syscall.ECONNRESET, syscall.ECONNABORTED, syscall.ETIMEDOUT,
			syscall.EHOSTUNREACH, syscall.ENETUNREACH, syscall.ENETDOWN, syscall.ENETRESET, syscall.EPIPE:
			return true
		}
		return false
	}
	return true
}
