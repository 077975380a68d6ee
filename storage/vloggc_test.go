package storage

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// gcOpts: values of 1 KiB or more in the value log (the default the
// store is moving to), 1 MiB value-log files, the ticker off (tests drive
// runValueLogGC).
func gcOpts() Options {
	o := testOpts()
	o.Sizes = Sizes{MemTableSize: 1 << 20, ValueLogFileSize: 1 << 20, ValueThreshold: 1 << 10, ValueLogGCInterval: -1}
	o.NoSync = true // the crash test syncs; the rest test what a round keeps
	return o
}

// gcDoc is version v of record i's document: docLen incompressible bytes.
func gcDoc(i, v, docLen int) []byte {
	var seed [32]byte
	binary.LittleEndian.PutUint64(seed[:], uint64(i))
	binary.LittleEndian.PutUint64(seed[8:], uint64(v))
	b := make([]byte, docLen)
	rand.NewChaCha8(seed).Read(b)
	return b
}

// gcRewrite writes version v of records 0..n-1, in batches of 50: each
// write's Changes outweigh the stored snapshot, so the record is compacted
// to the new snapshot and its previous chunk deleted (garbage).
func gcRewrite(t testing.TB, s *Store, n, v, docLen int) {
	t.Helper()
	for b := 0; b < n; b += 50 {
		var ws []RecordWrite
		for i := b; i < min(b+50, n); i++ {
			doc := gcDoc(i, v, docLen)
			ws = append(ws, RecordWrite{Collection: "c", ID: fmt.Sprintf("r%05d", i),
				Changes:  append(bytes.Clone(doc), 0), // one byte more than the snapshot
				Snapshot: func() ([]byte, error) { return doc, nil }})
		}
		if _, err := s.Write(context.Background(), Batch{Records: ws}); err != nil {
			t.Fatalf("write version %d: %v", v, err)
		}
	}
}

// gcCheck fails unless every record holds version v.
func gcCheck(t testing.TB, s *Store, n, v, docLen int) {
	t.Helper()
	for i := 0; i < n; i++ {
		got, _, err := s.Load(context.Background(), "c", fmt.Sprintf("r%05d", i))
		if err != nil || !bytes.Equal(got, gcDoc(i, v, docLen)) {
			t.Fatalf("record %d: %d bytes, %v; want version %d", i, len(got), err, v)
		}
	}
}

// vlogDisk returns the bytes allocated to the store's *.vlog files and
// how many there are.
func vlogDisk(t testing.TB, dir string) (int64, int) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	files := 0
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), vlogExt) {
			continue
		}
		fi, err := os.Stat(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		files++
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			n += st.Blocks * 512
		} else {
			n += fi.Size()
		}
	}
	return n, files
}

// gcUntilDone runs rounds until two in a row rewrite nothing (at most 20);
// it returns the files rewritten. Each round is forced (gcForce), so it
// runs whatever the garbage counted since the last: a round can end
// before Badger's discard statistics count a file's garbage (seen once
// in CI under two parallel race runs: 20 MiB left after the rounds the
// garbage count allowed), which the next round's compaction then counts.
func gcUntilDone(t testing.TB, s *Store) int {
	t.Helper()
	total, idle := 0, 0
	for range 20 {
		s.gcForce.Store(true)
		r := s.runValueLogGC(vlogGCMaxRewrites)
		if r.err != nil || r.skipped != nil {
			t.Fatalf("GC round: %+v", r)
		}
		total += r.rewrites
		if idle = idle + 1; r.rewrites > 0 {
			idle = 0
		}
		if idle == 2 {
			break
		}
	}
	s.gcForce.Store(false)
	return total
}

// gcLive is a bound on the value-log bytes n live documents of docLen
// take: the document, its envelope, key and Badger's entry header.
func gcLive(n, docLen int) int64 { return int64(n) * int64(docLen+256) }

// gcBound is what the value log may hold after the GC: the live values
// twice (a file is rewritten once at least half of it is garbage) and two
// files (the one being written and one below the ratio).
func gcBound(live int64) int64 { return 2*live + 2*(1<<20) }

