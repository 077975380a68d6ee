package main

// End-to-end tests of the exit codes: every error class is provoked
// through the real binary, and the test checks the code and that stderr is
// exactly one line (a command-line error adds the command's synopsis, and
// only it). Misbehaving peers are played by fakePeer: a TLS listener with
// the right identity that speaks as much of the sync protocol as a case
// needs, in this process or (to be killed) in a child process.

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/ferrysync/ferry/policy"
	"github.com/ferrysync/ferry/relay"
	"github.com/ferrysync/ferry/replica"
	"github.com/ferrysync/ferry/storage"
	"github.com/ferrysync/ferry/transport"
	"github.com/fxamacker/cbor/v2"
)

// assertOneLine checks an error exit: the code, and stderr being exactly
// one "ferry CMD: ..." line that mentions contains.
func assertOneLine(t *testing.T, stderr string, code, want int, contains string) {
	t.Helper()
	if code != want {
		t.Fatalf("exit %d, want %d; stderr:\n%s", code, want, stderr)
	}
	if !strings.HasSuffix(stderr, "\n") || strings.Count(stderr, "\n") != 1 {
		t.Fatalf("stderr is not exactly one line:\n%s", stderr)
	}
	assertFailure(t, stderr, code, want, contains)
}

// The sync protocol's frames, as the peer writes them (replica/wire.go):
// a 0 byte (raw CBOR), then a CBOR map with integer keys.
type fakeHello struct {
	Replica string `cbor:"1,keyasint"`
	Policy  string `cbor:"3,keyasint"`
	Cursor  uint64 `cbor:"4,keyasint"`
}

type fakeErr struct {
	Code uint16 `cbor:"1,keyasint"`
	Text string `cbor:"2,keyasint"`
}

type fakeMsg struct {
	V     uint8      `cbor:"1,keyasint"`
	T     uint8      `cbor:"2,keyasint"`
	Hello *fakeHello `cbor:"3,keyasint,omitempty"`
	Err   *fakeErr   `cbor:"8,keyasint,omitempty"`
}

func fakeFrame(m fakeMsg) []byte {
	b, err := cbor.Marshal(m)
	if err != nil {
		panic(err)
	}
	return append([]byte{0}, b...)
}

// defaultPolicyFP is the fingerprint of the policy set of a store without
// ferry-policy.json (see policySet).
func defaultPolicyFP() string {
	return policy.NewSet(policy.Rule{Policy: policy.Timestamp}).Fingerprint()
}

// fakePeerKey derives a fake peer's identity from a hex seed, so the child
// process and the test agree on it.
func fakePeerKey(seedHex string) ed25519.PrivateKey {
	seed, err := hex.DecodeString(seedHex)
	if err != nil || len(seed) != ed25519.SeedSize {
		panic("bad fake peer seed")
	}
	return ed25519.NewKeyFromSeed(seed)
}

// fakeBehaviours are what a fake peer does once a client connected.
var fakeBehaviours = map[string]func(ctx context.Context, c transport.Conn, fp string) error{
	// Reads the client's hello, then closes: the peer went away.
	"close-after-hello": func(ctx context.Context, c transport.Conn, fp string) error {
		_, err := c.Recv(ctx)
		return err
	},
	// Says hello properly, reads the client's next frame, tells the test
	// it is mid-session (a line on stdout), then waits to be killed.
	"hello-then-wait": func(ctx context.Context, c transport.Conn, fp string) error {
		if _, err := c.Recv(ctx); err != nil {
			return err
		}
		if err := c.Send(ctx, fakeFrame(fakeMsg{V: replica.ProtocolVersion, T: 1, Hello: &fakeHello{Replica: fp, Policy: defaultPolicyFP()}})); err != nil {
			return err
		}
		if _, err := c.Recv(ctx); err != nil {
			return err
		}
		fmt.Println("mid-session")
		<-ctx.Done()
		return nil
	},
	// Never answers (for the client's timeout).
	"silent": func(ctx context.Context, c transport.Conn, fp string) error {
		<-ctx.Done()
		return nil
	},
	// A frame that is not the protocol's.
	"garbage": func(ctx context.Context, c transport.Conn, fp string) error {
		if _, err := c.Recv(ctx); err != nil {
			return err
		}
		return c.Send(ctx, []byte("GET / HTTP/1.1\r\n\r\n"))
	},
	// A hello of another protocol version (this build speaks
	// replica.ProtocolVersion).
	"version-other": func(ctx context.Context, c transport.Conn, fp string) error {
		if _, err := c.Recv(ctx); err != nil {
			return err
		}
		return c.Send(ctx, fakeFrame(fakeMsg{V: 1, T: 1, Hello: &fakeHello{Replica: fp, Policy: defaultPolicyFP()}}))
	},
	// The peer reports an internal error of its own.
	"internal-error": func(ctx context.Context, c transport.Conn, fp string) error {
		if _, err := c.Recv(ctx); err != nil {
			return err
		}
		return c.Send(ctx, fakeFrame(fakeMsg{V: replica.ProtocolVersion, T: 6, Err: &fakeErr{Code: 5, Text: "the peer's disk is on fire"}}))
	},
}

