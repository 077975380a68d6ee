package main

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferrysync/ferry/relay"
)

// natsRelayProc is a `ferry relay` subprocess.
type natsRelayProc struct {
	cmd     *exec.Cmd
	url     string
	metrics string
	waited  chan struct{}
}

var metricsLine = regexp.MustCompile(`metrics on (\S+)`)

// startRelayDir runs `ferry relay` on dir with extra flags.
func startRelayDir(t *testing.T, dir string, extra ...string) *natsRelayProc {
	t.Helper()
	cmd := exec.Command(e2eBin, append([]string{"relay", "--listen", "127.0.0.1:0", "--dir", dir}, extra...)...)
	cmd.Env = baseEnv(t)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	errp, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &natsRelayProc{cmd: cmd, waited: make(chan struct{})}
	metrics := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(errp)
		for sc.Scan() {
			if m := metricsLine.FindStringSubmatch(sc.Text()); m != nil {
				metrics <- m[1]
			}
		}
	}()
	first := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		if sc.Scan() {
			first <- sc.Text()
		} else {
			first <- ""
		}
		for sc.Scan() {
		}
		cmd.Wait()
		close(p.waited)
	}()
	t.Cleanup(func() { p.kill() })
	select {
	case line := <-first:
		m := relayLine.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("ferry relay: first line %q", line)
		}
		p.url = m[1]
	case <-time.After(commandTimeout):
		t.Fatal("ferry relay printed nothing")
	}
	for _, f := range extra {
		if f == "--metrics" {
			select {
			case p.metrics = <-metrics:
			case <-time.After(commandTimeout):
				t.Fatal("ferry relay printed no metrics URL")
			}
		}
	}
	return p
}

// kill sends SIGKILL and waits for the process.
func (p *natsRelayProc) kill() {
	_ = p.cmd.Process.Kill()
	<-p.waited
}

