package storage

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"sync"
	"testing"
)

// logical is everything observable through the API, for before/after checks.
type logical struct {
	Records  map[string]string // coll/id -> field "n" + meta summary
	Slots    map[string]string
	Logs     map[string][]string
	Feed     []FeedEntry
	Colls    []string
	LastSeq  uint64
	ListSeen map[string]int
}

func snapshotLogical(t *testing.T, s *Store, colls, namespaces, logs []string) logical {
	t.Helper()
	ctx := context.Background()
	l := logical{Records: map[string]string{}, Slots: map[string]string{}, Logs: map[string][]string{}, ListSeen: map[string]int{}}
	for _, c := range colls {
		err := s.List(ctx, c, func(m RecordMeta) error {
			l.ListSeen[c+"/"+m.ID]++
			data, m2, err := s.Load(ctx, c, m.ID)
			if err != nil {
				return err
			}
			l.Records[c+"/"+m.ID] = fmt.Sprintf("%s|%v|%d|%x|%d|%d|%d", docField(t, data, "n"), m2.Deleted, m2.Seq, m2.Attrs, m2.Created.UnixNano(), m2.Updated.UnixNano(), len(m2.Heads))
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, ns := range namespaces {
		if err := s.Slots(ns).Range(ctx, func(k string, v []byte) error { l.Slots[ns+"/"+k] = string(v); return nil }); err != nil {
			t.Fatal(err)
		}
	}
	for _, ns := range logs {
		if err := s.ScanLog(ctx, ns, 0, func(n uint64, v []byte) error { l.Logs[ns] = append(l.Logs[ns], string(v)); return nil }); err != nil {
			t.Fatal(err)
		}
	}
	var err error
	if l.Feed, err = s.Feed(ctx, 0, 0); err != nil {
		t.Fatal(err)
	}
	if l.Colls, err = s.Collections(ctx); err != nil {
		t.Fatal(err)
	}
	l.LastSeq = s.LastSeq()
	return l
}

func populate(t testing.TB, s *Store, nrec int) map[string]*tdoc {
	t.Helper()
	ctx := context.Background()
	docs := map[string]*tdoc{}
	var b Batch
	for i := 0; i < nrec; i++ {
		c := "col" + strconv.Itoa(i%3)
		td := newDoc(c, "r"+strconv.Itoa(i))
		docs[c+"/"+td.id] = td
		rw := td.set(t, "n", strconv.Itoa(i))
		rw.Attrs = []byte{byte(i)}
		rw.Deleted = i%17 == 0
		b.Records = append(b.Records, rw)
	}
	for i := 0; i < 30; i++ {
		b.Slots = append(b.Slots, SlotWrite{Namespace: "ns" + strconv.Itoa(i%2), Key: "k" + strconv.Itoa(i), Value: []byte("v" + strconv.Itoa(i))})
	}
	if _, err := s.Write(ctx, b); err != nil {
		t.Fatal(err)
	}
	// Some records get incremental chunks.
	for i := 0; i < nrec; i += 5 {
		td := docs["col"+strconv.Itoa(i%3)+"/r"+strconv.Itoa(i)]
		mustWrite(t, s, td.set(t, "n", strconv.Itoa(i)+"b"))
	}
	for i := 0; i < 20; i++ {
		if _, err := s.Append(ctx, "log"+strconv.Itoa(i%2), []byte("e"+strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	return docs
}

var (
	testColls = []string{"col0", "col1", "col2"}
	testNS    = []string{"ns0", "ns1"}
	testLogs  = []string{"log0", "log1"}
)

func checkNoOldEpoch(t *testing.T, s *Store) {
	t.Helper()
	cur := s.st().cur.epoch
	for k := range rawDump(t, s) {
		if e, _, ok := keyEpoch(mustHex(k)); ok && e != cur {
			t.Fatalf("key of epoch %d left (current %d)", e, cur)
		}
	}
}

func TestRotateKeyPreservesEverything(t *testing.T) {
	ctx := context.Background()
	s, dir := newDiskStore(t)
	populate(t, s, 300)
	before := snapshotLogical(t, s, testColls, testNS, testLogs)
	oldRaw := rawDump(t, s)
	last, total := -1, -1
	err := s.RotateKey(ctx, func(done, tot int) {
		if done < last || (total >= 0 && tot != total) || done > tot {
			t.Fatalf("progress %d/%d after %d/%d", done, tot, last, total)
		}
		last, total = done, tot
	})
	if err != nil {
		t.Fatal(err)
	}
	if last != total || total < 300 {
		t.Fatalf("final progress %d/%d", last, total)
	}
	if s.st().cur.epoch != 2 {
		t.Fatalf("epoch %d", s.st().cur.epoch)
	}
	checkNoOldEpoch(t, s)
	// Every value was re-sealed: no old envelope survives anywhere.
	newRaw := rawDump(t, s)
	oldVals := map[string]bool{}
	for k, v := range oldRaw {
		if k != "00" {
			oldVals[string(v)] = true
		}
	}
	for _, v := range newRaw {
		if oldVals[string(v)] {
			t.Fatal("an old envelope survived rotation")
		}
	}
	after := snapshotLogical(t, s, testColls, testNS, testLogs)
	if !reflect.DeepEqual(before, after) {
		t.Fatalf("rotation changed the data:\nbefore %+v\nafter  %+v", before, after)
	}
	s = reopen(t, s, dir)
	if got := snapshotLogical(t, s, testColls, testNS, testLogs); !reflect.DeepEqual(before, got) {
		t.Fatal("data differs after reopen")
	}
	// And again, on an in-memory store.
	m := newMemStore(t)
	populate(t, m, 50)
	b := snapshotLogical(t, m, testColls, testNS, testLogs)
	if err := m.RotateKey(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(b, snapshotLogical(t, m, testColls, testNS, testLogs)) {
		t.Fatal("in-memory rotation changed the data")
	}
}

// TestRotateInterrupted stops a rotation after its first batch and uses the
// store while its data is split across two key epochs.
func TestRotateInterrupted(t *testing.T) {
	ctx := context.Background()
	s, dir := newDiskStore(t)
	docs := populate(t, s, 600)
	before := snapshotLogical(t, s, testColls, testNS, testLogs)
	cctx, cancel := context.WithCancel(ctx)
	err := s.RotateKey(cctx, func(done, total int) { cancel() })
	wantErr(t, err, context.Canceled, "interrupted rotation")
	st := s.st()
	if st.next == nil {
		t.Fatal("not rotating")
	}
	counts := map[uint32]int{}
	for k := range rawDump(t, s) {
		if e, kind, ok := keyEpoch(mustHex(k)); ok && kind == kindRec {
			counts[e]++
		}
	}
	if counts[st.cur.epoch] == 0 || counts[st.next.epoch] == 0 {
		t.Fatalf("records not split across epochs: %v", counts)
	}
	if got := snapshotLogical(t, s, testColls, testNS, testLogs); !reflect.DeepEqual(before, got) {
		t.Fatalf("split store reads differently:\n%+v\n%+v", before, got)
	}
	// Writes while split: records in both epochs, new records, slots, logs.
	for i := 0; i < 600; i += 50 {
		c := "col" + strconv.Itoa(i%3)
		mustWrite(t, s, docs[c+"/r"+strconv.Itoa(i)].set(t, "n", "split"+strconv.Itoa(i)))
	}
	mustWrite(t, s, newDoc("col9", "new").set(t, "n", "fresh"))
	if err := s.Slots("ns0").Put(ctx, "k0", []byte("changed")); err != nil {
		t.Fatal(err)
	}
	if err := s.Slots("ns1").Delete(ctx, "k1"); err != nil {
		t.Fatal(err)
	}
	if n, err := s.Append(ctx, "log0", []byte("split")); err != nil || n != 11 {
		t.Fatalf("append while split: %d %v", n, err)
	}
	mid := snapshotLogical(t, s, append(testColls, "col9"), testNS, testLogs)
	for k, n := range mid.ListSeen {
		if n != 1 {
			t.Fatalf("List saw %s %d times", k, n)
		}
	}
	if _, has := mid.Slots["ns1/k1"]; has || len(mid.Records) != 601 || mid.Slots["ns0/k0"] != "changed" || len(mid.Slots) != 29 {
		t.Fatalf("writes while split: %d records, slots %v", len(mid.Records), mid.Slots)
	}
	if l := mid.Logs["log0"]; len(l) != 11 || l[10] != "split" {
		t.Fatalf("log while split: %v", l)
	}
	if !sort.SliceIsSorted(mid.Feed, func(i, j int) bool { return mid.Feed[i].Seq < mid.Feed[j].Seq }) || len(mid.Feed) != 601 {
		t.Fatalf("feed while split: %d entries", len(mid.Feed))
	}
	// The reconciliation sums, spread over both epochs' pages, still add
	// up to the records.
	for _, c := range append(testColls, "col9") {
		checkRecon(t, s, c)
	}
	// Reopen resumes and finishes the rotation.
	s = reopen(t, s, dir)
	if s.st().next != nil {
		t.Fatal("Open did not finish the rotation")
	}
	checkNoOldEpoch(t, s)
	for _, c := range append(testColls, "col9") {
		checkRecon(t, s, c)
	}
	if got := snapshotLogical(t, s, append(testColls, "col9"), testNS, testLogs); !reflect.DeepEqual(mid, got) {
		t.Fatalf("resumed rotation changed data")
	}
}

func TestRotateWithConcurrentWriters(t *testing.T) {
	ctx := context.Background()
	s := newMemStore(t)
	docs := populate(t, s, 600)
	var wg sync.WaitGroup
	var mu sync.Mutex
	want := map[string]string{}
	stop := make(chan struct{})
	for g := 0; g < 3; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := g; ; i += 3 {
				select {
				case <-stop:
					return
				default:
				}
				key := "col" + strconv.Itoa(i%3) + "/r" + strconv.Itoa(i%600)
				td := docs[key]
				v := "w" + strconv.Itoa(i)
				if _, err := s.Write(ctx, Batch{Records: []RecordWrite{td.set(t, "n", v)},
					Slots: []SlotWrite{{Namespace: "ns" + strconv.Itoa(g%2), Key: "k" + strconv.Itoa(g), Value: []byte(v)}}}); err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				want[key] = v
				mu.Unlock()
			}
		}(g)
	}
	for r := 0; r < 2; r++ {
		if err := s.RotateKey(ctx, nil); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	checkNoOldEpoch(t, s)
	if len(want) == 0 {
		t.Fatal("no concurrent writes happened")
	}
	for key, v := range want {
		c, id, _ := cut(key)
		if got := field(t, s, c, id, "n"); got != v {
			t.Fatalf("%s = %q want %q", key, got, v)
		}
	}
	got := snapshotLogical(t, s, testColls, testNS, testLogs)
	if len(got.Records) != 600 || len(got.Feed) != 600 {
		t.Fatalf("%d records %d feed", len(got.Records), len(got.Feed))
	}
}

func cut(s string) (string, string, bool) {
	for i := range s {
		if s[i] == '/' {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}

func TestChangePassphrase(t *testing.T) {
	ctx := context.Background()
	s, dir := newDiskStore(t)
	mustWrite(t, s, newDoc("c", "1").set(t, "n", "v"))
	if err := s.ChangePassphrase(ctx, Options{Passphrase: []byte("new pass"), KDF: TestKDF()}); err != nil {
		t.Fatal(err)
	}
	// Still usable, and rotation still works after the KEK changed.
	if err := s.RotateKey(ctx, nil); err != nil {
		t.Fatal(err)
	}
	s.Close()
	_, err := Open(ctx, dir, testOpts())
	wantErr(t, err, ErrWrongKey, "old passphrase")
	s, err = Open(ctx, dir, Options{Passphrase: []byte("new pass")})
	if err != nil {
		t.Fatal(err)
	}
	if field(t, s, "c", "1", "n") != "v" {
		t.Fatal("data lost")
	}
	key := randomKey()
	if err := s.ChangePassphrase(ctx, Options{Key: append([]byte(nil), key...)}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	_, err = Open(ctx, dir, Options{Passphrase: []byte("new pass")})
	wantErr(t, err, ErrWrongKey, "passphrase after switch to raw key")
	s, err = Open(ctx, dir, Options{Key: key})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	wantErr(t, s.ChangePassphrase(ctx, Options{}), ErrInvalid, "empty new secret")
	if field(t, s, "c", "1", "n") != "v" {
		t.Fatal("data lost")
	}
	if errors.Is(err, ErrCorrupt) {
		t.Fatal(err)
	}
}
