package replica

import (
	"bytes"
	"compress/flate"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/ferrysync/ferry/policy"
	"github.com/ferrysync/ferry/privacy/consent"
	"github.com/ferrysync/ferry/storage"
	"github.com/ferrysync/ferry/transport"
	"pgregory.net/rapid"
)

// hookConn calls after(n) once the n-th frame has been sent.
type hookConn struct {
	transport.Conn
	mu    sync.Mutex
	sent  int
	after func(n int)
}

func (c *hookConn) Send(ctx context.Context, b []byte) error {
	if err := c.Conn.Send(ctx, b); err != nil {
		return err
	}
	c.mu.Lock()
	c.sent++
	n := c.sent
	c.mu.Unlock()
	c.after(n)
	return nil
}

// markers are the strings that identify a record on the wire: its
// collection name, its id and a field value.
func markers(coll string, i int) [][]byte {
	return [][]byte{[]byte(fmt.Sprintf("id-%s-%03d", coll, i)), []byte(fmt.Sprintf("value-%s-%03d-secret", coll, i))}
}

var privacyColls = []string{"zq-alpha", "zq-bravo", "zq-charlie", "zq-delta"}

// TestPropertyNothingCrossesWithoutAGrant: for random grants (some
// expired), random records and a revocation at a random frame of the
// session, no byte identifying a record of a collection without a live
// grant crosses the wire, as recorded on the transport. Records of
// granted collections do cross (so the scan can see what it looks for).
func TestPropertyNothingCrossesWithoutAGrant(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		clock := newFakeClock()
		net := transport.NewMemNetwork(rapid.Int64().Draw(rt, "seed"), func(string) {})
		defer net.Close()
		open := func(name string) *Replica {
			r, err := Open(context.Background(), "", Options{Passphrase: []byte("pw"), KDF: storage.TestKDF(),
				InMemory: true, Name: name, Now: clock.Now, Policies: policy.NewSet(policy.Rule{})})
			if err != nil {
				rt.Fatal(err)
			}
			return r
		}
		a, b := open("a"), open("b")
		defer a.Close()
		defer b.Close()
		ctx := context.Background()
		// b trusts a for everything; what a shares is the question.
		if _, err := b.Pair(ctx, a.ID(), privacyColls, 0); err != nil {
			rt.Fatal(err)
		}
		counts := map[string]int{}
		grants := map[string]consent.Grant{}
		expired := map[string]bool{}
		for _, c := range privacyColls {
			counts[c] = rapid.IntRange(0, 4).Draw(rt, "records-"+c)
			for i := range counts[c] {
				if err := a.Put(ctx, c, string(markers(c, i)[0]), map[string]any{"v": string(markers(c, i)[1])}); err != nil {
					rt.Fatal(err)
				}
			}
			switch rapid.IntRange(0, 2).Draw(rt, "grant-"+c) {
			case 1:
				gs, err := a.Pair(ctx, b.ID(), []string{c}, 0)
				if err != nil {
					rt.Fatal(err)
				}
				grants[c] = gs[0]
			case 2:
				if _, err := a.Pair(ctx, b.ID(), []string{c}, time.Hour); err != nil {
					rt.Fatal(err)
				}
				expired[c] = true
			}
		}
		clock.Advance(2 * time.Hour) // the one-hour grants lapse
		if len(grants) == 0 {
			// a must refuse the session: the peer holds no live grant.
			gs, err := a.Pair(ctx, b.ID(), []string{"zq-unused"}, 0)
			if err != nil {
				rt.Fatal(err)
			}
			grants["zq-unused"] = gs[0]
		}
		// Maybe revoke one granted collection after a random frame.
		var revoked string
		revokeAt := 0
		if len(grants) > 0 && rapid.Bool().Draw(rt, "revoke") {
			names := make([]string, 0, len(grants))
			for _, c := range privacyColls {
				if _, ok := grants[c]; ok {
					names = append(names, c)
				}
			}
			if len(names) > 0 {
				revoked = rapid.SampledFrom(names).Draw(rt, "revoked")
				revokeAt = rapid.IntRange(1, 4).Draw(rt, "revokeAt")
			}
		}

		l, err := net.Listen(b.ID(), pub(b))
		if err != nil {
			rt.Fatal(err)
		}
		defer l.Close()
		sctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		done := make(chan error, 1)
		go func() {
			conn, err := l.Accept(sctx)
			if err != nil {
				done <- err
				return
			}
			defer conn.Close()
			_, err = b.Sync(sctx, conn)
			done <- err
		}()
		raw, err := net.Dialer(a.ID(), pub(a)).Dial(sctx, b.ID())
		if err != nil {
			rt.Fatal(err)
		}
		rec, recorder := transport.Record(raw)
		revokedAfter := -1
		conn := &hookConn{Conn: rec, after: func(n int) {
			if revoked != "" && n == revokeAt {
				if err := a.consent.Revoke(ctx, grants[revoked].ID, "mid-session"); err != nil {
					rt.Fatal(err)
				}
				revokedAfter = n
			}
		}}
		_, errA := a.Sync(sctx, conn)
		conn.Close()
		errB := <-done
		// Revoking the only grant before the handshake's consent check
		// refuses the session; any other failure is a bug.
		refused := revokedAfter >= 0 && len(grants) == 1 && errors.Is(errA, ErrNoConsent)
		if !refused && (errA != nil || errB != nil) {
			rt.Fatalf("sync: %v / %v", errA, errB)
		}

		// Frames may be compressed: scan what they carry, not their bytes.
		var sent [][]byte
		for _, f := range recorder.Sent() {
			sent = append(sent, frameContent(rt, f))
		}
		for _, c := range privacyColls {
			_, live := grants[c]
			for i := range counts[c] {
				for _, m := range markers(c, i) {
					for n, frame := range sent {
						found := bytes.Contains(frame, m)
						switch {
						case !live && found:
							rt.Fatalf("%q (no live grant, expired=%v) crossed in frame %d", m, expired[c], n+1)
						case c == revoked && revokedAfter >= 0 && n+1 > revokedAfter && found:
							rt.Fatalf("%q crossed in frame %d after revocation at frame %d", m, n+1, revokedAfter)
						}
					}
				}
			}
			if live && c != revoked && counts[c] > 0 && !refused {
				if !bytes.Contains(bytes.Join(sent, nil), markers(c, 0)[1]) {
					rt.Fatalf("granted %s never crossed: the scan cannot see records", c)
				}
			}
		}
		// The ledger records what was shared, under which grant.
		entries, err := a.Consent().Entries(ctx)
		if err != nil {
			rt.Fatal(err)
		}
		for _, e := range entries {
			if e.Kind == consent.KindShare {
				if _, ok := grants[e.Share.Collection]; !ok || e.Share.GrantID != grants[e.Share.Collection].ID {
					rt.Fatalf("share of %s recorded under grant %q", e.Share.Collection, e.Share.GrantID)
				}
			}
		}
	})
}

