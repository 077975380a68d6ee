package relay

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"testing"
)

func TestMembersEncoding(t *testing.T) {
	space := newSpace(t, "u")
	k1, k2 := newKey(t), newKey(t)
	raw, err := signMembers(Members{Space: space.ID, Version: 4, Keys: []ed25519.PublicKey{pubOf(k2), pubOf(k1), pubOf(k2)}}, k1)
	if err != nil {
		t.Fatal(err)
	}
	sm, err := DecodeMembers(raw)
	if err != nil {
		t.Fatal(err)
	}
	if sm.Version != 4 || len(sm.Keys) != 2 || bytes.Compare(sm.Keys[0], sm.Keys[1]) >= 0 || !sm.Signer.Equal(pubOf(k1)) || !sm.Has(pubOf(k2)) {
		t.Fatalf("decoded %+v", sm)
	}
	for i := 0; i < len(raw); i++ {
		b := bytes.Clone(raw)
		b[i] ^= 0x01
		if _, err := DecodeMembers(b); err == nil {
			t.Fatalf("flipped byte %d decodes", i)
		}
	}
	// An unsorted list, signed as such, is refused.
	w := wireMembers{Space: space.ID, Version: 1, Keys: [][]byte{pubOf(k1), pubOf(k2)}}
	if bytes.Compare(pubOf(k1), pubOf(k2)) < 0 {
		w.Keys[0], w.Keys[1] = w.Keys[1], w.Keys[0]
	}
	list := marshal(w)
	bad := marshal(wireSigned{List: list, Signer: pubOf(k1), Sig: ed25519.Sign(k1, append([]byte(membersLabel), list...))})
	if _, err := DecodeMembers(bad); !errors.Is(err, ErrProtocol) {
		t.Fatalf("unsorted list: %v", err)
	}
	var many []ed25519.PublicKey
	for range MaxMembers + 1 {
		many = append(many, pubOf(newKey(t)))
	}
	if _, err := signMembers(Members{Space: space.ID, Version: 1, Keys: many}, k1); !errors.Is(err, ErrInvalid) {
		t.Fatalf("too many members: %v", err)
	}
}
