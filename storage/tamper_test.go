package storage

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// readEverything exercises every read path; it returns the first error.
func readEverything(s *Store) (logical, error) {
	ctx := context.Background()
	l := logical{Records: map[string]string{}, Slots: map[string]string{}, Logs: map[string][]string{}, ListSeen: map[string]int{}}
	for _, c := range testColls {
		err := s.List(ctx, c, func(m RecordMeta) error {
			data, m2, err := s.Load(ctx, c, m.ID)
			if err != nil {
				return err
			}
			if _, err := s.Meta(ctx, c, m.ID); err != nil {
				return err
			}
			l.Records[c+"/"+m.ID] = string(data) + "|" + string(m2.Attrs)
			return nil
		})
		if err != nil {
			return l, err
		}
	}
	for _, ns := range testNS {
		err := s.Slots(ns).Range(ctx, func(k string, v []byte) error {
			l.Slots[ns+"/"+k] = string(v)
			_, _, err := s.Slots(ns).Get(ctx, k)
			return err
		})
		if err != nil {
			return l, err
		}
	}
	for _, ns := range testLogs {
		err := s.ScanLog(ctx, ns, 0, func(n uint64, v []byte) error { l.Logs[ns] = append(l.Logs[ns], string(v)); return nil })
		if err != nil {
			return l, err
		}
	}
	var err error
	if l.Feed, err = s.Feed(ctx, 0, 0); err != nil {
		return l, err
	}
	for _, e := range l.Feed {
		if _, err := s.Meta(ctx, e.Collection, e.ID); err != nil {
			return l, err
		}
	}
	l.Colls, err = s.Collections(ctx)
	if err != nil {
		return l, err
	}
	for _, c := range testColls {
		sums, err := s.ReconSums(ctx, c)
		if err != nil {
			return l, err
		}
		for _, b := range sums {
			if _, err := s.ReconItems(ctx, c, b.Bucket); err != nil {
				return l, err
			}
		}
	}
	return l, nil
}

// TestTamperValues flips bytes in every stored value (every part of the
// envelope) and truncates values: each is ErrCorrupt from some read, and no
// read returns any other error or panics.
func TestTamperValues(t *testing.T) {
	s := newMemStore(t)
	populate(t, s, 12)
	good, err := readEverything(s)
	if err != nil {
		t.Fatal(err)
	}
	raw := rawDump(t, s)
	for _, hk := range sortedKeys(raw) {
		if hk == "00" { // stateKey: only its Badger version is used
			continue
		}
		k, v := mustHex(hk), raw[hk]
		_, kind, _ := keyEpoch(k)
		variants := map[string][]byte{"empty": {}, "short": v[:envOverhead-1], "truncated": v[:len(v)-1]}
		for _, pos := range []int{0, 1, 4, 5, 20, envHeaderLen, len(v) / 2, len(v) - 1} {
			b := append([]byte(nil), v...)
			b[pos] ^= 0x01
			variants["flip@"+itoa(pos)] = b
		}
		for name, b := range variants {
			rawSet(t, s, k, b)
			_, err := readEverything(s)
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("kind %c %s: got %v, want ErrCorrupt", kind, name, err)
			}
		}
		rawSet(t, s, k, v)
	}
	if got, err := readEverything(s); err != nil || !reflect.DeepEqual(got, good) {
		t.Fatalf("after restoring: %v", err)
	}
}

func itoa(i int) string {
	return string(rune('0'+i/100%10)) + string(rune('0'+i/10%10)) + string(rune('0'+i%10))
}

