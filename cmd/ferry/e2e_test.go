package main

// End-to-end tests: build the ferry binary once, then drive it as a user
// would, in temporary directories, with a controlled environment
// (FERRY_KDF=fast, FERRY_PASSPHRASE, --dir) and stdin that is not a
// terminal. Sync runs over loopback TLS between `ferry serve` and
// `ferry sync` processes.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"filippo.io/age"
)

// e2eBin is the ferry binary built by TestMain.
var e2eBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "ferry-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	e2eBin = filepath.Join(dir, "ferry")
	build := exec.Command("go", "build", "-o", e2eBin, "./")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintf(os.Stderr, "building ferry: %v\n", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// commandTimeout bounds every ferry process, so a hang fails the test
// instead of the whole run.
const commandTimeout = 60 * time.Second

// baseEnv is the controlled environment of every ferry process: nothing
// is inherited (no stray FERRY_* of the developer's shell).
func baseEnv(t *testing.T, extra ...string) []string {
	home := t.TempDir()
	env := []string{"FERRY_KDF=fast", "HOME=" + home, "TMPDIR=" + os.TempDir(), "PATH=" + os.Getenv("PATH")}
	return append(env, extra...)
}

// runFerry runs the binary with env and args, stdin not a terminal.
func runFerry(t *testing.T, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, e2eBin, args...)
	cmd.Env = env
	cmd.Dir = t.TempDir()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("ferry %s: timed out after %v", strings.Join(args, " "), commandTimeout)
	}
	if err != nil {
		if _, ok := err.(*exec.ExitError); !ok {
			t.Fatalf("ferry %s: %v", strings.Join(args, " "), err)
		}
	}
	return out.String(), errb.String(), cmd.ProcessState.ExitCode()
}

// assertFailure checks an error exit: the code, and stderr being one line
// "ferry[ CMD]: ..." (plus, for usage errors, the command's "usage:" line),
// with no Go panic or stack trace.
func assertFailure(t *testing.T, stderr string, code, want int, contains string) {
	t.Helper()
	if code != want {
		t.Fatalf("exit %d, want %d; stderr:\n%s", code, want, stderr)
	}
	if strings.Contains(stderr, "goroutine") || strings.Contains(stderr, "panic") || strings.Contains(stderr, "internal error") {
		t.Fatalf("stderr shows a crash:\n%s", stderr)
	}
	lines := strings.Split(strings.TrimRight(stderr, "\n"), "\n")
	if !regexp.MustCompile(`^ferry( [a-z-]+)?: \S`).MatchString(lines[0]) {
		t.Fatalf("stderr does not start with a \"ferry ...: \" message:\n%s", stderr)
	}
	extra := lines[1:]
	if want == exitUsage && len(extra) == 1 && strings.HasPrefix(extra[0], "usage: ferry ") {
		extra = nil // usage errors add the command's synopsis
	}
	if len(extra) != 0 {
		t.Fatalf("stderr has %d lines, want one message:\n%s", len(lines), stderr)
	}
	if !strings.Contains(lines[0], contains) {
		t.Fatalf("stderr %q does not mention %q", lines[0], contains)
	}
}

// store is one replica's directory and passphrase.
type store struct {
	t    *testing.T
	name string
	dir  string
	pass string
	// extra is environment added to every command on the store.
	extra []string
}

// newStore runs `ferry init` in a fresh directory.
func newStore(t *testing.T, name, pass string, initArgs ...string) *store {
	t.Helper()
	s := &store{t: t, name: name, dir: filepath.Join(t.TempDir(), name), pass: pass}
	out := s.must(append([]string{"init", "--name", name}, initArgs...)...)
	if !strings.Contains(out, "created "+s.dir) || !strings.Contains(out, "replica id ") {
		t.Fatalf("init output: %q", out)
	}
	return s
}

func (s *store) env(extra ...string) []string {
	return baseEnv(s.t, append(append([]string{"FERRY_PASSPHRASE=" + s.pass}, s.extra...), extra...)...)
}

// ferry runs a command on the store.
func (s *store) ferry(args ...string) (stdout, stderr string, code int) {
	s.t.Helper()
	return runFerry(s.t, s.env(), append([]string{"--dir", s.dir}, args...)...)
}

// ferryEnv runs a command on the store with extra environment.
func (s *store) ferryEnv(extra []string, args ...string) (stdout, stderr string, code int) {
	s.t.Helper()
	return runFerry(s.t, s.env(extra...), append([]string{"--dir", s.dir}, args...)...)
}

// must runs a command that has to succeed and returns its stdout.
func (s *store) must(args ...string) string {
	s.t.Helper()
	out, errOut, code := s.ferry(args...)
	if code != 0 {
		s.t.Fatalf("%s: ferry %s: exit %d\nstdout: %s\nstderr: %s", s.name, strings.Join(args, " "), code, out, errOut)
	}
	if errOut != "" {
		s.t.Fatalf("%s: ferry %s: unexpected stderr: %s", s.name, strings.Join(args, " "), errOut)
	}
	return out
}

func (s *store) id() string { return strings.TrimSpace(s.must("id")) }

// get returns a record, failing the test if it is missing.
func (s *store) get(coll, id string) map[string]any {
	s.t.Helper()
	var m map[string]any
	mustJSON(s.t, s.must("get", coll, id), &m)
	return m
}

