package relay

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"slices"
	"testing"
)

// sealedLog seals n payloads "s<i>" of one sender as envelopes with seqs
// from firstSeq.
func sealedLog(t *testing.T, space Space, k ed25519.PrivateKey, n int, firstSeq uint64) []Envelope {
	t.Helper()
	var out []Envelope
	for i := 1; i <= n; i++ {
		b, err := Seal(space, k, uint64(i), []byte(fmt.Sprintf("s%d", i)))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, Envelope{Seq: firstSeq + uint64(i) - 1, Sender: pubOf(k), Data: b})
	}
	return out
}

func payloads(ms []Message) []string {
	var out []string
	for _, m := range ms {
		out = append(out, string(m.Payload))
	}
	return out
}

func applyAll(t *testing.T, v *Verifier, ms []Message) {
	t.Helper()
	for _, m := range ms {
		if err := v.Applied(t.Context(), m.Sender, m.Counter); err != nil {
			t.Fatal(err)
		}
	}
}

// Yielded but unconfirmed payloads come again after a restart; confirmed
// ones never do; the cursor never passes what is not confirmed.
func TestVerifierExactlyOnceAcrossRestarts(t *testing.T) {
	ctx := t.Context()
	space := newSpace(t, "u")
	k := newKey(t)
	log := sealedLog(t, space, k, 5, 1)
	kv := NewMemKV()

	v, err := NewVerifier(ctx, space, kv, VerifierOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ms, err := v.Add(ctx, log[:3]...)
	if err != nil || !slices.Equal(payloads(ms), []string{"s1", "s2", "s3"}) {
		t.Fatalf("add: %q %v", payloads(ms), err)
	}
	if err := v.Applied(ctx, k.Public().(ed25519.PublicKey), 2); err != nil { // s3 not confirmed
		t.Fatal(err)
	}
	if v.Done() != 2 {
		t.Fatalf("done %d, want 2", v.Done())
	}
	if err := v.Applied(ctx, pubOf(k), 4); !errors.Is(err, ErrInvalid) {
		t.Fatalf("confirming what was not yielded: %v", err)
	}

	// Restart: s3 comes again, s1 and s2 do not.
	v, err = NewVerifier(ctx, space, kv, VerifierOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if v.Cursor() != 2 {
		t.Fatalf("cursor after restart %d", v.Cursor())
	}
	ms, err = v.Add(ctx, log...) // a relay may resend from anywhere
	if err != nil || !slices.Equal(payloads(ms), []string{"s3", "s4", "s5"}) {
		t.Fatalf("after restart: %q %v", payloads(ms), err)
	}
	applyAll(t, v, ms)
	if v.Done() != 5 || v.Settle() != nil {
		t.Fatalf("done %d settle %v", v.Done(), v.Settle())
	}
	ms, err = v.Add(ctx, log...)
	if err != nil || len(ms) != 0 {
		t.Fatalf("replays yielded %q %v", payloads(ms), err)
	}
}

func TestVerifierReorderBuffer(t *testing.T) {
	ctx := t.Context()
	space := newSpace(t, "u")
	k := newKey(t)
	log := sealedLog(t, space, k, 6, 1)

	v, err := NewVerifier(ctx, space, NewMemKV(), VerifierOptions{MaxBuffered: 2})
	if err != nil {
		t.Fatal(err)
	}
	ms, err := v.Add(ctx, log[2], log[1]) // 3, 2: buffered
	if err != nil || len(ms) != 0 {
		t.Fatalf("%q %v", payloads(ms), err)
	}
	if err := v.Settle(); !errors.Is(err, ErrMissing) {
		t.Fatalf("settle with a gap: %v", err)
	}
	ms, err = v.Add(ctx, log[3]) // 4: buffer full
	if !errors.Is(err, ErrMissing) || len(ms) != 0 {
		t.Fatalf("overflow: %q %v", payloads(ms), err)
	}
	ms, err = v.Add(ctx, log[0]) // 1 fills the gap
	if err != nil || !slices.Equal(payloads(ms), []string{"s1", "s2", "s3"}) {
		t.Fatalf("gap filled: %q %v", payloads(ms), err)
	}
	applyAll(t, v, ms)
	if v.Done() != 3 {
		t.Fatalf("done %d: must stop before the overflowed seq 4", v.Done())
	}
	v.Reset() // as after a restart: 4.. come again
	ms, err = v.Add(ctx, log[3:]...)
	if err != nil || !slices.Equal(payloads(ms), []string{"s4", "s5", "s6"}) {
		t.Fatalf("after reset: %q %v", payloads(ms), err)
	}
}

// A new device starts at its invitation's positions and where the relay's
// log starts.
func TestVerifierStartPositions(t *testing.T) {
	ctx := t.Context()
	space := newSpace(t, "u")
	k := newKey(t)
	log := sealedLog(t, space, k, 6, 11) // seqs 11..16, 1..10 compacted
	kv := NewMemKV()
	v, err := NewVerifier(ctx, space, kv, VerifierOptions{Start: []Position{{Sender: pubOf(k), Counter: 3}}})
	if err != nil {
		t.Fatal(err)
	}
	ms, err := v.AddPage(ctx, Page{Envelopes: log[3:], Low: 13})
	if err != nil || !slices.Equal(payloads(ms), []string{"s4", "s5", "s6"}) {
		t.Fatalf("%q %v", payloads(ms), err)
	}
	applyAll(t, v, ms)
	if err := v.Settle(); err != nil {
		t.Fatal(err)
	}
	if p := v.Positions(); len(p) != 1 || p[0].Counter != 6 {
		t.Fatalf("positions %+v", p)
	}
	// Without the page's low mark, the hole 1..13 is reported.
	v2, err := NewVerifier(ctx, space, NewMemKV(), VerifierOptions{Start: []Position{{Sender: pubOf(k), Counter: 3}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v2.Add(ctx, log[3:]...); err != nil {
		t.Fatal(err)
	}
	if err := v2.Settle(); !errors.Is(err, ErrMissing) {
		t.Fatalf("hole before the first seq: %v", err)
	}
}

func TestVerifierApplyFailureRedelivers(t *testing.T) {
	r := newTestRelay(t, ServerOptions{})
	a, b := newDevice(t, r), newDevice(t, r)
	space := setupSpace(t, r, a, b)
	a.send(t, space, "x1")
	a.send(t, space, "x2")
	v, err := NewVerifier(t.Context(), space, b.kv, VerifierOptions{})
	if err != nil {
		t.Fatal(err)
	}
	boom := errors.New("disk full")
	var got []string
	n, err := v.Receive(t.Context(), b.c, 0, func(m Message) error {
		if string(m.Payload) == "x2" {
			return boom
		}
		got = append(got, string(m.Payload))
		return nil
	})
	if !errors.Is(err, boom) || n != 1 {
		t.Fatalf("receive: %d %v", n, err)
	}
	n, err = v.Receive(t.Context(), b.c, 0, func(m Message) error {
		got = append(got, string(m.Payload))
		return nil
	})
	if err != nil || n != 1 || !slices.Equal(got, []string{"x1", "x2"}) {
		t.Fatalf("after failure: %d %q %v", n, got, err)
	}
}

func TestVerifierStateDecode(t *testing.T) {
	pos := []Position{{Sender: make(ed25519.PublicKey, 32), Counter: 9}}
	pos[0].Sender[0] = 1
	raw := encodeRecvState(42, pos)
	c, got, err := decodeRecvState(raw)
	if err != nil || c != 42 || len(got) != 1 || got[0].Counter != 9 {
		t.Fatalf("%d %+v %v", c, got, err)
	}
	for _, bad := range [][]byte{nil, raw[:len(raw)-1], append(raw, 0), {2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}} {
		if _, _, err := decodeRecvState(bad); err == nil {
			t.Errorf("decoded %x", bad)
		}
	}
	// A corrupt state is an error, not a silent restart from zero.
	kv := NewMemKV()
	space := newSpace(t, "u")
	_ = kv.Put(context.Background(), "relay/recv/"+space.ID, []byte{1, 2, 3})
	if _, err := NewVerifier(t.Context(), space, kv, VerifierOptions{}); err == nil {
		t.Fatal("corrupt state accepted")
	}
}

// The relay's counter check: a sender whose push reply was lost (the relay
// stored it) and who sends other content with the same counter adopts the
// relay's next counter; receivers get both.
func TestSenderAdoptsRelayCounter(t *testing.T) {
	r := newTestRelay(t, ServerOptions{})
	a, b := newDevice(t, r), newDevice(t, r)
	space := setupSpace(t, r, a, b)
	lost, err := Seal(space, a.key, 1, []byte("stored, reply lost"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.c.Push(t.Context(), space, lost); err != nil {
		t.Fatal(err)
	}
	other, err := Seal(space, a.key, 1, []byte("other content"))
	if err != nil {
		t.Fatal(err)
	}
	var ce *CounterError
	if _, err := a.c.Push(t.Context(), space, other); !errors.As(err, &ce) || ce.Expected != 2 || ce.Got != 1 {
		t.Fatalf("reused counter: %v", err)
	}
	skip, err := Seal(space, a.key, 5, []byte("gap"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.c.Push(t.Context(), space, skip); !errors.As(err, &ce) || ce.Expected != 2 {
		t.Fatalf("counter gap: %v", err)
	}
	// The Sender's KV says nothing was sent: it adopts counter 2.
	if seq := a.send(t, space, "other content"); seq != 2 {
		t.Fatalf("seq %d", seq)
	}
	got, err := b.receive(t, space)
	wantPayloads(t, "b", got, err, "stored, reply lost", "other content")
}
