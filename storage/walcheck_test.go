package storage

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"hash/crc32"
	"io"
	"io/fs"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// ---- a writer of Badger's log format, for unit tests and fuzz seeds ----

func encEntry(meta byte, key, val []byte) []byte {
	b := []byte{meta, 0}
	b = binary.AppendUvarint(b, uint64(len(key)))
	b = binary.AppendUvarint(b, uint64(len(val)))
	b = binary.AppendUvarint(b, 0)
	b = append(b, key...)
	b = append(b, val...)
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

func versioned(key string, ts uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte(key), math.MaxUint64-ts)
}

// encTxn is one committed transaction at version ts: an entry per key,
// then the end-of-transaction mark.
func encTxn(ts uint64, keys ...string) []byte {
	var b []byte
	for _, k := range keys {
		b = append(b, encEntry(bitTxn, versioned(k, ts), []byte("value of "+k))...)
	}
	return append(b, encEntry(bitFinTxn, versioned("!badger!txn", ts), []byte(strconv.FormatUint(ts, 10)))...)
}

// synthLog is a write-ahead log of n transactions of two keys each,
// followed by zeros (a sparse file's unwritten pages); it returns the log
// and the end offset of each transaction.
func synthLog(n int) ([]byte, []int) {
	b := make([]byte, logHeaderSize)
	var ends []int
	for i := 1; i <= n; i++ {
		b = append(b, encTxn(uint64(i), "key-a-"+strconv.Itoa(i), "key-b-"+strconv.Itoa(i))...)
		ends = append(ends, len(b))
	}
	return append(b, make([]byte, 8192)...), ends
}

func TestScanLog(t *testing.T) {
	log, ends := synthLog(10)
	flip := func(off int) []byte {
		b := bytes.Clone(log)
		b[off] ^= 0x10
		return b
	}
	mid := (ends[4] + ends[5]) / 2 // inside transaction 6
	garbage := bytes.Clone(log)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := ends[9] + 7; i < ends[9]+3000; i++ {
		garbage[i] = byte(rng.UintN(256))
	}
	for _, c := range []struct {
		name     string
		b        []byte
		validEnd int
		damaged  bool
	}{
		{"clean", log, ends[9], false},
		{"empty file", make([]byte, 4096), logHeaderSize, false},
		{"shorter than its header", []byte{1, 2, 3}, 3, false},
		{"torn in the last entry", log[:ends[9]-5], ends[8], false},
		{"torn, then zeros", append(bytes.Clone(log[:ends[9]-5]), make([]byte, 100)...), ends[8], false},
		{"torn, then garbage", garbage, ends[9], false},
		{"bit flipped in the middle", flip(mid), ends[4], true},
		{"bit flipped in a length", flip(ends[4] + 2), ends[4], true},
		{"bit flipped in the meta byte", flip(ends[4]), ends[4], true},
		{"bit flipped in the last entry", flip(ends[9] - 3), ends[8], false},
		{"transaction without its end, then another",
			append(append(bytes.Clone(log[:ends[0]]), encEntry(bitTxn, versioned("x", 50), []byte("v"))...), log[ends[0]:]...),
			ends[0], true},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := scanLog(c.b, maxInlineVal)
			if r.validEnd != c.validEnd || r.damaged != c.damaged {
				t.Fatalf("scanLog: validEnd %d damaged %v, want %d %v (stop %d)", r.validEnd, r.damaged, c.validEnd, c.damaged, r.stop)
			}
		})
	}
}

// FuzzScanLog: scanLog decodes bytes from disk. It must not panic, must
// stay within the input, and what it keeps must be a prefix of what it
// read.
func FuzzScanLog(f *testing.F) {
	log, ends := synthLog(4)
	f.Add(log)
	f.Add(log[:ends[2]-3])
	b := bytes.Clone(log)
	b[ends[1]-10] ^= 1
	f.Add(b)
	f.Add([]byte{})
	f.Add(make([]byte, 64))
	f.Add(append(make([]byte, logHeaderSize), 0x40, 0, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x01, 0))
	f.Fuzz(func(t *testing.T, b []byte) {
		r := scanLog(b, maxInlineVal)
		if r.validEnd < 0 || r.validEnd > len(b) || r.stop < r.validEnd || r.stop > len(b) {
			t.Fatalf("out of range: %+v for %d bytes", r, len(b))
		}
		// Appending zeros (a sparse tail) changes nothing.
		r2 := scanLog(append(bytes.Clone(b), make([]byte, 100)...), maxInlineVal)
		if len(b) >= logHeaderSize && (r2.validEnd != r.validEnd || r2.damaged != r.damaged) {
			t.Fatalf("zeros appended: %+v, was %+v", r2, r)
		}
	})
}

// ---- damaged logs of a real store, after kill -9 ----

// crashedStore makes a store, has a child write to it (mode) and SIGKILLs
// it after n acknowledgements, so the write-ahead log holds the writes.
func crashedStore(t *testing.T, mode string, o Options, n int) string {
	t.Helper()
	dir := t.TempDir()
	s, err := Create(context.Background(), dir, o)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	runUntil(t, mode, dir, "ack", n)
	return dir
}

