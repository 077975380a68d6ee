package storage

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"testing"

	"github.com/automerge/automerge-go"
	"github.com/dgraph-io/badger/v4"
)

func TestMain(m *testing.M) {
	if mode := os.Getenv(childEnv); mode != "" {
		os.Exit(runChild(mode))
	}
	os.Exit(m.Run())
}

var testPass = []byte("correct horse battery staple")

func testOpts() Options { return Options{Passphrase: testPass, KDF: TestKDF()} }

func newDiskStore(t testing.TB) (*Store, string) {
	t.Helper()
	dir := t.TempDir()
	s, err := Create(context.Background(), dir, testOpts())
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s, dir
}

func newMemStore(t testing.TB) *Store {
	t.Helper()
	o := testOpts()
	o.InMemory = true
	s, err := Create(context.Background(), "", o)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func reopen(t testing.TB, s *Store, dir string) *Store {
	t.Helper()
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	s2, err := Open(context.Background(), dir, testOpts())
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s2.Close() })
	return s2
}

// tdoc is a test document kept in memory alongside the store.
type tdoc struct {
	coll, id string
	d        *automerge.Doc
}

func newDoc(coll, id string) *tdoc { return &tdoc{coll: coll, id: id, d: automerge.New()} }

// set sets fields and commits, returning the RecordWrite for the change.
func (td *tdoc) set(t testing.TB, kv ...string) RecordWrite {
	t.Helper()
	for i := 0; i+1 < len(kv); i += 2 {
		if err := td.d.RootMap().Set(kv[i], kv[i+1]); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := td.d.Commit("edit"); err != nil {
		t.Fatal(err)
	}
	return td.write()
}

func (td *tdoc) write() RecordWrite {
	d := td.d
	return RecordWrite{Collection: td.coll, ID: td.id, Changes: d.SaveIncremental(),
		Snapshot: func() ([]byte, error) { return d.Save(), nil }, Heads: amHeads(d.Heads())}
}

func mustWrite(t testing.TB, s *Store, rws ...RecordWrite) []RecordMeta {
	t.Helper()
	m, err := s.Write(context.Background(), Batch{Records: rws})
	if err != nil {
		t.Fatalf("Write: %v", err)
	}
	return m
}

// field loads a record and returns a string field of its document.
func field(t testing.TB, s *Store, coll, id, key string) string {
	t.Helper()
	data, _, err := s.Load(context.Background(), coll, id)
	if err != nil {
		t.Fatalf("Load %s/%s: %v", coll, id, err)
	}
	return docField(t, data, key)
}

func docField(t testing.TB, data []byte, key string) string {
	t.Helper()
	d, err := automerge.Load(data)
	if err != nil {
		t.Fatalf("automerge.Load: %v", err)
	}
	v, err := d.RootMap().Get(key)
	if err != nil {
		t.Fatal(err)
	}
	if v.IsVoid() {
		return ""
	}
	return v.Str()
}

// rawDump returns every Badger key/value (hex key -> value).
func rawDump(t testing.TB, s *Store) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.DefaultIteratorOptions)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			out[hex.EncodeToString(it.Item().Key())] = v
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func rawSet(t testing.TB, s *Store, key, val []byte) {
	t.Helper()
	if err := s.db.Update(func(txn *badger.Txn) error { return txn.Set(key, val) }); err != nil {
		t.Fatal(err)
	}
}

func rawGet(t testing.TB, s *Store, key []byte) []byte {
	t.Helper()
	var v []byte
	err := s.db.View(func(txn *badger.Txn) error {
		it, err := txn.Get(key)
		if err != nil {
			return err
		}
		v, err = it.ValueCopy(nil)
		return err
	})
	if err != nil {
		t.Fatalf("rawGet %x: %v", key, err)
	}
	return v
}

func rawDel(t testing.TB, s *Store, key []byte) {
	t.Helper()
	if err := s.db.Update(func(txn *badger.Txn) error { return txn.Delete(key) }); err != nil {
		t.Fatal(err)
	}
}

// dirDigest hashes every file in dir (name -> sha256).
func dirDigest(t testing.TB, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		rel, _ := filepath.Rel(dir, p)
		out[rel] = hex.EncodeToString(sum[:])
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func wantErr(t testing.TB, err, target error, what string) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("%s: got %v, want %v", what, err, target)
	}
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// st returns the current key state (tests only).
func (s *Store) st() *keyState { return s.state.Load() }

func runtimeGosched() { runtime.Gosched() }

func mustHex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}
