package relay

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"log/slog"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

// fakeClock is a manual clock: After channels fire only on Advance.
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	timers  []fakeTimer
	started chan time.Duration // receives each After duration (buffered)
}

type fakeTimer struct {
	at time.Time
	ch chan time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC), started: make(chan time.Duration, 64)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	ch := make(chan time.Time, 1)
	c.timers = append(c.timers, fakeTimer{at: c.now.Add(d), ch: ch})
	c.mu.Unlock()
	select {
	case c.started <- d:
	default:
	}
	return ch
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	kept := c.timers[:0]
	for _, t := range c.timers {
		if !t.at.After(c.now) {
			t.ch <- c.now
		} else {
			kept = append(kept, t)
		}
	}
	c.timers = kept
}

// logSink collects everything the relay logs.
type logSink struct {
	mu  sync.Mutex
	buf bytes.Buffer
	ch  chan string // each record's message and attributes (buffered, lossy)
}

func newLogSink() *logSink { return &logSink{ch: make(chan string, 1024)} }

func (s *logSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case s.ch <- string(p):
	default:
	}
	return s.buf.Write(p)
}

func (s *logSink) Bytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Clone(s.buf.Bytes())
}

func (s *logSink) logger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(s, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func newKey(t testing.TB) ed25519.PrivateKey {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func pubOf(k ed25519.PrivateKey) ed25519.PublicKey { return k.Public().(ed25519.PublicKey) }

// testRelay is a relay served by httptest from a directory that survives
// restart.
type testRelay struct {
	t    testing.TB
	dir  string
	opts ServerOptions
	srv  *Server
	ts   *httptest.Server
	url  string
}

func newTestRelay(t testing.TB, opts ServerOptions) *testRelay {
	t.Helper()
	opts.NoSync = true
	r := &testRelay{t: t, dir: t.TempDir(), opts: opts}
	r.open()
	t.Cleanup(r.close)
	return r
}

func (r *testRelay) open() {
	r.t.Helper()
	srv, err := NewServer(r.dir, r.opts)
	if err != nil {
		r.t.Fatal(err)
	}
	r.srv = srv
	if r.ts == nil {
		r.ts = httptest.NewServer(srv)
		r.url = r.ts.URL
	} else {
		r.ts.Config.Handler = srv
	}
}

func (r *testRelay) close() {
	if r.ts != nil {
		r.ts.CloseClientConnections()
	}
	if r.srv != nil {
		if err := r.srv.Close(); err != nil {
			r.t.Error(err)
		}
		r.srv = nil
	}
	if r.ts != nil {
		r.ts.Close()
		r.ts = nil
	}
}

// restart closes the database and reopens it from the same directory,
// behind the same URL.
func (r *testRelay) restart() {
	r.t.Helper()
	r.ts.CloseClientConnections()
	if err := r.srv.Close(); err != nil {
		r.t.Fatal(err)
	}
	r.open()
}

// client returns a client of the relay that never sleeps.
func (r *testRelay) client(key ed25519.PrivateKey) *Client {
	return &Client{
		URL:      r.url,
		Identity: key,
		HTTP:     r.ts.Client(),
		Sleep:    func(ctx context.Context, _ time.Duration) error { return ctx.Err() },
	}
}

// device is a member device with its client, verifier and sender state.
type device struct {
	key ed25519.PrivateKey
	c   *Client
	kv  *MemKV
}

func newDevice(t testing.TB, r *testRelay) *device {
	k := newKey(t)
	return &device{key: k, c: r.client(k), kv: NewMemKV()}
}

func (d *device) pub() ed25519.PublicKey { return pubOf(d.key) }

// send pushes payload with the device's Sender.
func (d *device) send(t testing.TB, space Space, payload string) uint64 {
	t.Helper()
	s, err := NewSender(t.Context(), d.c, space, d.kv)
	if err != nil {
		t.Fatal(err)
	}
	seq, err := s.Send(t.Context(), []byte(payload))
	if err != nil {
		t.Fatal(err)
	}
	return seq
}

// receive runs one Receive with a fresh Verifier over the device's KV (as
// after a restart) and returns the payloads as "fp-prefix:payload".
func (d *device) receive(t testing.TB, space Space) ([]string, error) {
	t.Helper()
	v, err := NewVerifier(t.Context(), space, d.kv, VerifierOptions{Self: d.pub()})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	_, err = v.Receive(t.Context(), d.c, 0, func(m Message) error {
		got = append(got, string(m.Payload))
		return nil
	})
	return got, err
}

func newSpace(t testing.TB, url string) Space {
	t.Helper()
	s, err := NewSpace(url)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func edSign(k []byte, msg []byte) []byte { return ed25519.Sign(ed25519.PrivateKey(k), msg) }
