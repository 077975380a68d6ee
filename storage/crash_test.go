package storage

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Subprocess crash tests: the test binary re-executes itself with childEnv
// set; the child works on a store and prints one line per acknowledged step;
// the parent SIGKILLs it after a random number of lines (seed logged),
// reopens the store and checks every acknowledged step survived.

const (
	childEnv    = "FERRY_STORAGE_CHILD"
	childDirEnv = "FERRY_STORAGE_DIR"
)

func runChild(mode string) int {
	ctx := context.Background()
	dir := os.Getenv(childDirEnv)
	fail := func(err error) int {
		fmt.Fprintf(os.Stdout, "error %v\n", err)
		return 2
	}
	switch mode {
	case "write":
		s, err := Open(ctx, dir, testOpts())
		if err != nil {
			return fail(err)
		}
		for i := 0; i < 100000; i++ {
			td := newDoc("c", "r"+strconv.Itoa(i))
			td.d.RootMap().Set("n", strconv.Itoa(i))
			td.d.Commit("w")
			b := Batch{Records: []RecordWrite{td.write()},
				Slots: []SlotWrite{{Namespace: "sync", Key: "cursor", Value: []byte(strconv.Itoa(i))}}}
			if _, err := s.Write(ctx, b); err != nil {
				return fail(err)
			}
			fmt.Fprintf(os.Stdout, "ack %d\n", i)
		}
	case "bigwrite":
		// Records with a value log: small memtables (values of 100 KiB
		// or more go to *.vlog), every other record 300 KiB of text
		// (Automerge deflates it to ~180 KiB).
		s, err := Open(ctx, dir, bigOpts())
		if err != nil {
			return fail(err)
		}
		for i := 0; i < 100000; i++ {
			td := newDoc("c", "r"+strconv.Itoa(i))
			td.d.RootMap().Set("n", strconv.Itoa(i))
			if i%2 == 1 {
				td.d.RootMap().Set("pad", randText(i, 300<<10)) // incompressible
			}
			td.d.Commit("w")
			if _, err := s.Write(ctx, Batch{Records: []RecordWrite{td.write()}}); err != nil {
				return fail(err)
			}
			fmt.Fprintf(os.Stdout, "ack %d\n", i)
		}
	case "passphrase":
		s, err := Open(ctx, dir, Options{Passphrase: []byte("p0")})
		if err != nil {
			return fail(err)
		}
		for k := 1; k < 100000; k++ {
			if err := s.ChangePassphrase(ctx, Options{Passphrase: []byte("p" + strconv.Itoa(k)), KDF: TestKDF()}); err != nil {
				return fail(err)
			}
			fmt.Fprintf(os.Stdout, "ack %d\n", k)
		}
	case "rotate":
		s, err := Open(ctx, dir, testOpts())
		if err != nil {
			return fail(err)
		}
		fmt.Fprintf(os.Stdout, "open\n")
		for r := 0; r < 1000; r++ {
			err := s.RotateKey(ctx, func(done, total int) { fmt.Fprintf(os.Stdout, "progress %d %d\n", done, total) })
			if err != nil {
				return fail(err)
			}
			fmt.Fprintf(os.Stdout, "rotated\n")
		}
	case "upgrade":
		// Upgrade a layout-1 store in small steps; stop (and wait for the
		// SIGKILL) after the step numbered FERRY_UPGRADE_STOP.
		stop, _ := strconv.Atoi(os.Getenv("FERRY_UPGRADE_STOP"))
		upgradeBatch = 8
		steps := 0
		upgradeHook = func(step string) {
			steps++
			fmt.Fprintf(os.Stdout, "step %d %s\n", steps, step)
			if steps == stop {
				select {}
			}
		}
		if _, err := Open(ctx, dir, Options{Passphrase: []byte("layout1")}); err != nil {
			return fail(err)
		}
		fmt.Fprintf(os.Stdout, "step done\n")
		select {}
	case "trimwrite":
		return trimWriteChild(dir) // trim_review_linux_test.go
	case "gcwrite":
		return gcWriteChild(dir) // vloggc_test.go
	default:
		return fail(fmt.Errorf("unknown child mode %q", mode))
	}
	return 0
}

