package relay

import (
	"bytes"
	"cmp"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"pgregory.net/rapid"
)

// TestEpochRecipientMatchesIdentity: the X25519 recipient computed from an
// Ed25519 public key is the one the device's identity opens with.
func TestEpochRecipientMatchesIdentity(t *testing.T) {
	for range 20 {
		k := newKey(t)
		r, err := epochRecipient(pubOf(k))
		if err != nil {
			t.Fatal(err)
		}
		id, err := epochIdentity(k)
		if err != nil {
			t.Fatal(err)
		}
		if r.String() != id.Recipient().String() {
			t.Fatalf("recipient %s, identity opens %s", r, id.Recipient())
		}
	}
	if _, err := epochRecipient(make([]byte, 31)); !errors.Is(err, ErrInvalid) {
		t.Fatalf("short key: %v", err)
	}
}

// TestSealOpenAcrossEpochs: a bundle names its epoch; a space holding that
// epoch's key opens it, one without it gets ErrNoKey, and moving a bundle
// to another epoch fails.
func TestSealOpenAcrossEpochs(t *testing.T) {
	space := newSpace(t, "https://relay.example")
	k := newKey(t)
	old, err := Seal(space, k, 1, []byte("epoch zero"))
	if err != nil {
		t.Fatal(err)
	}
	var nk [SpaceKeySize]byte
	rand.Read(nk[:])
	rotated := space.WithEpoch(EpochKey{Epoch: 1, Key: nk})
	if rotated.Epoch() != 1 || space.Epoch() != 0 {
		t.Fatalf("epochs %d %d", rotated.Epoch(), space.Epoch())
	}
	b1, err := Seal(rotated, k, 2, []byte("epoch one"))
	if err != nil {
		t.Fatal(err)
	}
	if e, _ := BundleEpoch(b1); e != 1 || b1[0] != bundleVersion2 {
		t.Fatalf("epoch %d version %d", e, b1[0])
	}
	if got, err := Open(rotated, old); err != nil || string(got.Payload) != "epoch zero" {
		t.Fatalf("old bundle with the rotated space: %q %v", got.Payload, err)
	}
	if got, err := Open(rotated, b1); err != nil || string(got.Payload) != "epoch one" {
		t.Fatalf("new bundle: %q %v", got.Payload, err)
	}
	if _, err := Open(space, b1); !errors.Is(err, ErrNoKey) {
		t.Fatalf("new bundle without the new key: %v, want ErrNoKey", err)
	}
	// The epoch is authenticated: relabelled as epoch 0 (version 1) or
	// another epoch, the bundle fails to verify.
	bad := bytes.Clone(b1)
	bad[0] = bundleVersion
	if _, err := Open(rotated, bad); !errors.Is(err, ErrTampered) {
		t.Fatalf("relabelled: %v", err)
	}
	// Round trip of a space with epochs.
	bin, err := rotated.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	var back Space
	if err := back.UnmarshalBinary(bin); err != nil || back.Epoch() != 1 || back.Epochs[0].Key != nk {
		t.Fatalf("round trip: %v %#v", err, back)
	}
	for i := range bin {
		if err := new(Space).UnmarshalBinary(bin[:i]); err == nil {
			t.Fatalf("truncated at %d decodes", i)
		}
	}
}

