package relay

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"slices"
	"testing"
)

// memScenario drives one relay through creation, membership, sends,
// duplicates, a counter gap, receives, acknowledgements and compaction,
// and returns what each step observed.
func memScenario(t *testing.T, url string, client func(ed25519.PrivateKey) API) []string {
	t.Helper()
	ctx := t.Context()
	var trace []string
	note := func(format string, args ...any) { trace = append(trace, fmt.Sprintf(format, args...)) }
	ka, kb, kc := newKey(t), newKey(t), newKey(t)
	a, b, c := client(ka), client(kb), client(kc)
	space := newSpace(t, url)

	if err := a.CreateSpace(ctx, space); err != nil {
		t.Fatal(err)
	}
	if err := a.CreateSpace(ctx, space); err != nil {
		t.Fatalf("creating the same space again: %v", err)
	}
	if err := b.CreateSpace(ctx, space); !errors.Is(err, ErrConflict) {
		t.Fatalf("another device creating the space: %v, want ErrConflict", err)
	}
	_, err := b.Members(ctx, space)
	note("outsider members: %v", errors.Is(err, ErrNotMember))
	if _, err := b.UpdateMembers(ctx, space, []ed25519.PublicKey{pubOf(kb)}, nil); !errors.Is(err, ErrNotMember) {
		t.Fatalf("an outsider adding itself: %v, want ErrNotMember", err)
	}
	m, err := a.UpdateMembers(ctx, space, []ed25519.PublicKey{pubOf(kb), pubOf(kc)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	note("members v%d n%d", m.Version, len(m.Keys))
	sm, err := c.Members(ctx, space)
	if err != nil || !sm.Has(pubOf(kc)) || !sm.Signer.Equal(pubOf(ka)) {
		t.Fatalf("members as c: %+v, %v", sm, err)
	}

	kvA, kvB, kvC := NewMemKV(), NewMemKV(), NewMemKV()
	send := func(api API, kv KV, payload string) uint64 {
		s, err := NewSender(ctx, api, space, kv)
		if err != nil {
			t.Fatal(err)
		}
		seq, err := s.Send(ctx, []byte(payload))
		if err != nil {
			t.Fatal(err)
		}
		return seq
	}
	note("seqs %d %d %d", send(a, kvA, "a1"), send(a, kvA, "a2"), send(b, kvB, "b1"))

	sealed, err := Seal(space, ka, 2, []byte("a2 again, other bytes"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = a.Push(ctx, space, sealed)
	var ce *CounterError
	if !errors.As(err, &ce) {
		t.Fatalf("reused counter: %v, want *CounterError", err)
	}
	note("reused counter expects %d", ce.Expected)
	gap, err := Seal(space, ka, 9, []byte("gap"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Push(ctx, space, gap); !errors.As(err, &ce) || ce.Expected != 3 {
		t.Fatalf("counter gap: %v, want *CounterError expecting 3", err)
	}
	a3, err := Seal(space, ka, 3, []byte("a3"))
	if err != nil {
		t.Fatal(err)
	}
	s1, err1 := a.Push(ctx, space, a3)
	s2, err2 := a.Push(ctx, space, a3)
	if err1 != nil || err2 != nil || s1 != s2 {
		t.Fatalf("a retried push: %d %v, %d %v; want the same seq", s1, err1, s2, err2)
	}
	note("retried push seq %d", s1)
	if _, err := c.Push(ctx, space, a3); !errors.Is(err, ErrProtocol) && !errors.Is(err, ErrNotMember) && !errors.Is(err, ErrAuth) {
		t.Fatalf("pushing another member's bundle: %v", err)
	}

	receive := func(api API, kv KV, self ed25519.PrivateKey) []string {
		v, err := NewVerifier(ctx, space, kv, VerifierOptions{Self: pubOf(self)})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		if _, err := v.Receive(ctx, api, 0, func(m Message) error {
			got = append(got, string(m.Payload))
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		slices.Sort(got)
		return got
	}
	note("c got %v", receive(c, kvC, kc))
	st, err := a.Status(ctx, space)
	if err != nil {
		t.Fatal(err)
	}
	note("status head %d low %d bundles %d members %d", st.Head, st.Low, st.Bundles, st.Members)
	note("b got %v", receive(b, kvB, kb))
	note("a got %v", receive(a, kvA, ka))
	st, err = c.Status(ctx, space)
	if err != nil {
		t.Fatal(err)
	}
	note("after every ack: head %d low %d bundles %d bytes %d", st.Head, st.Low, st.Bundles, st.Bytes)
	if s, err := a.Push(ctx, space, a3); err != nil || s != 0 {
		t.Fatalf("re-pushing a compacted bundle: %d, %v; want 0, nil", s, err)
	}
	page, err := b.PullPage(ctx, space, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	note("pull after compaction: %d envelopes, low %d", len(page.Envelopes), page.Low)
	if _, err := b.UpdateMembers(ctx, space, nil, []ed25519.PublicKey{pubOf(kc)}); err != nil {
		t.Fatal(err)
	}
	_, err = c.PullPage(ctx, space, 0, 0)
	note("removed member pulls: ErrNotMember %v", errors.Is(err, ErrNotMember))
	return trace
}

// TestMemRelayMatchesServer: the in-memory relay and the real server
// (over HTTP) observe the same outcomes through the API, step by step.
func TestMemRelayMatchesServer(t *testing.T) {
	real := newTestRelay(t, ServerOptions{})
	want := memScenario(t, real.url, func(k ed25519.PrivateKey) API { return real.client(k) })
	mem := NewMemRelay()
	got := memScenario(t, "https://relay.invalid", func(k ed25519.PrivateKey) API { return mem.Client(k) })
	if !slices.Equal(got, want) {
		t.Fatalf("in-memory relay:\n%q\nserver:\n%q", got, want)
	}
	for _, line := range []string{"outsider members: true", "c got [a1 a2 a3 b1]", "after every ack: head 4 low 4 bundles 0 bytes 0",
		"pull after compaction: 0 envelopes, low 4", "removed member pulls: ErrNotMember true"} {
		if !slices.Contains(got, line) {
			t.Fatalf("trace %q lacks %q", got, line)
		}
	}
}

// TestMemRelayFail: the fault hook refuses the named operation and no
// other.
func TestMemRelayFail(t *testing.T) {
	mem := NewMemRelay()
	mem.Fail = func(op string) error {
		if op == "push" {
			return fmt.Errorf("%w: injected", ErrQuota)
		}
		return nil
	}
	k := newKey(t)
	c := mem.Client(k)
	space := newSpace(t, "https://relay.invalid")
	if err := c.CreateSpace(t.Context(), space); err != nil {
		t.Fatal(err)
	}
	s, err := NewSender(t.Context(), c, space, NewMemKV())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Send(t.Context(), []byte("x")); !errors.Is(err, ErrQuota) {
		t.Fatalf("Send under an injected quota: %v", err)
	}
	if s.Counter() != 0 {
		t.Fatalf("a refused send advanced the counter to %d", s.Counter())
	}
	mem.Fail = nil
	if _, err := s.Send(t.Context(), []byte("x")); err != nil {
		t.Fatal(err)
	}
	if st, err := c.Status(t.Context(), space); err != nil || st.Head != 1 {
		t.Fatalf("status %+v, %v", st, err)
	}
}
