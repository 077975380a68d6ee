package relay

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

// setupSpace creates a space owned by devs[0] with every device a member.
func setupSpace(t *testing.T, r *testRelay, devs ...*device) Space {
	t.Helper()
	space := newSpace(t, r.url)
	if err := devs[0].c.CreateSpace(t.Context(), space); err != nil {
		t.Fatal(err)
	}
	var add []ed25519.PublicKey
	for _, d := range devs[1:] {
		add = append(add, d.pub())
	}
	if len(add) > 0 {
		m, err := devs[0].c.UpdateMembers(t.Context(), space, add, nil)
		if err != nil {
			t.Fatal(err)
		}
		if m.Version != 2 || len(m.Keys) != len(devs) {
			t.Fatalf("members %+v", m)
		}
	}
	return space
}

func wantPayloads(t *testing.T, who string, got []string, err error, want ...string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: receive: %v", who, err)
	}
	if !slices.Equal(got, want) && !(len(got) == 0 && len(want) == 0) {
		t.Fatalf("%s received %q, want %q", who, got, want)
	}
}

// Two devices that are never online together: each only talks to the
// relay, in turn, and the relay restarts in between.
func TestTwoDevicesNeverOnlineTogether(t *testing.T) {
	r := newTestRelay(t, ServerOptions{})
	a, b := newDevice(t, r), newDevice(t, r)
	space := setupSpace(t, r, a, b)

	a.send(t, space, "a1")
	a.send(t, space, "a2")

	got, err := b.receive(t, space)
	wantPayloads(t, "b", got, err, "a1", "a2")
	b.send(t, space, "b1")

	r.restart()

	got, err = a.receive(t, space) // a's own bundles are skipped
	wantPayloads(t, "a", got, err, "b1")
	a.send(t, space, "a3")

	r.restart()
	got, err = b.receive(t, space)
	wantPayloads(t, "b", got, err, "a3")
	got, err = b.receive(t, space) // exactly once
	wantPayloads(t, "b", got, err)
	got, err = a.receive(t, space)
	wantPayloads(t, "a", got, err)

	// Everyone acknowledged everything: the relay holds nothing.
	st, err := a.c.Status(t.Context(), space)
	if err != nil {
		t.Fatal(err)
	}
	if st.Bundles != 0 || st.Bytes != 0 || st.Head != 4 || st.Low != 4 {
		t.Fatalf("status after all acknowledged: %+v", st)
	}
}

func TestThreeDevicesNeverOnlineTogether(t *testing.T) {
	r := newTestRelay(t, ServerOptions{})
	a, b, c := newDevice(t, r), newDevice(t, r), newDevice(t, r)
	space := setupSpace(t, r, a, b, c)

	a.send(t, space, "a1")
	r.restart()
	b.send(t, space, "b1")
	got, err := b.receive(t, space)
	wantPayloads(t, "b", got, err, "a1")
	r.restart()
	c.send(t, space, "c1")
	got, err = c.receive(t, space)
	wantPayloads(t, "c", got, err, "a1", "b1")
	a.send(t, space, "a2")
	r.restart()
	got, err = a.receive(t, space)
	wantPayloads(t, "a", got, err, "b1", "c1")
	got, err = b.receive(t, space)
	wantPayloads(t, "b", got, err, "c1", "a2")
	r.restart()
	got, err = c.receive(t, space)
	wantPayloads(t, "c", got, err, "a2")

	st, err := c.c.Status(t.Context(), space)
	if err != nil {
		t.Fatal(err)
	}
	if st.Members != 3 || st.Bundles != 0 || st.Head != 4 {
		t.Fatalf("status: %+v", st)
	}
}

// pullAsync runs a Pull in a goroutine.
type pullResult struct {
	envs []Envelope
	err  error
}