// TestValueLogGCReclaims: 300 records of 3 KiB rewritten 50 times leave
// ~45 MiB of value log for ~1 MiB of live documents; without the GC it
// stays there (the first check fails with runValueLogGC a no-op). The GC
// takes it under twice the live data plus two files, and every record, in
// this open and the next, holds its last version.
func TestValueLogGCReclaims(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := Create(ctx, dir, gcOpts())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const n, docLen, versions = 300, 3 << 10, 50
	for v := 0; v < versions; v++ {
		gcRewrite(t, s, n, v, docLen)
	}
	before, files := vlogDisk(t, dir)
	rewrites := gcUntilDone(t, s)
	after, filesAfter := vlogDisk(t, dir)
	t.Logf("value log: %d bytes in %d files, after GC %d bytes in %d files (%d rewrites, %d compactions); live <= %d",
		before, files, after, filesAfter, rewrites, s.gcCompactions.Load(), gcLive(n, docLen))
	if bound := gcBound(gcLive(n, docLen)); after > bound {
		t.Fatalf("value log holds %d bytes after GC, more than %d (2 x live + 2 files)", after, bound)
	}
	if before < 10*gcLive(n, docLen) {
		t.Fatalf("test wrote too little garbage: %d bytes of value log", before)
	}
	gcCheck(t, s, n, versions-1, docLen)
	s = reopenWith(t, s, dir, gcOpts())
	gcCheck(t, s, n, versions-1, docLen)
}

// reopenWith closes s and opens dir with o.
func reopenWith(t *testing.T, s *Store, dir string, o Options) *Store {
	t.Helper()
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	s2, err := Open(context.Background(), dir, o)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s2.Close() })
	return s2
}

// gcStore is a store in a new directory holding n records of docLen bytes
// rewritten versions times: mostly garbage in the value log, with enough
// writes behind it (about 15,000 records, five flushes of 1 MiB memtables)
// for Badger to have compacted level 0 once.
func gcStore(t *testing.T, o Options, n, docLen, versions int) (*Store, string) {
	t.Helper()
	dir := t.TempDir()
	s, err := Create(context.Background(), dir, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	for v := 0; v < versions; v++ {
		gcRewrite(t, s, n, v, docLen)
	}
	return s, dir
}

// TestValueLogGCTicker: the store's own goroutine, every
// ValueLogGCInterval, takes the value log down to the same bound; the
// test waits on the rounds it reports (gcHook), not on time.
func TestValueLogGCTicker(t *testing.T) {
	o := gcOpts()
	o.ValueLogGCInterval = 5 * time.Millisecond
	const n, docLen, versions = 300, 3 << 10, 50
	rounds := make(chan vlogGCRound, 1)
	hook := func(r vlogGCRound) {
		select {
		case rounds <- r:
		default:
		}
	}
	s, dir := gcStore(t, o, n, docLen, versions)
	s.gcHook.Store(&hook)
	bound := gcBound(gcLive(n, docLen))
	deadline := time.After(2 * time.Minute) // a failure guard, not a wait
	for {
		var r vlogGCRound
		select {
		case r = <-rounds:
		case <-deadline:
			b, _ := vlogDisk(t, dir)
			t.Fatalf("the ticker's rounds left %d bytes of value log (bound %d), %d rewrites", b, bound, s.gcRewrites.Load())
		}
		if r.err != nil || r.skipped != nil {
			t.Fatalf("round: %+v", r)
		}
		if b, _ := vlogDisk(t, dir); r.rewrites == 0 && !r.compacted && b <= bound {
			// The round found nothing to do and the value log is small.
			break
		}
	}
	if s.gcRewrites.Load() == 0 {
		t.Fatal("the ticker rewrote nothing")
	}
	gcCheck(t, s, n, versions-1, docLen)
}

// TestValueLogGCCloseDuringRound: Close, called while a round is about to
// rewrite, lets that one rewrite finish (Badger's Close must not race it),
// then the round stops before the next; Close returns nil, the ticker's
// goroutine is gone and later rounds are refused.
func TestValueLogGCCloseDuringRound(t *testing.T) {
	g0 := runtime.NumGoroutine()
	o := gcOpts()
	o.ValueLogGCInterval = time.Hour // the goroutine exists, Close must end it
	s, dir := gcStore(t, o, 300, 3<<10, 50)
	started, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	step := func() { once.Do(func() { close(started); <-release }) }
	s.gcStep.Store(&step)
	res := make(chan vlogGCRound)
	go func() { res <- s.runValueLogGC(vlogGCMaxRewrites) }()
	<-started
	closed := make(chan error)
	go func() { closed <- s.Close() }()
	<-s.closing // Close has begun and waits for the round
	close(release)
	r := <-res
	if err := <-closed; err != nil {
		t.Fatalf("Close: %v", err)
	}
	if r.err != nil || r.rewrites != 1 {
		t.Fatalf("round cut by Close: %+v, want the one rewrite in progress and no more", r)
	}
	if r := s.runValueLogGC(vlogGCMaxRewrites); !errors.Is(r.skipped, ErrClosed) {
		t.Fatalf("round after Close: %+v", r)
	}
	// Badger's and the store's goroutines end with Close; a leak would
	// keep the count above where it started.
	for deadline := time.Now().Add(10 * time.Second); runtime.NumGoroutine() > g0; {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines after Close, %d before:\n%s", runtime.NumGoroutine(), g0, buf[:runtime.Stack(buf, true)])
		}
		runtime.Gosched()
	}
	s2, err := Open(context.Background(), dir, gcOpts())
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	gcCheck(t, s2, 300, 49, 3<<10)
}