func (s *store) conflicts() []conflictJSON {
	s.t.Helper()
	var cs []conflictJSON
	mustJSON(s.t, s.must("conflicts", "--json"), &cs)
	return cs
}

func (s *store) writePolicy(policy string) {
	s.t.Helper()
	if err := os.WriteFile(filepath.Join(s.dir, "ferry-policy.json"), []byte(policy), 0o600); err != nil {
		s.t.Fatal(err)
	}
}

func mustJSON(t *testing.T, s string, v any) {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("not JSON (%v):\n%s", err, s)
	}
	if dec.More() {
		t.Fatalf("trailing data after the JSON:\n%s", s)
	}
}

// pair makes a and b trust each other for the notes collection.
func pair(t *testing.T, a, b *store) {
	t.Helper()
	aid, bid := a.id(), b.id()
	if out := a.must("trust", bid, "--collections", "notes"); !strings.Contains(out, "notes to "+bid+" for device-sync") {
		t.Fatalf("trust output: %q", out)
	}
	b.must("trust", aid, "--collections", "notes")
}

// server is a running `ferry serve`.
type server struct {
	t    *testing.T
	cmd  *exec.Cmd
	addr string
	id   string

	once    sync.Once
	drained chan struct{}
	mu      sync.Mutex
	rest    bytes.Buffer // stdout after the first line
	stderr  bytes.Buffer
	code    int
}

var servingLine = regexp.MustCompile(`^serving (.+) on (\S+) \(replica (\S+)\)$`)