// frameContent returns the message bytes a frame carries, inflated.
func frameContent(t interface{ Fatalf(string, ...any) }, f []byte) []byte {
	if len(f) > 0 && f[0] == frameDeflate {
		out, err := io.ReadAll(flate.NewReader(bytes.NewReader(f[1:])))
		if err != nil {
			t.Fatalf("inflate a recorded frame: %v", err)
		}
		return out
	}
	return f
}

// TestNoGrantNoSession: a peer holding no grant is refused before any
// record is read, with ErrNoConsent.
func TestNoGrantNoSession(t *testing.T) {
	e := newEnv(t)
	a := e.replica("a")
	stranger, err := Open(context.Background(), "", Options{Passphrase: []byte("x"), KDF: storage.TestKDF(), InMemory: true, Name: "s", Now: e.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer stranger.Close()
	mustPut(t, a, "notes", "secret", map[string]any{"v": "hidden"})
	_, _, errA, errB := e.trySync(stranger, a)
	if errA == nil || errB == nil {
		t.Fatalf("session with an ungranted peer ran: %v / %v", errA, errB)
	}
	if !isConsentErr(errA) && !isConsentErr(errB) {
		t.Fatalf("errors do not say consent: %v / %v", errA, errB)
	}
	if _, err := stranger.Get(context.Background(), "notes", "secret"); err == nil {
		t.Fatal("the stranger got the record")
	}
}

func isConsentErr(err error) bool {
	return err != nil && (bytes.Contains([]byte(err.Error()), []byte("grant")) || bytes.Contains([]byte(err.Error()), []byte("consent")))
}
