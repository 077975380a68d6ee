package relay

import (
	"errors"
	"net/http"
	"strings"
	"testing"
)

// Over quota, a push is refused with ErrQuota and nothing is stored; once
// every member has acknowledged, the relay compacts and the same payload
// goes through.
func TestQuotaThenCompaction(t *testing.T) {
	r := newTestRelay(t, ServerOptions{MaxSpaceBytes: 3 << 10})
	a, b := newDevice(t, r), newDevice(t, r)
	space := setupSpace(t, r, a, b)
	for _, p := range []string{"q1", "q2", "q3"} {
		a.send(t, space, p)
	}
	s, err := NewSender(t.Context(), a.c, space, a.kv)
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Send(t.Context(), []byte("q4"))
	if !errors.Is(err, ErrQuota) || !strings.Contains(err.Error(), "space quota") {
		t.Fatalf("over quota: %v", err)
	}
	if s.Counter() != 3 {
		t.Fatalf("counter advanced to %d by a refused push", s.Counter())
	}
	st, err := a.c.Status(t.Context(), space)
	if err != nil || st.Head != 3 || st.Bundles != 3 {
		t.Fatalf("after refusal: %+v %v", st, err)
	}

	// b acknowledges, but a has not: nothing may be compacted yet.
	got, err := b.receive(t, space)
	wantPayloads(t, "b", got, err, "q1", "q2", "q3")
	if _, err := s.Send(t.Context(), []byte("q4")); !errors.Is(err, ErrQuota) {
		t.Fatalf("with one member behind: %v", err)
	}
	got, err = a.receive(t, space) // a acknowledges its own bundles
	wantPayloads(t, "a", got, err)
	st, err = a.c.Status(t.Context(), space)
	if err != nil || st.Bundles != 0 || st.Low != 3 {
		t.Fatalf("after acknowledgements: %+v %v", st, err)
	}
	if _, err := s.Send(t.Context(), []byte("q4")); err != nil {
		t.Fatalf("after compaction: %v", err)
	}
	got, err = b.receive(t, space)
	wantPayloads(t, "b", got, err, "q4")
}

func TestClientQuota(t *testing.T) {
	r := newTestRelay(t, ServerOptions{MaxSpaceBytes: 8 << 10, MaxClientBytes: 2 << 10})
	a, b := newDevice(t, r), newDevice(t, r)
	space := setupSpace(t, r, a, b)
	a.send(t, space, "1")
	a.send(t, space, "2")
	s, err := NewSender(t.Context(), a.c, space, a.kv)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Send(t.Context(), []byte("3")); !errors.Is(err, ErrQuota) || !strings.Contains(err.Error(), "client quota") {
		t.Fatalf("client over quota: %v", err)
	}
	b.send(t, space, "b may still push")
}

func TestBodyTooLarge(t *testing.T) {
	r := newTestRelay(t, ServerOptions{})
	a := newDevice(t, r)
	space := setupSpace(t, r, a)
	// Declared too large: refused before reading.
	_, err := a.c.do(t.Context(), http.MethodPost, "/v1/spaces/"+space.ID+"/bundles", nil, make([]byte, MaxBundleSize+1), maxSmallBody)
	if !errors.Is(err, ErrQuota) || !strings.Contains(err.Error(), "413") {
		t.Fatalf("oversized push: %v", err)
	}
	_, err = a.c.do(t.Context(), http.MethodPut, "/v1/spaces/"+space.ID+"/members", nil, make([]byte, maxMembersBody+1), maxSmallBody)
	if !errors.Is(err, ErrQuota) {
		t.Fatalf("oversized member list: %v", err)
	}
}

func TestSpacesPerKeyQuota(t *testing.T) {
	r := newTestRelay(t, ServerOptions{MaxSpacesPerKey: 1})
	a := newDevice(t, r)
	if err := a.c.CreateSpace(t.Context(), newSpace(t, r.url)); err != nil {
		t.Fatal(err)
	}
	if err := a.c.CreateSpace(t.Context(), newSpace(t, r.url)); !errors.Is(err, ErrQuota) {
		t.Fatalf("second space: %v", err)
	}
}
