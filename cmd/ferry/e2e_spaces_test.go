package main

import (
	"bufio"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// relayProc is a `ferry relay` process that can be stopped and started
// again on the same address and directory (with another clock offset).
type relayProc struct {
	t    *testing.T
	dir  string
	addr string
	url  string
	cmd  *exec.Cmd
}

func startRelayProc(t *testing.T) *relayProc {
	t.Helper()
	p := &relayProc{t: t, dir: filepath.Join(t.TempDir(), "relay"), addr: "127.0.0.1:0"}
	p.start()
	t.Cleanup(p.stop)
	return p
}

func (p *relayProc) start(extraEnv ...string) {
	p.t.Helper()
	cmd := exec.Command(e2eBin, "relay", "--listen", p.addr, "--dir", p.dir)
	cmd.Env = baseEnv(p.t, extraEnv...)
	pipe, err := cmd.StdoutPipe()
	if err != nil {
		p.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		p.t.Fatal(err)
	}
	p.cmd = cmd
	first := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pipe)
		if sc.Scan() {
			first <- sc.Text()
		} else {
			first <- ""
		}
		for sc.Scan() {
		}
	}()
	var line string
	select {
	case line = <-first:
	case <-time.After(commandTimeout):
		p.t.Fatal("ferry relay printed nothing")
	}
	m := relayLine.FindStringSubmatch(line)
	if m == nil {
		p.t.Fatalf("ferry relay: first line %q", line)
	}
	p.url = m[1]
	u, _ := url.Parse(p.url)
	p.addr = u.Host
}

func (p *relayProc) stop() {
	if p.cmd == nil {
		return
	}
	_ = p.cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(commandTimeout):
		p.cmd.Process.Kill()
		<-done
	}
	p.cmd = nil
}

var spaceCreated = regexp.MustCompile(`created space (\S+) on`)

// spaceOf creates a space on url from a for colls and has each other
// store join it for its own collections.
func spaceOf(t *testing.T, url string, a *store, colls string, others map[*store]string) string {
	t.Helper()
	m := spaceCreated.FindStringSubmatch(a.must("space", "create", url, "--collections", colls))
	if m == nil {
		t.Fatal("space create printed no id")
	}
	for o, oc := range others {
		code := strings.TrimSpace(o.must("space", "code"))
		inv := filepath.Join(t.TempDir(), o.name+".age")
		a.must("space", "invite", m[1], code, "--out", inv)
		o.must("space", "join", inv, "--collections", oc)
	}
	return m[1]
}

type spaceStatusJSON struct {
	Epoch   uint64 `json:"epoch"`
	Removed string `json:"removed"`
	Bundles int64  `json:"bundles"`
	Members []struct {
		Fingerprint string    `json:"fingerprint"`
		Self        bool      `json:"self"`
		LastAck     time.Time `json:"last_ack"`
	} `json:"members"`
	Changes []struct {
		Member string `json:"member"`
		Change string `json:"change"`
	} `json:"changes"`
}

func (s *store) spaceStatus(space string) spaceStatusJSON {
	s.t.Helper()
	var st spaceStatusJSON
	mustJSON(s.t, s.must("space", "status", space, "--json"), &st)
	return st
}

// TestE2ESpaceLateGrant is the example: a collection granted to
// a space after earlier syncs brings its older records at the next push,
// and the other device sees them; a revocation stops the collection at
// the next push.
func TestE2ESpaceLateGrant(t *testing.T) {
	rp := startRelayProc(t)
	a := newStore(t, "a", "pass-a")
	b := newStore(t, "b", "pass-b")
	a.must("put", "tasks", "t1", `{"title":"older task"}`)
	space := spaceOf(t, rp.url, a, "notes", map[*store]string{b: "notes"})
	a.must("put", "notes", "n1", `{"title":"a note"}`)
	a.must("sync", rp.url)
	out := a.must("consent", "grant", "tasks", "--to", "space:"+space, "--purpose", "device-sync")
	grant := strings.TrimSpace(strings.TrimPrefix(out, "granted "))
	if out := a.must("sync", rp.url); !strings.Contains(out, "pushed 1 records") {
		t.Fatalf("sync after the late grant: %q", out)
	}
	b.must("sync", rp.url)
	if got := b.get("tasks", "t1")["title"]; got != "older task" {
		t.Fatalf("b has %v", got)
	}
	a.must("consent", "revoke", grant)
	a.must("put", "tasks", "t2", `{"title":"after the revoke"}`)
	if out := a.must("sync", rp.url); !strings.Contains(out, "pushed 0 records") {
		t.Fatalf("sync after the revoke: %q", out)
	}
	b.must("sync", rp.url)
	_, errOut, code := b.ferry("get", "tasks", "t2")
	assertFailure(t, errOut, code, exitNotFound, "t2")
}