// epochScenario: a member rotates the key excluding a removed member;
// the remaining member opens the record, the removed one cannot, even
// when handed the record; the relay refuses the removed member with
// ErrRemoved, counts acknowledgements as signs of life on its clock,
// and compacts once the removed member no longer holds it back.
func epochScenario(t *testing.T, url string, client func(ed25519.PrivateKey) API, advance func(time.Duration)) []string {
	ctx := t.Context()
	var trace []string
	note := func(format string, args ...any) { trace = append(trace, fmt.Sprintf(format, args...)) }
	ka, kb, kc := newKey(t), newKey(t), newKey(t)
	a, b, c := client(ka), client(kb), client(kc)
	space := newSpace(t, url)
	if err := a.CreateSpace(ctx, space); err != nil {
		t.Fatal(err)
	}
	if _, err := a.UpdateMembers(ctx, space, []ed25519.PublicKey{pubOf(kb), pubOf(kc)}, nil); err != nil {
		t.Fatal(err)
	}
	kvA := NewMemKV()
	sa, err := NewSender(ctx, a, space, kvA)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := sa.Send(ctx, []byte(fmt.Sprint("a", i))); err != nil {
			t.Fatal(err)
		}
	}
	advance(time.Hour)
	if err := b.Ack(ctx, space, 3); err != nil {
		t.Fatal(err)
	}
	if err := a.Ack(ctx, space, 3); err != nil {
		t.Fatal(err)
	}
	st, err := a.Status(ctx, space)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range st.Peers {
		who := map[bool]string{true: "a", false: "?"}[p.Key == nil]
		switch {
		case bytes.Equal(p.Key, pubOf(ka)):
			who = "a"
		case bytes.Equal(p.Key, pubOf(kb)):
			who = "b"
		case bytes.Equal(p.Key, pubOf(kc)):
			who = "c"
		}
		note("%s member=%v cursor=%d counter=%d ackAge=%v", who, p.Member, p.Cursor, p.Counter, time.Duration(st.Now-p.LastAck)*time.Millisecond)
	}
	note("held %d (c holds compaction)", st.Bundles)

	var nk [SpaceKeySize]byte
	rand.Read(nk[:])
	rec, err := NewEpochRecord(space, ka, 1, nk, []ed25519.PublicKey{pubOf(ka), pubOf(kb)}, []Position{{Sender: pubOf(kc), Counter: 0}})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.PutEpoch(ctx, space, rec); err != nil {
		t.Fatal(err)
	}
	if err := a.PutEpoch(ctx, space, rec); err != nil {
		t.Fatalf("same record again: %v", err)
	}
	if err := b.PutEpoch(ctx, space, rec); err == nil {
		t.Fatal("b posted a record a signed")
	}
	rec3, _ := NewEpochRecord(space, kb, 3, nk, []ed25519.PublicKey{pubOf(kb)}, nil)
	note("skipped epoch: %v", errors.Is(b.PutEpoch(ctx, space, rec3), ErrConflict))
	if _, err := a.UpdateMembers(ctx, space, nil, []ed25519.PublicKey{pubOf(kc)}); err != nil {
		t.Fatal(err)
	}
	st, _ = a.Status(ctx, space)
	note("after removal: held %d low %d epoch %d members %d", st.Bundles, st.Low, st.Epoch, st.Members)

	recs, err := b.Epochs(ctx, space)
	if err != nil || len(recs) != 1 {
		t.Fatalf("b epochs: %d %v", len(recs), err)
	}
	got, err := OpenEpochRecord(space, recs[0], kb)
	note("b opens: %v %v removed=%d", err == nil, got.HasKey && got.Key == nk, len(got.Removed))
	_, err = c.Epochs(ctx, space)
	note("c epochs: removed=%v notMember=%v", errors.Is(err, ErrRemoved), errors.Is(err, ErrNotMember))
	_, err = c.PullPage(ctx, space, 0, 0)
	note("c pull: removed=%v", errors.Is(err, ErrRemoved))
	// Handed the record anyway (a relay cooperating with it), c opens nothing.
	got, err = OpenEpochRecord(space, recs[0], kc)
	note("c opens: noKey=%v hasKey=%v", errors.Is(err, ErrNoKey), got.HasKey)
	outsider := client(newKey(t))
	_, err = outsider.Status(ctx, space)
	note("outsider: removed=%v notMember=%v", errors.Is(err, ErrRemoved), errors.Is(err, ErrNotMember))
	return trace
}

func TestEpochsServerAndMem(t *testing.T) {
	clock := newFakeClock()
	r := newTestRelay(t, ServerOptions{Clock: clock})
	server := epochScenario(t, r.url, func(k ed25519.PrivateKey) API { c := r.client(k); c.Now = clock.Now; return c }, clock.Advance)

	now := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	m := NewMemRelay()
	m.Now = func() time.Time { return now }
	mem := epochScenario(t, "https://mem.example", func(k ed25519.PrivateKey) API { return m.Client(k) }, func(d time.Duration) { now = now.Add(d) })
	want := []string{
		"a member=true cursor=3 counter=3 ackAge=0s",
		"b member=true cursor=3 counter=0 ackAge=0s",
		"c member=true cursor=0 counter=0 ackAge=1h0m0s",
		"held 3 (c holds compaction)",
		"skipped epoch: true",
		"after removal: held 0 low 3 epoch 1 members 2",
		"b opens: true true removed=1",
		"c epochs: removed=true notMember=true",
		"c pull: removed=true",
		"c opens: noKey=true hasKey=false",
		"outsider: removed=false notMember=true",
	}
	sortPeers := func(tr []string) []string {
		out := slices.Clone(tr)
		slices.Sort(out[:3])
		return out
	}
	if !slices.Equal(sortPeers(server), want) {
		t.Errorf("server:\n%q\nwant\n%q", server, want)
	}
	if !slices.Equal(sortPeers(mem), want) {
		t.Errorf("mem:\n%q\nwant\n%q", mem, want)
	}
}

// FuzzOpenEpochRecord: the key-epoch record decoder never panics, and
// what it accepts is signed, for the space, and bounded.
func FuzzOpenEpochRecord(f *testing.F) {
	var nk [SpaceKeySize]byte
	nk[0] = 9
	seed, err := NewEpochRecord(fuzzSpace, fuzzKey, 1, nk, []ed25519.PublicKey{pubOf(fuzzKey)},
		[]Position{{Sender: pubOf(ed25519.NewKeyFromSeed(bytes.Repeat([]byte{3}, 32))), Counter: 4}})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := OpenEpochRecord(fuzzSpace, data, fuzzKey)
		if err != nil && !errors.Is(err, ErrNoKey) {
			if !errors.Is(err, ErrTampered) {
				t.Fatalf("error of no kind: %v", err)
			}
			return
		}
		if r.Space != fuzzSpace.ID || r.Epoch == 0 || len(r.Signer) != ed25519.PublicKeySize || len(r.Removed) > MaxMembers {
			t.Fatalf("accepted %+v", r)
		}
		if err == nil && !r.HasKey {
			t.Fatal("no error and no key")
		}
	})
}

