package benchmarks

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/ferrysync/ferry/storage"
	"go.etcd.io/bbolt"
)

// The local benchmarks: small records (syncFields, ~205 bytes as JSON)
// written and read one at a time through the replica API, against raw
// Badger and bbolt holding the same records as plain, unencrypted
// Automerge documents. Per record, each baseline does what an application
// built directly on automerge-go and the KV store would: build the
// document and Save() it, then one KV transaction (writes); one KV read,
// automerge.Load and conversion to a Go map (reads). ferry's Put does the
// same plus its metadata, the change feed and sealing, in one Badger
// transaction. The three are interleaved in chunks of 50 records, so load
// changes on the (shared) machine hit them alike.
//
// Knobs: FERRY_BENCH_WRITES records per backend per iteration (1000),
// FERRY_BENCH_READS records for the read benchmark (5000).

const localChunk = 50

// localTimes accumulates the three backends' times.
type localTimes struct {
	ferry, badger, bolt, encode time.Duration
	n                           int
}

func (t *localTimes) report(b *testing.B, unit string) {
	n := float64(t.n)
	b.ReportMetric(n/t.ferry.Seconds(), "ferry-"+unit+"/s")
	b.ReportMetric(n/t.badger.Seconds(), "badger-"+unit+"/s")
	b.ReportMetric(n/t.bolt.Seconds(), "bbolt-"+unit+"/s")
	b.ReportMetric(t.ferry.Seconds()/t.badger.Seconds(), "ratio-vs-badger")
	b.ReportMetric(t.ferry.Seconds()/t.bolt.Seconds(), "ratio-vs-bbolt")
	if t.encode > 0 {
		b.ReportMetric(float64(t.encode.Microseconds())/n, "am-encode-us/rec")
	}
}

// BenchmarkLocalPut: new records, one per transaction: replica.Put against
// encode + one Badger txn (db.Update) and encode + one bbolt txn. With
// sync=on every transaction is fsynced (the replica default; bbolt's
// default); sync=off shows the CPU cost alone (replica NoSync, Badger
// SyncWrites off, bbolt NoSync). The replica has no batch Put: its
// batches are BenchmarkLocalBatchWrite's storage.Write.
func BenchmarkLocalPut(b *testing.B) {
	for _, noSync := range []bool{false, true} {
		name := "sync=on"
		if noSync {
			name = "sync=off"
		}
		b.Run(name, func(b *testing.B) { benchLocalPut(b, noSync) })
	}
}

func benchLocalPut(b *testing.B, noSync bool) {
	k := envInt(b, "FERRY_BENCH_WRITES", 1000, 1)
	ctx := context.Background()
	r := openBenchReplica(b, b.TempDir(), noSync)
	bg := openRawBadger(b, b.TempDir(), noSync)
	bo := openBolt(b, b.TempDir(), noSync)
	b.Cleanup(func() { r.Close(); bg.Close(); bo.Close() })
	var t localTimes
	next := 0
	b.ResetTimer()
	b.StopTimer() // the metrics carry the figures; ns/op is all three
	for range b.N {
		for done := 0; done < k; done += localChunk {
			m := min(localChunk, k-done)
			b.StartTimer()
			t0 := time.Now()
			for i := next; i < next+m; i++ {
				if err := r.Put(ctx, syncColl, syncID(i), syncFields(i)); err != nil {
					b.Fatal(err)
				}
			}
			t1 := time.Now()
			var enc time.Duration
			for i := next; i < next+m; i++ {
				e0 := time.Now()
				v := plainBytes(b, i)
				enc += time.Since(e0)
				if err := bg.Update(func(txn *badger.Txn) error { return txn.Set(rawKey(i), v) }); err != nil {
					b.Fatal(err)
				}
			}
			t2 := time.Now()
			for i := next; i < next+m; i++ {
				e0 := time.Now()
				v := plainBytes(b, i)
				enc += time.Since(e0)
				if err := bo.Update(func(tx *bbolt.Tx) error { return tx.Bucket(boltBucket).Put(rawKey(i), v) }); err != nil {
					b.Fatal(err)
				}
			}
			t3 := time.Now()
			b.StopTimer()
			t.ferry += t1.Sub(t0)
			t.badger += t2.Sub(t1)
			t.bolt += t3.Sub(t2)
			t.encode += enc / 2
			next += m
		}
		t.n += k
	}
	checkFerryRecord(b, r, next-1, int64((next-1)%1000))
	t.report(b, "rec")
}

