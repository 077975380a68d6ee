package storage

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"math"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
)

func TestOptionsValidation(t *testing.T) {
	ctx := context.Background()
	key := make([]byte, 32)
	for _, tc := range []struct {
		name string
		o    Options
	}{
		{"none", Options{InMemory: true}},
		{"both", Options{InMemory: true, Passphrase: []byte("x"), Key: key}},
		{"short key", Options{InMemory: true, Key: key[:31]}},
		{"bad kdf", Options{InMemory: true, Passphrase: []byte("x"), KDF: KDFParams{Time: 0, MemoryKiB: 64, Threads: 1}}},
		{"kdf mem too small", Options{InMemory: true, Passphrase: []byte("x"), KDF: KDFParams{Time: 1, MemoryKiB: 8, Threads: 4}}},
	} {
		_, err := Create(ctx, "", tc.o)
		wantErr(t, err, ErrInvalid, tc.name)
	}
}

func TestCreateOpenErrors(t *testing.T) {
	ctx := context.Background()
	empty := t.TempDir()
	_, err := Open(ctx, empty, testOpts())
	wantErr(t, err, ErrNoStore, "open empty dir")
	if ents, _ := os.ReadDir(empty); len(ents) != 0 {
		t.Fatalf("Open of an empty dir created files: %v", ents)
	}
	_, err = Open(ctx, filepath.Join(empty, "missing"), testOpts())
	wantErr(t, err, ErrNoStore, "open missing dir")
	o := testOpts()
	o.InMemory = true
	_, err = Open(ctx, "", o)
	wantErr(t, err, ErrNoStore, "open in-memory")

	s, dir := newDiskStore(t)
	_, err = Create(ctx, dir, testOpts())
	if !errors.Is(err, ErrExists) && !errors.Is(err, ErrLocked) {
		t.Fatalf("Create on open store: %v", err)
	}
	s.Close()
	_, err = Create(ctx, dir, testOpts())
	wantErr(t, err, ErrExists, "create on existing store")

	// A directory holding some other Badger database is not ours to take.
	foreign := t.TempDir()
	db, err := badger.Open(badger.DefaultOptions(foreign).WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	db.Update(func(txn *badger.Txn) error { return txn.Set([]byte("k"), []byte("v")) })
	db.Close()
	_, err = Create(ctx, foreign, testOpts())
	wantErr(t, err, ErrExists, "create on foreign badger dir")
	_, err = Open(ctx, foreign, testOpts())
	wantErr(t, err, ErrNoStore, "open foreign badger dir")
}

func TestWrongPassphrase(t *testing.T) {
	ctx := context.Background()
	s, dir := newDiskStore(t)
	mustWrite(t, s, newDoc("c", "1").set(t, "f", "v"))
	s.Close()
	before := dirDigest(t, dir)

	runs := kdfRuns.Load()
	start := time.Now()
	_, err := Open(ctx, dir, Options{Passphrase: []byte("wrong")})
	wantErr(t, err, ErrWrongKey, "wrong passphrase")
	if n := kdfRuns.Load() - runs; n != 1 {
		t.Fatalf("wrong passphrase ran Argon2 %d times, want 1", n)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("wrong passphrase took %v", d)
	}
	_, err = Open(ctx, dir, Options{Key: make([]byte, 32)})
	wantErr(t, err, ErrWrongKey, "raw key on passphrase store")
	if n := kdfRuns.Load() - runs; n != 1 {
		t.Fatalf("raw key on a passphrase store ran Argon2")
	}
	after := dirDigest(t, dir)
	if len(before) != len(after) {
		t.Fatalf("files changed: %v -> %v", sortedKeys(before), sortedKeys(after))
	}
	for k, v := range before {
		if after[k] != v {
			t.Fatalf("file %s changed after wrong-passphrase Open", k)
		}
	}
	s2, err := Open(ctx, dir, testOpts())
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if got := field(t, s2, "c", "1", "f"); got != "v" {
		t.Fatalf("got %q", got)
	}
}

func TestRawKey(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	key := make([]byte, 32)
	key[0] = 7
	keyCopy := append([]byte(nil), key...)
	s, err := Create(ctx, dir, Options{Key: key})
	if err != nil {
		t.Fatal(err)
	}
	runs := kdfRuns.Load()
	mustWrite(t, s, newDoc("c", "1").set(t, "f", "v"))
	s.Close()
	_, err = Open(ctx, dir, Options{Passphrase: []byte("p")})
	wantErr(t, err, ErrWrongKey, "passphrase on raw-key store")
	wrong := append([]byte(nil), keyCopy...)
	wrong[31] ^= 1
	_, err = Open(ctx, dir, Options{Key: wrong})
	wantErr(t, err, ErrWrongKey, "wrong raw key")
	s, err = Open(ctx, dir, Options{Key: keyCopy})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if kdfRuns.Load() != runs {
		t.Fatal("raw key path ran Argon2")
	}
	if got := field(t, s, "c", "1", "f"); got != "v" {
		t.Fatalf("got %q", got)
	}
}

func TestLocked(t *testing.T) {
	ctx := context.Background()
	s, dir := newDiskStore(t)
	_, err := Open(ctx, dir, testOpts())
	wantErr(t, err, ErrLocked, "second open")
	s.Close()
	s2, err := Open(ctx, dir, testOpts())
	if err != nil {
		t.Fatalf("open after close: %v", err)
	}
	s2.Close()
}

func TestClosed(t *testing.T) {
	ctx := context.Background()
	s := newMemStore(t)
	td := newDoc("c", "1")
	mustWrite(t, s, td.set(t, "a", "b"))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	_, err := s.Write(ctx, Batch{Records: []RecordWrite{td.set(t, "a", "c")}})
	wantErr(t, err, ErrClosed, "Write")
	_, _, err = s.Load(ctx, "c", "1")
	wantErr(t, err, ErrClosed, "Load")
	_, err = s.Meta(ctx, "c", "1")
	wantErr(t, err, ErrClosed, "Meta")
	wantErr(t, s.List(ctx, "c", func(RecordMeta) error { return nil }), ErrClosed, "List")
	_, err = s.Collections(ctx)
	wantErr(t, err, ErrClosed, "Collections")
	_, err = s.Feed(ctx, 0, 0)
	wantErr(t, err, ErrClosed, "Feed")
	_, _, err = s.Slots("n").Get(ctx, "k")
	wantErr(t, err, ErrClosed, "Slots.Get")
	wantErr(t, s.Slots("n").Put(ctx, "k", nil), ErrClosed, "Slots.Put")
	_, err = s.Append(ctx, "n", nil)
	wantErr(t, err, ErrClosed, "Append")
	wantErr(t, s.ScanLog(ctx, "n", 0, func(uint64, []byte) error { return nil }), ErrClosed, "ScanLog")
	wantErr(t, s.RotateKey(ctx, nil), ErrClosed, "RotateKey")
	wantErr(t, s.ChangePassphrase(ctx, Options{Passphrase: []byte("x"), KDF: TestKDF()}), ErrClosed, "ChangePassphrase")
	_, err = s.Export(ctx, &discard{}, ExportOptions{Passphrase: []byte("x")})
	wantErr(t, err, ErrClosed, "Export")
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// TestCloseWaitsForOps closes while writers run: every write either succeeds
// (and is then readable after reopening) or fails with ErrClosed.
func TestCloseWaitsForOps(t *testing.T) {
	ctx := context.Background()
	s, dir := newDiskStore(t)
	var wg sync.WaitGroup
	var mu sync.Mutex
	acked := map[string]bool{}
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; ; i++ {
				td := newDoc("c", string(rune('a'+g))+string(rune('0'+i%10))+string(rune('0'+i/10%10)))
				_, err := s.Write(ctx, Batch{Records: []RecordWrite{td.set(t, "x", "y")}})
				if errors.Is(err, ErrClosed) {
					return
				}
				if err != nil {
					t.Errorf("write: %v", err)
					return
				}
				mu.Lock()
				acked[td.id] = true
				n := len(acked)
				mu.Unlock()
				if n >= 40 || i >= 99 {
					return
				}
			}
		}(g)
	}
	// Close once some writes are in: ops in flight finish first.
	for {
		mu.Lock()
		n := len(acked)
		mu.Unlock()
		if n >= 8 {
			break
		}
		runtimeGosched()
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	s2, err := Open(ctx, dir, testOpts())
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	for id := range acked {
		if got := field(t, s2, "c", id, "x"); got != "y" {
			t.Fatalf("acked %s lost", id)
		}
	}
}

func TestHeaderTamper(t *testing.T) {
	ctx := context.Background()
	s, dir := newDiskStore(t)
	s.Close()
	hp := filepath.Join(dir, headerFile)
	orig, err := os.ReadFile(hp)
	if err != nil {
		t.Fatal(err)
	}
	// Every single-byte flip of the header is refused.
	for i := 0; i < headerLen; i++ {
		b := append([]byte(nil), orig...)
		b[i] ^= 0x20
		if err := os.WriteFile(hp, b, 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := Open(ctx, dir, testOpts())
		wantErr(t, err, ErrCorrupt, "flipped header byte")
	}
	// A KDF downgrade with a recomputed checksum: the attacker cannot make it
	// open (the key check or the wrapped key's associated data fails).
	b := append([]byte(nil), orig...)
	binary.BigEndian.PutUint32(b[14:], 8) // memory KiB: 64 -> 8
	sum := sha256.Sum256(b[:hdrSumOff])
	copy(b[hdrSumOff:], sum[:])
	os.WriteFile(hp, b, 0o600)
	_, err = Open(ctx, dir, testOpts())
	if !errors.Is(err, ErrWrongKey) && !errors.Is(err, ErrCorrupt) {
		t.Fatalf("downgraded header: %v", err)
	}
	// Truncated header.
	os.WriteFile(hp, orig[:100], 0o600)
	_, err = Open(ctx, dir, testOpts())
	wantErr(t, err, ErrCorrupt, "truncated header")
	os.WriteFile(hp, orig, 0o600)
	s2, err := Open(ctx, dir, testOpts())
	if err != nil {
		t.Fatalf("restored header: %v", err)
	}
	s2.Close()
}

// TestWrapBindsHeader checks the associated data of the wrapped key: the
// same wrapped bytes under different parameters do not unwrap, even with
// the right KEK and key check.
func TestWrapBindsHeader(t *testing.T) {
	o := testOpts()
	h := &header{gen: 1, curEpoch: 1}
	kek, err := newHeaderParams(h, &o)
	if err != nil {
		t.Fatal(err)
	}
	master := randomKey()
	if err := h.wrapKeys(kek, master, nil); err != nil {
		t.Fatal(err)
	}
	_, cur, _, _, err := h.unlock(&o)
	if err != nil || string(cur) != string(master) {
		t.Fatalf("unlock: %v", err)
	}
	h2 := *h
	h2.gen++ // any change to the authenticated prefix
	_, _, _, _, err = h2.unlock(&o)
	wantErr(t, err, ErrCorrupt, "unwrap under changed header")
}

func TestClock(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2030, 1, 2, 3, 4, 5, 6, time.UTC)
	o := testOpts()
	o.InMemory = true
	o.Now = func() time.Time { return now }
	s, err := Create(ctx, "", o)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	td := newDoc("c", "1")
	m := mustWrite(t, s, td.set(t, "a", "1"))[0]
	if !m.Created.Equal(now) || !m.Updated.Equal(now) {
		t.Fatalf("first write times %v %v", m.Created, m.Updated)
	}
	created := now
	now = now.Add(time.Hour)
	m = mustWrite(t, s, td.set(t, "a", "2"))[0]
	if !m.Created.Equal(created) || !m.Updated.Equal(now) {
		t.Fatalf("second write times %v %v", m.Created, m.Updated)
	}
	explicit := now.Add(time.Minute)
	rw := td.set(t, "a", "3")
	rw.Time = explicit
	m = mustWrite(t, s, rw)[0]
	if !m.Updated.Equal(explicit) {
		t.Fatalf("explicit time: %v", m.Updated)
	}
	got, err := s.Meta(ctx, "c", "1")
	if err != nil || !got.Created.Equal(created) || !got.Updated.Equal(explicit) {
		t.Fatalf("Meta: %+v %v", got, err)
	}
}

// TestSizePresets: both presets are valid as given, their zero fields
// (none) take nothing from the defaults, the value threshold defaults from
// the memtable size, and one out of range is ErrInvalid.
func TestSizePresets(t *testing.T) {
	for name, z := range map[string]Sizes{"default": DefaultSizes(), "server": ServerSizes()} {
		o := Options{Sizes: z}
		if err := o.validateSizes(); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if got := o.sizes(); got != z {
			t.Fatalf("%s: sizes() = %+v, want %+v", name, got, z)
		}
	}
	// A zero MappedBudget and MappedTrimInterval follow the process's Go
	// memory limit.
	prev := debug.SetMemoryLimit(math.MaxInt64)
	defer debug.SetMemoryLimit(prev)
	want := DefaultSizes()
	want.MappedBudget = 32 << 20
	want.MappedTrimInterval = 250 * time.Millisecond
	if got := (&Options{}).sizes(); got != want {
		t.Fatalf("zero sizes without a memory limit: %+v, want %+v", got, want)
	}
	debug.SetMemoryLimit(1 << 30)
	if got := (&Options{}).sizes(); got != DefaultSizes() {
		t.Fatalf("zero sizes under a memory limit: %+v, want DefaultSizes %+v", got, DefaultSizes())
	}
	if got := (&Options{Sizes: Sizes{MemTableSize: 2 << 20}}).sizes().ValueThreshold; got != 1<<10 {
		t.Fatalf("value threshold of a 2 MiB memtable: %d", got)
	}
	if got, want := Reserve(Options{Sizes: ServerSizes()}), int64(97<<20); got != want {
		t.Fatalf("Reserve(ServerSizes) = %d, want %d (documented)", got, want)
	}
	if got, want := Reserve(Options{}), int64(15<<20); got != want {
		t.Fatalf("Reserve(DefaultSizes) = %d, want %d (documented)", got, want)
	}
	for _, z := range []Sizes{
		{ValueThreshold: 1 << 9},
		{ValueThreshold: 2 << 20},
		{MemTableSize: 1 << 20, ValueThreshold: 200 << 10}, // over 15% of the memtable
	} {
		o := Options{Sizes: z}
		if err := o.validateSizes(); !errors.Is(err, ErrInvalid) {
			t.Fatalf("%+v: %v, want ErrInvalid", z, err)
		}
	}
}

// TestServerSizesStore: a store made with ServerSizes writes, closes and
// reopens with them (and with the defaults: sizes are not stored).
func TestServerSizesStore(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	o := testOpts()
	o.Sizes = ServerSizes()
	s, err := Create(ctx, dir, o)
	if err != nil {
		t.Fatal(err)
	}
	want := populate(t, s, 10)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for _, z := range []Sizes{ServerSizes(), {}} {
		o.Sizes = z
		s, err := Open(ctx, dir, o)
		if err != nil {
			t.Fatal(err)
		}
		for k := range want {
			coll, id, _ := strings.Cut(k, "/")
			if _, _, err := s.Load(ctx, coll, id); err != nil {
				t.Fatalf("%+v: %s: %v", z, k, err)
			}
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestReopenKeepsTheOpensSizes: the sizes that follow the Go memory limit
// are resolved when the store opens; a reopen of Badger (value-log GC,
// full-disk recovery) uses the same ones even if the limit has changed.
func TestReopenKeepsTheOpensSizes(t *testing.T) {
	prev := debug.SetMemoryLimit(1 << 30)
	defer debug.SetMemoryLimit(prev)
	s, _ := newDiskStore(t)
	defer s.Close()
	debug.SetMemoryLimit(math.MaxInt64)
	if got, want := s.bopts.sizes(), DefaultSizes(); got.MappedBudget != want.MappedBudget || got.MappedTrimInterval != want.MappedTrimInterval {
		t.Fatalf("reopen sizes after the limit was lifted: budget %d every %v, want the open's %d every %v",
			got.MappedBudget, got.MappedTrimInterval, want.MappedBudget, want.MappedTrimInterval)
	}
}
