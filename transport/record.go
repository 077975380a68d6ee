package transport

import (
	"bytes"
	"context"
	"sync"
)

// Recorder keeps a copy of every frame that crossed a connection wrapped by
// Record, for tests that check what left the device (privacy) and how much
// (delta sync).
type Recorder struct {
	mu   sync.Mutex
	sent [][]byte
	recv [][]byte
	st   counters
}

// Record wraps conn so that every frame handed to Send and every frame
// returned by Recv is copied into the returned Recorder. A frame whose Send
// failed is recorded too (part of it may have left), but Stats counts only
// successful Sends.
func Record(conn Conn) (Conn, *Recorder) {
	r := &Recorder{}
	return &recordedConn{Conn: conn, r: r}, r
}

// Sent returns copies of the frames sent so far, in order.
func (r *Recorder) Sent() [][]byte { return r.copyOf(&r.sent) }

// Received returns copies of the frames received so far, in order.
func (r *Recorder) Received() [][]byte { return r.copyOf(&r.recv) }

func (r *Recorder) copyOf(frames *[][]byte) [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([][]byte, len(*frames))
	for i, f := range *frames {
		out[i] = bytes.Clone(f)
	}
	return out
}

// Stats counts the frames and bytes that crossed successfully.
func (r *Recorder) Stats() Stats { return r.st.stats() }

// Crossed reports whether needle occurs inside any recorded frame, in
// either direction. (It does not look across frame boundaries.)
func (r *Recorder) Crossed(needle []byte) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, frames := range [][][]byte{r.sent, r.recv} {
		for _, f := range frames {
			if bytes.Contains(f, needle) {
				return true
			}
		}
	}
	return false
}

// Reset forgets everything recorded so far, counters included.
func (r *Recorder) Reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sent, r.recv = nil, nil
	r.st.framesSent.Store(0)
	r.st.framesRecv.Store(0)
	r.st.bytesSent.Store(0)
	r.st.bytesRecv.Store(0)
}

type recordedConn struct {
	Conn
	r *Recorder
}

var _ StatsConn = (*recordedConn)(nil)

func (c *recordedConn) Send(ctx context.Context, frame []byte) error {
	c.r.mu.Lock()
	c.r.sent = append(c.r.sent, bytes.Clone(frame))
	c.r.mu.Unlock()
	err := c.Conn.Send(ctx, frame)
	if err == nil {
		c.r.st.sent(len(frame))
	}
	return err
}

func (c *recordedConn) Recv(ctx context.Context) ([]byte, error) {
	frame, err := c.Conn.Recv(ctx)
	if err == nil {
		c.r.mu.Lock()
		c.r.recv = append(c.r.recv, bytes.Clone(frame))
		c.r.mu.Unlock()
		c.r.st.recv(len(frame))
	}
	return frame, err
}

// Stats reports the recorder's counters.
func (c *recordedConn) Stats() Stats { return c.r.Stats() }
