package benchmarks

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/automerge/automerge-go"
	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
	"github.com/ferrysync/ferry/storage"
)

// The storage benchmarks compare the sealed store with raw Badger writing
// the same Automerge bytes unencrypted under a plain key, in the same run,
// with the same Badger settings (SyncWrites on, no compression, checksums
// verified on read, and the store's sizes: memtables, caches, tables,
// value threshold). Each iteration does the same work on both and times
// them separately, alternating which goes first (a flush or compaction
// left running by one then slows the other as often as not); the reported
// "ratio" is sealed time / raw time (1.0 = as fast as raw Badger).
// BenchmarkStoragePut also reports "ratio-vs-badger-defaults", against raw
// Badger with its own (server) sizes.

// smallDoc is a ~200-byte JSON-like record as an Automerge document.
func smallDoc(i int) []byte {
	d := automerge.New()
	m := d.RootMap()
	m.Set("title", fmt.Sprintf("Buy milk and eggs #%d", i))
	m.Set("done", i%2 == 0)
	m.Set("priority", int64(i%5))
	m.Set("tags", "home,errand")
	m.Set("due", "2026-11-22T10:00:00Z")
	m.Set("notes", "two litres, free range")
	d.Commit("create", automerge.CommitOptions{Time: &time.Time{}})
	return d.Save()
}

type benchPair struct {
	st  *storage.Store
	raw *badger.DB // the store's sizes
	def *badger.DB // Badger's default sizes
}

func openPair(b *testing.B) *benchPair {
	b.Helper()
	st, err := storage.Create(context.Background(), b.TempDir(), storage.Options{
		Passphrase: []byte("bench"), KDF: storage.TestKDF()}) // SyncWrites on (default)
	if err != nil {
		b.Fatal(err)
	}
	open := func(o badger.Options) *badger.DB {
		db, err := badger.Open(o.WithLogger(nil).
			WithSyncWrites(true).WithCompression(options.None).
			WithChecksumVerificationMode(options.OnBlockRead).WithVerifyValueChecksum(true))
		if err != nil {
			b.Fatal(err)
		}
		return db
	}
	raw := open(sizedBadgerOptions(b.TempDir(), storage.DefaultSizes()))
	def := open(badger.DefaultOptions(b.TempDir()))
	b.Cleanup(func() { st.Close(); raw.Close(); def.Close() })
	return &benchPair{st: st, raw: raw, def: def}
}

// sizedBadgerOptions are Badger's options with z's sizes, set as the
// store sets them (storage/store.go openBadger).
func sizedBadgerOptions(dir string, z storage.Sizes) badger.Options {
	return badger.DefaultOptions(dir).WithMemTableSize(z.MemTableSize).
		WithNumMemtables(z.NumMemtables).
		WithValueLogFileSize(z.ValueLogFileSize).
		WithBlockCacheSize(z.BlockCacheSize).
		WithIndexCacheSize(z.IndexCacheSize).
		WithBaseTableSize(z.BaseTableSize).
		WithValueThreshold(z.ValueThreshold).
		WithNumCompactors(2)
}

func docs(n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = smallDoc(i)
	}
	return out
}

func reportStorage(b *testing.B, records int, sealed, raw time.Duration) {
	b.ReportMetric(float64(records)/sealed.Seconds(), "sealed_rec/s")
	b.ReportMetric(float64(records)/raw.Seconds(), "raw_rec/s")
	b.ReportMetric(sealed.Seconds()/raw.Seconds(), "ratio")
}

// BenchmarkStoragePut writes new small records: batched (1000 records per
// Write / per raw transaction) and single (one record per transaction).
func BenchmarkStoragePut(b *testing.B) {
	for _, batch := range []int{1000, 1} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			ctx := context.Background()
			p := openPair(b)
			ds := docs(batch)
			writes := make([]storage.RecordWrite, batch)
			var sealed, raw, def time.Duration
			n := 0
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				for j := range writes {
					doc := ds[j]
					writes[j] = storage.RecordWrite{Collection: "todos", ID: fmt.Sprintf("t%d-%d", i, j),
						Snapshot: func() ([]byte, error) { return doc, nil }}
				}
				runSealed := func() {
					t0 := time.Now()
					if _, err := p.st.Write(ctx, storage.Batch{Records: writes}); err != nil {
						b.Fatal(err)
					}
					sealed += time.Since(t0)
				}
				runRaw := func(db *badger.DB, d *time.Duration) {
					t0 := time.Now()
					txn := db.NewTransaction(true)
					for j := range writes {
						if err := txn.Set([]byte("todos/"+writes[j].ID), ds[j]); err != nil {
							b.Fatal(err)
						}
					}
					if err := txn.Commit(); err != nil {
						b.Fatal(err)
					}
					*d += time.Since(t0)
				}
				if i%2 == 0 {
					runSealed()
					runRaw(p.raw, &raw)
				} else {
					runRaw(p.raw, &raw)
					runSealed()
				}
				runRaw(p.def, &def)
				n += batch
			}
			reportStorage(b, n, sealed, raw)
			b.ReportMetric(sealed.Seconds()/def.Seconds(), "ratio-vs-badger-defaults")
		})
	}
}

// BenchmarkStorageGet loads small records (Load: meta, feed link, chunk;
// all authenticated) against a raw Badger Get of the same bytes.
func BenchmarkStorageGet(b *testing.B) {
	ctx := context.Background()
	p := openPair(b)
	const n = 1000
	ds := docs(n)
	writes := make([]storage.RecordWrite, n)
	txn := p.raw.NewTransaction(true)
	for j := range writes {
		doc := ds[j]
		writes[j] = storage.RecordWrite{Collection: "todos", ID: fmt.Sprintf("t%d", j), Snapshot: func() ([]byte, error) { return doc, nil }}
		txn.Set([]byte("todos/"+writes[j].ID), doc)
	}
	if err := txn.Commit(); err != nil {
		b.Fatal(err)
	}
	if _, err := p.st.Write(ctx, storage.Batch{Records: writes}); err != nil {
		b.Fatal(err)
	}
	var sealed, raw time.Duration
	gets := 0
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		id := writes[i%n].ID
		t0 := time.Now()
		if _, _, err := p.st.Load(ctx, "todos", id); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		err := p.raw.View(func(txn *badger.Txn) error {
			it, err := txn.Get([]byte("todos/" + id))
			if err != nil {
				return err
			}
			_, err = it.ValueCopy(nil)
			return err
		})
		if err != nil {
			b.Fatal(err)
		}
		t2 := time.Now()
		sealed += t1.Sub(t0)
		raw += t2.Sub(t1)
		gets++
	}
	reportStorage(b, gets, sealed, raw)
}