// TestE2ESpaceRemoveAndRevoke: a space with another person's device;
// removing it rotates the key, the removed device learns it with a clear
// refusal, the others go on; the consent ledger and `ferry space status`
// show every change; `ferry untrust space:ID` and `ferry consent revoke
// space:ID` revoke a space as they revoke a peer; `ferry status` lists
// the spaces.
func TestE2ESpaceRemoveAndRevoke(t *testing.T) {
	rp := startRelayProc(t)
	a := newStore(t, "a", "pass-a")
	b := newStore(t, "b", "pass-b")
	friend := newStore(t, "friend", "pass-f")
	space := spaceOf(t, rp.url, a, "notes,shared", map[*store]string{b: "notes", friend: "shared"})
	a.must("put", "shared", "s1", `{"title":"for my friend too"}`)
	a.must("sync", rp.url)
	friend.must("sync", rp.url)
	if got := friend.get("shared", "s1")["title"]; got != "for my friend too" {
		t.Fatalf("friend has %v", got)
	}
	st := a.spaceStatus(space)
	if len(st.Members) != 3 || st.Epoch != 0 {
		t.Fatalf("space status: %+v", st)
	}

	fid := friend.id()
	out := a.must("space", "remove", space, fid)
	if !strings.Contains(out, "key rotated to epoch 1") {
		t.Fatalf("remove: %q", out)
	}
	a.must("put", "shared", "s2", `{"title":"written after the removal"}`)
	a.must("sync", rp.url)
	b.must("sync", rp.url)
	if got := b.get("shared", "s2")["title"]; got != "written after the removal" {
		t.Fatalf("b has %v", got)
	}
	_, errOut, code := friend.ferry("sync", rp.url)
	assertFailure(t, errOut, code, exitForbidden, "removed from the space")
	_, errOut, code = friend.ferry("get", "shared", "s2")
	assertFailure(t, errOut, code, exitNotFound, "s2")
	if got := friend.get("shared", "s1")["title"]; got != "for my friend too" {
		t.Fatalf("friend lost what it held: %v", got)
	}
	if out := friend.must("status"); !strings.Contains(out, "this device was removed from it") {
		t.Fatalf("friend's status: %q", out)
	}

	st = a.spaceStatus(space)
	if len(st.Members) != 2 || st.Epoch != 1 {
		t.Fatalf("after the removal: %+v", st)
	}
	var changes []string
	for _, c := range st.Changes {
		changes = append(changes, c.Change)
	}
	if strings.Join(changes, ",") != "created,added,added,removed" {
		t.Fatalf("membership changes %v", changes)
	}
	if log := a.must("consent", "log"); !strings.Contains(log, "space:"+space+" removed "+fid) {
		t.Fatalf("consent log: %q", log)
	}
	if out := a.must("status"); !strings.Contains(out, "space "+space+" on "+rp.url) {
		t.Fatalf("status does not show the space: %q", out)
	}

	// One way to revoke, for peers and spaces alike.
	if out := b.must("untrust", "space:"+space); !strings.Contains(out, "revoked 1 grant(s)") {
		t.Fatalf("untrust space: %q", out)
	}
	_, errOut, code = b.ferry("sync", rp.url)
	assertFailure(t, errOut, code, exitForbidden, "no live device-sync grant")
	if out := a.must("consent", "revoke", "space:"+space); !strings.Contains(out, "revoked 2 grant(s)") {
		t.Fatalf("consent revoke space: %q", out)
	}
	_, errOut, code = a.ferry("untrust", "space:"+space)
	assertFailure(t, errOut, code, exitNotFound, "holds no grant")
	_, errOut, code = a.ferry("untrust", "space:nope")
	assertFailure(t, errOut, code, exitUsage, "space id")
}

