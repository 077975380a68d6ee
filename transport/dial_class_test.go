package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"testing"
)

// servePlain answers every TCP connection on a fresh listener with serve.
func servePlain(t *testing.T, serve func(net.Conn)) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			serve(c)
			c.Close()
		}
	}()
	t.Cleanup(func() { l.Close(); <-done })
	return l.Addr().String()
}

// TestDialClassifiesFailures: a peer that hangs up during the handshake
// is ErrClosed (a network failure), one that speaks another protocol is
// ErrNotFerry; neither is left as a bare error.
func TestDialClassifiesFailures(t *testing.T) {
	ctx := context.Background()
	pins := NewPinSet(pubOf(testKey(2)))
	cert, err := IdentityCertificate(testKey(2))
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string]struct {
		serve func(net.Conn)
		want  error
	}{
		"hangs up": {func(net.Conn) {}, ErrClosed},
		"speaks HTTP": {func(c net.Conn) {
			c.Read(make([]byte, 4096))
			c.Write([]byte("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"))
		}, ErrNotFerry},
		"TLS without ferry's ALPN": {func(c net.Conn) {
			tc := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2"},
				ClientAuth: tls.RequireAnyClientCert, MinVersion: tls.VersionTLS13})
			tc.HandshakeContext(ctx)
			tc.Close()
		}, ErrNotFerry},
		"TLS then no acceptance": {func(c net.Conn) {
			tc := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{alpnProto},
				ClientAuth: tls.RequireAnyClientCert, MinVersion: tls.VersionTLS13})
			if tc.HandshakeContext(ctx) == nil {
				WriteFrame(tc, []byte("hello there"), 0)
			}
			tc.Close()
		}, ErrNotFerry},
	}
	for name, c := range cases {
		addr := servePlain(t, c.serve)
		_, err := DialTLS(ctx, addr, testKey(1), pins, TLSOptions{})
		if !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", name, err, c.want)
		}
	}
}
