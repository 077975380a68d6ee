//go:build linux

package storage

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// Disk-full tests run on a real 40 MB tmpfs. Badger's memory-mapped files
// raise SIGBUS on a full file system, which kills the whole test binary,
// so the scenario runs in child processes (this binary re-executed with
// diskPhaseEnv set) and the parent checks that each child exits cleanly.

const (
	diskPhaseEnv = "FERRY_DISKFULL_PHASE"
	diskDirEnv   = "FERRY_DISKFULL_DIR"
	diskAckedEnv = "FERRY_DISKFULL_ACKED"
)

// mountTmpfs mounts a tmpfs of size MiB on a fresh directory, unmounted at
// cleanup; it skips the test when mounting is impossible (not root).
func mountTmpfs(t *testing.T, mib int) string {
	t.Helper()
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("size=%dm", mib)); err != nil {
		t.Skipf("cannot mount a tmpfs on %s (%v): needs root or CAP_SYS_ADMIN", dir, err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

// fillDisk allocates a file at path taking all but leave bytes of the
// free space of its file system (fallocate: the blocks are really taken).
func fillDisk(t testing.TB, path string, leave int64) {
	t.Helper()
	free, err := freeSpace(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for n := free - leave; n > 0; n -= 4096 {
		err = syscall.Fallocate(int(f.Fd()), 0, 0, n)
		if !errors.Is(err, syscall.ENOSPC) {
			break
		}
	}
	if err != nil {
		t.Fatalf("fallocate: %v", err)
	}
	if free, _ = freeSpace(filepath.Dir(path)); free > leave+64<<10 {
		t.Fatalf("after filling, %d bytes still free", free)
	}
}

// diskOpts are small Badger sizes so a 40 MB file system fills quickly:
// reserve 4.5 MiB, values of 100 KiB or more in the value log.
func diskOpts() Options {
	o := testOpts()
	o.Sizes = Sizes{MemTableSize: 1 << 20, NumMemtables: 1, ValueLogFileSize: 1 << 20,
		BlockCacheSize: 1 << 20, BaseTableSize: 256 << 10}
	return o
}

// diskRecord is record i: "n" is i, "pad" is random bytes: 120 KiB (value
// log) for every 7th record, 12 KiB (write-ahead log) otherwise.
func diskRecord(t testing.TB, i int) RecordWrite {
	n := 12 << 10
	if i%7 == 3 {
		n = 120 << 10
	}
	pad := make([]byte, n)
	rng := rand.New(rand.NewPCG(uint64(i), 7))
	for j := 0; j+8 <= n; j += 8 {
		binary.LittleEndian.PutUint64(pad[j:], rng.Uint64())
	}
	td := newDoc("c", "r"+strconv.Itoa(i))
	m := td.d.RootMap()
	if err := m.Set("n", strconv.Itoa(i)); err != nil {
		t.Fatal(err)
	}
	if err := m.Set("pad", pad); err != nil {
		t.Fatal(err)
	}
	if _, err := td.d.Commit("w"); err != nil {
		t.Fatal(err)
	}
	return td.write()
}

// writeUntilFull writes records from next on, 4 per batch, printing "ack N"
// (records 0..N-1 acknowledged) after each, until a write fails; the
// failure must be ErrNoSpace. It returns the new count.
func writeUntilFull(t *testing.T, s *Store, next int) int {
	t.Helper()
	for round := 0; ; round++ {
		if round > 5000 {
			t.Fatal("the disk never filled")
		}
		var b Batch
		for i := next; i < next+4; i++ {
			b.Records = append(b.Records, diskRecord(t, i))
		}
		if _, err := s.Write(context.Background(), b); err != nil {
			if !errors.Is(err, ErrNoSpace) {
				t.Fatalf("write on a filling disk: %v, want ErrNoSpace", err)
			}
			t.Logf("write refused after %d records: %v", next, err)
			return next
		}
		next += 4
		fmt.Printf("ack %d\n", next)
	}
}

// writeN writes records next..next+k-1 in one batch and prints the ack.
func writeN(t *testing.T, s *Store, next, k int) int {
	t.Helper()
	var b Batch
	for i := next; i < next+k; i++ {
		b.Records = append(b.Records, diskRecord(t, i))
	}
	if _, err := s.Write(context.Background(), b); err != nil {
		t.Fatalf("write records %d..%d: %v", next, next+k-1, err)
	}
	fmt.Printf("ack %d\n", next+k)
	return next + k
}

func checkRecords(t *testing.T, s *Store, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		if got := field(t, s, "c", "r"+strconv.Itoa(i), "n"); got != strconv.Itoa(i) {
			t.Fatalf("record %d: n = %q", i, got)
		}
	}
}

func wantNoSpaceWrite(t *testing.T, s *Store, i int) {
	t.Helper()
	_, err := s.Write(context.Background(), Batch{Records: []RecordWrite{diskRecord(t, i)}})
	if !errors.Is(err, ErrNoSpace) {
		t.Fatalf("write on a full disk: %v, want ErrNoSpace", err)
	}
}

// TestDiskFullPhase is the child of TestDiskFull (skipped otherwise).
func TestDiskFullPhase(t *testing.T) {
	phase, mnt := os.Getenv(diskPhaseEnv), os.Getenv(diskDirEnv)
	if phase == "" {
		t.Skip("runs as a child of TestDiskFull")
	}
	ctx := context.Background()
	dir := filepath.Join(mnt, "store")
	switch phase {
	case "1":
		// Ballast, so the disk fills sooner: one file that stays, one of
		// 8 MiB freed in step 2.
		fillDisk(t, filepath.Join(mnt, "ballast-fixed"), 22<<20)
		ballast := filepath.Join(mnt, "ballast")
		fillDisk(t, ballast, 14<<20)
		s, err := Create(ctx, dir, diskOpts())
		if err != nil {
			t.Fatal(err)
		}
		// 1. Write until refused; everything acknowledged reads back; the
		// store still closes (flushing needs less than writing).
		n := writeUntilFull(t, s, 0)
		checkRecords(t, s, n)
		if err := s.Close(); err != nil {
			t.Fatalf("Close after a refused write: %v", err)
		}
		// 2. Another process fills the disk while a store is open: reads
		// work, writes and Close are refused, Close works once space is
		// back. (A fresh store, so no flush or compaction of Badger's is
		// running when the disk fills: see docs/storage.md.)
		os.Remove(ballast)
		s2, err := Create(ctx, filepath.Join(mnt, "store2"), diskOpts())
		if err != nil {
			t.Fatal(err)
		}
		m := writeN(t, s2, 0, 4)
		filler := filepath.Join(mnt, "filler")
		fillDisk(t, filler, 0)
		checkRecords(t, s2, m)
		wantNoSpaceWrite(t, s2, m)
		if err := s2.Close(); !errors.Is(err, ErrNoSpace) {
			t.Fatalf("Close on a full disk: %v, want ErrNoSpace", err)
		}
		if _, _, err := s2.Load(ctx, "c", "r0"); !errors.Is(err, ErrClosed) {
			t.Fatalf("Load after a deferred Close: %v, want ErrClosed", err)
		}
		os.Remove(filler)
		if err := s2.Close(); err != nil {
			t.Fatalf("Close after freeing space: %v", err)
		}
		if err := os.RemoveAll(filepath.Join(mnt, "store2")); err != nil {
			t.Fatal(err)
		}
		// 3. The store opens read-write and fills up again; the process
		// ends without closing it: the write-ahead log holds the last
		// writes. (The parent then fills the disk.)
		s, err = Open(ctx, dir, diskOpts())
		if err != nil {
			t.Fatal(err)
		}
		n2 := writeUntilFull(t, s, n)
		fmt.Printf("ack %d\n", n2) // the highest count, whatever printed last
		if n2 == n {
			t.Fatal("no write accepted after freeing space")
		}
	case "2":
		n, _ := strconv.Atoi(os.Getenv(diskAckedEnv))
		// 5. Open on a full disk, after an unclean stop: read-only, the
		// logs replayed, every acknowledged record there.
		s, err := Open(ctx, dir, diskOpts())
		if err != nil {
			t.Fatalf("Open on a full disk: %v", err)
		}
		checkRecords(t, s, n)
		wantNoSpaceWrite(t, s, n)
		// 6. Space freed: writes work again without reopening, nothing
		// lost, also after reopening.
		for _, f := range []string{"filler", "ballast-fixed"} {
			if err := os.Remove(filepath.Join(mnt, f)); err != nil {
				t.Fatal(err)
			}
		}
		n = writeN(t, s, n, 4)
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		s, err = Open(ctx, dir, diskOpts())
		if err != nil {
			t.Fatal(err)
		}
		checkRecords(t, s, n)
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	default:
		t.Fatalf("unknown phase %q", phase)
	}
}

// runDiskPhase runs TestDiskFullPhase in a child and returns the highest
// "ack N" it printed. The child must exit cleanly: a SIGBUS would show here
// as "signal: bus error".
func runDiskPhase(t *testing.T, phase, mnt string, acked int) int {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestDiskFullPhase$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), diskPhaseEnv+"="+phase, diskDirEnv+"="+mnt, diskAckedEnv+"="+strconv.Itoa(acked))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var lines []string
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		l := sc.Text()
		if v, ok := strings.CutPrefix(l, "ack "); ok {
			acked, _ = strconv.Atoi(v)
			continue
		}
		lines = append(lines, l)
	}
	err = cmd.Wait()
	if err != nil || !strings.Contains(strings.Join(lines, "\n"), "--- PASS: TestDiskFullPhase") {
		tail := stderr.String()
		if len(tail) > 3000 {
			tail = tail[:3000]
		}
		t.Fatalf("phase %s child: %v\nstdout:\n%s\nstderr:\n%s", phase, err, strings.Join(lines, "\n"), tail)
	}
	for _, l := range lines {
		if strings.Contains(l, "write refused") {
			t.Logf("phase %s: %s", phase, strings.TrimSpace(l))
		}
	}
	return acked
}

