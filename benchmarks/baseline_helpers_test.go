package benchmarks

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/automerge/automerge-go"
	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
	"github.com/ferrysync/ferry/replica"
	"github.com/ferrysync/ferry/storage"
	"go.etcd.io/bbolt"
)

// Helpers of the local, open, memory and crypto benchmarks: the raw
// baselines (Badger and bbolt holding plain, unencrypted Automerge
// documents of the same records) and the knobs.

// envInt reads a positive integer knob, def when unset.
func envInt(tb testing.TB, name string, def, min int) int {
	tb.Helper()
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < min {
		tb.Fatalf("%s=%q: want an integer >= %d", name, s, min)
	}
	return n
}

// plainDoc is record i (syncFields) as a plain automerge-go document: no
// ferry metadata. Its Save() is what the baselines store.
func plainDoc(tb testing.TB, i int) *automerge.Doc {
	d := automerge.New()
	f := syncFields(i)
	keys := make([]string, 0, len(f))
	for k := range f {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if err := d.RootMap().Set(k, f[k]); err != nil {
			tb.Fatal(err)
		}
	}
	if _, err := d.Commit("put"); err != nil {
		tb.Fatal(err)
	}
	return d
}

func plainBytes(tb testing.TB, i int) []byte { return plainDoc(tb, i).Save() }

// plainRead is what a baseline application does to read a record: load
// the stored bytes and turn the document into a Go map, like replica.Get.
func plainRead(tb testing.TB, b []byte) map[string]any {
	d, err := automerge.Load(b)
	if err != nil {
		tb.Fatal(err)
	}
	m, err := automerge.As[map[string]any](d.Root())
	if err != nil {
		tb.Fatal(err)
	}
	return m
}

func rawKey(i int) []byte { return []byte(syncColl + "/" + syncID(i)) }

// openRawBadger opens a plain Badger with the settings the store uses
// (checksums verified on read, no compression), SyncWrites on unless
// noSync.
func openRawBadger(tb testing.TB, dir string, noSync bool) *badger.DB {
	tb.Helper()
	db, err := badger.Open(badger.DefaultOptions(dir).WithLogger(nil).
		WithSyncWrites(!noSync).WithCompression(options.None).
		WithChecksumVerificationMode(options.OnBlockRead).WithVerifyValueChecksum(true))
	if err != nil {
		tb.Fatal(err)
	}
	return db
}

var boltBucket = []byte(syncColl)

// openBolt opens a bbolt file in dir (fsync on commit unless noSync).
func openBolt(tb testing.TB, dir string, noSync bool) *bbolt.DB {
	tb.Helper()
	db, err := bbolt.Open(filepath.Join(dir, "bolt.db"), 0o600, &bbolt.Options{Timeout: 5 * time.Second, NoSync: noSync})
	if err != nil {
		tb.Fatal(err)
	}
	if err := db.Update(func(tx *bbolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(boltBucket)
		return err
	}); err != nil {
		tb.Fatal(err)
	}
	return db
}

func badgerGet(tb testing.TB, db *badger.DB, k []byte) []byte {
	var out []byte
	err := db.View(func(txn *badger.Txn) error {
		it, err := txn.Get(k)
		if err != nil {
			return err
		}
		out, err = it.ValueCopy(nil)
		return err
	})
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

func boltGet(tb testing.TB, db *bbolt.DB, k []byte) []byte {
	var out []byte
	err := db.View(func(tx *bbolt.Tx) error {
		v := tx.Bucket(boltBucket).Get(k)
		if v == nil {
			return fmt.Errorf("bolt: %s missing", k)
		}
		out = append([]byte(nil), v...)
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

// benchReplicaOpts are the options of the replicas of these benchmarks:
// the cheap KDF (the unlock benchmark measures the real one), SyncWrites
// on unless noSync.
func benchReplicaOpts(noSync bool) replica.Options {
	return replica.Options{
		Passphrase: []byte("bench-local"),
		KDF:        storage.TestKDF(),
		Name:       "local",
		NoSync:     noSync,
	}
}

func openBenchReplica(tb testing.TB, dir string, noSync bool) *replica.Replica {
	tb.Helper()
	r, err := replica.Open(context.Background(), dir, benchReplicaOpts(noSync))
	if err != nil {
		tb.Fatal(err)
	}
	return r
}

// ms is a duration in milliseconds, for ReportMetric.
func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