// TestTamperMoveAndReplay moves sealed values to other keys and replays
// older values of the same key.
func TestTamperMoveAndReplay(t *testing.T) {
	ctx := context.Background()
	s := newMemStore(t)
	a, b := newDoc("c", "a"), newDoc("c", "b")
	var sb strings.Builder // incompressible enough to exceed inlineMax
	for i := 0; sb.Len() < 3*inlineMax; i++ {
		sb.WriteString(strconv.Itoa(i * 7919 % 10007))
	}
	big := sb.String() // snapshots in chunks, not inline
	mustWrite(t, s, a.set(t, "f", "a1", "big", big), b.set(t, "f", "b1", "big", big))
	if m := internalMeta(t, s, "c", "a"); len(m.chunks) != 1 || m.inline != nil {
		t.Fatalf("want one snapshot chunk, got %d chunks, %d inline bytes", len(m.chunks), len(m.inline))
	}
	s.Slots("ns").Put(ctx, "x", []byte("x1"))
	s.Slots("ns").Put(ctx, "y", []byte("y1"))
	for i := 0; i < 3; i++ {
		s.Append(ctx, "log", []byte{byte(i)})
	}
	ek := s.st().cur
	metaA, metaB := ek.metaKey("c", "a", ek.recID("c", "a")), ek.metaKey("c", "b", ek.recID("c", "b"))
	chunkA0, chunkB0 := chunkKey(ek.epoch, ek.recID("c", "a"), 0), chunkKey(ek.epoch, ek.recID("c", "b"), 0)
	slotX, slotY := ek.slotKey("ns", "x"), ek.slotKey("ns", "y")
	head := ek.headKey("log")

	expectCorrupt := func(what string, f func() error) {
		t.Helper()
		wantErr(t, f(), ErrCorrupt, what)
	}
	loadB := func() error { _, _, err := s.Load(ctx, "c", "b"); return err }
	loadA := func() error { _, _, err := s.Load(ctx, "c", "a"); return err }
	getY := func() error { _, _, err := s.Slots("ns").Get(ctx, "y"); return err }
	scan := func() error { return s.ScanLog(ctx, "log", 0, func(uint64, []byte) error { return nil }) }

	// Moves: a value under another key of the same kind.
	for _, mv := range []struct {
		what     string
		from, to []byte
		read     func() error
	}{
		{"meta A under B", metaA, metaB, loadB},
		{"chunk A under B", chunkA0, chunkB0, loadB},
		{"slot x under y", slotX, slotY, getY},
		{"chunk under meta key", chunkA0, metaB, loadB},
	} {
		orig := rawGet(t, s, mv.to)
		rawSet(t, s, mv.to, rawGet(t, s, mv.from))
		expectCorrupt(mv.what, mv.read)
		rawSet(t, s, mv.to, orig)
	}
	// Feed entries swapped between seqs.
	feed, _ := s.Feed(ctx, 0, 0)
	f0, f1 := seqKey(ek.epoch, kindFeed, feed[0].Seq), seqKey(ek.epoch, kindFeed, feed[1].Seq)
	v0, v1 := rawGet(t, s, f0), rawGet(t, s, f1)
	rawSet(t, s, f0, v1)
	expectCorrupt("feed entry moved", func() error { _, err := s.Feed(ctx, 0, 0); return err })
	rawSet(t, s, f0, v0)

	// Replays of older values of the same keys.
	oldMetaA := rawGet(t, s, metaA)
	oldSlotX := rawGet(t, s, slotX)
	oldHead := rawGet(t, s, head)
	mustWrite(t, s, a.set(t, "f", "a2"))
	s.Slots("ns").Put(ctx, "x", []byte("x2"))
	s.Append(ctx, "log", []byte{9})

	cur := rawGet(t, s, metaA)
	rawSet(t, s, metaA, oldMetaA)
	expectCorrupt("rolled-back meta (Load)", loadA)
	expectCorrupt("rolled-back meta (Meta)", func() error { _, err := s.Meta(ctx, "c", "a"); return err })
	expectCorrupt("rolled-back meta (List)", func() error { return s.List(ctx, "c", func(RecordMeta) error { return nil }) })
	rawSet(t, s, metaA, cur)

	// A chunk replayed from another version of the record (same key, other
	// content): record a's first incremental, rewritten with a new nonce.
	m := internalMetaMem(t, s, "c", "a")
	ck := chunkKey(ek.epoch, ek.recID("c", "a"), m.chunks[len(m.chunks)-1].n)
	curChunk := rawGet(t, s, ck)
	pt, _, err := ek.open(nil, kindChunk, ck, curChunk)
	if err != nil {
		t.Fatal(err)
	}
	forged, _ := ek.sealNew(kindChunk, ck, pt) // same plaintext, other nonce: an "older" value
	rawSet(t, s, ck, forged)
	expectCorrupt("replayed chunk", loadA)
	rawSet(t, s, ck, curChunk)
	rawDel(t, s, ck)
	expectCorrupt("deleted chunk", loadA)
	rawSet(t, s, ck, curChunk)

	cur = rawGet(t, s, slotX)
	rawSet(t, s, slotX, oldSlotX)
	expectCorrupt("rolled-back slot", func() error { _, _, err := s.Slots("ns").Get(ctx, "x"); return err })
	expectCorrupt("rolled-back slot (Range)", func() error {
		return s.Slots("ns").Range(ctx, func(string, []byte) error { return nil })
	})
	rawSet(t, s, slotX, cur)

	cur = rawGet(t, s, head)
	rawSet(t, s, head, oldHead)
	expectCorrupt("rolled-back log head", scan)
	_, err = s.Append(ctx, "log", []byte{1})
	wantErr(t, err, ErrCorrupt, "append on rolled-back head")
	rawSet(t, s, head, cur)
	e2 := entryKey(ek.entryPrefix("log"), 2)
	v2 := rawGet(t, s, e2)
	rawDel(t, s, e2)
	expectCorrupt("deleted log entry", scan)
	rawSet(t, s, e2, v2)
	e9 := entryKey(ek.entryPrefix("log"), 9)
	rawSet(t, s, e9, v2)
	expectCorrupt("log entry beyond head", scan)
	rawDel(t, s, e9)
	if err := scan(); err != nil {
		t.Fatalf("restored log: %v", err)
	}
	if _, err := readEverythingMem(s); err != nil {
		t.Fatalf("restored store: %v", err)
	}
}