// TestValueLogGCSkipsWithoutSpace: with less free space than a round
// needs (a compaction of the tree: its size, plus gcReserve for a rewrite)
// it skips with ErrNoSpace and changes nothing; when the space goes while
// it rewrites, it stops before the next rewrite. With room it finishes.
// The store stays readable and writable throughout.
func TestValueLogGCSkipsWithoutSpace(t *testing.T) {
	free := int64(1 << 40)
	withFree(t, &free)
	const n, docLen, versions = 300, 3 << 10, 50
	s, dir := gcStore(t, gcOpts(), n, docLen, versions)
	before, _ := vlogDisk(t, dir)

	var lsm int64
	for _, l := range s.db.Levels() {
		lsm += l.Size
	}
	free = s.gcReserve() + lsm - 1
	r := s.runValueLogGC(vlogGCMaxRewrites)
	if !errors.Is(r.skipped, ErrNoSpace) || r.rewrites != 0 || r.compacted {
		t.Fatalf("round below the space it needs: %+v", r)
	}
	if b, _ := vlogDisk(t, dir); b != before {
		t.Fatalf("value log %d bytes after a skipped round, %d before", b, before)
	}
	gcCheck(t, s, n, versions-1, docLen)

	// The space goes during the first rewrite.
	free = 1 << 40
	step := func() { free = 0 }
	s.gcStep.Store(&step)
	r = s.runValueLogGC(vlogGCMaxRewrites)
	if !errors.Is(r.skipped, ErrNoSpace) || r.rewrites != 1 {
		t.Fatalf("round that ran out of space: %+v, want 1 rewrite then ErrNoSpace", r)
	}
	s.gcStep.Store(nil)
	free = 1 << 40
	gcUntilDone(t, s)
	after, _ := vlogDisk(t, dir)
	if bound := gcBound(gcLive(n, docLen)); after > bound {
		t.Fatalf("value log %d bytes once there is room, bound %d", after, bound)
	}
	gcRewrite(t, s, n, versions, docLen)
	gcCheck(t, s, n, versions, docLen)
}