// serveFake accepts one connection on l and runs behaviour on it.
func serveFake(ctx context.Context, l transport.Listener, behaviour string, fp string) error {
	c, err := l.Accept(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	return fakeBehaviours[behaviour](ctx, c, fp)
}

const fakePeerEnv = "FERRY_E2E_FAKE_PEER" // "BEHAVIOUR SEED-HEX" runs this binary as a fake peer

// A test binary started with fakePeerEnv is a fake peer: it prints its
// address, serves one connection and exits.
func init() {
	spec := os.Getenv(fakePeerEnv)
	if spec == "" {
		return
	}
	behaviour, seed, _ := strings.Cut(spec, " ")
	key := fakePeerKey(seed)
	ctx := context.Background()
	l, err := transport.ListenTLS(ctx, "127.0.0.1:0", key, transport.PinFunc(func(ed25519.PublicKey) bool { return true }), transport.TLSOptions{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(l.Addr())
	if err := serveFake(ctx, l, behaviour, transport.Fingerprint(key.Public().(ed25519.PublicKey))); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(0)
}

// fakePeer is a fake peer in this process, trusted by s.
func fakePeer(t *testing.T, s *store, behaviour string) (addr string) {
	t.Helper()
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	fp := transport.Fingerprint(key.Public().(ed25519.PublicKey))
	s.must("trust", fp, "--collections", "notes")
	ctx, cancel := context.WithCancel(context.Background())
	l, err := transport.ListenTLS(ctx, "127.0.0.1:0", key, transport.PinFunc(func(ed25519.PublicKey) bool { return true }), transport.TLSOptions{})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- serveFake(ctx, l, behaviour, fp) }()
	t.Cleanup(func() {
		cancel()
		l.Close()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, transport.ErrClosed) {
			t.Logf("fake peer %s: %v", behaviour, err)
		}
	})
	return l.Addr()
}

// rawPeer listens on TCP and answers every connection with reply (nothing
// if empty) before closing it: a peer that is not ferry, or that hangs up
// during the handshake.
func rawPeer(t *testing.T, reply string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			if reply != "" {
				buf := make([]byte, 4096)
				_, _ = c.Read(buf)
				_, _ = c.Write([]byte(reply))
			}
			c.Close()
		}
	}()
	t.Cleanup(func() { l.Close(); <-done })
	return l.Addr().String()
}

// TestE2EExitHelp: help on request is success on stdout; the overview
// lists every exit code.
func TestE2EExitHelp(t *testing.T) {
	env := baseEnv(t)
	for _, args := range [][]string{{"--help"}, {"-h"}, {"help"}, {"--dir", "x", "--help"}} {
		out, errOut, code := runFerry(t, env, args...)
		if code != exitOK || errOut != "" || !strings.Contains(out, "commands:") {
			t.Fatalf("ferry %s: exit %d, stderr %q, stdout:\n%s", strings.Join(args, " "), code, errOut, out)
		}
		for _, c := range exitCodes {
			if !strings.Contains(out, fmt.Sprintf("\n  %d  %s\n", c.code, c.what)) {
				t.Fatalf("ferry %s does not list exit code %d:\n%s", strings.Join(args, " "), c.code, out)
			}
		}
	}
	if len(exitCodes) != 10 {
		t.Fatalf("%d exit codes listed, want 0..9", len(exitCodes))
	}
	out, errOut, code := runFerry(t, env)
	if code != exitUsage || out != "" || !strings.Contains(errOut, "exit codes") {
		t.Fatalf("bare ferry: exit %d, stdout %q, stderr:\n%s", code, out, errOut)
	}
}

