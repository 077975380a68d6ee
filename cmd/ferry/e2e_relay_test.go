package main

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/automerge/automerge-go"
)

var relayLine = regexp.MustCompile(`^relay on (\S+) \(data in (.+)\)$`)

// startRelayProcess runs `ferry relay` on loopback and returns its URL.
func startRelayProcess(t *testing.T) (url, dir string) {
	t.Helper()
	dir = filepath.Join(t.TempDir(), "relay")
	cmd := exec.Command(e2eBin, "relay", "--listen", "127.0.0.1:0", "--dir", dir)
	cmd.Env = baseEnv(t)
	pipe, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(commandTimeout):
			cmd.Process.Kill()
			<-done
		}
	})
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
		t.Fatal("ferry relay printed nothing")
	}
	m := relayLine.FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("ferry relay: first line %q", line)
	}
	return m[1], dir
}

// TestE2ERelay: two stores that are never running at the same time share
// a space on a relay: one creates it, the other shows its join code, is
// invited and joins, and records travel both ways through `ferry sync URL`.
// The relay's directory holds none of the record's names or values.
func TestE2ERelay(t *testing.T) {
	url, relayDir := startRelayProcess(t)
	a := newStore(t, "a", "pass-a")
	b := newStore(t, "b", "pass-b")

	out := a.must("space", "create", url, "--collections", "zqnotes")
	m := regexp.MustCompile(`created space (\S+) on`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("space create: %q", out)
	}
	space := m[1]
	code := strings.TrimSpace(b.must("space", "code"))
	inv := filepath.Join(t.TempDir(), "invite.age")
	a.must("space", "invite", space, code, "--out", inv)
	b.must("space", "join", inv, "--collections", "zqnotes")

	a.must("put", "zqnotes", "zq-shopping", `{"zq-title":"zq-relay-secret"}`)
	if out := a.must("sync", url); !strings.Contains(out, "pushed 1 records") {
		t.Fatalf("a sync: %q", out)
	}
	if out := b.must("sync", url); !strings.Contains(out, "applied 1 records") {
		t.Fatalf("b sync: %q", out)
	}
	if got := b.get("zqnotes", "zq-shopping")["zq-title"]; got != "zq-relay-secret" {
		t.Fatalf("b has %v", got)
	}
	b.must("put", "zqnotes", "zq-todo", `{"zq-title":"zq-from-b"}`)
	b.must("sync", url)
	a.must("sync", url)
	if got := a.get("zqnotes", "zq-todo")["zq-title"]; got != "zq-from-b" {
		t.Fatalf("a has %v", got)
	}

	// A store that is not a member is refused a clear error.
	c := newStore(t, "c", "pass-c")
	_, errOut, exit := c.ferry("sync", url)
	assertFailure(t, errOut, exit, exitNotFound, "no such space")

	// Nothing readable on the relay (its NATS JetStream store): no
	// collection name, record id, field, value, passphrase, nor the hash
	// of any change, raw or in hex.
	needles := []string{"zqnotes", "zq-shopping", "zq-todo", "zq-title", "zq-relay-secret", "zq-from-b", "pass-a"}
	for _, id := range []string{"zq-shopping", "zq-todo"} {
		file := filepath.Join(t.TempDir(), id+".automerge")
		a.must("doc", "export", "zqnotes", id, file)
		saved, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		doc, err := automerge.Load(saved)
		if err != nil {
			t.Fatal(err)
		}
		changes, err := doc.Changes()
		if err != nil || len(changes) == 0 {
			t.Fatalf("changes of %s: %d, %v", id, len(changes), err)
		}
		for _, ch := range changes {
			h := ch.Hash()
			needles = append(needles, string(h[:]), h.String())
		}
	}
	files := 0
	filepath.WalkDir(relayDir, func(p string, de os.DirEntry, err error) error {
		if err != nil || de.IsDir() {
			return err
		}
		files++
		data, _ := os.ReadFile(p)
		for _, s := range needles {
			if strings.Contains(string(data), s) {
				t.Fatalf("%s holds %q", p, s)
			}
		}
		return nil
	})
	if files == 0 {
		t.Fatal("control: no file in the relay's directory")
	}
}
