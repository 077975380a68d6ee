package relay

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"pgregory.net/rapid"
)

// evilRelay is a RoundTripper between a client and an honest relay that
// rewrites pull responses: a malicious relay as its members see it.
type evilRelay struct {
	base http.RoundTripper
	mu   sync.Mutex
	act  func(p *pullResponse)
}

func (e *evilRelay) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := e.base.RoundTrip(req)
	if err != nil || req.Method != http.MethodGet || !strings.HasSuffix(req.URL.Path, "/bundles") || resp.StatusCode != http.StatusOK {
		return resp, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	var p pullResponse
	if err := wireDec.Unmarshal(body, &p); err != nil {
		return nil, err
	}
	e.mu.Lock()
	e.act(&p)
	e.mu.Unlock()
	out := marshal(p)
	resp.Body = io.NopCloser(bytes.NewReader(out))
	resp.ContentLength = int64(len(out))
	resp.Header.Set("Content-Length", strconv.Itoa(len(out)))
	return resp, nil
}

// evilClient returns a client of device d whose pulls pass through act.
func evilClient(r *testRelay, d *device, act func(p *pullResponse)) *Client {
	c := r.client(d.key)
	c.HTTP = &http.Client{Transport: &evilRelay{base: r.ts.Client().Transport, act: act}}
	return c
}

// receiveWith runs a Receive for d through client c.
func receiveWith(t *testing.T, d *device, c *Client, space Space) ([]string, error) {
	t.Helper()
	v, err := NewVerifier(t.Context(), space, d.kv, VerifierOptions{Self: d.pub()})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	_, err = v.Receive(t.Context(), c, 0, func(m Message) error {
		got = append(got, string(m.Payload))
		return nil
	})
	return got, err
}

// at applies f to the envelope with sequence number seq, if present.
func at(p *pullResponse, seq uint64, f func(*wireEnvelope)) {
	for i := range p.Envelopes {
		if p.Envelopes[i].Seq == seq {
			f(&p.Envelopes[i])
			return
		}
	}
}

func drop(p *pullResponse, seq uint64) {
	p.Envelopes = slices.DeleteFunc(p.Envelopes, func(e wireEnvelope) bool { return e.Seq == seq })
}

// Each bundle is a fresh space's p1..p4 from one sender, seqs 1..4.
func TestMaliciousRelay(t *testing.T) {
	r := newTestRelay(t, ServerOptions{})
	forger := newKey(t)
	for _, tc := range []struct {
		name     string
		act      func(space Space, p *pullResponse)
		want     []string // delivered through the evil relay
		tampered bool
		missing  bool
	}{
		{"honest", func(Space, *pullResponse) {}, []string{"p1", "p2", "p3", "p4"}, false, false},
		{"flip a byte", func(_ Space, p *pullResponse) { at(p, 2, func(e *wireEnvelope) { e.Data[300] ^= 1 }) },
			[]string{"p1"}, true, true},
		{"flip the counter", func(_ Space, p *pullResponse) { at(p, 2, func(e *wireEnvelope) { e.Data[40] ^= 2 }) },
			[]string{"p1"}, true, true},
		{"drop one", func(_ Space, p *pullResponse) { drop(p, 2) }, []string{"p1"}, false, true},
		{"drop the tail", func(_ Space, p *pullResponse) { drop(p, 4) }, []string{"p1", "p2", "p3"}, false, false},
		{"drop the head", func(_ Space, p *pullResponse) { drop(p, 1) }, nil, false, true},
		{"reorder", func(_ Space, p *pullResponse) { slices.Reverse(p.Envelopes) },
			[]string{"p1", "p2", "p3", "p4"}, false, false},
		{"replay", func(_ Space, p *pullResponse) {
			e := p.Envelopes
			p.Envelopes = slices.Concat(e, e[:min(2, len(e))], e, e[min(1, len(e)):min(2, len(e))])
		}, []string{"p1", "p2", "p3", "p4"}, false, false},
		{"wrong sender", func(_ Space, p *pullResponse) { at(p, 1, func(e *wireEnvelope) { e.Sender = pubOf(forger) }) },
			nil, true, true},
		{"forged by a stranger", func(space Space, p *pullResponse) {
			// Sealed with another space's key, signed by a stranger,
			// in place of the first sender's counter 1.
			b, err := Seal(newSpace(t, "x"), forger, 1, []byte("FORGED"))
			if err != nil {
				panic(err)
			}
			at(p, 1, func(e *wireEnvelope) { *e = wireEnvelope{Seq: 1, Sender: pubOf(forger), Data: b} })
		}, nil, true, true},
		{"resealed under the space key by a stranger", func(space Space, p *pullResponse) {
			// A relay cannot do this (it lacks the key); a former member
			// who kept the key could. It is authentic for its sender,
			// which the application must judge (see docs/relay.md).
			b, err := Seal(space, forger, 1, []byte("FORGED"))
			if err != nil {
				panic(err)
			}
			at(p, 4, func(e *wireEnvelope) {
				p.Envelopes = append(p.Envelopes, wireEnvelope{Seq: 5, Sender: pubOf(forger), Data: b})
			})
		}, []string{"p1", "p2", "p3", "p4", "FORGED"}, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := newDevice(t, r), newDevice(t, r)
			space := setupSpace(t, r, a, b)
			for _, p := range []string{"p1", "p2", "p3", "p4"} {
				a.send(t, space, p)
			}
			got, err := receiveWith(t, b, evilClient(r, b, func(p *pullResponse) { tc.act(space, p) }), space)
			if !slices.Equal(got, tc.want) && len(got)+len(tc.want) > 0 {
				t.Fatalf("delivered %q, want %q (err %v)", got, tc.want, err)
			}
			if errors.Is(err, ErrTampered) != tc.tampered || errors.Is(err, ErrMissing) != tc.missing {
				t.Fatalf("err %v: tampered %v missing %v, want %v %v", err, errors.Is(err, ErrTampered), errors.Is(err, ErrMissing), tc.tampered, tc.missing)
			}
			if tc.tampered && !strings.Contains(err.Error(), r.url) {
				t.Fatalf("tamper error does not name the relay: %v", err)
			}
			// The honest relay still has everything the device lacks: the
			// next receive delivers exactly the rest.
			rest, err := b.receive(t, space)
			if err != nil {
				t.Fatal(err)
			}
			all := slices.DeleteFunc(slices.Concat(got, rest), func(s string) bool { return s == "FORGED" })
			if !slices.Equal(all, []string{"p1", "p2", "p3", "p4"}) {
				t.Fatalf("delivered %q then %q", got, rest)
			}
		})
	}
}

