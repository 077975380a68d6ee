package benchmarks

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/ferrysync/ferry/storage"
	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/chacha20poly1305"
)

// The crypto benchmarks. The store's envelope functions are unexported
// (and a _test file of package storage cannot be imported from here), so
// sealing and opening are measured through storage.Slots Put and Get,
// which seal and authenticate each value (plus its liveness marker),
// against raw Badger Set and Get of the same values. Both stores run with
// SyncWrites off so that fsync does not hide the crypto. For reference,
// the metrics aead-* are bare XChaCha20-Poly1305 Seal and Open of the same
// sizes (the envelope's cipher) in the same run.

// BenchmarkCryptoSlots: puts then gets of distinct keys; 1 KiB and 128 KiB
// values. FERRY_BENCH_WRITES/2 operations of each kind (500).
func BenchmarkCryptoSlots(b *testing.B) {
	for _, size := range []int{1 << 10, 128 << 10} {
		b.Run(fmt.Sprintf("size=%dKiB", size>>10), func(b *testing.B) { benchCryptoSlots(b, size) })
	}
}

func benchCryptoSlots(b *testing.B, size int) {
	ops := max(1, envInt(b, "FERRY_BENCH_WRITES", 1000, 1)/2)
	ctx := context.Background()
	st, err := storage.Create(ctx, b.TempDir(), storage.Options{Passphrase: []byte("bench"), KDF: storage.TestKDF(), NoSync: true})
	if err != nil {
		b.Fatal(err)
	}
	raw := openRawBadger(b, b.TempDir(), true)
	b.Cleanup(func() { st.Close(); raw.Close() })
	slots := st.Slots("bench")
	val := make([]byte, size)
	rand.Read(val)
	key := make([]byte, chacha20poly1305.KeySize)
	rand.Read(key)
	aead, err := chacha20poly1305.NewX(key)
	if err != nil {
		b.Fatal(err)
	}
	nonce := make([]byte, aead.NonceSize())
	var fPut, rPut, fGet, rGet, seal, open time.Duration
	done := 0
	b.ResetTimer()
	b.StopTimer()
	for it := range b.N {
		keys := make([]string, ops)
		for i := range keys {
			keys[i] = fmt.Sprintf("k%d-%d", it, i)
		}
		b.StartTimer()
		t0 := time.Now()
		for _, k := range keys {
			if err := slots.Put(ctx, k, val); err != nil {
				b.Fatal(err)
			}
		}
		t1 := time.Now()
		for _, k := range keys {
			if err := raw.Update(func(txn *badger.Txn) error { return txn.Set([]byte("bench/"+k), val) }); err != nil {
				b.Fatal(err)
			}
		}
		t2 := time.Now()
		for _, k := range keys {
			v, ok, err := slots.Get(ctx, k)
			if err != nil || !ok || len(v) != size {
				b.Fatalf("slot get %s: %d bytes, %v %v", k, len(v), ok, err)
			}
		}
		t3 := time.Now()
		for _, k := range keys {
			if v := badgerGet(b, raw, []byte("bench/"+k)); len(v) != size {
				b.Fatalf("raw get %s: %d bytes", k, len(v))
			}
		}
		t4 := time.Now()
		var sealed []byte
		for range keys {
			sealed = aead.Seal(sealed[:0], nonce, val, nil)
		}
		t5 := time.Now()
		var opened []byte
		for range keys {
			if opened, err = aead.Open(opened[:0], nonce, sealed, nil); err != nil {
				b.Fatal(err)
			}
		}
		t6 := time.Now()
		b.StopTimer()
		if !bytes.Equal(opened, val) {
			b.Fatal("aead round trip")
		}
		fPut += t1.Sub(t0)
		rPut += t2.Sub(t1)
		fGet += t3.Sub(t2)
		rGet += t4.Sub(t3)
		seal += t5.Sub(t4)
		open += t6.Sub(t5)
		done += ops
	}
	mb := float64(done*size) / 1e6
	b.ReportMetric(float64(fPut.Microseconds())/float64(done), "ferry-put-us")
	b.ReportMetric(float64(rPut.Microseconds())/float64(done), "badger-put-us")
	b.ReportMetric(float64(fGet.Microseconds())/float64(done), "ferry-get-us")
	b.ReportMetric(float64(rGet.Microseconds())/float64(done), "badger-get-us")
	b.ReportMetric(mb/fPut.Seconds(), "ferry-put-MB/s")
	b.ReportMetric(mb/fGet.Seconds(), "ferry-get-MB/s")
	b.ReportMetric(mb/seal.Seconds(), "aead-seal-MB/s")
	b.ReportMetric(mb/open.Seconds(), "aead-open-MB/s")
	b.ReportMetric(fPut.Seconds()/rPut.Seconds(), "put-ratio-vs-badger")
	b.ReportMetric(fGet.Seconds()/rGet.Seconds(), "get-ratio-vs-badger")
}

// BenchmarkUnlock: storage.Open of a store (a few records) created with
// DefaultKDF (Argon2id t=3, 64 MiB, p=4), with TestKDF (t=1, 64 KiB), and
// with a raw 32-byte key (no KDF): the difference is the passphrase's
// cost. argon2id-default-ms is argon2.IDKey alone with the default
// parameters. In the tiny test run under -race, the default KDF is left out.
func BenchmarkUnlock(b *testing.B) {
	ctx := context.Background()
	skipDefault := os.Getenv("FERRY_BENCH_TINY") == "1" && raceEnabled
	key := make([]byte, 32)
	rand.Read(key)
	type variant struct {
		name string
		opts storage.Options
		dir  string
		sum  time.Duration
	}
	vs := []*variant{
		{name: "test-kdf", opts: storage.Options{Passphrase: []byte("bench-unlock"), KDF: storage.TestKDF()}},
		{name: "raw-key", opts: storage.Options{Key: key}},
	}
	if !skipDefault {
		vs = append(vs, &variant{name: "default-kdf", opts: storage.Options{Passphrase: []byte("bench-unlock"), KDF: storage.DefaultKDF()}})
	}
	for _, v := range vs {
		v.dir = b.TempDir()
		st, err := storage.Create(ctx, v.dir, v.opts)
		if err != nil {
			b.Fatal(err)
		}
		if err := st.Slots("x").Put(ctx, "k", []byte("v")); err != nil {
			b.Fatal(err)
		}
		if err := st.Close(); err != nil {
			b.Fatal(err)
		}
	}
	var argon time.Duration
	b.ResetTimer()
	b.StopTimer()
	for range b.N {
		for _, v := range vs {
			b.StartTimer()
			t0 := time.Now()
			st, err := storage.Open(ctx, v.dir, v.opts)
			v.sum += time.Since(t0)
			b.StopTimer()
			if err != nil {
				b.Fatal(err)
			}
			if err := st.Close(); err != nil {
				b.Fatal(err)
			}
		}
		if !skipDefault {
			p := storage.DefaultKDF()
			t0 := time.Now()
			argon2.IDKey([]byte("bench-unlock"), make([]byte, 16), p.Time, p.MemoryKiB, p.Threads, 32)
			argon += time.Since(t0)
		}
	}
	n := time.Duration(b.N)
	for _, v := range vs {
		b.ReportMetric(ms(v.sum/n), v.name+"-open-ms")
	}
	if !skipDefault {
		b.ReportMetric(ms(argon/n), "argon2id-default-ms")
		b.ReportMetric(float64(vs[2].sum)/float64(vs[1].sum), "default/raw-key-ratio")
	}
}