func pullAsync(ctx context.Context, c *Client, space Space, after uint64, wait time.Duration) <-chan pullResult {
	ch := make(chan pullResult, 1)
	go func() {
		envs, err := c.Pull(ctx, space, after, wait)
		ch <- pullResult{envs, err}
	}()
	return ch
}

func TestLongPollWakesOnPush(t *testing.T) {
	clk := newFakeClock()
	r := newTestRelay(t, ServerOptions{Clock: clk, MaxWait: time.Minute})
	a, b := newDevice(t, r), newDevice(t, r)
	a.c.Now, b.c.Now = clk.Now, clk.Now
	space := setupSpace(t, r, a, b)

	res := pullAsync(t.Context(), b.c, space, 0, 30*time.Second)
	if d := <-clk.started; d != 30*time.Second { // the relay found nothing and waits
		t.Fatalf("long-poll armed for %v", d)
	}
	seq := a.send(t, space, "wake")
	got := <-res
	if got.err != nil || len(got.envs) != 1 || got.envs[0].Seq != seq {
		t.Fatalf("pull woken by push: %+v", got)
	}
}

func TestLongPollTimesOutAtMaxWait(t *testing.T) {
	clk := newFakeClock()
	r := newTestRelay(t, ServerOptions{Clock: clk, MaxWait: time.Minute})
	a := newDevice(t, r)
	a.c.Now = clk.Now
	space := setupSpace(t, r, a)

	res := pullAsync(t.Context(), a.c, space, 0, time.Hour)
	if d := <-clk.started; d != time.Minute {
		t.Fatalf("long-poll armed for %v, want the relay's cap", d)
	}
	clk.Advance(time.Minute)
	got := <-res
	if got.err != nil || len(got.envs) != 0 {
		t.Fatalf("timed-out pull: %+v", got)
	}
}

func selfSignedCert(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "relay-test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, priv)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: priv, Leaf: leaf}, pool
}

// Start over TLS: exchange, then Close ends a pending long-poll and
// returns only when every goroutine is done.
func TestStartTLS(t *testing.T) {
	clk := newFakeClock()
	srv, err := NewServer(t.TempDir(), ServerOptions{Clock: clk, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	cert, pool := selfSignedCert(t)
	v, err := srv.Start(t.Context(), "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(v.URL(), "https://127.0.0.1:") {
		t.Fatalf("URL %q", v.URL())
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13}}}
	defer hc.CloseIdleConnections()
	mk := func() *device {
		k := newKey(t)
		return &device{key: k, kv: NewMemKV(), c: &Client{URL: v.URL(), Identity: k, HTTP: hc, Now: clk.Now,
			Sleep: func(ctx context.Context, _ time.Duration) error { return ctx.Err() }}}
	}
	a, b := mk(), mk()
	r := &testRelay{url: v.URL()}
	space := setupSpace(t, r, a, b)
	a.send(t, space, "over tls")
	got, err := b.receive(t, space)
	wantPayloads(t, "b", got, err, "over tls")

	// A client that does not trust the certificate fails.
	plain := &Client{URL: v.URL(), Identity: a.key, Retries: -1}
	if _, err := plain.Status(t.Context(), space); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("untrusted certificate: %v", err)
	}

	res := pullAsync(t.Context(), b.c, space, 100, 30*time.Second)
	<-clk.started
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	if got := <-res; got.err == nil {
		t.Fatalf("pull across Close succeeded: %+v", got)
	}
}

// waitLog returns when the relay has logged a line containing every needle.
func waitLog(t *testing.T, sink *logSink, needles ...string) {
	t.Helper()
	timeout := time.NewTimer(20 * time.Second) // a guard, not synchronisation
	defer timeout.Stop()
	for {
		select {
		case line := <-sink.ch:
			ok := true
			for _, n := range needles {
				ok = ok && strings.Contains(line, n)
			}
			if ok {
				return
			}
		case <-timeout.C:
			t.Fatalf("relay never logged %q", needles)
		}
	}
}

