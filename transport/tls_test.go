package transport

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// safetyCtx bounds a test that would otherwise hang on a bug. Nothing waits
// for it to expire on the passing path.
func safetyCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// refusals is a listener log that signals each refused connection.
type refusals struct {
	lg *logLines
	ch chan string
}

func newRefusals(t *testing.T) *refusals {
	return &refusals{lg: newLog(t), ch: make(chan string, 64)}
}

func (r *refusals) log(s string) {
	r.lg.log(s)
	if strings.Contains(s, "refused") {
		r.ch <- s
	}
}

// next waits for the listener to report a refusal.
func (r *refusals) next(t *testing.T, ctx context.Context) string {
	t.Helper()
	select {
	case s := <-r.ch:
		return s
	case <-ctx.Done():
		t.Fatal("the listener never reported the refusal")
		return ""
	}
}

func listenTLS(t *testing.T, key ed25519.PrivateKey, pins Pins, opts TLSOptions) *TLSListener {
	t.Helper()
	ln, err := ListenTLS(context.Background(), "127.0.0.1:0", key, pins, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	return ln
}

func dialTLS(t *testing.T, ctx context.Context, key ed25519.PrivateKey, pins Pins, addr string) (Conn, error) {
	t.Helper()
	c, err := DialTLS(ctx, addr, key, pins, TLSOptions{})
	if err == nil {
		t.Cleanup(func() { _ = c.Close() })
	}
	return c, err
}

// goodPeerWorks checks that the listener still accepts and serves keyA.
func goodPeerWorks(t *testing.T, ctx context.Context, ln *TLSListener) {
	t.Helper()
	c, err := dialTLS(t, ctx, keyA, NewPinSet(pubB), ln.Addr())
	if err != nil {
		t.Fatalf("good peer refused: %v", err)
	}
	s, err := ln.Accept(ctx)
	if err != nil {
		t.Fatalf("Accept for the good peer: %v", err)
	}
	defer s.Close()
	if !s.RemoteIdentity().Equal(pubA) {
		t.Fatalf("Accept returned %s, want the good peer %s", Fingerprint(s.RemoteIdentity()), Fingerprint(pubA))
	}
	if err := c.Send(ctx, []byte("ping")); err != nil {
		t.Fatal(err)
	}
	if f, err := s.Recv(ctx); err != nil || string(f) != "ping" {
		t.Fatalf("good peer's frame: %q, %v", f, err)
	}
}

func TestTLSPinnedPeersExchangeFrames(t *testing.T) {
	ctx := safetyCtx(t)
	ln := listenTLS(t, keyB, NewPinSet(pubA), TLSOptions{})
	c, err := dialTLS(t, ctx, keyA, NewPinSet(pubB), ln.Addr())
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if !c.RemoteIdentity().Equal(pubB) || !s.RemoteIdentity().Equal(pubA) {
		t.Fatal("RemoteIdentity is not the peer's pinned key")
	}
	frames := [][]byte{[]byte("hello"), {}, pattern(1 << 20), pattern(DefaultMaxFrame)}
	// Both directions at once, each sender on its own goroutine (a sender
	// blocks once the TCP buffers are full until the other side reads).
	var wg sync.WaitGroup
	for _, conn := range []Conn{s, c} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, f := range frames {
				if err := conn.Send(ctx, f); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	for _, f := range frames {
		got, err := s.Recv(ctx)
		if err != nil || !bytes.Equal(got, f) {
			t.Fatalf("server got %d bytes (%v), want %d", len(got), err, len(f))
		}
		got, err = c.Recv(ctx)
		if err != nil || !bytes.Equal(got, f) {
			t.Fatalf("client got %d bytes (%v), want %d", len(got), err, len(f))
		}
	}
	wg.Wait()
	total := uint64(5 + (1 << 20) + DefaultMaxFrame)
	// The acceptance frame is transport-internal and not counted.
	want := Stats{FramesSent: 4, FramesRecv: 4, BytesSent: total, BytesRecv: total}
	for _, conn := range []Conn{c, s} {
		if got := conn.(StatsConn).Stats(); got != want {
			t.Fatalf("Stats = %+v, want %+v", got, want)
		}
	}
	if err := c.Send(ctx, make([]byte, DefaultMaxFrame+1)); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("oversized Send: %v", err)
	}
	// Nothing was written: the conn still works; then a clean close is io.EOF.
	if err := c.Send(ctx, []byte("bye")); err != nil {
		t.Fatal(err)
	}
	_ = c.Close()
	if f, err := s.Recv(ctx); err != nil || string(f) != "bye" {
		t.Fatalf("after an oversized Send: %q, %v", f, err)
	}
	if _, err := s.Recv(ctx); err != io.EOF {
		t.Fatalf("Recv after the peer closed: %v, want io.EOF", err)
	}
}

func TestTLSUnknownClientRefused(t *testing.T) {
	ctx := safetyCtx(t)
	rf := newRefusals(t)
	ln := listenTLS(t, keyB, NewPinSet(pubA), TLSOptions{Log: rf.log})
	for range 3 {
		_, err := dialTLS(t, ctx, keyC, NewPinSet(pubB), ln.Addr())
		if !errors.Is(err, ErrUnknownPeer) {
			t.Fatalf("unknown client's Dial: %v, want ErrUnknownPeer", err)
		}
		if s := rf.next(t, ctx); !strings.Contains(s, Fingerprint(pubC)) {
			t.Fatalf("refusal does not name the unknown key: %s", s)
		}
	}
	// Accept never yielded the refused peers: the first conn is the good one.
	goodPeerWorks(t, ctx, ln)
}

func TestTLSUnknownServerRefused(t *testing.T) {
	ctx := safetyCtx(t)
	rf := newRefusals(t)
	var mu sync.Mutex
	var asked []string
	pins := PinFunc(func(pub ed25519.PublicKey) bool {
		mu.Lock()
		defer mu.Unlock()
		asked = append(asked, Fingerprint(pub))
		return pub.Equal(pubA)
	})
	ln := listenTLS(t, keyB, pins, TLSOptions{Log: rf.log})
	// The client pins C, not the server's B.
	_, err := dialTLS(t, ctx, keyA, NewPinSet(pubC), ln.Addr())
	if !errors.Is(err, ErrUnknownPeer) {
		t.Fatalf("Dial to an unknown server: %v, want ErrUnknownPeer", err)
	}
	if !strings.Contains(err.Error(), Fingerprint(pubB)) {
		t.Fatalf("error does not name the server's key: %v", err)
	}
	rf.next(t, ctx) // the server's handshake failed on the client's alert
	mu.Lock()
	if len(asked) != 0 {
		t.Fatalf("the client sent its certificate to an unknown server (server checked %v)", asked)
	}
	mu.Unlock()
	goodPeerWorks(t, ctx, ln)
}

func TestTLSPinsUpdateLive(t *testing.T) {
	ctx := safetyCtx(t)
	pins := NewPinSet()
	ln := listenTLS(t, keyB, pins, TLSOptions{})
	if _, err := dialTLS(t, ctx, keyA, NewPinSet(pubB), ln.Addr()); !errors.Is(err, ErrUnknownPeer) {
		t.Fatalf("before pinning: %v, want ErrUnknownPeer", err)
	}
	if err := pins.AddFingerprint(strings.ToUpper(Fingerprint(pubA))); err != nil {
		t.Fatal(err)
	}
	goodPeerWorks(t, ctx, ln)
	pins.Remove(pubA)
	if _, err := dialTLS(t, ctx, keyA, NewPinSet(pubB), ln.Addr()); !errors.Is(err, ErrUnknownPeer) {
		t.Fatalf("after unpinning: %v, want ErrUnknownPeer", err)
	}
}

// impostorCert is A's certificate (public) with another private key.
func impostorCert(t *testing.T, victim, impostor ed25519.PrivateKey) tls.Certificate {
	t.Helper()
	cert, err := IdentityCertificate(victim)
	if err != nil {
		t.Fatal(err)
	}
	cert.PrivateKey = impostor
	return cert
}

func TestTLSImpostorRefused(t *testing.T) {
	ctx := safetyCtx(t)
	t.Run("client", func(t *testing.T) {
		rf := newRefusals(t)
		ln := listenTLS(t, keyB, NewPinSet(pubA), TLSOptions{Log: rf.log})
		// C presents A's certificate but can only sign with C's key.
		cfg := tlsConfig(impostorCert(t, keyA, keyC), NewPinSet(pubB), false)
		d := &TLSDialer{cfg: cfg, opts: TLSOptions{HandshakeTimeout: time.Minute}}
		_, err := d.Dial(ctx, ln.Addr())
		if err == nil {
			t.Fatal("impostor client accepted")
		}
		t.Logf("impostor's Dial: %v", err)
		rf.next(t, ctx)
		goodPeerWorks(t, ctx, ln)
	})
	t.Run("server", func(t *testing.T) {
		// The server presents A's certificate but holds C's key.
		cfg := tlsConfig(impostorCert(t, keyA, keyC), NewPinSet(pubB), true)
		raw, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer raw.Close()
		done := make(chan struct{})
		go func() {
			defer close(done)
			nc, err := raw.Accept()
			if err != nil {
				return
			}
			defer nc.Close()
			_ = tls.Server(nc, cfg).HandshakeContext(ctx)
		}()
		_, err = dialTLS(t, ctx, keyB, NewPinSet(pubA), raw.Addr().String())
		if err == nil {
			t.Fatal("impostor server accepted")
		}
		t.Logf("Dial to an impostor: %v", err)
		<-done
	})
}

func TestTLSGarbageAndPlaintextRefused(t *testing.T) {
	ctx := safetyCtx(t)
	rf := newRefusals(t)
	ln := listenTLS(t, keyB, NewPinSet(pubA), TLSOptions{Log: rf.log})
	rng := rand.New(rand.NewPCG(1, 2))
	garbage := make([]byte, 4096)
	for i := range garbage {
		garbage[i] = byte(rng.Uint32())
	}
	plainFrame := append(prefix(5), "hello"...)
	cases := map[string][]byte{
		"garbage":                     garbage,
		"plaintext frame":             plainFrame,
		"http":                        []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
		"tls record header then junk": append([]byte{0x16, 0x03, 0x01, 0x00, 0x20}, garbage[:32]...),
	}
	for name, payload := range cases {
		t.Run(name, func(t *testing.T) {
			nc, err := net.Dial("tcp", ln.Addr())
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			_ = nc.SetDeadline(time.Now().Add(30 * time.Second)) // safety net only
			if _, err := nc.Write(payload); err != nil {
				t.Fatal(err)
			}
			// The server ends the connection: reading reaches EOF (or a
			// reset), after at most an alert.
			rest, err := io.ReadAll(nc)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatal("the server kept a garbage connection open")
			}
			if bytes.Contains(rest, []byte("ferry-accept")) {
				t.Fatal("the server accepted a garbage connection")
			}
			rf.next(t, ctx)
			goodPeerWorks(t, ctx, ln)
		})
	}
	// A TLS client without ALPN "ferry/1" is refused too.
	cfg := tlsConfig(mustCert(t, keyA), NewPinSet(pubB), false)
	cfg.NextProtos = nil
	nc, err := tls.Dial("tcp", ln.Addr(), cfg)
	if err == nil {
		_, err = ReadFrame(nc, 64)
		_ = nc.Close()
	}
	if err == nil {
		t.Fatal("a client without ALPN was accepted")
	}
	rf.next(t, ctx)
	goodPeerWorks(t, ctx, ln)
}