// TestValueLogGCAndKeyRotation: rounds run while a key rotation moves
// every record (they skip: moving old-epoch values the rotation deletes
// next is wasted work) and the rotation completes untouched; afterwards
// the rounds delete every value-log file sealed before the rotation (all
// its values are old-epoch garbage) and the records read back, also after
// a reopen.
func TestValueLogGCAndKeyRotation(t *testing.T) {
	ctx := context.Background()
	const n, docLen, versions = 300, 3 << 10, 50
	s, dir := gcStore(t, gcOpts(), n, docLen, versions)
	gcUntilDone(t, s)
	old := map[string]bool{}
	ents, _ := os.ReadDir(dir)
	newest := ""
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), vlogExt) {
			old[e.Name()] = true
			newest = max(newest, e.Name())
		}
	}
	delete(old, newest) // being written: it takes the rotation's first values too

	stop := make(chan struct{})
	gcDone := make(chan []vlogGCRound)
	go func() {
		var rs []vlogGCRound
		for {
			select {
			case <-stop:
				gcDone <- rs
				return
			default:
				rs = append(rs, s.runValueLogGC(vlogGCMaxRewrites))
			}
		}
	}()
	midRound := make(chan vlogGCRound, 1)
	err := s.RotateKey(ctx, func(done, total int) {
		if len(midRound) == 0 {
			midRound <- s.runValueLogGC(vlogGCMaxRewrites)
		}
	})
	close(stop)
	rs := <-gcDone
	if err != nil {
		t.Fatalf("RotateKey: %v", err)
	}
	if r := <-midRound; !errors.Is(r.skipped, errGCSkipped) || r.rewrites != 0 {
		t.Fatalf("round during rotation: %+v", r)
	}
	for _, r := range rs {
		if r.err != nil {
			t.Fatalf("round beside the rotation: %+v", r)
		}
	}
	gcCheck(t, s, n, versions-1, docLen)

	gcUntilDone(t, s)
	ents, _ = os.ReadDir(dir)
	for _, e := range ents {
		if old[e.Name()] {
			t.Errorf("value-log file %s, sealed before the rotation, is still there", e.Name())
		}
	}
	if b, _ := vlogDisk(t, dir); b > gcBound(gcLive(n, docLen)) {
		t.Errorf("value log %d bytes after rotation and GC, bound %d", b, gcBound(gcLive(n, docLen)))
	}
	gcCheck(t, s, n, versions-1, docLen)
	s = reopenWith(t, s, dir, gcOpts())
	gcCheck(t, s, n, versions-1, docLen)
}

// TestValueLogGCResurrectsNothing: the GC must not bring back a deleted
// key. Badger v4.9.6's rewrite keeps an entry whose exact version the LSM
// tree still holds, without looking for a newer version or tombstone
// (db.get at the entry's version), and writes it back on top of the tree;
// a compaction that then drops the tombstone with the old version at the
// last level leaves the copy above it live. Here that brought back ~50
// deleted chunks (a store's rotation then refused them as "orphaned",
// ErrCorrupt). The store's GC cycles Badger (flushing the memtables) and
// compacts the whole tree before any rewrite, so no stale version is left
// to copy.
func TestValueLogGCResurrectsNothing(t *testing.T) {
	const n, docLen, versions = 300, 3 << 10, 50
	s, _ := gcStore(t, gcOpts(), n, docLen, versions)
	before := rawDump(t, s)
	if r := gcUntilDone(t, s); r == 0 {
		t.Fatal("nothing rewritten")
	}
	after := rawDump(t, s)
	back := 0
	for k := range after {
		if _, ok := before[k]; !ok {
			back++
		}
	}
	if back > 0 || len(after) != len(before) {
		t.Fatalf("%d keys before the GC, %d after, %d of them not there before", len(before), len(after), back)
	}
	gcCheck(t, s, n, versions-1, docLen)
}

const (
	gcCrashRecords = 300
	gcCrashDoc     = 3 << 10
	gcBaseEnv      = "FERRY_GC_BASE"
)

