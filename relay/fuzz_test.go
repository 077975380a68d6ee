package relay

import (
	"bytes"
	"crypto/ed25519"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"filippo.io/age"
)

// Fixed keys, so that the committed seed corpora stay valid.
var (
	fuzzKey      = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, 32))
	fuzzSpace    = SpaceFromKey([32]byte{1, 2, 3, 4, 5, 6, 7, 8}, "https://relay.invalid")
	fuzzIdentity = mustDerive(fuzzKey)
)

func mustDerive(k ed25519.PrivateKey) *age.X25519Identity {
	id, err := DeriveInviteIdentity(k)
	if err != nil {
		panic(err)
	}
	return id
}

// FuzzOpenBundle: the bundle opener never panics, and whatever it accepts
// is canonical.
func FuzzOpenBundle(f *testing.F) {
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := Open(fuzzSpace, data)
		if err != nil {
			return
		}
		if BucketSize(len(b.Payload)) != len(data) || b.Counter == 0 || len(b.Sender) != ed25519.PublicKeySize {
			t.Fatalf("accepted a non-canonical bundle: %d bytes, payload %d", len(data), len(b.Payload))
		}
		if _, _, err := bundleHeader(fuzzSpace.ID, data); err != nil {
			t.Fatal("opened but the relay would refuse it")
		}
	})
}

// FuzzDecodeMembers: the membership list decoder never panics, and what it
// accepts is sorted, unique, bounded and signed.
func FuzzDecodeMembers(f *testing.F) {
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		sm, err := DecodeMembers(data)
		if err != nil {
			return
		}
		if !validSpaceID(sm.Space) || sm.Version == 0 || len(sm.Keys) == 0 || len(sm.Keys) > MaxMembers {
			t.Fatalf("accepted %+v", sm.Members)
		}
		for i := 1; i < len(sm.Keys); i++ {
			if bytes.Compare(sm.Keys[i-1], sm.Keys[i]) >= 0 {
				t.Fatal("accepted unsorted keys")
			}
		}
		if !ed25519.Verify(sm.Signer, append([]byte(membersLabel), sm.raw...), sm.sig) {
			t.Fatal("accepted a bad signature")
		}
	})
}

// FuzzAcceptInvitation: the invitation opener (age layer and plaintext
// decoder) never panics, and an accepted invitation's ID matches its key.
func FuzzAcceptInvitation(f *testing.F) {
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		if inv, err := AcceptInvitation(data, fuzzIdentity); err == nil && inv.Space.check() != nil {
			t.Fatal("accepted an invitation whose ID does not match its key")
		}
		if inv, err := decodeInvitation(data); err == nil && inv.Space.check() != nil {
			t.Fatal("decoded an invitation whose ID does not match its key")
		}
	})
}

// FuzzClientResponses: every decoder of relay replies never panics and
// bounds what it accepts; the verifier state decoder round-trips.
func FuzzClientResponses(f *testing.F) {
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		if p, err := decodePull(data); err == nil {
			for _, e := range p.Envelopes {
				if e.Seq == 0 || len(e.Sender) != ed25519.PublicKeySize || len(e.Data) > MaxBundleSize {
					t.Fatalf("accepted envelope seq %d", e.Seq)
				}
			}
			// The verifier takes anything the decoder accepts.
			v, err := NewVerifier(t.Context(), fuzzSpace, NewMemKV(), VerifierOptions{MaxBuffered: 4})
			if err != nil {
				t.Fatal(err)
			}
			ms, _ := v.AddPage(t.Context(), p)
			for _, m := range ms {
				authentic := false
				for _, e := range p.Envelopes {
					b, err := Open(fuzzSpace, e.Data)
					authentic = authentic || err == nil && b.Counter == m.Counter && b.Sender.Equal(m.Sender) && bytes.Equal(b.Payload, m.Payload)
				}
				if !authentic {
					t.Fatal("yielded an unverified payload")
				}
			}
		}
		_, _ = decodePush(data)
		_, _ = decodeError(data)
		_, _ = decodeStatus(data)
		if c, pos, err := decodeRecvState(data); err == nil && !bytes.Equal(encodeRecvState(c, pos), data) {
			t.Fatal("verifier state does not round-trip")
		}
	})
}

// fuzzRelay is one relay per fuzzing process with fuzzSpace created by
// fuzzKey.
func fuzzRelay(f *testing.F) *Server {
	srv, err := NewServer(f.TempDir(), ServerOptions{NoSync: true, MaxWait: time.Millisecond})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { srv.Close() })
	body, err := signMembers(Members{Space: fuzzSpace.ID, Version: 1, Keys: []ed25519.PublicKey{pubOf(fuzzKey)}}, fuzzKey)
	if err != nil {
		f.Fatal(err)
	}
	w := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodPost, "/v1/spaces/"+fuzzSpace.ID, bytes.NewReader(body))
	if err := signRequest(req, fuzzKey, body, time.Now()); err != nil {
		f.Fatal(err)
	}
	srv.ServeHTTP(w, req)
	if w.Code != http.StatusCreated {
		f.Fatalf("create: %d %s", w.Code, w.Body)
	}
	return srv
}

// FuzzServerRequest: every request body the relay decodes (create, member
// update, push, and the query of pull and ack), correctly signed by a
// member, gets a 2xx or 4xx answer, never a panic or a 500.
func FuzzServerRequest(f *testing.F) {
	srv := fuzzRelay(f)
	f.Add(uint8(0), "", []byte{})
	routes := []struct{ method, path string }{
		{http.MethodPost, "/v1/spaces/" + fuzzSpace.ID},
		{http.MethodPut, "/v1/spaces/" + fuzzSpace.ID + "/members"},
		{http.MethodPost, "/v1/spaces/" + fuzzSpace.ID + "/bundles"},
		{http.MethodGet, "/v1/spaces/" + fuzzSpace.ID + "/bundles"},
		{http.MethodPost, "/v1/spaces/" + fuzzSpace.ID + "/ack"},
		{http.MethodGet, "/v1/spaces/" + fuzzSpace.ID + "/status"},
		{http.MethodGet, "/v1/spaces/" + fuzzSpace.ID + "/members"},
	}
	f.Fuzz(func(t *testing.T, route uint8, query string, body []byte) {
		r := routes[int(route)%len(routes)]
		req := httptest.NewRequest(r.method, "/", bytes.NewReader(body))
		req.URL.Path = r.path
		req.URL.RawQuery = query
		req.RequestURI = ""
		if err := signRequest(req, fuzzKey, body, time.Now()); err != nil {
			t.Fatal(err)
		}
		w := httptest.NewRecorder()
		srv.ServeHTTP(w, req)
		if w.Code >= 500 {
			t.Fatalf("%s %s?%s: HTTP %d %s", r.method, r.path, query, w.Code, w.Body)
		}
	})
}
