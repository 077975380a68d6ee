package benchmarks

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/ferrysync/ferry/replica"
	"go.etcd.io/bbolt"
)

// The open and memory benchmarks share one fixture per process: a replica
// holding N records (FERRY_BENCH_N, 100,000 by default) and the same
// records as plain Automerge documents in raw Badger and in bbolt. It is
// built on first use, under a temporary directory removed when the test
// binary exits (TestMain), with NoSync (setup only: 100k fsynced
// transactions would take minutes; the stores are closed, which flushes
// them, before anything is measured).

type openFixture struct {
	n                  int
	dir                string
	ferry, raw, boltDB string // store directories
	err                error
}

var (
	fixtureOnce sync.Once
	fixture     openFixture
	fixtureRoot string // removed by TestMain
)

func openFixtureN(tb testing.TB) int { return envInt(tb, "FERRY_BENCH_N", 100_000, 10) }

func getFixture(tb testing.TB) *openFixture {
	tb.Helper()
	n := openFixtureN(tb)
	fixtureOnce.Do(func() { fixture = buildFixture(tb, n) })
	if fixture.err != nil {
		tb.Fatal(fixture.err)
	}
	return &fixture
}

func buildFixture(tb testing.TB, n int) (f openFixture) {
	f.n = n
	root, err := os.MkdirTemp("", "ferry-bench-open-")
	if err != nil {
		f.err = err
		return f
	}
	fixtureRoot = root
	f.dir, f.ferry, f.raw, f.boltDB = root, root+"/ferry", root+"/badger", root+"/bolt"
	for _, d := range []string{f.raw, f.boltDB} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			f.err = err
			return f
		}
	}
	start := time.Now()
	ctx := context.Background()
	r, err := replica.Open(ctx, f.ferry, benchReplicaOpts(true))
	if err != nil {
		f.err = err
		return f
	}
	// Both cores: the replica is safe for concurrent use.
	var (
		wg   sync.WaitGroup
		next atomic.Int64
		errs = make([]error, runtime.GOMAXPROCS(0))
	)
	for w := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := r.Put(ctx, syncColl, syncID(i), syncFields(i)); err != nil {
					errs[w] = err
					return
				}
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			r.Close()
			f.err = err
			return f
		}
	}
	if err := r.Close(); err != nil {
		f.err = err
		return f
	}
	ferryT := time.Since(start)

	start = time.Now()
	bg := openRawBadger(tb, f.raw, true)
	bo := openBolt(tb, f.boltDB, true)
	wb := bg.NewWriteBatch()
	const perTx = 10_000
	for lo := 0; lo < n && f.err == nil; lo += perTx {
		f.err = bo.Update(func(tx *bbolt.Tx) error {
			bk := tx.Bucket(boltBucket)
			for i := lo; i < min(lo+perTx, n); i++ {
				v := plainBytes(tb, i)
				if err := wb.Set(rawKey(i), v); err != nil {
					return err
				}
				if err := bk.Put(rawKey(i), v); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if f.err == nil {
		f.err = wb.Flush()
	}
	if err := bg.Close(); f.err == nil {
		f.err = err
	}
	if err := bo.Close(); f.err == nil {
		f.err = err
	}
	tb.Logf("fixture: %d records: replica (NoSync, %d writers) %v, raw badger + bbolt %v, in %s",
		n, len(errs), ferryT.Round(time.Millisecond), time.Since(start).Round(time.Millisecond), root)
	return f
}

// BenchmarkColdOpen100k: open a store of N records (a fresh open of
// closed files; the OS page cache is warm: the fixture was just written,
// and nothing here drops caches on a shared machine) and read one record.
// ferry: replica.Open with the cheap test KDF (BenchmarkUnlock measures
// the passphrase), SyncWrites on; then Get of record N/2. Baselines: raw
// Badger and bbolt opened on the same records, then one read + parse.
// The first open of the fixture checks every table in full (and records
// them in the store's verified-table set); it is reported apart, as
// ferry-first-open-ms and ratio-first-vs-badger, beside a raw Badger open
// run right after it. The timed opens check only the tables that
// earlier opens have not (storage/tableset.go), as an application's
// store does at every start but the first after a session that wrote.
func BenchmarkColdOpen100k(b *testing.B) {
	f := getFixture(b)
	ctx := context.Background()
	mid := f.n / 2
	first, firstRaw := firstOpen(b, f)
	var fo, fg, ro, rg, oo, og time.Duration
	b.ResetTimer()
	b.StopTimer()
	for range b.N {
		runtime.GC()
		b.StartTimer()
		t0 := time.Now()
		r, err := replica.Open(ctx, f.ferry, benchReplicaOpts(false))
		if err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		m, err := r.Get(ctx, syncColl, syncID(mid))
		t2 := time.Now()
		b.StopTimer()
		if err != nil || m["qty"] != int64(mid%1000) {
			b.Fatalf("first get: %v %v", m["qty"], err)
		}
		if err := r.Close(); err != nil {
			b.Fatal(err)
		}
		fo += t1.Sub(t0)
		fg += t2.Sub(t1)

		runtime.GC()
		t0 = time.Now()
		bg := openRawBadger(b, f.raw, false)
		t1 = time.Now()
		if m := plainRead(b, badgerGet(b, bg, rawKey(mid))); m["qty"] != int64(mid%1000) {
			b.Fatalf("badger first get: %v", m["qty"])
		}
		t2 = time.Now()
		bg.Close()
		ro += t1.Sub(t0)
		rg += t2.Sub(t1)

		runtime.GC()
		t0 = time.Now()
		bo := openBolt(b, f.boltDB, false)
		t1 = time.Now()
		if m := plainRead(b, boltGet(b, bo, rawKey(mid))); m["qty"] != int64(mid%1000) {
			b.Fatalf("bbolt first get: %v", m["qty"])
		}
		t2 = time.Now()
		bo.Close()
		oo += t1.Sub(t0)
		og += t2.Sub(t1)
	}
	n := time.Duration(b.N)
	b.ReportMetric(ms(fo/n), "ferry-open-ms")
	b.ReportMetric(ms(fg/n), "ferry-first-get-ms")
	b.ReportMetric(ms(ro/n), "badger-open-ms")
	b.ReportMetric(ms(rg/n), "badger-first-get-ms")
	b.ReportMetric(ms(oo/n), "bbolt-open-ms")
	b.ReportMetric(ms(og/n), "bbolt-first-get-ms")
	b.ReportMetric(float64(fo+fg)/float64(ro+rg), "ratio-vs-badger")
	b.ReportMetric(float64(fo+fg)/float64(oo+og), "ratio-vs-bbolt")
	b.ReportMetric(float64(f.n), "records")
	b.ReportMetric(ms(first), "ferry-first-open-ms")
	b.ReportMetric(float64(first)/float64(firstRaw), "ratio-first-vs-badger")
}

// firstOpen opens the fixture's replica once, the first time in this
// process (later calls return the first figures), and a raw Badger on the
// same records right after it.
func firstOpen(b *testing.B, f *openFixture) (ferry, raw time.Duration) {
	firstOpenOnce.Do(func() {
		runtime.GC()
		t0 := time.Now()
		r, err := replica.Open(context.Background(), f.ferry, benchReplicaOpts(false))
		firstOpenTimes[0] = time.Since(t0)
		if err != nil {
			firstOpenErr = err
			return
		}
		firstOpenErr = r.Close()
		runtime.GC()
		t0 = time.Now()
		bg := openRawBadger(b, f.raw, false)
		firstOpenTimes[1] = time.Since(t0)
		bg.Close()
	})
	if firstOpenErr != nil {
		b.Fatal(firstOpenErr)
	}
	return firstOpenTimes[0], firstOpenTimes[1]
}

var (
	firstOpenOnce  sync.Once
	firstOpenTimes [2]time.Duration
	firstOpenErr   error
)

// BenchmarkScanRSS100k: peak resident memory (VmHWM) of a process that
// opens the fixture's store and reads every record: List of the
// collection, then Get of each record in id order. Each run is a child
// process (this test binary re-executed with FERRY_RSS_CHILD set, see
// TestMain), so nothing of the parent's heap counts. Compared with a child
// that only opens the store and reads one record, and with the same two
// on raw Badger (iterate every key, parse each document). automerge-go
// documents hold C memory that only their finalizers free, and the Go
// GC, which does not see that memory, runs late: "ferry-scan-gc" is the
// scan with a runtime.GC() every 1000 records, to show how much of the
// peak is documents waiting for collection.
func BenchmarkScanRSS100k(b *testing.B) {
	if os.Getenv("FERRY_BENCH_TINY") == "1" && raceEnabled {
		b.Skip("subprocess RSS run skipped in the tiny run under -race")
	}
	f := getFixture(b)
	res := map[string]rssResult{}
	b.ResetTimer()
	b.StopTimer()
	for range b.N {
		for _, mode := range []string{"ferry-open", "ferry-scan", "ferry-scan-gc", "badger-open", "badger-scan"} {
			b.StartTimer() // ns/op: the four children's wall time
			r, err := runRSSChild(f, mode)
			b.StopTimer()
			if err != nil {
				b.Fatal(err)
			}
			if strings.Contains(mode, "scan") && r.records != f.n {
				b.Fatalf("%s read %d records, want %d", mode, r.records, f.n)
			}
			p := res[mode]
			p.hwmKB += r.hwmKB
			p.dur += r.dur
			res[mode] = p
		}
	}
	n := float64(b.N)
	for mode, r := range res {
		b.ReportMetric(float64(r.hwmKB)/1024/n, mode+"-MiB")
		if strings.Contains(mode, "scan") {
			b.ReportMetric(r.dur.Seconds()/n, mode+"-s")
		}
	}
	b.ReportMetric(float64(res["ferry-scan"].hwmKB)/float64(res["ferry-open"].hwmKB), "scan/open-ratio")
	b.ReportMetric(float64(res["ferry-scan"].hwmKB)/float64(res["badger-scan"].hwmKB), "ratio-vs-badger")
	b.ReportMetric(res["ferry-scan"].dur.Seconds()/res["badger-scan"].dur.Seconds(), "scan-time-ratio")
	b.ReportMetric(float64(f.n), "records")
}

type rssResult struct {
	hwmKB   int64
	dur     time.Duration
	records int
}

const rssTag = "FERRY-RSS-RESULT"

func runRSSChild(f *openFixture, mode string) (rssResult, error) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "FERRY_RSS_CHILD="+mode, "FERRY_RSS_DIR="+f.dir, "FERRY_RSS_N="+strconv.Itoa(f.n))
	out, err := cmd.CombinedOutput()
	if err != nil {
		return rssResult{}, fmt.Errorf("rss child %s: %v\n%s", mode, err, out)
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		var r rssResult
		var ns int64
		if _, err := fmt.Sscanf(sc.Text(), rssTag+" hwm_kb=%d ns=%d records=%d", &r.hwmKB, &ns, &r.records); err == nil {
			r.dur = time.Duration(ns)
			return r, nil
		}
	}
	return rssResult{}, fmt.Errorf("rss child %s: no result line\n%s", mode, out)
}

// rssChild is the child process's work (called by TestMain): it prints
// one result line and the process exits.
func rssChild(mode, dir string, n int) error {
	ctx := context.Background()
	start := time.Now()
	records := 0
	switch mode {
	case "ferry-open", "ferry-scan", "ferry-scan-gc":
		r, err := replica.Open(ctx, dir+"/ferry", benchReplicaOpts(false))
		if err != nil {
			return err
		}
		if mode == "ferry-open" {
			if _, err := r.Get(ctx, syncColl, syncID(n/2)); err != nil {
				return err
			}
		} else {
			page, err := r.List(ctx, syncColl, replica.ListOptions{})
			if err != nil {
				return err
			}
			for _, it := range page.Items {
				if _, err := r.Get(ctx, syncColl, it.ID); err != nil {
					return err
				}
				records++
				if mode == "ferry-scan-gc" && records%1000 == 0 {
					runtime.GC() // runs the finalizers that free automerge-go's C memory
				}
			}
		}
		if err := r.Close(); err != nil {
			return err
		}
	case "badger-open", "badger-scan":
		db := openRawBadger(nopTB{}, dir+"/badger", false)
		err := db.View(func(txn *badger.Txn) error {
			if mode == "badger-open" {
				it, err := txn.Get(rawKey(n / 2))
				if err != nil {
					return err
				}
				v, err := it.ValueCopy(nil)
				if err == nil {
					plainRead(nopTB{}, v)
				}
				return err
			}
			it := txn.NewIterator(badger.DefaultIteratorOptions)
			defer it.Close()
			for it.Rewind(); it.Valid(); it.Next() {
				v, err := it.Item().ValueCopy(nil)
				if err != nil {
					return err
				}
				plainRead(nopTB{}, v)
				records++
			}
			return nil
		})
		if err != nil {
			return err
		}
		if err := db.Close(); err != nil {
			return err
		}
	default:
		return fmt.Errorf("unknown mode %q", mode)
	}
	d := time.Since(start)
	hwm, err := vmHWM()
	if err != nil {
		return err
	}
	fmt.Printf("%s hwm_kb=%d ns=%d records=%d\n", rssTag, hwm, d.Nanoseconds(), records)
	return nil
}

// vmHWM reads the process's peak resident set size (KiB).
func vmHWM() (int64, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			return strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
		}
	}
	return 0, fmt.Errorf("no VmHWM in /proc/self/status")
}

// nopTB lets the child (which has no testing.TB) use the helpers; a
// failure panics, which exits the child with its message.
type nopTB struct{ testing.TB }

func (nopTB) Helper()                   {}
func (nopTB) Fatal(args ...any)         { panic(fmt.Sprint(args...)) }
func (nopTB) Fatalf(f string, a ...any) { panic(fmt.Sprintf(f, a...)) }