// gcWriteChild rewrites records 0..gcCrashRecords-1 with versions base,
// base+1, ... in batches of 50, printing "ack V B" after batch B of
// version V, while the store's GC goroutine runs a round every
// millisecond; "gc N" reports rounds that rewrote N files.
func gcWriteChild(dir string) int {
	o := gcOpts()
	o.NoSync = false // acknowledged means synced
	o.ValueLogGCInterval = time.Millisecond
	s, err := Open(context.Background(), dir, o)
	if err != nil {
		fmt.Fprintf(os.Stdout, "error %v\n", err)
		return 2
	}
	var mu sync.Mutex
	hook := func(r vlogGCRound) {
		if r.err != nil {
			mu.Lock()
			fmt.Fprintf(os.Stdout, "error gc round: %v\n", r.err)
			mu.Unlock()
		}
		if r.rewrites > 0 {
			mu.Lock()
			fmt.Fprintf(os.Stdout, "gc %d\n", r.rewrites)
			mu.Unlock()
		}
	}
	s.gcHook.Store(&hook)
	base, _ := strconv.Atoi(os.Getenv(gcBaseEnv))
	for v := base; v < base+10000; v++ {
		for b := 0; b < gcCrashRecords/50; b++ {
			var ws []RecordWrite
			for i := b * 50; i < (b+1)*50; i++ {
				doc := gcDoc(i, v, gcCrashDoc)
				ws = append(ws, RecordWrite{Collection: "c", ID: fmt.Sprintf("r%05d", i),
					Changes: append(bytes.Clone(doc), 0), Snapshot: func() ([]byte, error) { return doc, nil }})
			}
			if _, err := s.Write(context.Background(), Batch{Records: ws}); err != nil {
				mu.Lock()
				fmt.Fprintf(os.Stdout, "error %v\n", err)
				mu.Unlock()
				return 2
			}
			mu.Lock()
			fmt.Fprintf(os.Stdout, "ack %d %d\n", v, b)
			mu.Unlock()
		}
	}
	return 0
}

// TestCrashDuringValueLogGC: a child rewrites records while the GC runs
// continuously and is killed (SIGKILL) at a random acknowledged batch,
// three times; after each kill the store opens, every record holds its
// last acknowledged version (or the one in flight), a GC on the recovered
// store works, and the records read the same after it.
func TestCrashDuringValueLogGC(t *testing.T) {
	if testing.Short() {
		t.Skip("subprocess crash test")
	}
	ctx := context.Background()
	rng := crashRand(t)
	dir := t.TempDir()
	s, err := Create(ctx, dir, gcOpts())
	if err != nil {
		t.Fatal(err)
	}
	cur := make([]int, gcCrashRecords) // each record's version
	gcCrashWrite(t, s, cur, 0)
	s.Close()
	gcSeen := 0
	for round := 1; round <= 3; round++ {
		base := round * 1000
		t.Setenv(gcBaseEnv, strconv.Itoa(base))
		n := 100 + rng.IntN(300)
		lines := runUntil(t, "gcwrite", dir, "ack", n)
		acked := make([]int, gcCrashRecords)
		for i := range acked {
			acked[i] = -1
		}
		for _, l := range lines {
			var v, b, g int
			if _, err := fmt.Sscanf(l, "ack %d %d", &v, &b); err == nil {
				for i := b * 50; i < (b+1)*50; i++ {
					acked[i] = max(acked[i], v)
				}
			} else if _, err := fmt.Sscanf(l, "gc %d", &g); err == nil {
				gcSeen += g
			}
		}
		s, err := Open(ctx, dir, gcOpts())
		if err != nil {
			t.Fatalf("round %d: open after kill: %v", round, err)
		}
		check := func(when string) {
			for i := 0; i < gcCrashRecords; i++ {
				got, _, err := s.Load(ctx, "c", fmt.Sprintf("r%05d", i))
				if err != nil {
					t.Fatalf("round %d %s: record %d: %v", round, when, i, err)
				}
				ok := []int{cur[i], base} // nothing acknowledged: the old one, or the first in flight
				if acked[i] >= 0 {
					ok = []int{acked[i], acked[i] + 1}
				}
				found := false
				for _, v := range ok {
					if bytes.Equal(got, gcDoc(i, v, gcCrashDoc)) {
						cur[i], found = v, true
						break
					}
				}
				if !found {
					t.Fatalf("round %d %s: record %d holds none of versions %v (acknowledged %d)", round, when, i, ok, acked[i])
				}
			}
		}
		check("after kill")
		gcUntilDone(t, s)
		check("after GC")
		t.Logf("round %d: killed after %d batches; GC rewrites seen so far %d", round, n, gcSeen)
		s.Close()
	}
	if gcSeen == 0 {
		t.Fatal("the children's GC never rewrote a file: the test proved nothing")
	}
}