// Property: whatever a relay does to pull responses (drop, flip, duplicate,
// hold back, replay, swap senders, inject forgeries, in any mix and with any
// page size), a receiver yields only authentic payloads, per sender in
// counter order and exactly once; any tampering it saw is reported as
// ErrTampered; if it reports nothing, it yielded every bundle up to the
// highest sequence number the relay showed it; and an honest relay
// afterwards completes the delivery exactly.
func TestMaliciousRelayProperty(t *testing.T) {
	r := newTestRelay(t, ServerOptions{})
	forger := newKey(t)
	junkSpace := newSpace(t, "x")
	rapid.Check(t, func(rt *rapid.T) {
		a, b, c := newDevice(t, r), newDevice(t, r), newDevice(t, r)
		space := setupSpace(t, r, a, b, c)
		type key struct {
			sender  string
			counter uint64
		}
		truth := map[key]string{}      // (sender, counter) -> payload
		bySeq := map[uint64]key{}      // seq -> (sender, counter)
		order := map[string][]string{} // sender -> payloads in counter order
		na := rapid.IntRange(0, 4).Draw(rt, "na")
		nb := rapid.IntRange(0, 4).Draw(rt, "nb")
		for i := 0; i < max(na, nb); i++ {
			for _, d := range []*device{a, b} {
				n := na
				if d == b {
					n = nb
				}
				if i >= n {
					continue
				}
				p := fmt.Sprintf("%s-%d", fingerprint(d.pub())[:6], i+1)
				seq := d.send(t, space, p)
				k := key{string(d.pub()), uint64(i + 1)}
				truth[k], bySeq[seq] = p, k
				order[string(d.pub())] = append(order[string(d.pub())], p)
			}
		}

		plan := rapid.SliceOfN(rapid.IntRange(0, 8), 0, 24).Draw(rt, "plan")
		flips := rapid.SliceOfN(rapid.IntRange(0, MinBundleSize-1), 24, 24).Draw(rt, "flips")
		pageBytes := rapid.SampledFrom([]int{1, 2 * MinBundleSize, 8 << 20}).Draw(rt, "page")
		var held, forwarded []wireEnvelope
		sawTamper := false
		maxFwd := uint64(0)
		step := 0
		evil := evilClient(r, c, func(p *pullResponse) {
			var out []wireEnvelope
			emit := func(e wireEnvelope, intact bool) {
				out = append(out, e)
				if intact {
					forwarded = append(forwarded, e)
				} else {
					sawTamper = true
				}
				maxFwd = max(maxFwd, e.Seq)
			}
			for _, e := range p.Envelopes {
				action := 0
				if step < len(plan) {
					action = plan[step]
				}
				f := flips[step%len(flips)]
				step++
				switch action {
				case 1: // drop
				case 2: // flip a byte
					d := bytes.Clone(e.Data)
					d[f%len(d)] ^= 0x10
					emit(wireEnvelope{Seq: e.Seq, Sender: e.Sender, Data: d}, false)
				case 3: // duplicate
					emit(e, true)
					emit(e, true)
				case 4: // hold back until the next response
					held = append(held, e)
				case 5: // replay something old
					emit(e, true)
					if len(forwarded) > 0 {
						emit(forwarded[f%len(forwarded)], true)
					}
				case 6: // claim another sender
					emit(wireEnvelope{Seq: e.Seq, Sender: pubOf(forger), Data: e.Data}, false)
				case 7: // inject a forgery before it
					fb, err := Seal(junkSpace, forger, 1, []byte("FORGED"))
					if err != nil {
						panic(err)
					}
					emit(wireEnvelope{Seq: e.Seq, Sender: pubOf(forger), Data: fb}, false)
					emit(e, true)
				case 8: // swap with the previous one
					emit(e, true)
					if n := len(out); n >= 2 {
						out[n-1], out[n-2] = out[n-2], out[n-1]
					}
				default:
					emit(e, true)
				}
			}
			for _, e := range held[:len(held):len(held)] {
				if len(p.Envelopes) == 0 || !slices.ContainsFunc(p.Envelopes, func(x wireEnvelope) bool { return x.Seq == e.Seq }) {
					emit(e, true)
				}
			}
			held = held[:0]
			p.Envelopes = out
		})
		evil.MaxPullBytes = pageBytes

		got := map[string][]string{}
		v, err := NewVerifier(t.Context(), space, c.kv, VerifierOptions{Self: c.pub()})
		if err != nil {
			rt.Fatal(err)
		}
		_, rerr := v.Receive(context.Background(), evil, 0, func(m Message) error {
			want, ok := truth[key{string(m.Sender), m.Counter}]
			if !ok || want != string(m.Payload) {
				rt.Fatalf("yielded a forged payload %q (sender %s counter %d)", m.Payload, fingerprint(m.Sender)[:6], m.Counter)
			}
			got[string(m.Sender)] = append(got[string(m.Sender)], string(m.Payload))
			return nil
		})
		for s, ps := range got {
			if !slices.Equal(ps, order[s][:len(ps)]) {
				rt.Fatalf("sender %s: yielded %q, want a prefix of %q", fingerprint([]byte(s))[:6], ps, order[s])
			}
		}
		if sawTamper && !errors.Is(rerr, ErrTampered) {
			rt.Fatalf("tampering not reported: %v", rerr)
		}
		if rerr == nil {
			for seq, k := range bySeq {
				n := len(got[k.sender])
				if seq <= maxFwd && uint64(n) < k.counter {
					rt.Fatalf("no error, but seq %d (counter %d) below the top %d was not yielded", seq, k.counter, maxFwd)
				}
			}
		}
		if rerr != nil && !errors.Is(rerr, ErrTampered) && !errors.Is(rerr, ErrMissing) {
			rt.Fatalf("unexpected error: %v", rerr)
		}

		// An honest relay completes the delivery exactly.
		v2, err := NewVerifier(t.Context(), space, c.kv, VerifierOptions{Self: c.pub()})
		if err != nil {
			rt.Fatal(err)
		}
		_, err = v2.Receive(context.Background(), c.c, 0, func(m Message) error {
			got[string(m.Sender)] = append(got[string(m.Sender)], string(m.Payload))
			return nil
		})
		if err != nil {
			rt.Fatalf("honest receive after the attack: %v", err)
		}
		for _, d := range []*device{a, b} {
			all, want := got[string(d.pub())], order[string(d.pub())]
			if !slices.Equal(all, want) && len(all)+len(want) > 0 {
				rt.Fatalf("sender %s: delivered %q in all, want %q", fingerprint(d.pub())[:6], all, want)
			}
		}
	})
}