func cloneDir(t testing.TB, src string) string {
	t.Helper()
	dst := t.TempDir()
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, size, err := readAllocated(p)
		if err != nil {
			return err
		}
		// Keep Badger's sparse logs sparse: write what is allocated, then
		// extend.
		q := filepath.Join(dst, d.Name())
		if err := os.WriteFile(q, b, 0o600); err != nil {
			return err
		}
		return os.Truncate(q, size)
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

// readAllocated returns a file's bytes up to the end of its last allocated
// extent (the rest of a sparse file reads as zeros) and its size.
func readAllocated(path string) ([]byte, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, 0, err
	}
	b := make([]byte, dataEnd(f, fi.Size()))
	if _, err := io.ReadFull(f, b); err != nil {
		return nil, 0, err
	}
	return b, fi.Size(), nil
}

// dirHash hashes every file name, size and content of dir.
func dirHash(t *testing.T, dir string) string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	for _, e := range ents {
		b, size, err := readAllocated(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		h.Write([]byte(e.Name() + "/" + strconv.FormatInt(size, 10)))
		h.Write(bytes.TrimRight(b, "\x00"))
	}
	return hex.EncodeToString(h.Sum(nil))
}

// logFile returns the path of the largest log of dir with suffix ext and
// its scan.
func logFile(t *testing.T, dir, ext string) (string, []byte, logScan) {
	t.Helper()
	ents, _ := os.ReadDir(dir)
	var names []string
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ext) {
			names = append(names, e.Name())
		}
	}
	sort.Slice(names, func(i, j int) bool { return logFid(names[i]) < logFid(names[j]) })
	var best string
	var bestB []byte
	var bestR logScan
	for _, n := range names {
		b, _, err := readAllocated(filepath.Join(dir, n))
		if err != nil {
			t.Fatal(err)
		}
		if r := scanLog(b, math.MaxInt32); r.validEnd >= bestR.validEnd {
			best, bestB, bestR = n, b, r
		}
	}
	if best == "" || bestR.validEnd <= logHeaderSize {
		t.Fatalf("no %s log with entries in %s: %v", ext, dir, names)
	}
	if bestR.damaged {
		t.Fatalf("%s damaged before the test damaged it", best)
	}
	return filepath.Join(dir, best), bestB, bestR
}

// entryOffsets lists the offsets of the entries of b up to end.
func entryOffsets(t *testing.T, b []byte, end int) []int {
	var offs []int
	for off := logHeaderSize; off < end; {
		e, st := readLogEntry(b, off)
		if st != entryOK {
			t.Fatalf("entry at %d: status %d", off, st)
		}
		offs = append(offs, off)
		off += e.size
	}
	return offs
}

// countRecords opens dir and returns m such that records r0..r(m-1) exist
// and no later one does.
func countRecords(t *testing.T, dir string, o Options) int {
	t.Helper()
	s, err := Open(context.Background(), dir, o)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer s.Close()
	m := 0
	for ; ; m++ {
		_, _, err := s.Load(context.Background(), "c", "r"+strconv.Itoa(m))
		if errors.Is(err, ErrNotFound) {
			break
		}
		if err != nil {
			t.Fatalf("Load r%d: %v", m, err)
		}
		if got := field(t, s, "c", "r"+strconv.Itoa(m), "n"); got != strconv.Itoa(m) {
			t.Fatalf("r%d: n = %q", m, got)
		}
	}
	for i := m + 1; i < m+5; i++ {
		if _, _, err := s.Load(context.Background(), "c", "r"+strconv.Itoa(i)); !errors.Is(err, ErrNotFound) {
			t.Fatalf("records are not a prefix: r%d missing, r%d: %v", m, i, err)
		}
	}
	return m
}

func wantDamaged(t *testing.T, dir string, o Options) {
	t.Helper()
	before := dirHash(t, dir)
	_, err := Open(context.Background(), dir, o)
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Open of a damaged log: %v, want ErrCorrupt", err)
	}
	if !strings.Contains(err.Error(), "ferry import") || !strings.Contains(err.Error(), "peer") {
		t.Fatalf("error does not say what to do: %v", err)
	}
	if after := dirHash(t, dir); after != before {
		t.Fatal("Open changed the files of a damaged store")
	}
}

