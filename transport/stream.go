package transport

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// aLongTimeAgo is a deadline in the past: setting it unblocks pending I/O.
var aLongTimeAgo = time.Unix(1, 0)

// streamConn is a Conn over a byte stream (TLS over TCP, or any net.Conn).
type streamConn struct {
	nc     net.Conn
	remote ed25519.PublicKey
	limit  int

	wmu  sync.Mutex // serialises Sends: a frame's bytes are never interleaved
	rmu  sync.Mutex // serialises Recvs; guards fr and rerr
	fr   frameReader
	rerr error // sticky: the stream lost its framing or failed

	closed atomic.Bool
	broken atomic.Bool // a Send failed part-way; the conn was closed
	stats  counters
}

var _ StatsConn = (*streamConn)(nil)

// NewStreamConn wraps a byte stream as a Conn with the given peer identity
// (already authenticated by the caller) and maximum frame size (<= 0 means
// DefaultMaxFrame). The Conn owns nc from then on.
//
// Contexts are honoured without extra goroutines: a context deadline becomes
// the stream's deadline, and cancellation sets a deadline in the past
// (context.AfterFunc), which unblocks the pending call. A Recv interrupted
// that way keeps what it had read of the frame and resumes on the next call.
// A Send interrupted after it started writing closes the connection, since
// the peer may have seen part of a frame.
func NewStreamConn(nc net.Conn, remote ed25519.PublicKey, maxFrame int) Conn {
	return newStreamConn(nc, remote, maxFrame)
}

func newStreamConn(nc net.Conn, remote ed25519.PublicKey, maxFrame int) *streamConn {
	return &streamConn{nc: nc, remote: remote, limit: maxOrDefault(maxFrame)}
}

func (c *streamConn) RemoteIdentity() ed25519.PublicKey { return c.remote }

// Stats reports what the connection sent and received.
func (c *streamConn) Stats() Stats { return c.stats.stats() }

// Close closes the underlying stream. It is idempotent.
func (c *streamConn) Close() error {
	if c.closed.Swap(true) {
		return nil
	}
	err := c.nc.Close()
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// bindDeadline makes ctx govern the stream's deadline via set (SetReadDeadline
// or SetWriteDeadline) and returns a function that undoes the binding. The
// returned function waits for an AfterFunc that already started, so a late
// cancellation cannot leak its past deadline into the next call.
func bindDeadline(ctx context.Context, set func(time.Time) error) (unbind func()) {
	dl, _ := ctx.Deadline() // zero time: no deadline
	_ = set(dl)
	if ctx.Done() == nil {
		return func() {}
	}
	done := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		_ = set(aLongTimeAgo)
		close(done)
	})
	return func() {
		if !stop() {
			<-done
		}
	}
}

// ctxErr turns a deadline error caused by ctx into ctx's error.
func ctxErr(ctx context.Context, err error) error {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		if cerr := ctx.Err(); cerr != nil {
			return cerr
		}
		if _, ok := ctx.Deadline(); ok {
			// The stream's deadline (ctx's own) fired before ctx's timer did.
			return context.DeadlineExceeded
		}
	}
	return nil
}

func (c *streamConn) Send(ctx context.Context, frame []byte) error {
	if len(frame) > c.limit {
		return fmt.Errorf("%w: send of %d bytes, limit %d", ErrFrameTooLarge, len(frame), c.limit)
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.closed.Load() {
		return fmt.Errorf("%w (send)", ErrClosed)
	}
	if c.broken.Load() {
		return fmt.Errorf("%w (send; an earlier send failed part-way)", ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("transport: send: %w", err)
	}
	unbind := bindDeadline(ctx, c.nc.SetWriteDeadline)
	err := WriteFrame(c.nc, frame, c.limit)
	unbind()
	if err == nil {
		c.stats.sent(len(frame))
		return nil
	}
	// Part of the frame may be on the wire: the stream is unusable.
	c.broken.Store(true)
	wasClosed := c.closed.Load()
	_ = c.Close()
	switch {
	case wasClosed:
		return fmt.Errorf("%w (send)", ErrClosed)
	case ctxErr(ctx, err) != nil:
		return fmt.Errorf("transport: send: %w", ctxErr(ctx, err))
	}
	return wrap(err, "send")
}

func (c *streamConn) Recv(ctx context.Context) ([]byte, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	if c.closed.Load() {
		return nil, fmt.Errorf("%w (recv)", ErrClosed)
	}
	if c.rerr != nil {
		return nil, c.rerr
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("transport: recv: %w", err)
	}
	unbind := bindDeadline(ctx, c.nc.SetReadDeadline)
	frame, err := c.fr.next(c.nc, c.limit)
	unbind()
	if err == nil {
		c.stats.recv(len(frame))
		return frame, nil
	}
	if c.closed.Load() {
		return nil, fmt.Errorf("%w (recv)", ErrClosed)
	}
	if cerr := ctxErr(ctx, err); cerr != nil {
		// Not sticky: the frame reader kept its progress.
		return nil, fmt.Errorf("transport: recv: %w", cerr)
	}
	if errors.Is(err, io.EOF) {
		c.rerr = io.EOF // clean close at a frame boundary
		return nil, io.EOF
	}
	// Oversized or truncated frame, or a broken stream: end the session so a
	// hostile peer gets nothing more out of it.
	c.rerr = wrap(err, "recv")
	_ = c.nc.Close()
	return nil, c.rerr
}