// serve starts `ferry serve --listen 127.0.0.1:0` on s and waits for its
// "serving DIR on ADDR (replica ID)" line. The process is stopped at the
// end of the test if stop was not called.
func (s *store) serve() *server {
	s.t.Helper()
	cmd := exec.Command(e2eBin, "--dir", s.dir, "serve", "--listen", "127.0.0.1:0")
	cmd.Env = s.env()
	srv := &server{t: s.t, cmd: cmd, drained: make(chan struct{})}
	cmd.Stderr = &lockedWriter{mu: &srv.mu, w: &srv.stderr}
	pipe, err := cmd.StdoutPipe()
	if err != nil {
		s.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() { srv.stop() })
	sc := bufio.NewScanner(pipe)
	first := make(chan string, 1)
	go func() {
		defer close(srv.drained)
		if !sc.Scan() {
			first <- ""
			return
		}
		first <- sc.Text()
		for sc.Scan() {
			srv.mu.Lock()
			srv.rest.WriteString(sc.Text() + "\n")
			srv.mu.Unlock()
		}
	}()
	var line string
	select {
	case line = <-first:
	case <-time.After(commandTimeout):
		s.t.Fatal("ferry serve printed nothing")
	}
	m := servingLine.FindStringSubmatch(line)
	if m == nil {
		srv.stop()
		s.t.Fatalf("ferry serve: first line %q (exit %d), stderr:\n%s", line, srv.code, srv.stderr.String())
	}
	if m[1] != s.dir {
		s.t.Fatalf("ferry serve serves %q, want %q", m[1], s.dir)
	}
	srv.addr, srv.id = m[2], m[3]
	return srv
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// stop interrupts the server, waits for it and returns its later stdout.
func (srv *server) stop() string {
	srv.once.Do(func() {
		_ = srv.cmd.Process.Signal(os.Interrupt)
		select {
		case <-srv.drained:
		case <-time.After(commandTimeout):
			_ = srv.cmd.Process.Kill()
			<-srv.drained
		}
		_ = srv.cmd.Wait()
		srv.code = srv.cmd.ProcessState.ExitCode()
	})
	srv.mu.Lock()
	defer srv.mu.Unlock()
	return srv.rest.String()
}

// syncTo runs one `ferry sync` from a to a freshly served b, and stops the
// server (the store is locked while it serves). It returns sync's stdout.
func syncTo(t *testing.T, a, b *store, args ...string) string {
	t.Helper()
	srv := b.serve()
	out := a.must(append([]string{"sync", srv.addr}, args...)...)
	log := srv.stop()
	if srv.code != 0 {
		t.Fatalf("ferry serve exited %d after SIGINT; stderr:\n%s", srv.code, srv.stderr.String())
	}
	if !strings.Contains(log, "session with ") {
		t.Fatalf("ferry serve logged no session:\n%s", log)
	}
	return out
}

// --- tests -------------------------------------------------------------

func TestE2EHelp(t *testing.T) {
	env := baseEnv(t)
	out, _, code := runFerry(t, env, "help")
	if code != 0 {
		t.Fatalf("ferry help: exit %d", code)
	}
	var names []string
	inCommands := false
	for _, line := range strings.Split(out, "\n") {
		switch {
		case line == "commands:":
			inCommands = true
		case inCommands && strings.HasPrefix(line, "  "):
			names = append(names, strings.Fields(line)[0])
		case inCommands:
			inCommands = false
		}
	}
	if len(names) < 10 {
		t.Fatalf("ferry help lists %d commands:\n%s", len(names), out)
	}
	for _, want := range []string{"init", "put", "get", "sync", "serve", "export", "import", "passwd", "conflicts", "resolve"} {
		if !strings.Contains(" "+strings.Join(names, " ")+" ", " "+want+" ") {
			t.Errorf("ferry help does not list %q", want)
		}
	}
	for _, name := range names {
		for _, args := range [][]string{{name, "--help"}, {"help", name}} {
			out, errOut, code := runFerry(t, env, args...)
			if code != 0 || errOut != "" {
				t.Errorf("ferry %s: exit %d, stderr %q", strings.Join(args, " "), code, errOut)
			}
			if !strings.Contains(out, "usage: ferry "+name) || !strings.Contains(out, "example:") {
				t.Errorf("ferry %s lacks usage: or example:\n%s", strings.Join(args, " "), out)
			}
		}
	}
	// No command at all: the overview on stderr, as a usage error.
	out, errOut, code := runFerry(t, env)
	if code != exitUsage || out != "" || !strings.Contains(errOut, "commands:") {
		t.Errorf("bare ferry: exit %d, stdout %q, stderr:\n%s", code, out, errOut)
	}
}

func TestE2ERecordsAndJSON(t *testing.T) {
	a := newStore(t, "a", "pass-a")
	a.must("put", "notes", "n1", `{"title":"First","n":1,"tags":["x","y"],"nested":{"k":true}}`)
	a.must("put", "notes", "n2", `{"title":"Second"}`)
	a.must("put", "notes", "n1", `{"n":2}`) // merges fields

	got := a.get("notes", "n1")
	want := map[string]any{"title": "First", "n": json.Number("2"), "tags": []any{"x", "y"}, "nested": map[string]any{"k": true}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("get notes n1 = %v, want %v", got, want)
	}

	// list --json: {"items":[{"id","created","updated"}],"next"}.
	type page struct {
		Items []struct {
			ID      string    `json:"id"`
			Created time.Time `json:"created"`
			Updated time.Time `json:"updated"`
		} `json:"items"`
		Next string `json:"next"`
	}
	var p page
	mustJSON(t, a.must("list", "notes", "--json"), &p)
	if len(p.Items) != 2 || p.Items[0].ID != "n1" || p.Items[1].ID != "n2" || p.Next != "" {
		t.Fatalf("list --json: %+v", p)
	}
	if p.Items[0].Created.IsZero() || p.Items[0].Updated.Before(p.Items[0].Created) {
		t.Fatalf("list --json times: %+v", p.Items[0])
	}
	var p1, p2 page
	mustJSON(t, a.must("list", "notes", "--json", "--limit", "1"), &p1)
	if len(p1.Items) != 1 || p1.Next == "" {
		t.Fatalf("list --limit 1: %+v", p1)
	}
	mustJSON(t, a.must("list", "notes", "--json", "--limit", "1", "--after", p1.Next), &p2)
	if len(p2.Items) != 1 || p2.Items[0].ID == p1.Items[0].ID {
		t.Fatalf("second page %+v after %+v", p2, p1)
	}
	if out := a.must("list", "notes"); len(strings.Split(strings.TrimSpace(out), "\n")) != 2 || !strings.HasPrefix(out, "n1\t") {
		t.Fatalf("list: %q", out)
	}
	var empty page
	mustJSON(t, a.must("list", "nothing", "--json"), &empty)
	if empty.Items == nil || len(empty.Items) != 0 {
		t.Fatalf("list of an empty collection: %+v (want \"items\": [])", empty)
	}

	// del: the record is gone.
	a.must("del", "notes", "n2")
	_, errOut, code := a.ferry("get", "notes", "n2")
	assertFailure(t, errOut, code, exitNotFound, "not found")

	// status --json: {"replica","overall":Status,"peers":[Status],"records":{coll:count}}.
	var st struct {
		Replica string `json:"replica"`
		Overall struct {
			State         string `json:"state"`
			OpenConflicts *int   `json:"open_conflicts"`
		} `json:"overall"`
		Peers   []map[string]any `json:"peers"`
		Records map[string]int   `json:"records"`
	}
	mustJSON(t, a.must("status", "--json"), &st)
	if st.Replica != a.id() || st.Overall.State == "" || st.Overall.OpenConflicts == nil || *st.Overall.OpenConflicts != 0 ||
		st.Peers == nil || len(st.Peers) != 0 || st.Records["notes"] != 1 {
		t.Fatalf("status --json: %+v", st)
	}

	// conflicts --json and consent list --json: arrays, empty here.
	if cs := a.conflicts(); cs == nil || len(cs) != 0 {
		t.Fatalf("conflicts --json: %v", cs)
	}
	var grants []map[string]any
	mustJSON(t, a.must("consent", "list", "--json"), &grants)
	if grants == nil || len(grants) != 0 {
		t.Fatalf("consent list --json: %v", grants)
	}

	// policy --json: {"fingerprint","set"}.
	var pol struct {
		Fingerprint string         `json:"fingerprint"`
		Set         map[string]any `json:"set"`
	}
	mustJSON(t, a.must("policy", "--json"), &pol)
	if len(pol.Fingerprint) != 64 || pol.Set["version"] != json.Number("1") {
		t.Fatalf("policy --json: %+v", pol)
	}

	// The passphrase also comes from --passphrase-file.
	pf := filepath.Join(t.TempDir(), "pass")
	if err := os.WriteFile(pf, []byte("pass-a\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := runFerry(t, baseEnv(t), "--dir", a.dir, "--passphrase-file", pf, "get", "notes", "n1")
	if code != 0 || !strings.Contains(out, `"First"`) {
		t.Fatalf("--passphrase-file: exit %d, %s%s", code, out, errOut)
	}
	// FERRY_DIR instead of --dir.
	out, errOut, code = runFerry(t, baseEnv(t, "FERRY_DIR="+a.dir, "FERRY_PASSPHRASE=pass-a"), "get", "notes", "n1")
	if code != 0 || !strings.Contains(out, `"First"`) {
		t.Fatalf("FERRY_DIR: exit %d, %s%s", code, out, errOut)
	}
}

func TestE2EErrors(t *testing.T) {
	a := newStore(t, "a", "pass-a")
	a.must("put", "notes", "n1", `{"title":"x"}`)
	missing := filepath.Join(t.TempDir(), "no-such-store")

	for _, tc := range []struct {
		name     string
		env      []string
		args     []string
		code     int
		contains string
	}{
		{"unknown command", a.env(), []string{"--dir", a.dir, "frobnicate"}, exitUsage, `unknown command "frobnicate"`},
		{"unknown global flag", a.env(), []string{"--bogus", "get"}, exitUsage, "bogus"},
		{"unknown flag", a.env(), []string{"--dir", a.dir, "get", "notes", "n1", "--bogus"}, exitUsage, "bogus"},
		{"missing args", a.env(), []string{"--dir", a.dir, "get", "notes"}, exitUsage, "argument"},
		{"too many args", a.env(), []string{"--dir", a.dir, "id", "extra"}, exitUsage, "argument"},
		{"bad JSON", a.env(), []string{"--dir", a.dir, "put", "notes", "n1", `{"title":`}, exitUsage, "bad JSON"},
		{"JSON not an object", a.env(), []string{"--dir", a.dir, "put", "notes", "n1", `[1,2]`}, exitUsage, "JSON object"},
		{"bad list order", a.env(), []string{"--dir", a.dir, "list", "notes", "--order", "size"}, exitUsage, "--order"},
		{"resolve without pick", a.env(), []string{"--dir", a.dir, "resolve", "abc"}, exitUsage, "--pick"},
		{"trust without collections", a.env(), []string{"--dir", a.dir, "trust", "x"}, exitUsage, "--collections"},
		{"bad recipient", a.env(), []string{"--dir", a.dir, "export", filepath.Join(t.TempDir(), "b.age"), "--recipient", "nope"}, exitUsage, "recipient"},
		{"no passphrase", baseEnv(t), []string{"--dir", a.dir, "get", "notes", "n1"}, exitUsage, "FERRY_PASSPHRASE"},
		{"no passphrase for init", baseEnv(t), []string{"--dir", filepath.Join(t.TempDir(), "new"), "init"}, exitUsage, "FERRY_PASSPHRASE"},
		{"wrong passphrase", baseEnv(t, "FERRY_PASSPHRASE=wrong"), []string{"--dir", a.dir, "get", "notes", "n1"}, exitWrongKey, "wrong passphrase"},
		{"missing record", a.env(), []string{"--dir", a.dir, "get", "notes", "nope"}, exitNotFound, "not found"},
		{"missing record del", a.env(), []string{"--dir", a.dir, "del", "notes", "nope"}, exitNotFound, "not found"},
		{"no store", a.env(), []string{"--dir", missing, "get", "notes", "n1"}, exitNotFound, "ferry init"},
		{"no store list", a.env(), []string{"--dir", missing, "list", "notes"}, exitNotFound, "ferry init"},
		{"no such conflict", a.env(), []string{"--dir", a.dir, "resolve", "deadbeef", "--pick", "0"}, exitNotFound, "conflict"},
		{"no such grant", a.env(), []string{"--dir", a.dir, "consent", "revoke", "0123456789abcdef"}, exitNotFound, "grant"},
		{"no such backup", a.env(), []string{"--dir", a.dir, "import", filepath.Join(t.TempDir(), "none.age")}, exitNotFound, "none.age"},
		{"init existing store", a.env(), []string{"--dir", a.dir, "init"}, exitForbidden, "exists"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, code := runFerry(t, tc.env, tc.args...)
			assertFailure(t, errOut, code, tc.code, tc.contains)
			if out != "" {
				t.Fatalf("stdout on failure: %q", out)
			}
		})
	}
	if _, err := os.Stat(missing); err == nil {
		t.Fatal("a command on a missing store directory created it")
	}
	// Nothing above changed the record.
	if got := a.get("notes", "n1"); got["title"] != "x" {
		t.Fatalf("record changed: %v", got)
	}
}

// TestE2ECommandOnEmptyDirCreatesNoStore: a command other than init, on an
// existing directory that holds no store, must say there is no store
// (exit 4) and leave the directory alone, as it does for a missing
// directory.
func TestE2ECommandOnEmptyDirCreatesNoStore(t *testing.T) {
	dir := t.TempDir() // exists, empty: e.g. mkdir'ed by the user, or "--dir ."
	_, errOut, code := runFerry(t, baseEnv(t, "FERRY_PASSPHRASE=typo"), "--dir", dir, "get", "notes", "n1")
	ents, _ := os.ReadDir(dir)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if code != exitNotFound || !strings.Contains(errOut, "ferry init") || len(names) != 0 {
		t.Fatalf("ferry --dir EMPTY-DIR get notes n1: exit %d, stderr %q, and the directory now holds %v; "+
			"want exit 4 \"no store in DIR (run 'ferry init')\" and no files (the command silently created a store)",
			code, strings.TrimSpace(errOut), names)
	}
}

// TestE2EInitPolicyRefusedLeavesStore: `init --policy` on an existing store
// is refused (exit 7) and must not replace the store's policy file.
func TestE2EInitPolicyRefusedLeavesStore(t *testing.T) {
	a := newStore(t, "a", "pass-a")
	const orig = `{"version":1,"default":{"policy":"timestamp"}}`
	a.writePolicy(orig)
	other := filepath.Join(t.TempDir(), "merge.json")
	if err := os.WriteFile(other, []byte(`{"version":1,"default":{"policy":"merge"}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	_, errOut, code := a.ferry("init", "--policy", other)
	assertFailure(t, errOut, code, exitForbidden, "exists")
	b, _ := os.ReadFile(filepath.Join(a.dir, "ferry-policy.json"))
	if string(b) != orig {
		t.Fatalf("refused init --policy replaced the store's policy file: now %s", b)
	}
}

func TestE2EInitPolicy(t *testing.T) {
	pf := filepath.Join(t.TempDir(), "policy.json")
	const pol = `{"version":1,"default":{"policy":"merge"}}`
	if err := os.WriteFile(pf, []byte(pol), 0o600); err != nil {
		t.Fatal(err)
	}
	a := newStore(t, "a", "pass-a", "--policy", pf)
	b, err := os.ReadFile(filepath.Join(a.dir, "ferry-policy.json"))
	if err != nil || string(b) != pol {
		t.Fatalf("init --policy: %q, %v", b, err)
	}
	if out := a.must("policy"); !strings.Contains(out, `"merge"`) {
		t.Fatalf("policy: %s", out)
	}
}

func TestE2ESyncAndPairing(t *testing.T) {
	a, b := newStore(t, "a", "pass-a"), newStore(t, "b", "pass-b")
	pair(t, a, b)
	var grants []struct {
		ID          string `json:"id"`
		Collection  string `json:"collection"`
		Purpose     string `json:"purpose"`
		Destination string `json:"destination"`
	}
	mustJSON(t, a.must("consent", "list", "--json"), &grants)
	if len(grants) != 1 || grants[0].Collection != "notes" || grants[0].Purpose != "device-sync" || grants[0].Destination != b.id() || grants[0].ID == "" {
		t.Fatalf("consent list --json: %+v", grants)
	}

	a.must("put", "notes", "shopping", `{"title":"Shopping","items":["milk"]}`)
	a.must("put", "diary", "today", `{"text":"private"}`) // never granted
	b.must("put", "notes", "ideas", `{"title":"Ideas"}`)

	out := syncTo(t, a, b)
	if !strings.HasPrefix(out, "synced with "+b.id()[:12]) {
		t.Fatalf("sync output: %q", out)
	}
	for _, s := range []*store{a, b} {
		if s.get("notes", "shopping")["title"] != "Shopping" || s.get("notes", "ideas")["title"] != "Ideas" {
			t.Fatalf("%s lacks a note", s.name)
		}
	}
	_, errOut, code := b.ferry("get", "diary", "today")
	assertFailure(t, errOut, code, exitNotFound, "not found")

	// A second session moves no record; --json gives the stats.
	var st map[string]any
	mustJSON(t, syncTo(t, a, b, "--json"), &st)
	if st["records_sent"] != json.Number("0") || st["records_received"] != json.Number("0") || st["peer"] != b.id() {
		t.Fatalf("quiescent sync --json: %v", st)
	}

	// status --json lists the peer.
	var status struct {
		Peers []struct {
			Peer     string    `json:"peer"`
			State    string    `json:"state"`
			LastSync time.Time `json:"last_sync"`
		} `json:"peers"`
		Records map[string]int `json:"records"`
	}
	mustJSON(t, a.must("status", "--json"), &status)
	if len(status.Peers) != 1 || status.Peers[0].Peer != b.id() || status.Peers[0].LastSync.IsZero() || status.Records["notes"] != 2 {
		t.Fatalf("status --json after sync: %+v", status)
	}

	// A deletion syncs.
	b.must("del", "notes", "ideas")
	syncTo(t, a, b)
	_, errOut, code = a.ferry("get", "notes", "ideas")
	assertFailure(t, errOut, code, exitNotFound, "not found")

	// While b serves, its store is locked for other commands.
	srv := b.serve()
	_, errOut, code = b.ferry("get", "notes", "shopping")
	assertFailure(t, errOut, code, exitForbidden, "locked")
	// ... and a second server on the same address cannot listen.
	_, errOut, code = a.ferry("serve", "--listen", srv.addr)
	assertFailure(t, errOut, code, exitNetwork, "listen")
	srv.stop()

	// untrust: a refuses b from now on.
	if out := a.must("untrust", b.id()); !strings.Contains(out, "revoked 1 grant") {
		t.Fatalf("untrust: %q", out)
	}
	srv = b.serve()
	_, errOut, code = a.ferry("sync", srv.addr)
	srv.stop()
	assertFailure(t, errOut, code, exitForbidden, "unknown peer")
	_, errOut, code = a.ferry("untrust", b.id())
	assertFailure(t, errOut, code, exitNotFound, "no grant")
}

func TestE2ESyncRefusedAndNetwork(t *testing.T) {
	a, b, c := newStore(t, "a", "pass-a"), newStore(t, "b", "pass-b"), newStore(t, "c", "pass-c")
	pair(t, a, b)
	bid := b.id()
	srv := b.serve()

	// c trusts nobody: it refuses b's identity.
	_, errOut, code := c.ferry("sync", srv.addr)
	assertFailure(t, errOut, code, exitForbidden, "unknown peer")
	// c trusts b, but b does not trust c: b refuses.
	c.must("trust", bid, "--collections", "notes")
	_, errOut, code = c.ferry("sync", srv.addr)
	assertFailure(t, errOut, code, exitForbidden, "refused")
	srv.stop()

	// Nothing listens: a network failure.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	l.Close()
	_, errOut, code = a.ferry("sync", dead)
	assertFailure(t, errOut, code, exitNetwork, "refused")

	// Different policy sets: the session is refused.
	a.writePolicy(`{"version":1,"default":{"policy":"merge"}}`)
	srv = b.serve()
	_, errOut, code = a.ferry("sync", srv.addr)
	srv.stop()
	assertFailure(t, errOut, code, exitForbidden, "policy")
	// The same set on both sides (even laid out differently): accepted.
	b.writePolicy(`{"default":{"policy":"merge"},  "version":1}`)
	syncTo(t, a, b)
}

// conflictPair returns two paired stores sharing policy, with the record
// notes/n1 synced to both, then edited concurrently: a writes title
// "from-a", then b writes "from-b" (later). It returns after the sync
// that meets the conflict.
func conflictPair(t *testing.T, policy string, initA, initB []string) (a, b *store, syncOut string) {
	t.Helper()
	a, b = newStore(t, "a", "pass-a", initA...), newStore(t, "b", "pass-b", initB...)
	if policy != "" {
		a.writePolicy(policy)
		b.writePolicy(policy)
	}
	pair(t, a, b)
	a.must("put", "notes", "n1", `{"title":"base","body":"same"}`)
	syncTo(t, a, b)
	a.must("put", "notes", "n1", `{"title":"from-a"}`)
	b.must("put", "notes", "n1", `{"title":"from-b"}`) // a later process: a later HLC
	syncOut = syncTo(t, a, b)
	if !strings.Contains(syncOut, "1 conflicts") {
		t.Fatalf("sync did not meet the conflict: %q", syncOut)
	}
	return a, b, syncOut
}

// sameTitle checks both stores agree and returns the title.
func sameTitle(t *testing.T, a, b *store) string {
	t.Helper()
	ra, rb := a.get("notes", "n1"), b.get("notes", "n1")
	if fmt.Sprint(ra) != fmt.Sprint(rb) {
		t.Fatalf("replicas differ: a %v, b %v", ra, rb)
	}
	if ra["body"] != "same" {
		t.Fatalf("untouched field changed: %v", ra)
	}
	title, _ := ra["title"].(string)
	return title
}

func TestE2EConflictTimestamp(t *testing.T) {
	// No policy file: the default set is timestamp everywhere.
	a, b, _ := conflictPair(t, "", nil, nil)
	if got := sameTitle(t, a, b); got != "from-b" {
		t.Fatalf("timestamp: title %q, want the later write %q", got, "from-b")
	}
	if len(a.conflicts()) != 0 || len(b.conflicts()) != 0 {
		t.Fatal("a timestamp conflict was queued for the user")
	}
}

func TestE2EConflictPriority(t *testing.T) {
	const pol = `{"version":1,"default":{"policy":"timestamp"},"collections":{"notes":{"policy":"priority"}}}`
	// a has the higher priority; b writes later: a still wins.
	a, b, _ := conflictPair(t, pol, []string{"--priority", "5"}, []string{"--priority", "1"})
	if got := sameTitle(t, a, b); got != "from-a" {
		t.Fatalf("priority: title %q, want the higher-priority replica's %q", got, "from-a")
	}
}

func TestE2EConflictMerge(t *testing.T) {
	const pol = `{"version":1,"default":{"policy":"timestamp"},"collections":{"notes":{"policy":"merge"}}}`
	a, b, _ := conflictPair(t, pol, nil, nil)
	if got := sameTitle(t, a, b); got != "from-a" && got != "from-b" {
		t.Fatalf("merge: title %q, want one of the candidates", got)
	}
	if len(a.conflicts()) != 0 || len(b.conflicts()) != 0 {
		t.Fatal("a merge conflict was queued for the user")
	}
}

func TestE2EConflictUser(t *testing.T) {
	const pol = `{"version":1,"default":{"policy":"timestamp"},
	  "collections":{"notes":{"policy":"timestamp","fields":{"/title":{"policy":"user","deadline":"24h"}}}}}`
	a, b, _ := conflictPair(t, pol, nil, nil)

	ca, cb := a.conflicts(), b.conflicts()
	if len(ca) != 1 || len(cb) != 1 {
		t.Fatalf("conflicts: a %d, b %d, want 1 each", len(ca), len(cb))
	}
	c := ca[0]
	if c.ID != cb[0].ID || c.ID == "" {
		t.Fatalf("conflict ids differ: %q vs %q", c.ID, cb[0].ID)
	}
	if c.Collection != "notes" || c.Record != "n1" || c.Path != "/title" || len(c.Candidates) != 2 ||
		c.Deadline.IsZero() || c.Fallback != "timestamp" || c.Provisional < 0 || c.Provisional > 1 {
		t.Fatalf("conflicts --json entry: %+v", c)
	}
	pick := -1
	vals := map[string]bool{}
	for i, cand := range c.Candidates {
		vals[string(cand.Value)] = true
		if cand.Index != i || cand.Replica == "" || cand.At.IsZero() {
			t.Fatalf("candidate %d: %+v", i, cand)
		}
		if string(cand.Value) == `"from-a"` {
			pick = i
		}
	}
	if !vals[`"from-a"`] || !vals[`"from-b"`] {
		t.Fatalf("candidates: %+v", c.Candidates)
	}
	// Provisionally the timestamp winner (b's later write), on both.
	if got := sameTitle(t, a, b); got != "from-b" || string(c.Candidates[c.Provisional].Value) != `"from-b"` {
		t.Fatalf("provisional title %q (candidate %d)", got, c.Provisional)
	}
	if !strings.Contains(b.must("conflicts"), c.ID) {
		t.Fatal("conflicts (text) does not show the id")
	}

	// The user picks a's title on b, by an id prefix; it syncs back.
	if out := b.must("resolve", c.ID[:8], "--pick", fmt.Sprint(pick)); !strings.Contains(out, "resolved "+c.ID) {
		t.Fatalf("resolve: %q", out)
	}
	if len(b.conflicts()) != 0 {
		t.Fatal("b still lists the conflict")
	}
	syncTo(t, a, b)
	if got := sameTitle(t, a, b); got != "from-a" {
		t.Fatalf("after resolve: title %q, want the pick %q", got, "from-a")
	}
	if len(a.conflicts()) != 0 || len(b.conflicts()) != 0 {
		t.Fatal("the conflict is still open after the resolution synced")
	}
	_, errOut, code := a.ferry("resolve", c.ID, "--pick", "0")
	assertFailure(t, errOut, code, exitNotFound, "conflict")
}

func TestE2EBackupPassphrase(t *testing.T) {
	a := newStore(t, "a", "pass-a")
	a.must("put", "notes", "n1", `{"title":"secret title","n":1}`)
	a.must("put", "notes", "n2", `{"title":"other"}`)
	a.must("put", "todo", "t1", `{"done":false}`)

	backup := filepath.Join(t.TempDir(), "backup.age")
	out, errOut, code := a.ferryEnv([]string{"FERRY_BACKUP_PASSPHRASE=backup-pass"}, "export", backup)
	if code != 0 || !strings.HasPrefix(out, "exported 3 records to "+backup) {
		t.Fatalf("export: exit %d, %s%s", code, out, errOut)
	}
	raw, err := os.ReadFile(backup)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(raw, []byte("age-encryption.org/v1")) || bytes.Contains(raw, []byte("secret title")) {
		t.Fatal("the backup is not an age file, or holds plaintext")
	}
	if _, err := os.Stat(backup + ".partial"); err == nil {
		t.Fatal("export left its .partial file")
	}

	// A new device, its own passphrase, restores with the backup passphrase.
	c := newStore(t, "c", "pass-c")
	out, errOut, code = c.ferryEnv([]string{"FERRY_BACKUP_PASSPHRASE=backup-pass"}, "import", backup)
	if code != 0 || !strings.Contains(out, "imported 3 records: 3 new") {
		t.Fatalf("import: exit %d, %s%s", code, out, errOut)
	}
	sameRecords(t, a, c, "notes", "todo")

	// Corrupted backups are refused (exit 5) and leave the store unchanged.
	d := newStore(t, "d", "pass-d")
	d.must("put", "notes", "n1", `{"title":"d's own"}`)
	before := d.must("list", "notes", "--json")
	flipped := append([]byte(nil), raw...)
	flipped[len(flipped)/2] ^= 0x01
	for name, data := range map[string][]byte{
		"truncated": raw[:len(raw)-10],
		"half":      raw[:len(raw)/2],
		"flipped":   flipped,
		"garbage":   []byte("not a backup\n"),
	} {
		f := filepath.Join(t.TempDir(), name+".age")
		if err := os.WriteFile(f, data, 0o600); err != nil {
			t.Fatal(err)
		}
		out, errOut, code := d.ferryEnv([]string{"FERRY_BACKUP_PASSPHRASE=backup-pass"}, "import", f)
		if out != "" {
			t.Fatalf("%s: stdout %q", name, out)
		}
		assertFailure(t, errOut, code, exitCorrupt, "bad backup")
	}
	// A wrong backup passphrase is a wrong passphrase, not a bad backup.
	_, errOut, code = d.ferryEnv([]string{"FERRY_BACKUP_PASSPHRASE=wrong"}, "import", backup)
	assertFailure(t, errOut, code, exitWrongKey, "wrong passphrase")
	if after := d.must("list", "notes", "--json"); after != before {
		t.Fatalf("a refused import changed the store:\n%s\nvs\n%s", before, after)
	}
	if got := d.get("notes", "n1"); got["title"] != "d's own" {
		t.Fatalf("a refused import changed a record: %v", got)
	}
	_, errOut, code = d.ferry("get", "notes", "n2")
	assertFailure(t, errOut, code, exitNotFound, "not found")

	// Without FERRY_BACKUP_PASSPHRASE, export uses the store passphrase.
	backup2 := filepath.Join(t.TempDir(), "backup2.age")
	a.must("export", backup2)
	e := newStore(t, "e", "pass-e")
	out, errOut, code = e.ferryEnv([]string{"FERRY_BACKUP_PASSPHRASE=pass-a"}, "import", backup2)
	if code != 0 {
		t.Fatalf("import of a store-passphrase backup: exit %d, %s%s", code, out, errOut)
	}
	sameRecords(t, a, e, "notes", "todo")
	// Importing again changes nothing.
	if out := e.mustEnv([]string{"FERRY_BACKUP_PASSPHRASE=pass-a"}, "import", backup2); !strings.Contains(out, "3 unchanged") {
		t.Fatalf("second import: %q", out)
	}
}

func (s *store) mustEnv(extra []string, args ...string) string {
	s.t.Helper()
	out, errOut, code := s.ferryEnv(extra, args...)
	if code != 0 {
		s.t.Fatalf("%s: ferry %s: exit %d\n%s%s", s.name, strings.Join(args, " "), code, out, errOut)
	}
	return out
}

// sameRecords checks two stores hold the same records in collections.
func sameRecords(t *testing.T, x, y *store, colls ...string) {
	t.Helper()
	for _, coll := range colls {
		ids := func(s *store) []string {
			var p struct {
				Items []struct {
					ID string `json:"id"`
				} `json:"items"`
			}
			mustJSON(t, s.must("list", coll, "--json"), &p)
			var out []string
			for _, it := range p.Items {
				out = append(out, it.ID)
			}
			return out
		}
		ix, iy := ids(x), ids(y)
		if fmt.Sprint(ix) != fmt.Sprint(iy) || len(ix) == 0 {
			t.Fatalf("%s: %s holds %v, %s holds %v", coll, x.name, ix, y.name, iy)
		}
		for _, id := range ix {
			if gx, gy := x.must("get", coll, id), y.must("get", coll, id); gx != gy {
				t.Fatalf("%s/%s: %s has %s, %s has %s", coll, id, x.name, gx, y.name, gy)
			}
		}
	}
}

func TestE2EBackupRecipient(t *testing.T) {
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	other, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	idFile, otherFile := filepath.Join(dir, "key.txt"), filepath.Join(dir, "other.txt")
	if err := os.WriteFile(idFile, []byte("# test identity\n"+id.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(otherFile, []byte(other.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	a := newStore(t, "a", "pass-a")
	a.must("put", "notes", "n1", `{"title":"to a recipient"}`)
	backup := filepath.Join(dir, "backup.age")
	if out := a.must("export", backup, "--recipient", id.Recipient().String()); !strings.Contains(out, "exported 1 records") {
		t.Fatalf("export: %q", out)
	}

	c := newStore(t, "c", "pass-c")
	_, errOut, code := c.ferry("import", backup, "--identity", otherFile)
	assertFailure(t, errOut, code, exitWrongKey, "wrong passphrase or key")
	_, errOut, code = c.ferry("import", backup) // tries the store passphrase
	assertFailure(t, errOut, code, exitWrongKey, "not a passphrase")
	notAnIdentity := filepath.Join(dir, "bad.txt")
	if err := os.WriteFile(notAnIdentity, []byte("hello\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, errOut, code = c.ferry("import", backup, "--identity", notAnIdentity)
	assertFailure(t, errOut, code, exitUsage, "identity")

	if out := c.must("import", backup, "--identity", idFile); !strings.Contains(out, "imported 1 records: 1 new") {
		t.Fatalf("import: %q", out)
	}
	sameRecords(t, a, c, "notes")
}

func TestE2EPasswdAndRotate(t *testing.T) {
	a := newStore(t, "a", "old-pass")
	a.must("put", "notes", "n1", `{"title":"kept"}`)
	if out := a.mustEnv([]string{"FERRY_NEW_PASSPHRASE=new-pass"}, "passwd"); strings.TrimSpace(out) != "passphrase changed" {
		t.Fatalf("passwd: %q", out)
	}
	_, errOut, code := a.ferry("get", "notes", "n1")
	assertFailure(t, errOut, code, exitWrongKey, "wrong passphrase")
	a.pass = "new-pass"
	if a.get("notes", "n1")["title"] != "kept" {
		t.Fatal("record lost across passwd")
	}
	// passwd without a new passphrase and no terminal: a usage error.
	_, errOut, code = a.ferry("passwd")
	assertFailure(t, errOut, code, exitUsage, "new passphrase")

	if out := a.must("rotate-key"); strings.TrimSpace(out) != "master key rotated" {
		t.Fatalf("rotate-key: %q", out)
	}
	if a.get("notes", "n1")["title"] != "kept" {
		t.Fatal("record lost across rotate-key")
	}
	_, errOut, code = runFerry(t, baseEnv(t, "FERRY_PASSPHRASE=old-pass"), "--dir", a.dir, "id")
	assertFailure(t, errOut, code, exitWrongKey, "wrong passphrase")
}

func TestE2EDemo(t *testing.T) {
	out, errOut, code := runFerry(t, baseEnv(t), "demo")
	if code != 0 {
		t.Fatalf("demo: exit %d\n%s\n%s", code, out, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	last := lines[len(lines)-1]
	if !regexp.MustCompile(`^All \d+ steps did what they said\.$`).MatchString(last) {
		t.Fatalf("demo's last line: %q", last)
	}
}
