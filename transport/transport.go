package transport

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"strings"
	"sync/atomic"

	"github.com/ferrysync/ferry/errkind"
)

// DefaultMaxFrame is the largest frame a connection accepts unless configured
// otherwise (4 MiB). A length prefix above the limit is rejected before any
// buffer is allocated for it.
const DefaultMaxFrame = 4 << 20

// Conn sends and receives whole frames. On byte streams each frame is
// prefixed by its length (see [WriteFrame]); every frame is at most the
// connection's maximum frame size.
//
// Send and Recv may be called concurrently with each other and with Close;
// concurrent Sends are serialised, as are concurrent Recvs. Frames are
// delivered in order and never silently skipped: a receiver sees a prefix of
// what its peer sent, then an error.
//
// Recv returns io.EOF once the peer closed the connection and every frame it
// sent before closing has been received; ErrClosed after a local Close; ErrCut
// when the in-memory transport cut the connection; the context's error when
// ctx ends first (the connection stays usable after a cancelled Recv).
type Conn interface {
	// Send writes one frame. The caller may reuse frame once Send returns.
	Send(ctx context.Context, frame []byte) error
	// Recv returns the next frame. The returned slice belongs to the caller.
	Recv(ctx context.Context) ([]byte, error)
	// Close ends the connection; pending Send and Recv calls return ErrClosed.
	Close() error
	// RemoteIdentity is the peer's authenticated Ed25519 public key (for TLS,
	// the key its certificate proved; for the in-memory transport, the key the
	// peer registered with). Callers must not modify it.
	RemoteIdentity() ed25519.PublicKey
}

// Listener accepts connections from authenticated peers.
type Listener interface {
	// Accept returns the next connection. It returns ErrClosed after Close
	// and the context's error when ctx ends first.
	Accept(ctx context.Context) (Conn, error)
	// Close stops accepting and releases every resource of the listener.
	// Connections already returned by Accept stay open.
	Close() error
	// Addr is the address peers dial.
	Addr() string
}

// Dialer opens connections to listeners.
type Dialer interface {
	Dial(ctx context.Context, addr string) (Conn, error)
}

// Sentinel errors. Returned errors wrap them with short context; test with
// errors.Is.
var (
	// ErrFrameTooLarge: a frame, or a length prefix read from the wire,
	// exceeds the maximum frame size.
	ErrFrameTooLarge = errkind.New("transport: frame too large", errkind.Protocol)
	// ErrClosed: the connection or listener was closed (locally, or by the
	// peer when returned from Send, or by the peer during Dial's handshake).
	ErrClosed = errkind.New("transport: closed", errkind.Unavailable)
	// ErrUnknownPeer: an identity is not pinned. On the dialing side it means
	// either side refused the other's identity during the handshake.
	ErrUnknownPeer = errkind.New("transport: unknown peer", errkind.Forbidden)
	// ErrRefused: the connection was refused (nothing listens there, a
	// partition, or an injected refusal).
	ErrRefused = errkind.New("transport: connection refused", errkind.Unavailable)
	// ErrCut: the in-memory transport cut the connection (fault injection or
	// a partition).
	ErrCut = errkind.New("transport: connection cut", errkind.Unavailable)
	// ErrNotFerry: the peer does not speak this transport's protocol (not
	// TLS 1.3, not the ferry ALPN protocol, or no acceptance frame): another
	// service, or an incompatible ferry.
	ErrNotFerry = errkind.New("transport: the peer does not speak ferry's protocol", errkind.Protocol)
)

// Stats counts the frames and payload bytes (length prefixes and TLS overhead
// excluded) that a connection sent and received successfully.
type Stats struct {
	FramesSent, FramesRecv uint64
	BytesSent, BytesRecv   uint64
}

// StatsConn is implemented by every Conn of this package (and by the
// wrapper Record returns).
type StatsConn interface {
	Conn
	Stats() Stats
}

// counters is the concurrency-safe implementation behind Stats.
type counters struct {
	framesSent, framesRecv atomic.Uint64
	bytesSent, bytesRecv   atomic.Uint64
}

func (c *counters) sent(n int) {
	c.framesSent.Add(1)
	c.bytesSent.Add(uint64(n))
}

func (c *counters) recv(n int) {
	c.framesRecv.Add(1)
	c.bytesRecv.Add(uint64(n))
}

func (c *counters) stats() Stats {
	return Stats{
		FramesSent: c.framesSent.Load(),
		FramesRecv: c.framesRecv.Load(),
		BytesSent:  c.bytesSent.Load(),
		BytesRecv:  c.bytesRecv.Load(),
	}
}

// wrap adds context to err: errors of this package already name it, so
// the context goes after them; others get the package prefix.
func wrap(err error, context string) error {
	if strings.HasPrefix(err.Error(), "transport: ") {
		return fmt.Errorf("%w (%s)", err, context)
	}
	return fmt.Errorf("transport: %s: %w", context, err)
}

// maxOrDefault maps a non-positive limit to DefaultMaxFrame.
func maxOrDefault(limit int) int {
	if limit <= 0 {
		return DefaultMaxFrame
	}
	return limit
}
