package replica

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/ferrysync/ferry/relay"
)

// testRelay is an in-process relay on loopback that can be restarted on
// the same address, logging into a buffer the canary test reads.
type testRelay struct {
	t    *testing.T
	dir  string
	addr string
	opts relay.ServerOptions
	srv  *relay.Server
	run  *relay.Serving
	log  *lockedBuf
}

type lockedBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuf) Bytes() []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]byte(nil), l.b.Bytes()...)
}

func startRelay(t *testing.T, opts relay.ServerOptions) *testRelay {
	tr := &testRelay{t: t, dir: t.TempDir(), addr: "127.0.0.1:0", opts: opts, log: &lockedBuf{}}
	tr.opts.Logger = slog.New(slog.NewTextHandler(tr.log, nil))
	tr.opts.NoSync = true
	tr.start()
	t.Cleanup(tr.stop)
	return tr
}

func (tr *testRelay) start() {
	srv, err := relay.NewServer(tr.dir, tr.opts)
	if err != nil {
		tr.t.Fatal(err)
	}
	run, err := srv.Start(context.Background(), tr.addr, nil)
	if err != nil {
		tr.t.Fatal(err)
	}
	tr.srv, tr.run = srv, run
	u, _ := url.Parse(run.URL())
	tr.addr = u.Host // restarts listen on the same address
}

func (tr *testRelay) stop() {
	if tr.run != nil {
		tr.run.Close()
		tr.srv.Close()
		tr.run, tr.srv = nil, nil
	}
}

func (tr *testRelay) restart(opts *relay.ServerOptions) {
	tr.stop()
	if opts != nil {
		opts.Logger, opts.NoSync = tr.opts.Logger, true
		tr.opts = *opts
	}
	tr.start()
}

func (tr *testRelay) url() string { return tr.run.URL() }

// memRelayURL names the env's in-memory relay (any URL reaches it).
const memRelayURL = "https://relay.invalid"

// joinAll makes b, c, ... members of a's new space for coll.
func joinAll(t *testing.T, url, coll string, a *Replica, others ...*Replica) string {
	t.Helper()
	ctx := context.Background()
	space, err := a.CreateSpace(ctx, url, []string{coll})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range others {
		code, err := o.JoinCode()
		if err != nil {
			t.Fatal(err)
		}
		inv, err := a.Invite(ctx, space.ID, code)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := o.JoinSpace(ctx, inv, []string{coll}); err != nil {
			t.Fatal(err)
		}
	}
	return space.ID
}

func relaySync(t *testing.T, r *Replica, space string) RelayStats {
	t.Helper()
	st, err := r.SyncRelay(context.Background(), space)
	if err != nil {
		t.Fatalf("%s: %v", r.Name(), err)
	}
	return st
}