func internalMetaMem(t *testing.T, s *Store, coll, id string) *metaRec {
	return internalMeta(t, s, coll, id)
}

func readEverythingMem(s *Store) (logical, error) { return readEverything(s) }

func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	ents, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if e.IsDir() || e.Name() == "LOCK" {
			continue
		}
		in, err := os.Open(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out, err := os.Create(filepath.Join(dst, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(out, in); err != nil {
			t.Fatal(err)
		}
		in.Close()
		out.Close()
	}
}

// TestTamperFiles flips bits in every file of a closed store (sampled
// positions in large files; seed logged) and opens a pristine copy each
// time: the result is ErrCorrupt (at Open or on a read) or exactly the
// original data (a bit Badger never reads, e.g. GC statistics), never other
// data and never a panic.
func TestTamperFiles(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	ctx := context.Background()
	s, dir := newDiskStore(t)
	populate(t, s, 30)
	s.Close()
	ref, err := Open(ctx, dir, testOpts())
	if err != nil {
		t.Fatal(err)
	}
	good, err := readEverything(ref)
	if err != nil {
		t.Fatal(err)
	}
	ref.Close()
	pristine := t.TempDir()
	copyDir(t, dir, pristine)
	ents, _ := os.ReadDir(pristine)
	perFile := 30
	if testing.Short() {
		perFile = 8
	}
	results := map[string]map[string]int{}
	for _, e := range ents {
		orig, err := os.ReadFile(filepath.Join(pristine, e.Name()))
		if err != nil || len(orig) == 0 {
			continue
		}
		res := map[string]int{}
		results[e.Name()] = res
		for i := 0; i < perFile; i++ {
			work := t.TempDir()
			copyDir(t, pristine, work)
			b := append([]byte(nil), orig...)
			pos := rng.IntN(len(b))
			if len(b) <= perFile {
				pos = i % len(b)
			}
			b[pos] ^= 1 << rng.IntN(8)
			os.WriteFile(filepath.Join(work, e.Name()), b, 0o600)
			st, err := Open(ctx, work, testOpts())
			var got logical
			if err == nil {
				got, err = readEverything(st)
				st.Close()
			}
			switch {
			case errors.Is(err, ErrCorrupt):
				res["corrupt"]++
			case err == nil && reflect.DeepEqual(got, good):
				res["unaffected"]++
			case err == nil:
				t.Fatalf("%s flip at %d: store returned different data without error", e.Name(), pos)
			default:
				t.Fatalf("%s flip at %d: %v (want ErrCorrupt)", e.Name(), pos, err)
			}
		}
	}
	names := sortedKeys(results)
	sort.Strings(names)
	for _, n := range names {
		t.Logf("%s: %v", n, results[n])
	}
	if results[headerFile]["corrupt"] != perFile {
		t.Fatalf("header flips not all detected: %v", results[headerFile])
	}
}
