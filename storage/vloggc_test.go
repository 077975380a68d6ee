package storage

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// gcOpts: values of 1 KiB or more in the value log (the default the
// store is moving to), 1 MiB value-log files, the ticker off (tests drive
// runValueLogGC).
func gcOpts() Options {
	o := testOpts()
	o.Sizes = Sizes{MemTableSize: 1 << 20, ValueLogFileSize: 1 << 20, ValueThreshold: 1 << 10, ValueLogGCInterval: -1}
	return o
}

// gcDoc is version v of record i's document: docLen incompressible bytes.
func gcDoc(i, v, docLen int) []byte {
	rng := rand.New(rand.NewPCG(uint64(i), uint64(v)))
	b := make([]byte, docLen)
	for j := range b {
		b[j] = byte(rng.Uint32())
	}
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

// gcUntilDone runs rounds until one rewrites nothing; it returns the files
// rewritten.
func gcUntilDone(t testing.TB, s *Store) int {
	t.Helper()
	total := 0
	for {
		r := s.runValueLogGC(vlogGCMaxRewrites)
		if r.err != nil || r.skipped != nil {
			t.Fatalf("GC round: %+v", r)
		}
		total += r.rewrites
		if r.rewrites == 0 {
			return total
		}
	}
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