func mustCert(t *testing.T, k ed25519.PrivateKey) tls.Certificate {
	t.Helper()
	c, err := IdentityCertificate(k)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestTLSSilentClientsDoNotBlockOthers(t *testing.T) {
	ctx := safetyCtx(t)
	ln := listenTLS(t, keyB, NewPinSet(pubA), TLSOptions{MaxHandshakes: 8, HandshakeTimeout: time.Hour})
	var silent []net.Conn
	for range 4 {
		nc, err := net.Dial("tcp", ln.Addr())
		if err != nil {
			t.Fatal(err)
		}
		silent = append(silent, nc)
	}
	goodPeerWorks(t, ctx, ln)
	for _, nc := range silent {
		_ = nc.Close()
	}
}

func TestTLSHandshakeTimeout(t *testing.T) {
	rf := newRefusals(t)
	ln := listenTLS(t, keyB, NewPinSet(pubA), TLSOptions{HandshakeTimeout: 50 * time.Millisecond, Log: rf.log})
	nc, err := net.Dial("tcp", ln.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	// The client says nothing; the server gives up when its handshake
	// timeout fires, and the read sees the connection end.
	_ = nc.SetDeadline(time.Now().Add(30 * time.Second)) // safety net only
	if _, err := io.ReadAll(nc); errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatal("the server never timed out the silent handshake")
	}
	if s := rf.next(t, safetyCtx(t)); !strings.Contains(s, "handshake") {
		t.Fatalf("unexpected refusal: %s", s)
	}
}

func TestTLSListenerCloseAbortsHandshakes(t *testing.T) {
	ctx := safetyCtx(t)
	ln, err := ListenTLS(ctx, "127.0.0.1:0", keyB, NewPinSet(pubA), TLSOptions{HandshakeTimeout: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	nc, err := net.Dial("tcp", ln.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	errc := make(chan error, 1)
	go func() { _, err := ln.Accept(ctx); errc <- err }()
	// Close must abort the hour-long pending handshake and wait for it.
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; !errors.Is(err, ErrClosed) {
		t.Fatalf("Accept after Close: %v, want ErrClosed", err)
	}
	if err := ln.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := DialTLS(ctx, ln.Addr(), keyA, NewPinSet(pubB), TLSOptions{}); !errors.Is(err, ErrRefused) {
		t.Fatalf("Dial to a closed listener: %v, want ErrRefused", err)
	}
}

// hostileConn completes a real handshake as the pinned identity key and
// returns the raw TLS stream, to write what a well-behaved peer never would.
func hostileConn(t *testing.T, ctx context.Context, key ed25519.PrivateKey, serverPub ed25519.PublicKey, addr string) *tls.Conn {
	t.Helper()
	tc, err := tls.Dial("tcp", addr, tlsConfig(mustCert(t, key), NewPinSet(serverPub), false))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tc.Close() })
	if f, err := ReadFrame(tc, 64); err != nil || !bytes.Equal(f, acceptFrame) {
		t.Fatalf("no acceptance: %q, %v", f, err)
	}
	return tc
}

func TestTLSHostileFramesEndOnlyThatSession(t *testing.T) {
	ctx := safetyCtx(t)
	ln := listenTLS(t, keyB, NewPinSet(pubA), TLSOptions{MaxFrame: 1 << 16})
	cases := []struct {
		name  string
		write func(tc *tls.Conn)
		want  error
	}{
		{"claims 1 GiB", func(tc *tls.Conn) { _, _ = tc.Write(append(prefix(1<<30), "xyz"...)) }, ErrFrameTooLarge},
		{"one byte over the limit", func(tc *tls.Conn) { _, _ = tc.Write(append(prefix(1<<16+1), make([]byte, 100)...)) }, ErrFrameTooLarge},
		{"truncated then close_notify", func(tc *tls.Conn) {
			_, _ = tc.Write(append(prefix(100), "only ten b"...))
			_ = tc.Close()
		}, io.ErrUnexpectedEOF},
		{"truncated prefix then TCP close", func(tc *tls.Conn) {
			_, _ = tc.Write([]byte{0, 0})
			_ = tc.NetConn().Close()
		}, io.ErrUnexpectedEOF},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// A good session stays open alongside the hostile one.
			good, err := dialTLS(t, ctx, keyA, NewPinSet(pubB), ln.Addr())
			if err != nil {
				t.Fatal(err)
			}
			goodSrv, err := ln.Accept(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer goodSrv.Close()

			h := hostileConn(t, ctx, keyA, pubB, ln.Addr())
			srv, err := ln.Accept(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer srv.Close()
			// A valid frame first, then the attack.
			if err := WriteFrame(h, []byte("legit"), 0); err != nil {
				t.Fatal(err)
			}
			tc.write(h)
			if f, err := srv.Recv(ctx); err != nil || string(f) != "legit" {
				t.Fatalf("legit frame: %q, %v", f, err)
			}
			_, err = srv.Recv(ctx)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Recv = %v, want %v", err, tc.want)
			}
			t.Logf("hostile session ended with: %v", err)
			if _, err2 := srv.Recv(ctx); !errors.Is(err2, tc.want) {
				t.Fatalf("second Recv = %v, want the same error", err2)
			}
			// The server closed the hostile session...
			_ = h.SetReadDeadline(time.Now().Add(30 * time.Second)) // safety net only
			if _, err := io.ReadAll(h); errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatal("the server kept the hostile session open")
			}
			// ...and nothing else was harmed.
			if err := good.Send(ctx, []byte("still fine")); err != nil {
				t.Fatal(err)
			}
			if f, err := goodSrv.Recv(ctx); err != nil || string(f) != "still fine" {
				t.Fatalf("good session after the attack: %q, %v", f, err)
			}
			goodPeerWorks(t, ctx, ln)
		})
	}
}