// TestE2EExitCodes provokes each error class through the binary.
func TestE2EExitCodes(t *testing.T) {
	a := newStore(t, "a", "pass-a")
	a.must("put", "notes", "n1", `{"title":"x"}`)
	dir := t.TempDir()
	backup := filepath.Join(dir, "b.age")
	a.mustEnv([]string{"FERRY_BACKUP_PASSPHRASE=backup-pass"}, "export", backup)
	raw, err := os.ReadFile(backup)
	if err != nil {
		t.Fatal(err)
	}
	tampered := append([]byte(nil), raw...)
	tampered[len(tampered)-20] ^= 0x01
	writeFile := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	truncatedFile, tamperedFile := writeFile("truncated.age", raw[:len(raw)-7]), writeFile("tampered.age", tampered)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedPort := l.Addr().String()
	l.Close()

	// A store whose policy file is invalid.
	p := newStore(t, "p", "pass-p")
	p.writePolicy(`{"version":1,"default":{"policy":"coin-toss"}}`)

	type tc struct {
		name     string
		run      func() (string, string, int)
		code     int
		contains string
	}
	backupEnv := func(pass string) []string { return []string{"FERRY_BACKUP_PASSPHRASE=" + pass} }
	cases := []tc{
		{"1 peer's internal error", func() (string, string, int) { return a.ferry("sync", fakePeer(t, a, "internal-error")) }, exitError, "disk is on fire"},
		{"2 invalid policy file", func() (string, string, int) { return p.ferry("get", "notes", "n1") }, exitUsage, filepath.Join(p.dir, "ferry-policy.json")},
		{"3 wrong store passphrase", func() (string, string, int) {
			return runFerry(t, baseEnv(t, "FERRY_PASSPHRASE=wrong"), "--dir", a.dir, "get", "notes", "n1")
		}, exitWrongKey, "wrong passphrase"},
		{"3 wrong backup passphrase", func() (string, string, int) { return a.ferryEnv(backupEnv("wrong"), "import", backup) }, exitWrongKey, "wrong passphrase"},
		{"4 no such record", func() (string, string, int) { return a.ferry("get", "notes", "nope") }, exitNotFound, "not found"},
		{"5 tampered backup", func() (string, string, int) { return a.ferryEnv(backupEnv("backup-pass"), "import", tamperedFile) }, exitCorrupt, "bad backup"},
		{"5 truncated backup", func() (string, string, int) { return a.ferryEnv(backupEnv("backup-pass"), "import", truncatedFile) }, exitCorrupt, "bad backup"},
		{"6 closed port", func() (string, string, int) { return a.ferry("sync", closedPort) }, exitNetwork, "refused"},
		{"6 peer closes mid-session", func() (string, string, int) { return a.ferry("sync", fakePeer(t, a, "close-after-hello")) }, exitNetwork, "connection to the peer lost"},
		{"6 timeout", func() (string, string, int) { return a.ferry("sync", fakePeer(t, a, "silent"), "--timeout", "1s") }, exitNetwork, "deadline"},
		{"6 peer hangs up in the handshake", func() (string, string, int) { return a.ferry("sync", rawPeer(t, "")) }, exitNetwork, "closed"},
		{"9 peer is not ferry", func() (string, string, int) {
			return a.ferry("sync", rawPeer(t, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"))
		}, exitProtocol, "does not speak"},
		{"7 unknown peer", func() (string, string, int) {
			c := newStore(t, "c", "pass-c")
			return c.ferry("sync", fakePeer(t, newStore(t, "d", "pass-d"), "silent"))
		}, exitForbidden, "unknown peer"},
		{"9 garbage frame", func() (string, string, int) { return a.ferry("sync", fakePeer(t, a, "garbage")) }, exitProtocol, "protocol violation"},
		{"9 version mismatch", func() (string, string, int) { return a.ferry("sync", fakePeer(t, a, "version-other")) }, exitProtocol, "version"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out, errOut, code := c.run()
			if out != "" {
				t.Fatalf("stdout on failure: %q", out)
			}
			assertOneLine(t, errOut, code, c.code, c.contains)
		})
	}

	// 2, on the command line: the message, then the command's synopsis.
	_, errOut, code := a.ferry("get", "notes")
	lines := strings.Split(strings.TrimRight(errOut, "\n"), "\n")
	if code != exitUsage || len(lines) != 2 || !strings.HasPrefix(lines[1], "usage: ferry get ") {
		t.Fatalf("missing argument: exit %d, stderr:\n%s", code, errOut)
	}
	// The refused commands changed nothing.
	if got := a.get("notes", "n1"); got["title"] != "x" {
		t.Fatalf("record changed: %v", got)
	}
}

// TestE2EExitPeerKilled: a peer killed (SIGKILL) mid-session is a network
// failure.
func TestE2EExitPeerKilled(t *testing.T) {
	a := newStore(t, "a", "pass-a")
	a.must("put", "notes", "n1", `{"title":"x"}`)
	seed := make([]byte, ed25519.SeedSize)
	rand.Read(seed)
	key := fakePeerKey(hex.EncodeToString(seed))
	a.must("trust", transport.Fingerprint(key.Public().(ed25519.PublicKey)), "--collections", "notes")

	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	peer := exec.Command(self, "-test.run=^$")
	peer.Env = append(os.Environ(), fakePeerEnv+"=hello-then-wait "+hex.EncodeToString(seed))
	stdout, err := peer.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	peer.Stderr = os.Stderr
	if err := peer.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = peer.Process.Kill(); _ = peer.Wait() }()
	lines := bufio.NewScanner(stdout)
	if !lines.Scan() {
		t.Fatal("fake peer printed no address")
	}
	addr := lines.Text()

	type result struct {
		errOut string
		code   int
	}
	done := make(chan result, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
		defer cancel()
		cmd := exec.CommandContext(ctx, e2eBin, "--dir", a.dir, "sync", addr)
		cmd.Env = a.env()
		var errb strings.Builder
		cmd.Stderr = &errb
		_ = cmd.Run()
		done <- result{errb.String(), cmd.ProcessState.ExitCode()}
	}()
	if !lines.Scan() || lines.Text() != "mid-session" {
		t.Fatalf("fake peer did not reach mid-session: %q", lines.Text())
	}
	if err := peer.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = peer.Wait()
	var r result
	select {
	case r = <-done:
	case <-time.After(commandTimeout):
		t.Fatal("ferry sync did not end after its peer died")
	}
	assertOneLine(t, r.errOut, r.code, exitNetwork, "connection to the peer lost")
}