// gcCrashWrite writes version v of every crash-test record.
func gcCrashWrite(t *testing.T, s *Store, cur []int, v int) {
	t.Helper()
	gcRewrite(t, s, gcCrashRecords, v, gcCrashDoc)
	for i := range cur {
		cur[i] = v
	}
}

// BenchmarkValueLogGC measures what the GC takes back and what it costs:
// FERRY_GC_RECORDS records (default 10,000) of 3 KiB documents (values
// of 1 KiB or more in the value log, DefaultSizes otherwise), each
// rewritten FERRY_GC_REWRITES times (default 5) with the GC off; then
// rounds run until one finds nothing. Reported: the store's bytes on disk
// (and the value log's) before and after, the rounds' CPU (user+system of
// the process, Badger's goroutines included) and wall time.
//
//	go test -run '^$' -bench ValueLogGC -benchtime 1x ./storage/
func BenchmarkValueLogGC(b *testing.B) {
	n := envInt("FERRY_GC_RECORDS", 10000)
	rewrites := envInt("FERRY_GC_REWRITES", 5)
	for it := 0; it < b.N; it++ {
		b.StopTimer()
		dir := b.TempDir()
		o := testOpts()
		o.Sizes = Sizes{ValueThreshold: 1 << 10, ValueLogGCInterval: -1}
		s, err := Create(context.Background(), dir, o)
		if err != nil {
			b.Fatal(err)
		}
		for v := 0; v <= rewrites; v++ {
			gcRewrite(b, s, n, v, 3<<10)
		}
		vlog0, _ := vlogDisk(b, dir)
		disk0 := dirDisk(b, dir)
		cpu0, t0 := cpuTime(), time.Now()
		b.StartTimer()
		rounds := 0
		for {
			r := s.runValueLogGC(vlogGCMaxRewrites)
			if r.err != nil {
				b.Fatal(r.err)
			}
			rounds++
			if r.rewrites == 0 && !r.compacted {
				break
			}
		}
		b.StopTimer()
		cpu, wall := cpuTime()-cpu0, time.Since(t0)
		vlog1, _ := vlogDisk(b, dir)
		disk1 := dirDisk(b, dir)
		b.ReportMetric(float64(disk0)/(1<<20), "MiB-before")
		b.ReportMetric(float64(disk1)/(1<<20), "MiB-after")
		b.ReportMetric(float64(vlog0)/(1<<20), "vlogMiB-before")
		b.ReportMetric(float64(vlog1)/(1<<20), "vlogMiB-after")
		b.ReportMetric(cpu.Seconds(), "CPU-s")
		b.ReportMetric(wall.Seconds(), "wall-s")
		b.ReportMetric(float64(s.gcRewrites.Load()), "files-rewritten")
		b.ReportMetric(float64(rounds), "rounds")
		gcCheck(b, s, n, rewrites, 3<<10)
		s.Close()
	}
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// dirDisk returns the bytes allocated to the files of dir.
func dirDisk(t testing.TB, dir string) int64 {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, e := range ents {
		fi, err := e.Info()
		if err != nil {
			continue
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			n += st.Blocks * 512
		} else {
			n += fi.Size()
		}
	}
	return n
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestValueLogGCInterval: the option's range (negative: off; positive:
// [1 ms, 24 h]), and which stores run no GC goroutine.
func TestValueLogGCInterval(t *testing.T) {
	for _, c := range []struct {
		iv time.Duration
		ok bool
	}{{0, true}, {-1, true}, {-time.Hour, true}, {time.Millisecond, true}, {24 * time.Hour, true},
		{time.Microsecond, false}, {24*time.Hour + 1, false}} {
		o := testOpts()
		o.ValueLogGCInterval = c.iv
		err := o.validate()
		if (err == nil) != c.ok || (err != nil && !errors.Is(err, ErrInvalid)) {
			t.Errorf("ValueLogGCInterval %v: %v", c.iv, err)
		}
	}
	if DefaultSizes().ValueLogGCInterval != time.Minute {
		t.Errorf("default interval %v", DefaultSizes().ValueLogGCInterval)
	}
	m := newMemStore(t)
	if r := m.runValueLogGC(1); !errors.Is(r.skipped, errGCSkipped) {
		t.Errorf("in-memory store: %+v", r)
	}
	o := gcOpts()
	o.ValueLogGCInterval = time.Hour
	s, err := Create(context.Background(), t.TempDir(), o)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	s.gcDone.Wait() // Close ended it
}

// TestValueLogGCReadOnlyAndYoungStores: a store opened read-only for
// lack of space skips its rounds; a store whose tree is still all in
// level 0 (a few thousand writes) gets its memtables flushed and nothing
// rewritten (a rewrite without the tree compacted below level 0 could
// bring deleted keys back), and no key changes.
func TestValueLogGCReadOnlyAndYoungStores(t *testing.T) {
	ctx := context.Background()
	const n, docLen = 300, 3 << 10
	s, dir := gcStore(t, gcOpts(), n, docLen, 5)
	for _, l := range s.db.Levels()[1:] {
		if l.NumTables > 0 {
			t.Fatalf("tree reaches level %d: not a young store", l.Level)
		}
	}
	before := rawDump(t, s)
	r := s.runValueLogGC(vlogGCMaxRewrites)
	if r.rewrites != 0 || !r.finished || !errors.Is(r.skipped, errGCSkipped) || r.err != nil {
		t.Fatalf("round on a young store: %+v", r)
	}
	if after := rawDump(t, s); len(after) != len(before) {
		t.Fatalf("%d keys before, %d after", len(before), len(after))
	}
	gcCheck(t, s, n, 4, docLen)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	free := int64(0)
	withFree(t, &free)
	s, err := Open(ctx, dir, gcOpts())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if !s.readOnly.Load() {
		t.Fatal("store not read-only")
	}
	if r := s.runValueLogGC(vlogGCMaxRewrites); !errors.Is(r.skipped, errGCSkipped) || r.rewrites != 0 {
		t.Fatalf("round on a read-only store: %+v", r)
	}
	gcCheck(t, s, n, 4, docLen)
}

// TestValueLogGCBesideReadsAndWrites: with the GC's goroutine running a
// round every millisecond, a writer rewriting every record and readers
// loading them see no error, and every load returns a whole version of
// the record (never one a later write replaced, after that write
// returned).
func TestValueLogGCBesideReadsAndWrites(t *testing.T) {
	ctx := context.Background()
	o := gcOpts()
	o.ValueLogGCInterval = time.Millisecond
	const n, docLen, versions = 300, 3 << 10, 60
	s, _ := gcStore(t, o, n, docLen, 1)
	var done atomic.Int64 // versions written completely
	stop := make(chan struct{})
	errs := make(chan error, 4)
	var wg sync.WaitGroup
	for r := 0; r < 2; r++ {
		wg.Add(1)
		go func(r int) {
			defer wg.Done()
			for k := 0; ; k++ {
				select {
				case <-stop:
					return
				default:
				}
				i := (k*7 + r*131) % n
				low := int(done.Load()) // this version or a later one must be there
				got, _, err := s.Load(ctx, "c", fmt.Sprintf("r%05d", i))
				if err != nil {
					errs <- fmt.Errorf("load %d: %w", i, err)
					return
				}
				ok := false
				for v := max(low, 0); v < versions && !ok; v++ {
					ok = bytes.Equal(got, gcDoc(i, v, docLen))
				}
				if !ok {
					errs <- fmt.Errorf("record %d: not a version >= %d", i, low)
					return
				}
			}
		}(r)
	}
	for v := 1; v < versions; v++ {
		gcRewrite(t, s, n, v, docLen)
		done.Store(int64(v))
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if s.gcRewrites.Load() == 0 {
		t.Fatal("the GC rewrote nothing beside the writes")
	}
	t.Logf("%d files rewritten, %d compactions", s.gcRewrites.Load(), s.gcCompactions.Load())
	gcCheck(t, s, n, versions-1, docLen)
}

// TestValueLogGCOnANearlyFullDisk (root: a real tmpfs): a round with
// less free space than it needs skips, and one with just what it needs
// runs its flush, compaction and rewrites without Badger meeting a full
// disk (which would fault and kill the process); every record reads back,
// also after a reopen.
func TestValueLogGCOnANearlyFullDisk(t *testing.T) {
	mnt := mountTmpfs(t, 96)
	dir := filepath.Join(mnt, "store")
	s, err := Create(context.Background(), dir, gcOpts())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const n, docLen, versions = 300, 3 << 10, 40
	for v := 0; v < versions; v++ {
		gcRewrite(t, s, n, v, docLen)
	}
	var lsm int64
	for _, l := range s.db.Levels() {
		lsm += l.Size
	}
	need := s.gcReserve() + lsm
	filler := filepath.Join(mnt, "filler")
	fillDisk(t, filler, need-(1<<20))
	if r := s.runValueLogGC(vlogGCMaxRewrites); !errors.Is(r.skipped, ErrNoSpace) || r.rewrites != 0 || r.compacted {
		t.Fatalf("round short of space: %+v", r)
	}
	gcCheck(t, s, n, versions-1, docLen)
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	fillDisk(t, filler, need+(64<<10))
	before, _ := vlogDisk(t, dir)
	r := s.runValueLogGC(vlogGCMaxRewrites)
	after, _ := vlogDisk(t, dir)
	t.Logf("round with %d bytes free: %+v; value log %d -> %d bytes", need, r, before, after)
	if r.err != nil || !r.compacted || r.rewrites == 0 {
		t.Fatalf("round with the space it needs: %+v", r)
	}
	gcCheck(t, s, n, versions-1, docLen)
	s = reopenWith(t, s, dir, gcOpts())
	gcCheck(t, s, n, versions-1, docLen)
}

// TestValueLogGCOnlyForGarbage: a round runs (flush, compaction of the
// tree, rewrites) only once this process's writes have deleted at least
// two value-log files' worth of values: an insert-only store (an initial
// sync) never pays for one however much its value log grows; the same
// records rewritten once then make a round run and reclaim.
func TestValueLogGCOnlyForGarbage(t *testing.T) {
	const n, docLen = 1500, 3 << 10
	o := gcOpts()
	s, dir := gcStore(t, o, n, docLen, 1) // ~4.5 MiB of value log, no garbage
	before, _ := vlogDisk(t, dir)
	if before < 4*o.Sizes.ValueLogFileSize {
		t.Fatalf("value log %d bytes: the test needs several files", before)
	}
	if r := s.runValueLogGC(vlogGCMaxRewrites); r.compacted || r.rewrites != 0 || r.err != nil {
		t.Fatalf("round on an insert-only store: %+v", r)
	}
	if g := s.gcGarbage.Load(); g != 0 {
		t.Fatalf("insert-only writes counted %d bytes of garbage", g)
	}
	gcRewrite(t, s, n, 1, docLen) // every record's chunk replaced: garbage
	if g := s.gcGarbage.Load(); g < int64(n)*docLen {
		t.Fatalf("rewriting %d records of %d bytes counted %d bytes of garbage", n, docLen, g)
	}
	if r := s.runValueLogGC(vlogGCMaxRewrites); !r.compacted || r.err != nil {
		t.Fatalf("round after the rewrite: %+v", r)
	}
	gcCheck(t, s, n, 1, docLen)
}
