package benchmarks

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
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
		WithNumCompactors(2).
		WithBloomFalsePositive(0.001)
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

// BenchmarkStoragePutModel is the raw-Badger cost model of a batch of 1000
// new small records (docs/storage.md, Performance): raw Badger with the
// store's sizes, one database per variant, in the same run, the order of
// the variants rotated every iteration. The sizes are what the store
// writes for smallDoc (measured: meta key 54 B, sealed meta 334 B with the
// 251-byte snapshot inline, feed key 14 B and value 82 B, 64 reconciliation
// pages of 38 + 388 B per batch). Reported, as ratios to "base" (the
// BenchmarkStoragePut baseline: one entry per record, key "todos/<id>",
// the document as value):
//
//	rand:       base's entries under random keys of the same length
//	meta:       one entry per record, random 54-byte key, 334-byte value
//	meta+feed:  plus a sequential 14-byte feed key, 82-byte value
//	+read:      plus a Get of the meta key before its Set (existence read)
//	+pages:     plus 64 page reads and writes (the reconciliation sums)
//
// "+pages" is ferry's layout without any of ferry's CPU (blinding,
// encoding, sealing) and "meta" the floor of any layout that stores a
// record under a blinded key with its metadata in one sealed value.
func BenchmarkStoragePutModel(b *testing.B) {
	const batch = 1000
	type variant struct {
		name              string
		feed, read, pages bool
		randKey           bool
		rawSizes          bool // base's key length and value, random key
		db                *badger.DB
		d                 time.Duration
	}
	vs := []*variant{{name: "base"}, {name: "rand", randKey: true, rawSizes: true},
		{name: "meta", randKey: true},
		{name: "meta+feed", randKey: true, feed: true},
		{name: "+read", randKey: true, feed: true, read: true},
		{name: "+pages", randKey: true, feed: true, read: true, pages: true}}
	for _, v := range vs {
		db, err := badger.Open(sizedBadgerOptions(b.TempDir(), storage.DefaultSizes()).WithLogger(nil).
			WithSyncWrites(true).WithCompression(options.None).
			WithChecksumVerificationMode(options.OnBlockRead).WithVerifyValueChecksum(true))
		if err != nil {
			b.Fatal(err)
		}
		v.db = db
		b.Cleanup(func() { db.Close() })
	}
	ds := docs(batch)
	meta := make([]byte, 334)
	feedV := make([]byte, 82)
	page := make([]byte, 388)
	rnd := rand.New(rand.NewPCG(1, 2))
	randKey := func(n int) []byte {
		k := make([]byte, n)
		for i := range k {
			k[i] = byte(rnd.Uint32())
		}
		return k
	}
	seq := uint64(0)
	run := func(v *variant, it int) {
		t0 := time.Now()
		txn := v.db.NewTransaction(true)
		must := func(err error) {
			if err != nil && !errors.Is(err, badger.ErrKeyNotFound) {
				b.Fatal(err)
			}
		}
		for j := 0; j < batch; j++ {
			if !v.randKey {
				must(txn.Set([]byte(fmt.Sprintf("todos/t%d-%d", it, j)), ds[j]))
				continue
			}
			if v.rawSizes {
				must(txn.Set(randKey(len(fmt.Sprintf("todos/t%d-%d", it, j))), ds[j]))
				continue
			}
			k := randKey(54)
			if v.read {
				_, err := txn.Get(k)
				must(err)
			}
			copy(meta, ds[j])
			must(txn.Set(k, meta))
			if v.feed {
				seq++
				fk := binary.BigEndian.AppendUint64([]byte("d\x00\x00\x00\x01f"), seq)
				must(txn.Set(fk, feedV))
			}
		}
		if v.pages {
			for p := 0; p < 64; p++ {
				pk := append([]byte("d\x00\x00\x00\x01Y"), byte(p))
				pk = append(pk, make([]byte, 31)...)
				_, err := txn.Get(pk)
				must(err)
				must(txn.Set(pk, page))
			}
		}
		must(txn.Commit())
		v.d += time.Since(t0)
	}
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		for k := range vs {
			run(vs[(i+k)%len(vs)], i)
		}
	}
	for _, v := range vs[1:] {
		b.ReportMetric(v.d.Seconds()/vs[0].d.Seconds(), "ratio-"+v.name)
	}
}
