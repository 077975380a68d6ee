package transport

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

func TestStreamRecvCancelResumesMidFrame(t *testing.T) {
	raw, theirs := net.Pipe()
	c := NewStreamConn(theirs, pubA, 0)
	defer c.Close()
	defer raw.Close()
	if !c.RemoteIdentity().Equal(pubA) {
		t.Fatal("RemoteIdentity is not the given key")
	}

	wire := append(prefix(10), "0123456789"...)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { _, err := c.Recv(ctx); errc <- err }()
	// net.Pipe's Write returns once the reader consumed the bytes: the
	// pending Recv holds the prefix and half the body when we cancel.
	if _, err := raw.Write(wire[:9]); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Recv: %v, want context.Canceled", err)
	}
	go func() { _, err := raw.Write(wire[9:]); errc <- err }()
	got, err := c.Recv(context.Background())
	if err != nil || string(got) != "0123456789" {
		t.Fatalf("Recv after cancel = %q, %v; the frame must resume intact", got, err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}

	// An expired context deadline is reported as such, without reading.
	dctx, dcancel := context.WithDeadline(context.Background(), time.Unix(0, 0))
	defer dcancel()
	if _, err := c.Recv(dctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Recv with an expired deadline: %v", err)
	}
}

func TestStreamSendCancelClosesConn(t *testing.T) {
	raw, theirs := net.Pipe()
	defer raw.Close()
	c := NewStreamConn(theirs, pubA, 0)
	defer c.Close()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- c.Send(ctx, []byte("stuck")) }()
	// Read two bytes: the Send has started writing, and stays blocked on the
	// rest since nobody reads more.
	if _, err := io.ReadFull(raw, make([]byte, 2)); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("blocked Send after cancel: %v, want context.Canceled", err)
	}
	// The peer may have seen part of the frame: the conn is closed.
	if err := c.Send(context.Background(), []byte("x")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Send after an interrupted Send: %v, want ErrClosed", err)
	}
	// A Send with an already-cancelled context writes nothing and keeps the
	// conn.
	raw2, theirs2 := net.Pipe()
	defer raw2.Close()
	c2 := NewStreamConn(theirs2, pubA, 0)
	defer c2.Close()
	if err := c2.Send(cancelledCtx(), []byte("x")); !errors.Is(err, context.Canceled) {
		t.Fatalf("Send with a cancelled ctx: %v", err)
	}
	go func() { errc <- c2.Send(context.Background(), []byte("ok")) }()
	got, err := ReadFrame(raw2, 0)
	if err != nil || string(got) != "ok" {
		t.Fatalf("conn unusable after a Send that never started: %q, %v", got, err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

func TestStreamHostileFramesEndSession(t *testing.T) {
	cases := []struct {
		name string
		wire []byte
		want error
	}{
		{"oversized", append(prefix(1<<30), "xyz"...), ErrFrameTooLarge},
		{"just over the limit", append(prefix(101), make([]byte, 101)...), ErrFrameTooLarge},
		{"truncated body", append(prefix(50), "short"...), io.ErrUnexpectedEOF},
		{"truncated prefix", []byte{0, 0}, io.ErrUnexpectedEOF},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			raw, theirs := net.Pipe()
			c := NewStreamConn(theirs, pubA, 100)
			defer c.Close()
			go func() {
				_, _ = raw.Write(tc.wire)
				_ = raw.Close()
			}()
			_, err := c.Recv(context.Background())
			if !errors.Is(err, tc.want) {
				t.Fatalf("Recv = %v, want %v", err, tc.want)
			}
			// The error is sticky and the stream was closed.
			if _, err2 := c.Recv(context.Background()); !errors.Is(err2, tc.want) {
				t.Fatalf("second Recv = %v, want the same error", err2)
			}
			if err := c.Send(context.Background(), []byte("x")); err == nil {
				t.Fatal("Send on a conn ended by a hostile frame succeeded")
			}
		})
	}
}

func TestStreamCloseAndEOF(t *testing.T) {
	raw, theirs := net.Pipe()
	c := NewStreamConn(theirs, pubA, 0)
	errc := make(chan error, 1)
	go func() { _, err := c.Recv(context.Background()); errc <- err }()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; !errors.Is(err, ErrClosed) {
		t.Fatalf("pending Recv after Close: %v, want ErrClosed", err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	_ = raw.Close()

	raw, theirs = net.Pipe()
	c = NewStreamConn(theirs, pubA, 0)
	defer c.Close()
	go func() {
		_ = WriteFrame(raw, []byte("last"), 0)
		_ = raw.Close()
	}()
	mustRecv(t, c, []byte("last"))
	if _, err := c.Recv(context.Background()); err != io.EOF {
		t.Fatalf("Recv after the peer closed at a frame boundary: %v, want io.EOF", err)
	}
	st := c.(StatsConn).Stats()
	if st.FramesRecv != 1 || st.BytesRecv != 4 {
		t.Fatalf("Stats = %+v", st)
	}
	if err := c.Send(context.Background(), bytes.Repeat([]byte{1}, DefaultMaxFrame+1)); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("oversized Send: %v", err)
	}
}
