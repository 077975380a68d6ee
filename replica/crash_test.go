package replica

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ferrysync/ferry/storage"
	"github.com/ferrysync/ferry/transport"
)

func TestMain(m *testing.M) {
	if os.Getenv("FERRY_CRASH_CHILD") == "sync" {
		if err := crashChild(); err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			os.Exit(3)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func diskOptions(name string) Options {
	return Options{Passphrase: []byte("pw-" + name), KDF: storage.TestKDF(), Name: name}
}

// crashChild opens the replica in FERRY_DIR, dials the parent at
// FERRY_ADDR (pinned to FERRY_PEER), prints "rec" for every record a
// merge writes, and syncs once. The parent kills it mid-session.
func crashChild() error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	r, err := Open(ctx, os.Getenv("FERRY_DIR"), diskOptions("child"))
	if err != nil {
		return err
	}
	defer r.Close()
	peer, err := hex.DecodeString(os.Getenv("FERRY_PEER"))
	if err != nil {
		return err
	}
	events := r.Watch(ctx)
	out := bufio.NewWriter(os.Stdout)
	go func() {
		for ev := range events {
			if ev.Kind == EventRecord && !ev.Local {
				fmt.Fprintln(out, "rec")
				out.Flush()
			}
		}
	}()
	conn, err := transport.DialTLS(ctx, os.Getenv("FERRY_ADDR"), r.Identity(), transport.NewPinSet(ed25519.PublicKey(peer)), transport.TLSOptions{})
	if err != nil {
		return err
	}
	defer conn.Close()
	if _, err := r.Sync(ctx, conn); err != nil {
		return err
	}
	fmt.Println("done")
	return nil
}

// TestCrashMidSyncResumes: the child replica is SIGKILLed after a random
// number of records applied during a sync in both directions; a second
// run resumes from the persisted cursors and both replicas converge, with
// every record from both sides present exactly once.
func TestCrashMidSyncResumes(t *testing.T) {
	if testing.Short() {
		t.Skip("subprocess crash test")
	}
	seed := time.Now().UnixNano()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(uint64(seed), 1))
	ctx := context.Background()
	const parentRecords, childRecords = 1500, 300

	childDir := t.TempDir()
	child, err := Open(ctx, childDir, diskOptions("child"))
	if err != nil {
		t.Fatal(err)
	}
	childPub := pub(child)
	childID := child.ID()
	for i := range childRecords {
		mustPut(t, child, "items", fmt.Sprintf("child-%04d", i), map[string]any{"from": "child", "i": int64(i)})
	}
	child.Close()
	parentDir := t.TempDir()

	parent, err := Open(ctx, parentDir, diskOptions("parent"))
	if err != nil {
		t.Fatal(err)
	}
	// The child trusts the parent: pair it before the child first runs.
	child, err = Open(ctx, childDir, diskOptions("child"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := child.Pair(ctx, parent.ID(), []string{"items"}, 0); err != nil {
		t.Fatal(err)
	}
	child.Close()
	defer parent.Close()
	if err := putMany(parent, "items", parentRecords); err != nil {
		t.Fatal(err)
	}
	if _, err := parent.Pair(ctx, childID, []string{"items"}, 0); err != nil {
		t.Fatal(err)
	}
	addr, stop := tlsServe(t, parent, transport.NewPinSet(childPub))
	defer stop()

	run := func(killAfter int) (killed bool) {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "FERRY_CRASH_CHILD=sync", "FERRY_DIR="+childDir,
			"FERRY_ADDR="+addr, "FERRY_PEER="+hex.EncodeToString(pub(parent)))
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stderr strings.Builder
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(stdout)
		recs := 0
		for sc.Scan() {
			if sc.Text() == "rec" {
				recs++
			}
			if killAfter > 0 && recs == killAfter {
				cmd.Process.Signal(syscall.SIGKILL)
				killed = true
				break
			}
		}
		err = cmd.Wait()
		if !killed && err != nil {
			t.Fatalf("child failed: %v\n%s", err, stderr.String())
		}
		t.Logf("child run: %d records applied, killed=%v", recs, killed)
		return killed
	}
	killAfter := 1 + rng.IntN(parentRecords-1)
	if !run(killAfter) {
		t.Fatalf("child finished before it could be killed after %d records", killAfter)
	}
	run(0)

	child, err = Open(ctx, childDir, diskOptions("child"))
	if err != nil {
		t.Fatal(err)
	}
	defer child.Close()
	dp, dc := dump(t, parent, "items"), dump(t, child, "items")
	if len(dp) != parentRecords+childRecords {
		t.Fatalf("parent holds %d records, want %d", len(dp), parentRecords+childRecords)
	}
	if !reflect.DeepEqual(dp, dc) {
		t.Fatalf("replicas diverged after resume: %d vs %d records", len(dp), len(dc))
	}
}