func TestDamagedWAL(t *testing.T) {
	if testing.Short() {
		t.Skip("subprocess crash test")
	}
	dir := crashedStore(t, "write", testOpts(), 60)
	acked := countRecords(t, cloneDir(t, dir), testOpts())
	_, b, r := logFile(t, dir, memExt)
	offs := entryOffsets(t, b, r.validEnd)
	t.Logf("%d records, write-ahead log of %d entries (%d bytes)", acked, len(offs), r.validEnd)

	t.Run("bit flipped in the middle", func(t *testing.T) {
		d := cloneDir(t, dir)
		p, b, _ := logFile(t, d, memExt)
		mid := offs[len(offs)/2]
		e, _ := readLogEntry(b, mid)
		b[mid+e.size/2] ^= 0x04
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		wantDamaged(t, d, testOpts())
	})

	t.Run("torn tail", func(t *testing.T) {
		// Cut in the middle of the end-of-transaction entry of the 5th
		// transaction from the end: it and the 4 after it are lost, and
		// each held one record.
		d := cloneDir(t, dir)
		p, b, _ := logFile(t, d, memExt)
		var fins []int
		for _, o := range offs {
			if b[o]&bitFinTxn != 0 {
				fins = append(fins, o)
			}
		}
		cut := fins[len(fins)-5] + 7
		if err := os.WriteFile(p, b[:cut], 0o600); err != nil {
			t.Fatal(err)
		}
		if got := countRecords(t, d, testOpts()); got != acked-5 {
			t.Fatalf("after a torn tail: %d records, want %d", got, acked-5)
		}
	})
}

func bigOpts() Options {
	o := testOpts()
	o.Sizes = Sizes{MemTableSize: 1 << 20, ValueLogFileSize: 16 << 20}
	return o
}

func randText(seed, n int) string {
	rng := rand.New(rand.NewPCG(uint64(seed), 9))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte('a' + rng.IntN(26))
	}
	return string(b)
}

func TestDamagedValueLog(t *testing.T) {
	if testing.Short() {
		t.Skip("subprocess crash test")
	}
	dir := crashedStore(t, "bigwrite", bigOpts(), 16)
	acked := countRecords(t, cloneDir(t, dir), bigOpts())
	_, b, r := logFile(t, dir, vlogExt)
	offs := entryOffsets(t, b, r.validEnd)
	t.Logf("%d records, value log of %d entries (%d bytes)", acked, len(offs), r.validEnd)
	if len(offs) < 3 {
		t.Fatalf("value log holds %d entries, want several", len(offs))
	}

	t.Run("bit flipped in the middle", func(t *testing.T) {
		d := cloneDir(t, dir)
		p, b, _ := logFile(t, d, vlogExt)
		mid := offs[len(offs)/2]
		e, _ := readLogEntry(b, mid)
		b[mid+e.size/2] ^= 0x01
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		wantDamaged(t, d, bigOpts())
	})

	t.Run("torn tail", func(t *testing.T) {
		// A value written to the value log when the process died, before
		// its transaction reached the write-ahead log: half of a copy of
		// the last entry after the end. Nothing acknowledged refers to it.
		d := cloneDir(t, dir)
		p, b, r := logFile(t, d, vlogExt)
		last := offs[len(offs)-1]
		torn := append(bytes.Clone(b[:r.validEnd]), b[last:last+(r.validEnd-last)/2]...)
		if err := os.WriteFile(p, torn, 0o600); err != nil {
			t.Fatal(err)
		}
		if got := countRecords(t, d, bigOpts()); got != acked {
			t.Fatalf("after a torn value-log tail: %d records, want %d", got, acked)
		}
	})
}

// BenchmarkOpenFullWAL: the cost of checkLogs at Open on a store left with
// a full write-ahead log (8 MiB memtable; the store copied while open, as a
// crash leaves it), against the whole Open (which replays and flushes that
// log). go test -run '^$' -bench OpenFullWAL ./storage/
func BenchmarkOpenFullWAL(b *testing.B) {
	ctx := context.Background()
	dir := b.TempDir()
	o := testOpts()
	o.NoSync = true
	s, err := Create(ctx, dir, o)
	if err != nil {
		b.Fatal(err)
	}
	var crashed string
	for i := 0; crashed == ""; i++ {
		var batch Batch
		for j := 0; j < 50; j++ {
			td := newDoc("c", "r"+strconv.Itoa(i*50+j))
			batch.Records = append(batch.Records, td.set(b, "n", strconv.Itoa(i*50+j), "pad", randText(i*50+j, 500)))
		}
		if _, err := s.Write(ctx, batch); err != nil {
			b.Fatal(err)
		}
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			if !strings.HasSuffix(e.Name(), memExt) {
				continue
			}
			data, _, _ := readAllocated(filepath.Join(dir, e.Name()))
			if lastNonZero(data) > 7<<20 { // 7 of 8 MiB: Badger rotates at 8
				crashed = cloneDir(b, dir)
			}
		}
	}
	s.Close()
	var scan, open time.Duration
	for b.Loop() {
		b.StopTimer()
		d := cloneDir(b, crashed)
		b.StartTimer()
		t0 := time.Now()
		if _, err := checkLogs(d); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		s, err := Open(ctx, d, o)
		if err != nil {
			b.Fatal(err)
		}
		t2 := time.Now()
		b.StopTimer()
		s.Close()
		b.StartTimer()
		scan += t1.Sub(t0)
		open += t2.Sub(t1) // includes a second checkLogs
	}
	b.ReportMetric(float64(scan.Microseconds())/float64(b.N)/1000, "scan-ms")
	b.ReportMetric(float64(open.Microseconds())/float64(b.N)/1000, "open-ms")
	b.ReportMetric(float64(scan)/float64(open-scan), "scan/open-without-scan")
}
