package transport

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"fmt"
	"strings"
	"sync"
	"testing"
)

// testKey returns a deterministic identity for tests.
func testKey(b byte) ed25519.PrivateKey {
	return ed25519.NewKeyFromSeed(bytes.Repeat([]byte{b}, ed25519.SeedSize))
}

func pubOf(k ed25519.PrivateKey) ed25519.PublicKey { return k.Public().(ed25519.PublicKey) }

// logLines collects log lines and mirrors them to the test log.
type logLines struct {
	t  testing.TB
	mu sync.Mutex
	l  []string
}

func newLog(t testing.TB) *logLines { return &logLines{t: t} }

func (l *logLines) log(s string) {
	l.t.Helper()
	l.t.Log(s)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.l = append(l.l, s)
}

func (l *logLines) lines() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.l...)
}

func (l *logLines) contains(sub string) bool {
	for _, s := range l.lines() {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

func frameN(i int) []byte { return []byte(fmt.Sprintf("frame-%04d", i)) }

func mustSend(t testing.TB, c Conn, f []byte) {
	t.Helper()
	if err := c.Send(context.Background(), f); err != nil {
		t.Fatalf("Send(%q): %v", f, err)
	}
}

func mustRecv(t testing.TB, c Conn, want []byte) {
	t.Helper()
	got, err := c.Recv(context.Background())
	if err != nil {
		t.Fatalf("Recv (want %q): %v", want, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("Recv = %q, want %q", got, want)
	}
}

// cancelledCtx is a context that is already cancelled.
func cancelledCtx() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}