// TestRelayThreeReplicasNeverOnlineTogether: three devices that only ever
// talk to the relay, one at a time, converge, including a conflict decided
// by the timestamp policy, a relay restart, and a device that joins late.
// Afterwards nothing distinctive appears in the relay's directory or log.
func TestRelayThreeReplicasNeverOnlineTogether(t *testing.T) {
	e := newEnv(t)
	tr := startRelay(t, relay.ServerOptions{})
	// This test drives the real relay server over HTTP, end to end.
	httpRelay := func(o *Options) { o.Relay = nil }
	a, b, c := e.replica("zq-laptop-secretname", httpRelay), e.replica("b", httpRelay), e.replica("c", httpRelay)
	coll := "zq-journal"
	space := joinAll(t, tr.url(), coll, a, b)

	for i := range 20 {
		mustPut(t, a, coll, fmt.Sprintf("zq-entry-%02d", i), map[string]any{"zq-mood": fmt.Sprintf("zq-value-%02d", i)})
	}
	if st := relaySync(t, a, space); st.RecordsPushed != 20 {
		t.Fatalf("a pushed %d records", st.RecordsPushed)
	}
	tr.restart(nil)
	if st := relaySync(t, b, space); st.RecordsApplied != 20 {
		t.Fatalf("b applied %d records", st.RecordsApplied)
	}
	// Both edit one entry offline; b's edit is later.
	mustPut(t, a, coll, "zq-entry-03", map[string]any{"zq-mood": "from a"})
	e.clock.Advance(time.Second)
	mustPut(t, b, coll, "zq-entry-03", map[string]any{"zq-mood": "from b, later"})
	relaySync(t, b, space)
	relaySync(t, a, space)
	relaySync(t, b, space)

	// c joins late: a invites it, and its next push carries every record.
	code, _ := c.JoinCode()
	inv, err := a.Invite(context.Background(), space, code)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.JoinSpace(context.Background(), inv, []string{coll}); err != nil {
		t.Fatal(err)
	}
	relaySync(t, a, space)
	relaySync(t, c, space)
	for range 2 {
		for _, r := range []*Replica{a, b, c} {
			relaySync(t, r, space)
		}
	}
	da := dump(t, a, coll)
	if len(da) != 20 || da["zq-entry-03"]["zq-mood"] != "from b, later" {
		t.Fatalf("a: %d records, entry 3 = %v", len(da), da["zq-entry-03"])
	}
	for _, r := range []*Replica{b, c} {
		if !reflect.DeepEqual(dump(t, r, coll), da) {
			t.Fatalf("%s diverged", r.Name())
		}
	}
	// Quiescent: another round pushes nothing.
	for _, r := range []*Replica{a, b, c} {
		if st := relaySync(t, r, space); st.RecordsPushed != 0 {
			t.Fatalf("%s pushed %d records in a quiescent round", r.Name(), st.RecordsPushed)
		}
	}

	// Canary: the relay's files and log hold none of it.
	tr.stop()
	secrets := []string{coll, "zq-entry-", "zq-mood", "zq-value-", "from a", "from b, later", "zq-laptop-secretname", "pw-zq-laptop"}
	found := func(b []byte) string {
		for _, s := range secrets {
			if bytes.Contains(b, []byte(s)) {
				return s
			}
		}
		return ""
	}
	if s := found(tr.log.Bytes()); s != "" {
		t.Fatalf("the relay logged %q", s)
	}
	if len(tr.log.Bytes()) == 0 {
		t.Fatal("the relay logged nothing: the scan of its log proves nothing")
	}
	files := 0
	filepath.WalkDir(tr.dir, func(p string, de os.DirEntry, err error) error {
		if err != nil || de.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		files++
		if s := found(b); s != "" {
			t.Fatalf("%s holds %q", p, s)
		}
		return nil
	})
	if files == 0 {
		t.Fatal("the relay directory is empty")
	}
}

// TestRelayQuotaRetries: a push refused over quota loses nothing; once
// the relay has room, the next sync delivers every record.
func TestRelayQuotaRetries(t *testing.T) {
	e := newEnv(t)
	// The relay holds one bundle at most until full is cleared.
	full, pushes := true, 0
	e.relay.Fail = func(op string) error {
		if op != "push" || !full {
			return nil
		}
		if pushes++; pushes > 1 {
			return fmt.Errorf("%w: space holds its maximum of 1 bundle", relay.ErrQuota)
		}
		return nil
	}
	a, b := e.replica("a"), e.replica("b", func(o *Options) { o.Batch = 5 })
	a.opts.Batch = 5
	space := joinAll(t, memRelayURL, "notes", a, b)
	for i := range 20 {
		mustPut(t, a, "notes", fmt.Sprintf("n%02d", i), map[string]any{"i": int64(i)})
	}
	_, err := a.SyncRelay(context.Background(), space)
	if !errors.Is(err, relay.ErrQuota) {
		t.Fatalf("push over quota: %v", err)
	}
	relaySync(t, b, space) // b takes what is there and acknowledges
	full = false
	relaySync(t, a, space)
	relaySync(t, b, space)
	if n := len(dump(t, b, "notes")); n != 20 {
		t.Fatalf("b holds %d of 20 records after the quota cleared", n)
	}
}