// TestE2EGrantExpired: a sync refused because a grant expired says so on
// both sides, whichever side's grant it was.
func TestE2EGrantExpired(t *testing.T) {
	a, b := newStore(t, "a", "pass-a"), newStore(t, "b", "pass-b")
	aid, bid := a.id(), b.id()
	// a's grant for b lapsed.
	a.must("trust", bid, "--collections", "notes", "--expires", "1h")
	b.must("trust", aid, "--collections", "notes")
	lapse(t, a)
	srv := b.serve()
	_, errOut, code := a.ferry("sync", srv.addr)
	srv.stop()
	assertOneLine(t, errOut, code, exitForbidden, "grant for "+bid+" expired at ")
	if !strings.Contains(errOut, "renew it with ferry trust "+bid) {
		t.Fatalf("no renewal hint: %s", errOut)
	}

	// b's grant for a lapsed: b refuses a, says why in its log, and a is
	// told that b refused it.
	c, d := newStore(t, "c", "pass-c"), newStore(t, "d", "pass-d")
	cid, did := c.id(), d.id()
	c.must("trust", did, "--collections", "notes")
	d.must("trust", cid, "--collections", "notes", "--expires", "1h")
	lapse(t, d)
	srv = d.serve()
	_, errOut, code = c.ferry("sync", srv.addr)
	srv.stop()
	assertOneLine(t, errOut, code, exitForbidden, "refused this replica")
	if !strings.Contains(errOut, did) || !strings.Contains(errOut, "ferry trust "+cid) {
		t.Fatalf("the refused side is not told who refused it and what to run there: %s", errOut)
	}
	srv.mu.Lock()
	log := srv.stderr.String()
	srv.mu.Unlock()
	if !strings.Contains(log, "grant for "+cid+" expired at ") {
		t.Fatalf("ferry serve did not say why it refused %s:\n%s", cid, log)
	}
}

// lapse moves s's clock two hours on (FERRY_TEST_CLOCK_OFFSET, for every
// later command on s, serve included), past its one-hour grants, and checks
// that s holds no live grant any more.
func lapse(t *testing.T, s *store) {
	t.Helper()
	s.extra = append(s.extra, "FERRY_TEST_CLOCK_OFFSET=2h")
	if got := strings.TrimSpace(s.must("consent", "list", "--json")); got != "[]" {
		t.Fatalf("%s: a grant is still live two hours after it was made for one: %s", s.name, got)
	}
}