func TestTLSRecvContext(t *testing.T) {
	ctx := safetyCtx(t)
	ln := listenTLS(t, keyB, NewPinSet(pubA), TLSOptions{})
	c, err := dialTLS(t, ctx, keyA, NewPinSet(pubB), ln.Addr())
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	rctx, cancel := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() { _, err := s.Recv(rctx); errc <- err }()
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Recv: %v, want context.Canceled", err)
	}
	// The session survives a cancelled Recv.
	if err := c.Send(ctx, []byte("after cancel")); err != nil {
		t.Fatal(err)
	}
	if f, err := s.Recv(ctx); err != nil || string(f) != "after cancel" {
		t.Fatalf("Recv after a cancelled Recv: %q, %v", f, err)
	}
	// A pending Recv is released by Close.
	go func() { _, err := s.Recv(ctx); errc <- err }()
	_ = s.Close()
	if err := <-errc; !errors.Is(err, ErrClosed) {
		t.Fatalf("pending Recv after Close: %v, want ErrClosed", err)
	}
	// The client sees the server's close as io.EOF.
	if _, err := c.Recv(ctx); err != io.EOF {
		t.Fatalf("client Recv after server Close: %v, want io.EOF", err)
	}
}

func TestTLSOptionsAndArguments(t *testing.T) {
	ctx := context.Background()
	if _, err := ListenTLS(ctx, "127.0.0.1:0", keyB, nil, TLSOptions{}); err == nil {
		t.Error("nil pins accepted")
	}
	if _, err := ListenTLS(ctx, "127.0.0.1:0", ed25519.PrivateKey{1, 2}, NewPinSet(), TLSOptions{}); err == nil {
		t.Error("short identity key accepted")
	}
	if _, err := NewTLSDialer(keyA, NewPinSet(), TLSOptions{MaxFrame: -1}); err == nil {
		t.Error("negative MaxFrame accepted")
	}
	if _, err := NewTLSDialer(keyA, nil, TLSOptions{}); err == nil {
		t.Error("nil pins accepted by the dialer")
	}
	c1, err := IdentityCertificate(keyA)
	if err != nil {
		t.Fatal(err)
	}
	c2, _ := IdentityCertificate(keyA)
	if !bytes.Equal(c1.Certificate[0], c2.Certificate[0]) {
		t.Error("identity certificate is not deterministic")
	}
	if !c1.Leaf.PublicKey.(ed25519.PublicKey).Equal(pubA) {
		t.Error("certificate key is not the identity")
	}
}
