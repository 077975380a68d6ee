package relay

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"testing"
	"time"
)

// signedReq builds a request signed by key at ts.
func signedReq(t *testing.T, url, method, path string, key ed25519.PrivateKey, body []byte, ts time.Time) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, url+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if err := signRequest(req, key, body, ts); err != nil {
		t.Fatal(err)
	}
	return req
}

// resend returns a copy of req with the same headers and body.
func resend(t *testing.T, req *http.Request, body []byte) *http.Request {
	t.Helper()
	r2, err := http.NewRequest(req.Method, req.URL.String(), bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	r2.Header = req.Header.Clone()
	return r2
}

func roundTrip(t *testing.T, r *testRelay, req *http.Request) (int, errorBody) {
	t.Helper()
	resp, err := r.ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var eb errorBody
	if resp.StatusCode >= 300 {
		if err := json.Unmarshal(b, &eb); err != nil {
			t.Fatalf("HTTP %d with a non-JSON error body %q", resp.StatusCode, b)
		}
	}
	return resp.StatusCode, eb
}

func TestAuthRefusals(t *testing.T) {
	clk := newFakeClock()
	r := newTestRelay(t, ServerOptions{Clock: clk, Window: time.Minute})
	a := newDevice(t, r)
	a.c.Now = clk.Now
	space := setupSpace(t, r, a)
	path := "/v1/spaces/" + space.ID + "/status"
	now := clk.Now()

	ok := signedReq(t, r.url, http.MethodGet, path, a.key, nil, now)
	if code, eb := roundTrip(t, r, ok); code != http.StatusOK {
		t.Fatalf("valid request: %d %+v", code, eb)
	}

	for _, tc := range []struct {
		name string
		req  func() *http.Request
		code string
	}{
		{"no headers", func() *http.Request {
			req, _ := http.NewRequest(http.MethodGet, r.url+path, nil)
			return req
		}, codeAuth},
		{"replayed nonce", func() *http.Request { return resend(t, ok, nil) }, codeReplay},
		{"body changed after signing", func() *http.Request {
			p := "/v1/spaces/" + space.ID + "/bundles"
			req := signedReq(t, r.url, http.MethodPost, p, a.key, []byte("a"), now)
			return resend(t, req, []byte("b"))
		}, codeAuth},
		{"query changed after signing", func() *http.Request {
			req := signedReq(t, r.url, http.MethodPost, "/v1/spaces/"+space.ID+"/ack?seq=1", a.key, nil, now)
			req.URL.RawQuery = "seq=2"
			return req
		}, codeAuth},
		{"key swapped", func() *http.Request {
			req := signedReq(t, r.url, http.MethodGet, path, newKey(t), nil, now)
			req.Header.Set(hdrKey, b64.EncodeToString(a.pub()))
			return req
		}, codeAuth},
		{"stale timestamp", func() *http.Request {
			return signedReq(t, r.url, http.MethodGet, path, a.key, nil, now.Add(-2*time.Minute))
		}, codeStale},
		{"future timestamp", func() *http.Request {
			return signedReq(t, r.url, http.MethodGet, path, a.key, nil, now.Add(2*time.Minute))
		}, codeStale},
		{"malformed time", func() *http.Request {
			req := signedReq(t, r.url, http.MethodGet, path, a.key, nil, now)
			req.Header.Set(hdrTime, "+"+req.Header.Get(hdrTime))
			return req
		}, codeAuth},
	} {
		code, eb := roundTrip(t, r, tc.req())
		if code != http.StatusUnauthorized || eb.Code != tc.code {
			t.Errorf("%s: HTTP %d %+v, want 401 %s", tc.name, code, eb, tc.code)
		}
		if tc.code == codeStale && eb.Now != now.UnixMilli() {
			t.Errorf("%s: relay time %d not reported", tc.name, eb.Now)
		}
	}

	// A request captured before a restart cannot be replayed after it,
	// even inside the window (nonces are remembered in memory only).
	captured := signedReq(t, r.url, http.MethodGet, path, a.key, nil, clk.Now())
	clk.Advance(time.Second)
	r.restart()
	if code, eb := roundTrip(t, r, captured); code != http.StatusUnauthorized || eb.Code != codeStale {
		t.Fatalf("replay across restart: %d %+v", code, eb)
	}
}

func TestNonMembersRefused(t *testing.T) {
	r := newTestRelay(t, ServerOptions{})
	a, b, x := newDevice(t, r), newDevice(t, r), newDevice(t, r)
	space := setupSpace(t, r, a, b)
	a.send(t, space, "members only")

	sealed, err := Seal(space, x.key, 1, []byte("intruder"))
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	checks := map[string]error{}
	_, checks["push"] = x.c.Push(ctx, space, sealed)
	_, checks["pull"] = x.c.Pull(ctx, space, 0, 0)
	checks["ack"] = x.c.Ack(ctx, space, 1)
	_, checks["status"] = x.c.Status(ctx, space)
	_, checks["members"] = x.c.Members(ctx, space)
	_, checks["update members"] = x.c.UpdateMembers(ctx, space, []ed25519.PublicKey{x.pub()}, nil)
	for name, err := range checks {
		if !errors.Is(err, ErrNotMember) {
			t.Errorf("non-member %s: %v, want ErrNotMember", name, err)
		}
	}

	// A member may not push a bundle signed by someone else.
	foreign, err := Seal(space, b.key, 1, []byte("b's"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.c.Push(ctx, space, foreign); !errors.Is(err, ErrNotMember) {
		t.Fatalf("push of another member's bundle: %v", err)
	}

	// A membership update signed by a non-member, sent by the non-member
	// or by a member, is refused.
	list, err := signMembers(Members{Space: space.ID, Version: 3, Keys: []ed25519.PublicKey{x.pub()}}, x.key)
	if err != nil {
		t.Fatal(err)
	}
	for _, sender := range []*device{x, a} {
		req := signedReq(t, r.url, http.MethodPut, "/v1/spaces/"+space.ID+"/members", sender.key, list, time.Now())
		if code, eb := roundTrip(t, r, req); code != http.StatusForbidden {
			t.Errorf("update signed by a non-member, sent by %s: %d %+v", fingerprint(sender.pub())[:8], code, eb)
		}
	}
	// Same version twice with other content is a conflict.
	list2, err := signMembers(Members{Space: space.ID, Version: 2, Keys: []ed25519.PublicKey{a.pub()}}, a.key)
	if err != nil {
		t.Fatal(err)
	}
	req := signedReq(t, r.url, http.MethodPut, "/v1/spaces/"+space.ID+"/members", a.key, list2, time.Now())
	if code, _ := roundTrip(t, r, req); code != http.StatusConflict {
		t.Errorf("stale version: %d", code)
	}

	// A removed member is refused from then on.
	if _, err := a.c.UpdateMembers(ctx, space, nil, []ed25519.PublicKey{b.pub()}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.c.Pull(ctx, space, 0, 0); !errors.Is(err, ErrNotMember) {
		t.Fatalf("removed member pull: %v", err)
	}
	m, err := a.c.Members(ctx, space)
	if err != nil || m.Version != 3 || len(m.Keys) != 1 || !m.Has(a.pub()) || !m.Signer.Equal(a.pub()) {
		t.Fatalf("members: %+v, %v", m, err)
	}
}

// A device whose clock is an hour off learns the relay's time from the
// refusal and succeeds.
func TestClientCorrectsClockSkew(t *testing.T) {
	r := newTestRelay(t, ServerOptions{})
	a := newDevice(t, r)
	a.c.Now = func() time.Time { return time.Now().Add(-time.Hour) }
	space := newSpace(t, r.url)
	if err := a.c.CreateSpace(t.Context(), space); err != nil {
		t.Fatal(err)
	}
	a.c.mu.Lock()
	skew := a.c.skew
	a.c.mu.Unlock()
	if skew < 59*time.Minute || skew > 61*time.Minute {
		t.Fatalf("learned skew %v, want about an hour", skew)
	}
	if _, err := a.c.Status(t.Context(), space); err != nil {
		t.Fatal(err)
	}
}

func TestAllowCreate(t *testing.T) {
	r := newTestRelay(t, ServerOptions{AllowCreate: func(ed25519.PublicKey) bool { return false }})
	a := newDevice(t, r)
	if err := a.c.CreateSpace(t.Context(), newSpace(t, r.url)); !errors.Is(err, ErrNotMember) {
		t.Fatalf("create refused by AllowCreate: %v", err)
	}
}