// runUntil starts a child in mode on dir and kills it with SIGKILL after it
// printed n lines starting with prefix. It returns every line read.
func runUntil(t *testing.T, mode, dir, prefix string, n int) []string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+mode, childDirEnv+"="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var lines []string
	sc := bufio.NewScanner(out)
	seen := 0
	for sc.Scan() {
		l := sc.Text()
		lines = append(lines, l)
		if strings.HasPrefix(l, "error") {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("child %s: %s", mode, l)
		}
		if strings.HasPrefix(l, prefix) {
			if seen++; seen >= n {
				break
			}
		}
	}
	cmd.Process.Kill() // SIGKILL
	// The child may have acknowledged more steps between our reading the
	// n-th line and the kill: read everything it wrote.
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	cmd.Wait()
	if seen < n {
		t.Fatalf("child %s exited after %d/%d lines: %v", mode, seen, n, lines)
	}
	return lines
}

func crashRand(t *testing.T) *rand.Rand {
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("FERRY_CRASH_SEED"); v != "" {
		seed, _ = strconv.ParseUint(v, 10, 64)
	}
	t.Logf("crash seed %d (FERRY_CRASH_SEED to replay)", seed)
	return rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
}

// lastAck returns the last "ack N" of a child's lines, or acked if none.
func lastAck(lines []string, acked int) int {
	for _, l := range lines {
		if v, ok := strings.CutPrefix(l, "ack "); ok {
			acked, _ = strconv.Atoi(v)
		}
	}
	return acked
}

// checkAcked fails unless records r0..r<acked> hold their own numbers.
func checkAcked(t *testing.T, s *Store, round, acked int) {
	t.Helper()
	for i := 0; i <= acked; i++ {
		if got := field(t, s, "c", "r"+strconv.Itoa(i), "n"); got != strconv.Itoa(i) {
			t.Fatalf("round %d: acked record %d has %q", round, i, got)
		}
	}
}

func TestCrashDuringWrites(t *testing.T) {
	if testing.Short() {
		t.Skip("subprocess crash test")
	}
	ctx := context.Background()
	rng := crashRand(t)
	s, dir := newDiskStore(t)
	s.Close()
	acked := -1
	for round := 0; round < 3; round++ {
		n := 1 + rng.IntN(40)
		acked = lastAck(runUntil(t, "write", dir, "ack", n), acked)
		s, err := Open(ctx, dir, testOpts())
		if err != nil {
			t.Fatalf("reopen after kill: %v", err)
		}
		// Every acknowledged write of this round is there (each round
		// rewrites r0.. with the same content).
		checkAcked(t, s, round, acked)
		// The cursor committed atomically with its record.
		cur, ok, err := s.Slots("sync").Get(ctx, "cursor")
		if err != nil || !ok {
			t.Fatalf("cursor: %v %v", ok, err)
		}
		c, _ := strconv.Atoi(string(cur))
		if c < acked {
			t.Fatalf("cursor %d behind acked %d", c, acked)
		}
		if _, _, err := s.Load(ctx, "c", "r"+strconv.Itoa(c)); err != nil {
			t.Fatalf("cursor %d points at a missing record: %v", c, err)
		}
		// The feed has each record exactly once.
		feed, err := s.Feed(ctx, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]bool{}
		for _, e := range feed {
			if seen[e.ID] {
				t.Fatalf("record %s twice in feed", e.ID)
			}
			seen[e.ID] = true
		}
		if len(seen) < acked+1 {
			t.Fatalf("feed has %d records, acked %d", len(seen), acked+1)
		}
		s.Close()
	}
}