// BenchmarkLocalGet: reads of records written before (setup, NoSync, not
// timed), each read once in a random order. "cold": the replica was just
// reopened, so every Get loads, authenticates, decrypts and parses the
// document (its cache holds 1024); the baselines read and parse. The
// metric ferry-hot-rec/s is a second Get of the last 500 records read,
// served from the replica's document cache (no baseline: the raw
// applications keep no cache).
func BenchmarkLocalGet(b *testing.B) {
	n := envInt(b, "FERRY_BENCH_READS", 5000, 10)
	ctx := context.Background()
	dirR, dirB, dirO := b.TempDir(), b.TempDir(), b.TempDir()
	start := time.Now()
	w := openBenchReplica(b, dirR, true)
	for i := range n {
		if err := w.Put(ctx, syncColl, syncID(i), syncFields(i)); err != nil {
			b.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		b.Fatal(err)
	}
	bg := openRawBadger(b, dirB, true)
	bo := openBolt(b, dirO, true)
	wb := bg.NewWriteBatch()
	err := bo.Update(func(tx *bbolt.Tx) error {
		bk := tx.Bucket(boltBucket)
		for i := range n {
			v := plainBytes(b, i)
			if err := wb.Set(rawKey(i), v); err != nil {
				return err
			}
			if err := bk.Put(rawKey(i), v); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil {
		err = wb.Flush()
	}
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("setup: %d records in each store in %v", n, time.Since(start).Round(time.Millisecond))
	b.Cleanup(func() { bg.Close(); bo.Close() })
	order := rand.New(rand.NewPCG(1, 2)).Perm(n)

	var t localTimes
	var hot time.Duration
	hotN := 0
	b.ResetTimer()
	b.StopTimer()
	for range b.N {
		r := openBenchReplica(b, dirR, false) // cold cache
		for done := 0; done < n; done += localChunk {
			idx := order[done:min(done+localChunk, n)]
			b.StartTimer()
			t0 := time.Now()
			for _, i := range idx {
				m, err := r.Get(ctx, syncColl, syncID(i))
				if err != nil || m["qty"] != int64(i%1000) {
					b.Fatalf("ferry get %d: %v %v", i, m["qty"], err)
				}
			}
			t1 := time.Now()
			for _, i := range idx {
				if m := plainRead(b, badgerGet(b, bg, rawKey(i))); m["qty"] != int64(i%1000) {
					b.Fatalf("badger get %d: %v", i, m["qty"])
				}
			}
			t2 := time.Now()
			for _, i := range idx {
				if m := plainRead(b, boltGet(b, bo, rawKey(i))); m["qty"] != int64(i%1000) {
					b.Fatalf("bbolt get %d: %v", i, m["qty"])
				}
			}
			t3 := time.Now()
			b.StopTimer()
			t.ferry += t1.Sub(t0)
			t.badger += t2.Sub(t1)
			t.bolt += t3.Sub(t2)
		}
		t.n += n
		last := order[max(0, n-500):]
		h0 := time.Now()
		for _, i := range last {
			if _, err := r.Get(ctx, syncColl, syncID(i)); err != nil {
				b.Fatal(err)
			}
		}
		hot += time.Since(h0)
		hotN += len(last)
		if err := r.Close(); err != nil {
			b.Fatal(err)
		}
	}
	t.report(b, "rec")
	b.ReportMetric(float64(hotN)/hot.Seconds(), "ferry-hot-rec/s")
}

// BenchmarkLocalBatchWrite: batches of 1000 new records in one
// transaction each: storage.Write (the store under the replica: sealed
// records, metas and feed entries; the Automerge bytes prepared before)
// against a Badger WriteBatch and a bbolt transaction of the same plain
// Automerge bytes. All fsync on commit. FERRY_BENCH_WRITES records per
// iteration, in batches of 1000 (fewer if smaller).
func BenchmarkLocalBatchWrite(b *testing.B) {
	k := envInt(b, "FERRY_BENCH_WRITES", 1000, 1)
	batch := min(1000, k)
	ctx := context.Background()
	st, err := storage.Create(ctx, b.TempDir(), storage.Options{Passphrase: []byte("bench"), KDF: storage.TestKDF()})
	if err != nil {
		b.Fatal(err)
	}
	bg := openRawBadger(b, b.TempDir(), false)
	bo := openBolt(b, b.TempDir(), false)
	b.Cleanup(func() { st.Close(); bg.Close(); bo.Close() })
	vals := make([][]byte, batch)
	for j := range vals {
		vals[j] = plainBytes(b, j)
	}
	var t localTimes
	next := 0
	b.ResetTimer()
	b.StopTimer()
	for range b.N {
		for done := 0; done < k; done += batch {
			m := min(batch, k-done)
			writes := make([]storage.RecordWrite, m)
			for j := range writes {
				v := vals[j]
				writes[j] = storage.RecordWrite{Collection: syncColl, ID: syncID(next + j),
					Changes: v, Snapshot: func() ([]byte, error) { return v, nil }}
			}
			b.StartTimer()
			t0 := time.Now()
			if _, err := st.Write(ctx, storage.Batch{Records: writes}); err != nil {
				b.Fatal(err)
			}
			t1 := time.Now()
			wb := bg.NewWriteBatch()
			for j := range m {
				if err := wb.Set(rawKey(next+j), vals[j]); err != nil {
					b.Fatal(err)
				}
			}
			if err := wb.Flush(); err != nil {
				b.Fatal(err)
			}
			t2 := time.Now()
			if err := bo.Update(func(tx *bbolt.Tx) error {
				bk := tx.Bucket(boltBucket)
				for j := range m {
					if err := bk.Put(rawKey(next+j), vals[j]); err != nil {
						return err
					}
				}
				return nil
			}); err != nil {
				b.Fatal(err)
			}
			t3 := time.Now()
			b.StopTimer()
			t.ferry += t1.Sub(t0)
			t.badger += t2.Sub(t1)
			t.bolt += t3.Sub(t2)
			next += m
		}
		t.n += k
	}
	if _, _, err := st.Load(ctx, syncColl, syncID(next-1)); err != nil {
		b.Fatal(err)
	}
	t.report(b, "rec")
	b.ReportMetric(float64(batch), "batch")
}