const pushRoute = `"route":"POST /v1/spaces/{space}/bundles"`

// A client killed mid-push (the connection closes with half the body
// sent) leaves nothing at the relay, and the push succeeds afterwards.
func TestKilledMidPush(t *testing.T) {
	sink := newLogSink()
	r := newTestRelay(t, ServerOptions{Logger: sink.logger()})
	a := newDevice(t, r)
	space := setupSpace(t, r, a)
	sealed, err := Seal(space, a.key, 1, bytes.Repeat([]byte("x"), 40_000))
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodPost, r.url+"/v1/spaces/"+space.ID+"/bundles", bytes.NewReader(sealed))
	if err != nil {
		t.Fatal(err)
	}
	if err := signRequest(req, a.key, sealed, time.Now()); err != nil {
		t.Fatal(err)
	}
	var wire bytes.Buffer
	if err := req.Write(&wire); err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("tcp", r.ts.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write(wire.Bytes()[:wire.Len()-len(sealed)/2]); err != nil {
		t.Fatal(err)
	}
	conn.Close()
	waitLog(t, sink, pushRoute, `"status":400`)

	st, err := a.c.Status(t.Context(), space)
	if err != nil {
		t.Fatal(err)
	}
	if st.Head != 0 || st.Bundles != 0 || st.Bytes != 0 {
		t.Fatalf("after a truncated push: %+v", st)
	}
	seq, err := a.c.Push(t.Context(), space, sealed)
	if err != nil || seq != 1 {
		t.Fatalf("push after the kill: seq %d, %v", seq, err)
	}
}

// truncateOnce cuts the body of the first push after half of it.
type truncateOnce struct {
	base http.RoundTripper
	done bool
}

var errKilled = errors.New("killed")

type failReader struct{}

func (failReader) Read([]byte) (int, error) { return 0, errKilled }

func (rt *truncateOnce) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method != http.MethodPost || !strings.HasSuffix(req.URL.Path, "/bundles") || rt.done {
		return rt.base.RoundTrip(req)
	}
	rt.done = true
	body, err := io.ReadAll(req.Body)
	if err != nil {
		return nil, err
	}
	req = req.Clone(req.Context())
	req.Body = io.NopCloser(io.MultiReader(bytes.NewReader(body[:len(body)/2]), failReader{}))
	return rt.base.RoundTrip(req)
}

// The client's own retry after a push cut mid-body stores the bundle
// exactly once.
func TestPushRetryAfterCutBody(t *testing.T) {
	sink := newLogSink()
	r := newTestRelay(t, ServerOptions{Logger: sink.logger()})
	a := newDevice(t, r)
	space := setupSpace(t, r, a)
	a.c.HTTP = &http.Client{Transport: &truncateOnce{base: r.ts.Client().Transport}}
	sealed, err := Seal(space, a.key, 1, bytes.Repeat([]byte("y"), 40_000))
	if err != nil {
		t.Fatal(err)
	}
	sleeps := 0
	a.c.Sleep = func(ctx context.Context, _ time.Duration) error { sleeps++; return ctx.Err() }
	seq, err := a.c.Push(t.Context(), space, sealed)
	if err != nil || seq != 1 || sleeps != 1 {
		t.Fatalf("push: seq %d, %v, %d backoffs", seq, err, sleeps)
	}
	waitLog(t, sink, pushRoute, `"status":400`)
	st, err := a.c.Status(t.Context(), space)
	if err != nil {
		t.Fatal(err)
	}
	if st.Head != 1 || st.Bundles != 1 || st.Bytes != int64(len(sealed)) {
		t.Fatalf("after retry: %+v", st)
	}
	// The same bytes again: the relay returns the same seq, stores nothing.
	if seq, err := a.c.Push(t.Context(), space, sealed); err != nil || seq != 1 {
		t.Fatalf("repeated push: %d, %v", seq, err)
	}
}