func TestCrashDuringChangePassphrase(t *testing.T) {
	if testing.Short() {
		t.Skip("subprocess crash test")
	}
	ctx := context.Background()
	rng := crashRand(t)
	dir := t.TempDir()
	s, err := Create(ctx, dir, Options{Passphrase: []byte("p0"), KDF: TestKDF()})
	if err != nil {
		t.Fatal(err)
	}
	mustWrite(t, s, newDoc("c", "1").set(t, "f", "v"))
	s.Close()
	for round := 0; round < 3; round++ {
		n := 1 + rng.IntN(8)
		lines := runUntil(t, "passphrase", dir, "ack", n)
		last := 0
		for _, l := range lines {
			if v, ok := strings.CutPrefix(l, "ack "); ok {
				last, _ = strconv.Atoi(v)
			}
		}
		// The last acknowledged passphrase or the one being set works;
		// exactly one of them.
		var opened *Store
		works := 0
		for _, k := range []int{last, last + 1} {
			s, err := Open(ctx, dir, Options{Passphrase: []byte("p" + strconv.Itoa(k))})
			if err == nil {
				works++
				opened = s
				if got := field(t, s, "c", "1", "f"); got != "v" {
					t.Fatalf("data lost: %q", got)
				}
				// Reset to p0 for the next round.
				if err := s.ChangePassphrase(ctx, Options{Passphrase: []byte("p0"), KDF: TestKDF()}); err != nil {
					t.Fatal(err)
				}
				s.Close()
				break
			}
			wantErr(t, err, ErrWrongKey, "passphrase after crash")
		}
		if works != 1 || opened == nil {
			t.Fatalf("round %d: neither p%d nor p%d opens the store", round, last, last+1)
		}
	}
}

func TestCrashDuringRotateKey(t *testing.T) {
	if testing.Short() {
		t.Skip("subprocess crash test")
	}
	ctx := context.Background()
	rng := crashRand(t)
	s, dir := newDiskStore(t)
	const nrec = 600
	var b Batch
	for i := 0; i < nrec; i++ {
		td := newDoc("c"+strconv.Itoa(i%3), "r"+strconv.Itoa(i))
		td.d.RootMap().Set("n", strconv.Itoa(i))
		td.d.Commit("w")
		b.Records = append(b.Records, td.write())
	}
	for i := 0; i < 40; i++ {
		b.Slots = append(b.Slots, SlotWrite{Namespace: "ns", Key: "k" + strconv.Itoa(i), Value: []byte(strconv.Itoa(i))})
	}
	if _, err := s.Write(ctx, b); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 30; i++ {
		if _, err := s.Append(ctx, "ledger", []byte(strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	for round := 0; round < 3; round++ {
		n := 1 + rng.IntN(14)
		lines := runUntil(t, "rotate", dir, "progress", n)
		t.Logf("round %d: killed after %d progress lines (%s)", round, n, lines[len(lines)-1])
		h, err := readHeaderFile(dir)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("header after kill: epoch %d rotating %v", h.curEpoch, h.rotating)
		s, err := Open(ctx, dir, testOpts()) // resumes and finishes
		if err != nil {
			t.Fatalf("reopen after kill: %v", err)
		}
		st := s.st()
		if st.next != nil {
			t.Fatal("rotation still pending after Open")
		}
		for k := range rawDump(t, s) {
			kb := mustHex(k)
			if e, _, ok := keyEpoch(kb); ok && e != st.cur.epoch {
				t.Fatalf("key of old epoch %d left after rotation", e)
			}
		}
		for i := 0; i < nrec; i++ {
			if got := field(t, s, "c"+strconv.Itoa(i%3), "r"+strconv.Itoa(i), "n"); got != strconv.Itoa(i) {
				t.Fatalf("record %d: %q", i, got)
			}
		}
		for i := 0; i < 40; i++ {
			v, ok, err := s.Slots("ns").Get(ctx, "k"+strconv.Itoa(i))
			if err != nil || !ok || string(v) != strconv.Itoa(i) {
				t.Fatalf("slot %d: %q %v %v", i, v, ok, err)
			}
		}
		var got []string
		if err := s.ScanLog(ctx, "ledger", 0, func(n uint64, v []byte) error { got = append(got, string(v)); return nil }); err != nil || len(got) != 30 {
			t.Fatalf("log: %d entries, %v", len(got), err)
		}
		feed, err := s.Feed(ctx, 0, 0)
		if err != nil || len(feed) != nrec {
			t.Fatalf("feed: %d entries, %v", len(feed), err)
		}
		cols, err := s.Collections(ctx)
		if err != nil || len(cols) != 3 {
			t.Fatalf("collections %v %v", cols, err)
		}
		s.Close()
	}
}
