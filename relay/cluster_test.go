package relay

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferrysync/ferry/internal/natstest"
)

// frontEnd is a relay front-end of a NATS cluster behind httptest.
type frontEnd struct {
	srv *Server
	ts  *httptest.Server
}

func newFrontEnd(t testing.TB, urls []string, opts ServerOptions) *frontEnd {
	t.Helper()
	opts.NATS = &NATSOptions{URLs: urls, Replicas: 3}
	srv, err := NewServer("", opts)
	if err != nil {
		t.Fatal(err)
	}
	fe := &frontEnd{srv: srv, ts: httptest.NewServer(srv)}
	t.Cleanup(func() {
		fe.ts.CloseClientConnections()
		srv.Close()
		fe.ts.Close()
	})
	return fe
}

func (fe *frontEnd) client(key ed25519.PrivateKey) *Client {
	return &Client{URL: fe.ts.URL, Identity: key, HTTP: fe.ts.Client(), Retries: 8,
		Backoff: func(n int) time.Duration { return 50 * time.Millisecond }}
}

// Three NATS nodes, two front-ends: a device pushes through one, a NATS
// node (the bundle stream's leader) stops mid-stream, another device pulls
// through the other front-end and gets every acknowledged bundle, in
// order, once.
func TestClusterTwoFrontEndsNodeLoss(t *testing.T) {
	cl := natstest.StartCluster(t, 3)
	fe1 := newFrontEnd(t, cl.URLs(), ServerOptions{})
	fe2 := newFrontEnd(t, cl.URLs(), ServerOptions{})
	ka, kb := newKey(t), newKey(t)
	a := &device{key: ka, c: fe1.client(ka), kv: NewMemKV()}
	b := &device{key: kb, c: fe2.client(kb), kv: NewMemKV()}
	space := newSpace(t, fe1.ts.URL)
	if err := a.c.CreateSpace(t.Context(), space); err != nil {
		t.Fatal(err)
	}
	if _, err := a.c.UpdateMembers(t.Context(), space, []ed25519.PublicKey{b.pub()}, nil); err != nil {
		t.Fatal(err)
	}
	sender, err := NewSender(t.Context(), a.c, space, a.kv)
	if err != nil {
		t.Fatal(err)
	}
	const total, stopAt = 30, 10
	var want []string
	var resume time.Duration
	for i := range total {
		if i == stopAt {
			leader := cl.StreamLeader(streamBundles)
			if leader < 0 {
				t.Fatal("no leader for the bundle stream")
			}
			cl.Stop(leader)
			t.Logf("stopped node n%d (leader of %s)", leader, streamBundles)
		}
		p := fmt.Sprintf("bundle %02d", i)
		start := time.Now()
		if _, err := sender.Send(t.Context(), []byte(p)); err != nil {
			t.Fatalf("push %d: %v", i, err)
		}
		if i == stopAt {
			resume = time.Since(start)
		}
		want = append(want, p)
	}
	t.Logf("first push after the node loss took %v", resume)
	got, err := b.receive(t, space)
	wantPayloads(t, "b", got, err, want...)
	st, err := b.c.Status(t.Context(), space)
	if err != nil || st.Head != total {
		t.Fatalf("status through the other front-end: %+v, %v", st, err)
	}
	// The nodes' store directories hold no payload, but do hold the space
	// ID (a control that the scan reads what is there).
	var disk bytes.Buffer
	for _, dir := range cl.StoreDirs() {
		filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			data, err := os.ReadFile(path)
			disk.Write(data)
			return err
		})
	}
	for _, p := range want {
		if bytes.Contains(disk.Bytes(), []byte(p)) {
			t.Fatalf("a NATS store directory holds %q", p)
		}
	}
	if !bytes.Contains(disk.Bytes(), []byte(space.ID)) {
		t.Fatal("control: the space ID is not in the NATS store directories")
	}
	// A request replayed through the other front-end is refused: the
	// nonces are shared through the cluster.
	req, err := http.NewRequest(http.MethodGet, fe1.ts.URL+"/v1/spaces/"+space.ID+"/status", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := signRequest(req, a.key, nil, time.Now()); err != nil {
		t.Fatal(err)
	}
	for i, fe := range []*frontEnd{fe1, fe2} {
		r := req.Clone(t.Context())
		r.URL.Host = fe.ts.Listener.Addr().String()
		r.Host = r.URL.Host
		resp, err := fe.ts.Client().Do(r)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if want := []int{200, 401}[i]; resp.StatusCode != want || i == 1 && !strings.Contains(string(body), codeReplay) {
			t.Fatalf("request %d: %d %s, want %d", i, resp.StatusCode, body, want)
		}
	}
}

var errFrontEndDied = errors.New("front-end died")

// A front-end that dies between storing a bundle and counting it in the
// space's metadata loses nothing: the other front-end serves the bundle
// (rolled forward), a retry of the push gets the same seq, and the next
// push follows on densely.
func TestFrontEndDiesMidPush(t *testing.T) {
	cl := natstest.StartCluster(t, 3)
	fe1 := newFrontEnd(t, cl.URLs(), ServerOptions{})
	fe2 := newFrontEnd(t, cl.URLs(), ServerOptions{})
	ka, kb := newKey(t), newKey(t)
	a := &device{key: ka, c: fe1.client(ka), kv: NewMemKV()}
	b := &device{key: kb, c: fe2.client(kb), kv: NewMemKV()}
	space := newSpace(t, fe1.ts.URL)
	if err := a.c.CreateSpace(t.Context(), space); err != nil {
		t.Fatal(err)
	}
	if _, err := a.c.UpdateMembers(t.Context(), space, []ed25519.PublicKey{b.pub()}, nil); err != nil {
		t.Fatal(err)
	}
	a.send(t, space, "before")
	sealed, err := Seal(space, a.key, 2, []byte("acknowledged by nobody yet"))
	if err != nil {
		t.Fatal(err)
	}
	js := fe1.srv.st.(*jsStore)
	js.afterClaim = func() error { return errFrontEndDied }
	a.c.Retries = -1
	if _, err := a.c.Push(t.Context(), space, sealed); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("push through the dying front-end: %v", err)
	}
	js.afterClaim = nil
	got, err := b.receive(t, space)
	wantPayloads(t, "b", got, err, "before", "acknowledged by nobody yet")
	// The client's retry, through the other front-end: the same seq.
	if seq, err := fe2.client(a.key).Push(t.Context(), space, sealed); err != nil || seq != 2 {
		t.Fatalf("retry: seq %d, %v", seq, err)
	}
	a.c.Retries = 0
	if seq := a.send(t, space, "after"); seq != 3 {
		t.Fatalf("next push: seq %d", seq)
	}
	got, err = b.receive(t, space)
	wantPayloads(t, "b", got, err, "after")
}
