package transport

import (
	"bytes"
	"context"
	"errors"
	"testing"
)

func TestRecord(t *testing.T) {
	n, _ := newMem(t, 1)
	a, b := memPair(t, n, listenB(t, n))
	ra, rec := Record(a)
	if !ra.RemoteIdentity().Equal(pubB) {
		t.Fatal("Record changed the identity")
	}
	ctx := context.Background()
	buf := []byte("secret-token-1")
	if err := ra.Send(ctx, buf); err != nil {
		t.Fatal(err)
	}
	copy(buf, "XXXXXX") // the recorder kept its own copy
	mustSend(t, b, []byte("reply"))
	if f, err := ra.Recv(ctx); err != nil || string(f) != "reply" {
		t.Fatalf("Recv through the recorder: %q, %v", f, err)
	}
	mustRecv(t, b, []byte("secret-token-1"))

	if got := rec.Sent(); len(got) != 1 || string(got[0]) != "secret-token-1" {
		t.Fatalf("Sent = %q", got)
	}
	if got := rec.Received(); len(got) != 1 || string(got[0]) != "reply" {
		t.Fatalf("Received = %q", got)
	}
	if !rec.Crossed([]byte("token")) || !rec.Crossed([]byte("epl")) || rec.Crossed([]byte("absent")) {
		t.Fatal("Crossed is wrong")
	}
	// Copies returned to the caller do not alias the recorder.
	rec.Sent()[0][0] = 'Z'
	if !bytes.Equal(rec.Sent()[0], []byte("secret-token-1")) {
		t.Fatal("Sent returned the recorder's own buffer")
	}

	// A failed Send is recorded (bytes may have left) but not counted.
	if err := ra.Send(ctx, make([]byte, DefaultMaxFrame+1)); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatal(err)
	}
	want := Stats{FramesSent: 1, FramesRecv: 1, BytesSent: 14, BytesRecv: 5}
	if got := rec.Stats(); got != want {
		t.Fatalf("Stats = %+v, want %+v", got, want)
	}
	if got := ra.(StatsConn).Stats(); got != want {
		t.Fatalf("conn Stats = %+v, want %+v", got, want)
	}
	if len(rec.Sent()) != 2 {
		t.Fatal("the failed Send was not recorded")
	}
	rec.Reset()
	if len(rec.Sent()) != 0 || rec.Stats() != (Stats{}) {
		t.Fatal("Reset kept something")
	}
	if err := ra.Close(); err != nil {
		t.Fatal(err)
	}
}