// TestE2ESpaceExpiry: a device that joined and never came back holds every
// bundle at the relay; with the space's policy at 30 days, once the relay's
// clock says it has been silent longer, the next sync of a member drops it
// and the relay compacts again.
func TestE2ESpaceExpiry(t *testing.T) {
	rp := startRelayProc(t)
	a := newStore(t, "a", "pass-a")
	b := newStore(t, "b", "pass-b")
	dead := newStore(t, "dead", "pass-d")
	space := spaceOf(t, rp.url, a, "notes", map[*store]string{b: "notes", dead: "notes"})
	if out := a.must("space", "policy", space, "--expire-after", "30d"); !strings.Contains(out, "30d") {
		t.Fatalf("policy: %q", out)
	}
	_, errOut, code := a.ferry("space", "policy", space, "--expire-after", "soon")
	assertFailure(t, errOut, code, exitUsage, "expire-after")
	for i := range 3 {
		a.must("put", "notes", "n"+string(rune('0'+i)), `{"i":1}`)
		a.must("sync", rp.url)
		b.must("sync", rp.url)
	}
	if st := a.spaceStatus(space); st.Bundles != 3 {
		t.Fatalf("with a silent member the relay holds %d bundles, want 3", st.Bundles)
	}
	// 31 days later on the relay's clock.
	rp.stop()
	rp.start("FERRY_TEST_CLOCK_OFFSET=744h")
	b.must("sync", rp.url)
	out := a.must("sync", rp.url)
	if !strings.Contains(out, "dropped member") {
		t.Fatalf("a's sync: %q", out)
	}
	st := a.spaceStatus(space)
	if st.Bundles != 0 || len(st.Members) != 2 || st.Epoch != 1 {
		t.Fatalf("after the drop: %+v", st)
	}
	if log := a.must("consent", "log"); !strings.Contains(log, "expired "+dead.id()) {
		t.Fatalf("consent log: %q", log)
	}
	_, errOut, code = dead.ferry("sync", rp.url)
	assertFailure(t, errOut, code, exitForbidden, "removed from the space")
	var js struct {
		Dropped []string `json:"dropped"`
	}
	mustJSON(t, a.must("sync", rp.url, "--json"), &js)
	if len(js.Dropped) != 0 {
		t.Fatalf("dropped again: %v", js.Dropped)
	}
}

// copyStore copies a store directory as `cp -a` would (regular files and
// directories only: a store holds nothing else).
func copyStore(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		to := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(to, 0o700)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(to, b, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestE2ESpaceHealsRestoredStore: `cp -a B B.snap; ...; rm -rf B; cp -a
// B.snap B` through a relay: the restored device says so at its next
// sync, the other member sends everything again at its next, and the
// restored device gets back every record, its own included, with no user
// action.
func TestE2ESpaceHealsRestoredStore(t *testing.T) {
	rp := startRelayProc(t)
	a := newStore(t, "a", "pass-a")
	b := newStore(t, "b", "pass-b")
	spaceOf(t, rp.url, a, "notes", map[*store]string{b: "notes"})
	a.must("put", "notes", "a1", `{"t":"first"}`)
	a.must("sync", rp.url)
	b.must("sync", rp.url)
	snap := filepath.Join(t.TempDir(), "b.snap")
	copyStore(t, b.dir, snap)
	a.must("put", "notes", "a2", `{"t":"second"}`)
	b.must("put", "notes", "b1", `{"t":"written by b, then lost by b"}`)
	a.must("sync", rp.url)
	b.must("sync", rp.url)
	a.must("sync", rp.url)
	b.must("sync", rp.url) // everything acknowledged: the relay compacts it
	if err := os.RemoveAll(b.dir); err != nil {
		t.Fatal(err)
	}
	copyStore(t, snap, b.dir)
	_, errOut, code := b.ferry("get", "notes", "b1")
	assertFailure(t, errOut, code, exitNotFound, "b1")
	if out := b.must("sync", rp.url); !strings.Contains(out, "asked the space's members to send everything again") {
		t.Fatalf("restored b's sync: %q", out)
	}
	if out := b.must("status"); !strings.Contains(out, "went back to an older copy") {
		t.Fatalf("restored b's status: %q", out)
	}
	a.must("sync", rp.url)
	b.must("sync", rp.url)
	for id, want := range map[string]string{"a1": "first", "a2": "second", "b1": "written by b, then lost by b"} {
		if got := b.get("notes", id)["t"]; got != want {
			t.Fatalf("b's %s: %v", id, got)
		}
	}
}