// TestExitCodeTable: each class's sentinel, wrapped, maps to its code;
// storage.ErrNoSpace (the disk-full class, provoked on a real full file
// system by storage's tests) is 8 even when it also wraps another class.
func TestExitCodeTable(t *testing.T) {
	w := func(err error) error { return fmt.Errorf("ferry: doing something: %w", err) }
	for _, c := range []struct {
		err  error
		want int
	}{
		{nil, exitOK},
		{errors.New("boom"), exitError},
		{w(storage.ErrNoSpace), exitNoSpace},
		{w(fmt.Errorf("%w: %w", storage.ErrNoSpace, storage.ErrCorrupt)), exitNoSpace},
		{w(storage.ErrInvalid), exitUsage},
		{w(replica.ErrInvalid), exitUsage},
		{w(replica.ErrDisconnected), exitNetwork},
		{w(fmt.Errorf("%w: %w", replica.ErrDisconnected, io.EOF)), exitNetwork},
		{w(replica.ErrProtocol), exitProtocol},
		{w(fmt.Errorf("%w: %w", replica.ErrProtocol, replica.ErrVersionMismatch)), exitProtocol},
		{w(fmt.Errorf("%w: %w: no", replica.ErrPeerError, replica.ErrNoConsent)), exitForbidden},
		{w(fmt.Errorf("%w: %w: bad frame", replica.ErrPeerError, replica.ErrProtocol)), exitProtocol},
		{w(fmt.Errorf("%w: %w", replica.ErrPeerError, errors.New("internal error"))), exitError},
		{w(replica.ErrPolicyMismatch), exitForbidden},
		{w(replica.ErrNoConsent), exitForbidden},
		{w(storage.ErrWrongKey), exitWrongKey},
		{w(storage.ErrBadBackup), exitCorrupt},
		{w(storage.ErrCorrupt), exitCorrupt},
		{w(storage.ErrLocked), exitForbidden},
		{w(transport.ErrRefused), exitNetwork},
		{w(context.DeadlineExceeded), exitNetwork},
		{w(transport.ErrUnknownPeer), exitForbidden},
		{w(transport.ErrNotFerry), exitProtocol},
		{w(fmt.Errorf("%w: %w", relay.ErrInvitation, &age.NoIdentityMatchError{})), exitWrongKey},
		{w(fmt.Errorf("%w: malformed", relay.ErrInvitation)), exitCorrupt},
	} {
		if got := exitCode(c.err); got != c.want {
			t.Errorf("exitCode(%v) = %d, want %d", c.err, got, c.want)
		}
	}
}

// The same visible passphrase, composed and decomposed.
const (
	passNFC = "caf\u00e9 cr\u00e8me br\u00fbl\u00e9e"
	passNFD = "cafe\u0301 cre\u0300me bru\u0302le\u0301e"
)

// TestE2EPassphraseForms: a store and a backup made with one Unicode form
// of a passphrase open with the other, through the binary; so do the
// store and the backup that ferry made before passphrases were normalized
// (storage/testdata/legacy-nfd, decomposed).
func TestE2EPassphraseForms(t *testing.T) {
	a := newStore(t, "a", passNFC)
	a.must("put", "notes", "n1", `{"title":"composed"}`)
	backup := filepath.Join(t.TempDir(), "b.age")
	a.mustEnv([]string{"FERRY_BACKUP_PASSPHRASE=" + passNFD}, "export", backup)
	a.pass = passNFD
	if got := a.get("notes", "n1"); got["title"] != "composed" {
		t.Fatalf("NFD opens the NFC store: %v", got)
	}
	b := newStore(t, "b", passNFD)
	b.pass = passNFC
	if out := b.mustEnv([]string{"FERRY_BACKUP_PASSPHRASE=" + passNFC}, "import", backup); !strings.Contains(out, "imported 1 records") {
		t.Fatalf("import with the other form: %q", out)
	}

	// The legacy fixture, opened by its own bytes and by the other form.
	fixture, err := filepath.Abs(filepath.Join("..", "..", "storage", "testdata", "legacy-nfd"))
	if err != nil {
		t.Fatal(err)
	}
	for _, pass := range []string{passNFD, passNFC} {
		dir := filepath.Join(t.TempDir(), "legacy")
		copyFlat(t, filepath.Join(fixture, "store"), dir)
		legacy := &store{t: t, name: "legacy", dir: dir, pass: pass}
		if got := legacy.get("notes", "n1"); got["title"] != "made before NFC" {
			t.Fatalf("legacy store with %q: %v", pass, got)
		}
		out := legacy.mustEnv([]string{"FERRY_BACKUP_PASSPHRASE=" + pass}, "import", filepath.Join(fixture, "backup.age"))
		if !strings.Contains(out, "imported 1 records") {
			t.Fatalf("legacy backup with %q: %q", pass, out)
		}
		// Once opened, the store is under the normalized passphrase: both
		// forms keep opening it, a wrong one is still exit 3.
		legacy.pass = passNFC
		legacy.get("notes", "n1")
		legacy.pass = passNFD
		legacy.get("notes", "n1")
		_, errOut, code := runFerry(t, baseEnv(t, "FERRY_PASSPHRASE=caf\u00e9"), "--dir", dir, "get", "notes", "n1")
		assertOneLine(t, errOut, code, exitWrongKey, "wrong passphrase")
	}
}