// TestDiskFull: on a 40 MB tmpfs, writes until the disk is full fail with
// ErrNoSpace and never crash; reads keep working while it is full, also
// after reopening a store that was not closed cleanly; once space is freed
// writes work again and every acknowledged write is there.
func TestDiskFull(t *testing.T) {
	if testing.Short() {
		t.Skip("subprocess disk-full test")
	}
	mnt := mountTmpfs(t, 40)
	acked := runDiskPhase(t, "1", mnt, 0)
	t.Logf("phase 1 acknowledged %d records", acked)
	if acked == 0 {
		t.Fatal("phase 1 acknowledged nothing")
	}
	// Fill the disk while no store is open (a Badger compaction running
	// while another process takes the last blocks can still fault: see
	// docs/storage.md).
	fillDisk(t, filepath.Join(mnt, "filler"), 0)
	runDiskPhase(t, "2", mnt, acked)
}

// withFree makes the store see free bytes on every file system until the
// test ends (statFree is a package variable: tests using it must not run
// in parallel).
func withFree(t *testing.T, free *int64) {
	t.Helper()
	old := statFree
	statFree = func(string) (int64, error) { return *free, nil }
	t.Cleanup(func() { statFree = old })
}

// TestNoSpaceRules checks each space rule with a simulated free-space
// figure: every kind of write refused with ErrNoSpace below the reserve and
// nothing written, a read-only open below Reserve, a Close deferred until
// there is room to flush, and writes working again once there is.
func TestNoSpaceRules(t *testing.T) {
	ctx := context.Background()
	o := diskOpts()
	free := int64(1 << 40)
	withFree(t, &free)

	dir := t.TempDir()
	free = Reserve(o) - 1
	if _, err := Create(ctx, dir, o); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("Create below the reserve: %v", err)
	}
	free = 1 << 40
	s, err := Create(ctx, dir, o)
	if err != nil {
		t.Fatal(err)
	}
	mustWrite(t, s, newDoc("c", "r0").set(t, "n", "0"))

	free = Reserve(o) // enough to open, not enough for a write
	refused := map[string]error{}
	_, refused["Write"] = s.Write(ctx, Batch{Records: []RecordWrite{newDoc("c", "r1").set(t, "n", "1")}})
	refused["Slots.Put"] = s.Slots("ns").Put(ctx, "k", []byte("v"))
	_, refused["Append"] = s.Append(ctx, "log", []byte("v"))
	for name, err := range refused {
		if !errors.Is(err, ErrNoSpace) {
			t.Errorf("%s below the reserve: %v, want ErrNoSpace", name, err)
		}
	}
	if _, _, err := s.Load(ctx, "c", "r1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a refused write left r1: %v", err)
	}
	free = 0
	if err := s.Close(); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("Close with no space: %v", err)
	}
	free = 1 << 40
	if err := s.Close(); err != nil {
		t.Fatalf("Close again: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("third Close: %v", err)
	}

	// Read-only open: reads work, every write is refused.
	free = Reserve(o) - 1
	s, err = Open(ctx, dir, o)
	if err != nil {
		t.Fatal(err)
	}
	if !s.readOnly.Load() {
		t.Fatal("opened read-write below the reserve")
	}
	if got := field(t, s, "c", "r0", "n"); got != "0" {
		t.Fatalf("r0 = %q", got)
	}
	for name, err := range map[string]error{
		"Write": func() error {
			_, err := s.Write(ctx, Batch{Records: []RecordWrite{newDoc("c", "r1").set(t, "n", "1")}})
			return err
		}(),
		"Slots.Put":        s.Slots("ns").Put(ctx, "k", []byte("v")),
		"ChangePassphrase": s.ChangePassphrase(ctx, Options{Passphrase: []byte("new"), KDF: TestKDF()}),
		"RotateKey":        s.RotateKey(ctx, nil),
	} {
		if !errors.Is(err, ErrNoSpace) {
			t.Errorf("%s on a read-only store: %v, want ErrNoSpace", name, err)
		}
	}
	// Inside an operation (a List callback) a write cannot reopen Badger:
	// it stays refused even with space.
	free = 1 << 40
	err = s.List(ctx, "c", func(RecordMeta) error {
		_, err := s.Write(ctx, Batch{Records: []RecordWrite{newDoc("c", "r1").set(t, "n", "1")}})
		return err
	})
	if !errors.Is(err, ErrNoSpace) {
		t.Fatalf("write inside List on a read-only store: %v, want ErrNoSpace", err)
	}
	// Space is back: the next write reopens Badger read-write.
	mustWrite(t, s, newDoc("c", "r1").set(t, "n", "1"))
	if s.readOnly.Load() {
		t.Fatal("still read-only after a write")
	}
	if got := field(t, s, "c", "r0", "n") + field(t, s, "c", "r1", "n"); got != "01" {
		t.Fatalf("r0, r1 = %q", got)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(ctx, dir, o) // the passphrase did not change
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got := field(t, s, "c", "r1", "n"); got != "1" {
		t.Fatalf("r1 after reopening = %q", got)
	}
}

// enospcWriter fails like a file on a full disk.
type enospcWriter struct{}

func (enospcWriter) Write([]byte) (int, error) {
	return 0, &os.PathError{Op: "write", Path: "backup.age", Err: syscall.ENOSPC}
}

func TestExportNoSpace(t *testing.T) {
	s := newMemStore(t)
	mustWrite(t, s, newDoc("c", "r0").set(t, "n", "0"))
	_, err := s.Export(context.Background(), enospcWriter{}, ExportOptions{Passphrase: []byte("p"), ScryptWorkFactor: 10})
	if !errors.Is(err, ErrNoSpace) {
		t.Fatalf("Export to a full disk: %v, want ErrNoSpace", err)
	}
}

func TestNoSpaceMapping(t *testing.T) {
	for _, err := range []error{
		syscall.ENOSPC,
		&os.PathError{Op: "write", Path: "x", Err: syscall.EDQUOT},
		fmt.Errorf("While opening memtable: %v", syscall.ENOSPC), // Badger's %v
	} {
		if got := mapBadgerErr("op", err); !errors.Is(got, ErrNoSpace) {
			t.Errorf("mapBadgerErr(%v) = %v", err, got)
		}
		if got := mapByMessage("open", err, openMarks); !errors.Is(got, ErrNoSpace) {
			t.Errorf("mapByMessage(%v) = %v", err, got)
		}
	}
}

// TestReadOnlyReopenConcurrent: readers keep reading while a write reopens
// a read-only store read-write (run with -race: Badger is swapped under
// them).
func TestReadOnlyReopenConcurrent(t *testing.T) {
	ctx := context.Background()
	o := diskOpts()
	free := int64(1 << 40)
	withFree(t, &free)
	dir := t.TempDir()
	s, err := Create(ctx, dir, o)
	if err != nil {
		t.Fatal(err)
	}
	mustWrite(t, s, newDoc("c", "r0").set(t, "n", "0"))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	free = 0
	if s, err = Open(ctx, dir, o); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	stop := make(chan struct{})
	errs := make(chan error, 4)
	for range 4 {
		go func() {
			for {
				select {
				case <-stop:
					errs <- nil
					return
				default:
				}
				if _, _, err := s.Load(ctx, "c", "r0"); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	free = 1 << 40 // read by the writer only: readers never look
	for i := 1; s.readOnly.Load() && i < 1000; i++ {
		_, err := s.Write(ctx, Batch{Records: []RecordWrite{newDoc("c", "r"+strconv.Itoa(i)).set(t, "n", strconv.Itoa(i))}})
		if err != nil && !errors.Is(err, ErrNoSpace) { // refused while readers are in flight
			t.Fatal(err)
		}
	}
	close(stop)
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatalf("reader: %v", err)
		}
	}
	if s.readOnly.Load() {
		t.Fatal("no write found a moment without readers to reopen the store")
	}
}