// TestVerifierRefusesRemovedSender: once a key-epoch record names a
// removed sender with its last accepted counter, a later bundle of that
// sender (sealed with an old key it still holds, served by a relay that
// cooperates with it) is skipped, never yielded, and does not hold the
// cursor back.
func TestVerifierRefusesRemovedSender(t *testing.T) {
	ctx := t.Context()
	space := newSpace(t, "https://relay.example")
	removed := newKey(t)
	var envs []Envelope
	for c := uint64(1); c <= 3; c++ {
		b, err := Seal(space, removed, c, []byte(fmt.Sprint("r", c)))
		if err != nil {
			t.Fatal(err)
		}
		envs = append(envs, Envelope{Seq: c, Sender: pubOf(removed), Data: b})
	}
	v, err := NewVerifier(ctx, space, NewMemKV(), VerifierOptions{Removed: []Position{{Sender: pubOf(removed), Counter: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := v.Add(ctx, envs...)
	if err != nil || len(msgs) != 1 || string(msgs[0].Payload) != "r1" {
		t.Fatalf("yielded %d messages, %v", len(msgs), err)
	}
	if err := v.Applied(ctx, msgs[0].Sender, 1); err != nil {
		t.Fatal(err)
	}
	if v.Refused() != 2 || v.Done() != 3 {
		t.Fatalf("refused %d, done %d", v.Refused(), v.Done())
	}
}

// TestSpaceEpochsRoundTrip (property): a space with any set of key epochs
// and any relay URL survives MarshalBinary and an invitation unchanged,
// seals under its newest epoch, and opens bundles of every epoch it
// holds; a corrupted encoding never decodes to another space silently.
func TestSpaceEpochsRoundTrip(t *testing.T) {
	id, err := DeriveInviteIdentity(fuzzKey)
	if err != nil {
		t.Fatal(err)
	}
	rapid.Check(t, func(rt *rapid.T) {
		var k [SpaceKeySize]byte
		copy(k[:], rapid.SliceOfN(rapid.Byte(), SpaceKeySize, SpaceKeySize).Draw(rt, "key"))
		url := rapid.StringMatching(`https://[a-z0-9.\-:]{0,40}(/[ -~]{0,20})?`).Draw(rt, "url")
		s := SpaceFromKey(k, url)
		epochs := rapid.SliceOfNDistinct(rapid.Uint64Range(1, 1<<40), 0, MaxEpochs+3, func(e uint64) uint64 { return e }).Draw(rt, "epochs")
		for _, e := range epochs {
			var ek [SpaceKeySize]byte
			copy(ek[:], rapid.SliceOfN(rapid.Byte(), SpaceKeySize, SpaceKeySize).Draw(rt, "ek"))
			s = s.WithEpoch(EpochKey{Epoch: e, Key: ek})
		}
		if len(s.Epochs) > MaxEpochs || !slices.IsSortedFunc(s.Epochs, func(a, b EpochKey) int { return cmp.Compare(a.Epoch, b.Epoch) }) {
			rt.Fatalf("epochs %d unsorted or over the bound", len(s.Epochs))
		}
		bin, err := s.MarshalBinary()
		if err != nil {
			rt.Fatal(err)
		}
		var back Space
		if err := back.UnmarshalBinary(bin); err != nil || !spacesEqual(back, s) {
			rt.Fatalf("binary round trip: %v", err)
		}
		if len(bin) > 0 {
			i := rapid.IntRange(0, len(bin)-1).Draw(rt, "flip")
			bad := bytes.Clone(bin)
			bad[i] ^= 1 << rapid.IntRange(0, 7).Draw(rt, "bit")
			var got Space
			if err := got.UnmarshalBinary(bad); err == nil && spacesEqual(got, s) {
				rt.Fatalf("a flipped byte %d decodes to the same space", i)
			}
		}
		inv, err := Invite(s, id.Recipient())
		if err != nil {
			rt.Fatal(err)
		}
		opened, err := AcceptInvitation(inv, id)
		if err != nil || !spacesEqual(opened.Space, s) {
			rt.Fatalf("invitation round trip: %v", err)
		}
		b, err := Seal(s, fuzzKey, 1, []byte("p"))
		if err != nil {
			rt.Fatal(err)
		}
		if e, _ := BundleEpoch(b); e != s.Epoch() {
			rt.Fatalf("sealed under epoch %d, space is at %d", e, s.Epoch())
		}
		if _, err := Open(back, b); err != nil {
			rt.Fatal(err)
		}
	})
}

func spacesEqual(a, b Space) bool {
	return a.ID == b.ID && a.Key == b.Key && a.RelayURL == b.RelayURL && slices.Equal(a.Epochs, b.Epochs)
}
