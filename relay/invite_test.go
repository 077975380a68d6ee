package relay

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"reflect"
	"slices"
	"testing"
)

func TestInvitationRoundTrip(t *testing.T) {
	space := newSpace(t, "https://relay.example:7443")
	id, err := NewInviteIdentity()
	if err != nil {
		t.Fatal(err)
	}
	rcpt, err := ParseInviteRecipient(id.Recipient().String())
	if err != nil {
		t.Fatal(err)
	}
	start := []Position{{Sender: pubOf(newKey(t)), Counter: 7}}
	blob, err := Invite(space, rcpt, start...)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(blob, space.Key[:]) || bytes.Contains(blob, []byte(space.ID)) || bytes.Contains(blob, []byte("relay.example")) {
		t.Fatal("invitation carries the space in the clear")
	}
	inv, err := AcceptInvitation(blob, id)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(inv.Space, space) || len(inv.Start) != 1 || !inv.Start[0].Sender.Equal(start[0].Sender) || inv.Start[0].Counter != 7 {
		t.Fatalf("opened %#v %+v", inv.Space, inv.Start)
	}

	other, _ := NewInviteIdentity()
	if _, err := AcceptInvitation(blob, other); !errors.Is(err, ErrInvitation) {
		t.Fatalf("wrong identity: %v", err)
	}
	for i := 0; i < len(blob); i += 13 {
		b := bytes.Clone(blob)
		b[i] ^= 1
		if _, err := AcceptInvitation(b, id); !errors.Is(err, ErrInvitation) {
			t.Fatalf("flipped byte %d: %v", i, err)
		}
	}
	if _, err := AcceptInvitation(blob[:len(blob)-1], id); !errors.Is(err, ErrInvitation) {
		t.Fatal("truncated invitation opened")
	}
}

func TestDeriveInviteIdentity(t *testing.T) {
	k := newKey(t)
	id1, err := DeriveInviteIdentity(k)
	if err != nil {
		t.Fatal(err)
	}
	id2, err := DeriveInviteIdentity(ed25519.NewKeyFromSeed(k.Seed()))
	if err != nil {
		t.Fatal(err)
	}
	if id1.String() != id2.String() {
		t.Fatal("derivation is not deterministic")
	}
	id3, _ := DeriveInviteIdentity(newKey(t))
	if id3.String() == id1.String() {
		t.Fatal("two keys derive the same identity")
	}
	// The stored form parses back to the same identity (age's own parser
	// checks the bech32 checksum).
	back, err := ParseInviteIdentity(id1.String())
	if err != nil || back.Recipient().String() != id1.Recipient().String() {
		t.Fatalf("parse back: %v", err)
	}
	blob, err := Invite(newSpace(t, "u"), id1.Recipient())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := AcceptInvitation(blob, back); err != nil {
		t.Fatal(err)
	}
	if _, err := ParseInviteIdentity("AGE-SECRET-KEY-1NOPE"); !errors.Is(err, ErrInvalid) {
		t.Fatal(err)
	}
}

// A device joins after the relay compacted the space's history: with the
// invitation's start positions it reads on from there; without them it
// reports what it cannot have.
func TestJoinAfterCompaction(t *testing.T) {
	r := newTestRelay(t, ServerOptions{})
	a := newDevice(t, r)
	space := setupSpace(t, r, a)
	snd, err := NewSender(t.Context(), a.c, space, a.kv)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"old1", "old2", "old3"} {
		if _, err := snd.Send(t.Context(), []byte(p)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := a.receive(t, space); err != nil { // a acknowledges: all compacted
		t.Fatal(err)
	}

	b := newDevice(t, r)
	bid, err := DeriveInviteIdentity(b.key)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.c.UpdateMembers(t.Context(), space, []ed25519.PublicKey{b.pub()}, nil); err != nil {
		t.Fatal(err)
	}
	av, err := NewVerifier(t.Context(), space, a.kv, VerifierOptions{Self: a.pub()})
	if err != nil {
		t.Fatal(err)
	}
	blob, err := Invite(space, bid.Recipient(), append(av.Positions(), snd.Position())...)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := snd.Send(t.Context(), []byte("new")); err != nil {
		t.Fatal(err)
	}
	st, err := a.c.Status(t.Context(), space)
	if err != nil || st.Low != 3 || st.Bundles != 1 {
		t.Fatalf("status %+v %v", st, err)
	}

	inv, err := AcceptInvitation(blob, bid)
	if err != nil {
		t.Fatal(err)
	}
	// Without the start positions: counters 1..3 are reported missing.
	v0, err := NewVerifier(t.Context(), inv.Space, NewMemKV(), VerifierOptions{Self: b.pub()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v0.Receive(t.Context(), b.c, 0, func(Message) error { return nil }); !errors.Is(err, ErrMissing) {
		t.Fatalf("without start positions: %v", err)
	}
	v, err := NewVerifier(t.Context(), inv.Space, b.kv, VerifierOptions{Self: b.pub(), Start: inv.Start})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	if _, err := v.Receive(t.Context(), b.c, 0, func(m Message) error {
		got = append(got, string(m.Payload))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, []string{"new"}) {
		t.Fatalf("joined device got %q", got)
	}
}