func copyFlat(t *testing.T, src, dst string) {
	t.Helper()
	if err := os.MkdirAll(dst, 0o700); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, en := range ents {
		if en.IsDir() || en.Name() == "LOCK" {
			continue
		}
		b, err := os.ReadFile(filepath.Join(src, en.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, en.Name()), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// TestE2EInputErrorsOneLine: invalid input that is not the command line's
// (no passphrase in the environment, an empty passphrase file, a bad
// identity file) is exit 2 with one line, without the command's synopsis.
func TestE2EInputErrorsOneLine(t *testing.T) {
	a := newStore(t, "a", "pass-a")
	empty := filepath.Join(t.TempDir(), "empty")
	notID := filepath.Join(t.TempDir(), "not-an-identity")
	for _, f := range []string{empty, notID} {
		if err := os.WriteFile(f, []byte(map[bool]string{true: "", false: "hello\n"}[f == empty]), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		name     string
		env      []string
		args     []string
		contains string
	}{
		{"no passphrase", baseEnv(t), []string{"--dir", a.dir, "get", "notes", "n1"}, "FERRY_PASSPHRASE"},
		{"empty passphrase file", baseEnv(t), []string{"--dir", a.dir, "--passphrase-file", empty, "get", "notes", "n1"}, "is empty"},
		{"bad identity file", a.env(), []string{"--dir", a.dir, "import", empty, "--identity", notID}, "identity file " + notID},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, errOut, code := runFerry(t, c.env, c.args...)
			assertOneLine(t, errOut, code, exitUsage, c.contains)
		})
	}
}

// TestE2EStatusPeerStoreRestored: after a peer's store is restored from an
// older copy of itself (cp -a B B.snap; sync; rm -rf B; cp -a B.snap B),
// the next sync heals it (it reconciles: docs/sync.md): it exits 0, the
// restored store holds what it lost again, and `ferry status` says
// up-to-date on both sides because it is.
func TestE2EStatusPeerStoreRestored(t *testing.T) {
	a, b := newStore(t, "a", "pass-a"), newStore(t, "b", "pass-b")
	pair(t, a, b)
	a.must("put", "notes", "n1", `{"title":"one"}`)
	syncTo(t, a, b)
	snap := filepath.Join(t.TempDir(), "b.snap")
	copyFlat(t, b.dir, snap)
	a.must("put", "notes", "n2", `{"title":"two"}`)
	syncTo(t, a, b)
	if out := a.must("status"); !strings.Contains(out, ": up-to-date") {
		t.Fatalf("status before the restore:\n%s", out)
	}
	if err := os.RemoveAll(b.dir); err != nil {
		t.Fatal(err)
	}
	copyFlat(t, snap, b.dir)
	srv := b.serve()
	a.must("sync", srv.addr)
	srv.stop()
	if out := b.must("get", "notes", "n2"); !strings.Contains(out, "two") {
		t.Fatalf("the restored store did not get n2 back:\n%s", out)
	}
	if out := a.must("status"); !strings.Contains(out, ": up-to-date") {
		t.Fatalf("a's status after healing b:\n%s", out)
	}
	if out := b.must("status"); !strings.Contains(out, ": up-to-date") {
		t.Fatalf("b's status after healing:\n%s", out)
	}
}