// A relay killed with SIGKILL while a device pushes loses no bundle it
// acknowledged: after a restart on the same directory, another device
// pulls every one, in order, once. The relay serves /metrics when asked.
func TestE2ERelayKill9MidPush(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "relay")
	p := startRelayDir(t, dir, "--metrics", "127.0.0.1:0", "--log-level", "warn")
	_, ka, _ := ed25519.GenerateKey(rand.Reader)
	_, kb, _ := ed25519.GenerateKey(rand.Reader)
	ctx := t.Context()
	a := &relay.Client{URL: p.url, Identity: ka, Retries: -1}
	space, err := relay.NewSpace(p.url)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.CreateSpace(ctx, space); err != nil {
		t.Fatal(err)
	}
	if _, err := a.UpdateMembers(ctx, space, []ed25519.PublicKey{kb.Public().(ed25519.PublicKey)}, nil); err != nil {
		t.Fatal(err)
	}
	// Push without pause until the kill: the kill lands mid-push.
	var mu sync.Mutex
	acked := map[uint64]bool{}
	enough := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for c := uint64(1); ; c++ {
			sealed, err := relay.Seal(space, ka, c, []byte(fmt.Sprintf("payload %d", c)))
			if err != nil {
				t.Error(err)
				return
			}
			if _, err := a.Push(ctx, space, sealed); err != nil {
				return // the relay died
			}
			mu.Lock()
			acked[c] = true
			if len(acked) == 40 {
				close(enough)
			}
			mu.Unlock()
		}
	}()
	select {
	case <-enough:
	case <-time.After(commandTimeout):
		t.Fatal("pushes did not get through")
	}
	// Scrape once before the kill.
	resp, err := http.Get(p.metrics)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"ferry_relay_pushes_total{result=\"stored\"}", "ferry_relay_bundles_stored", "go_goroutines"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	p.kill()
	wg.Wait()

	p2 := startRelayDir(t, dir)
	b := &relay.Client{URL: p2.url, Identity: kb}
	v, err := relay.NewVerifier(ctx, space, relay.NewMemKV(), relay.VerifierOptions{Self: kb.Public().(ed25519.PublicKey)})
	if err != nil {
		t.Fatal(err)
	}
	var got []uint64
	rctx, cancel := context.WithTimeout(ctx, commandTimeout)
	defer cancel()
	if _, err := v.Receive(rctx, b, 0, func(m relay.Message) error {
		if string(m.Payload) != fmt.Sprintf("payload %d", m.Counter) {
			t.Errorf("counter %d carries %q", m.Counter, m.Payload)
		}
		got = append(got, m.Counter)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for i, c := range got {
		if c != uint64(i+1) {
			t.Fatalf("received counters %v: not 1..n in order", got)
		}
	}
	for c := range acked {
		if c > uint64(len(got)) {
			t.Errorf("acknowledged bundle %d lost (received %d)", c, len(got))
		}
	}
	t.Logf("%d acknowledged, %d received after kill -9 and restart", len(acked), len(got))
}

// `ferry serve --relay URL --metrics ADDR` counts its relay syncs and the
// records they moved on /metrics.
func TestE2EServeMetrics(t *testing.T) {
	p := startRelayDir(t, filepath.Join(t.TempDir(), "relay"))
	a := newStore(t, "a", "pass-a")
	a.must("space", "create", p.url, "--collections", "zqnotes")
	a.must("put", "zqnotes", "zq-1", `{"zq-title":"one"}`)
	cmd := exec.Command(e2eBin, "--dir", a.dir, "serve", "--relay", p.url, "--interval", "1h", "--metrics", "127.0.0.1:0", "--log-level", "debug")
	cmd.Env = a.env()
	errp, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
	})
	lines := make(chan string, 64)
	go func() {
		defer close(done)
		sc := bufio.NewScanner(errp)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default:
			}
		}
		cmd.Wait()
	}()
	var url string
	synced := false
	guard := time.After(commandTimeout) // a guard, not synchronisation
	for url == "" || !synced {
		select {
		case l := <-lines:
			if m := metricsLine.FindStringSubmatch(l); m != nil {
				url = m[1]
			}
			synced = synced || strings.Contains(l, "relay sync") && strings.Contains(l, "ok=true")
		case <-guard:
			t.Fatalf("ferry serve: metrics %q, synced %v", url, synced)
		}
	}
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`ferry_sync_sessions_total{result="up-to-date"} 1`, "ferry_sync_records_sent_total 1", "ferry_conflicts_total 0"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

// ferry relay's flags that exclude each other fail as a bad command line
// (exit 2, with the synopsis); a NATS cluster that is not there fails
// with one line, a network failure.
func TestE2ERelayFlagErrors(t *testing.T) {
	for _, c := range []struct {
		args     []string
		code     int
		contains string
	}{
		{[]string{"--dir", t.TempDir(), "--nats", "nats://127.0.0.1:1"}, exitUsage, "exclude each other"},
		{[]string{"--nats", "nats://127.0.0.1:1", "--nats-listen", "127.0.0.1:0"}, exitUsage, "--nats-listen"},
		{[]string{"--dir", t.TempDir(), "--nats-creds", "x.creds"}, exitUsage, "go with --nats"},
		{[]string{"--nats", "nats://127.0.0.1:1", "--nats-replicas", "0"}, exitUsage, "--nats-replicas"},
		{[]string{"--dir", t.TempDir(), "--log-level", "loud"}, exitUsage, "--log-level"},
		{[]string{"--nats", "nats://127.0.0.1:1"}, exitNetwork, "nats"},
	} {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			_, errOut, code := runFerry(t, baseEnv(t), append([]string{"relay", "--listen", "127.0.0.1:0"}, c.args...)...)
			if c.code == exitUsage {
				assertFailure(t, errOut, code, c.code, c.contains)
				return
			}
			assertOneLine(t, errOut, code, c.code, c.contains)
		})
	}
}
