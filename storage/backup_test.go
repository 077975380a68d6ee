package storage

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/automerge/automerge-go"
	"github.com/fxamacker/cbor/v2"
)

// fuzzIdentity is a fixed, public test identity: the committed FuzzImport
// seeds are encrypted to it. Never use it for anything else.
const fuzzIdentity = "AGE-SECRET-KEY-1KWW4GHY630HS77K6V0EZT9XZJCDML298HNTLTP2APN8USJR2SFJS8UVV7W"

func testIdentity(t testing.TB) *age.X25519Identity {
	id, err := age.ParseX25519Identity(fuzzIdentity)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

const testWorkFactor = 10 // scrypt log2(N) for tests

func exportPass(t testing.TB, s *Store, pass string, ns ...string) []byte {
	t.Helper()
	var buf bytes.Buffer
	if _, err := s.Export(context.Background(), &buf, ExportOptions{Passphrase: []byte(pass), Namespaces: ns, ScryptWorkFactor: testWorkFactor}); err != nil {
		t.Fatalf("Export: %v", err)
	}
	return buf.Bytes()
}

func TestBackupRoundTrip(t *testing.T) {
	ctx := context.Background()
	src := newMemStore(t)
	populate(t, src, 40)
	src.Slots("identity").Put(ctx, "key", []byte("device-secret"))
	want := snapshotLogical(t, src, testColls, testNS, nil)
	backup := exportPass(t, src, "backup pass", "ns0", "ns1")

	// A fresh on-disk store with another passphrase.
	dir := t.TempDir()
	dst, err := Create(ctx, dir, Options{Passphrase: []byte("other"), KDF: TestKDF()})
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	st, err := dst.Import(ctx, bytes.NewReader(backup), ImportOptions{Passphrase: []byte("backup pass")}, amImporter{dst})
	if err != nil {
		t.Fatal(err)
	}
	if st.Records != 40 || st.Created != 40 || st.Slots != 30 || st.Merged != 0 {
		t.Fatalf("stats %+v", st)
	}
	got := snapshotLogical(t, dst, testColls, testNS, nil)
	if len(got.Records) != len(want.Records) {
		t.Fatalf("%d records, want %d", len(got.Records), len(want.Records))
	}
	ignoreSeq := func(l logical) map[string]string {
		out := map[string]string{}
		for k, v := range l.Records {
			parts := strings.Split(v, "|")
			out[k] = strings.Join(append(parts[:2:2], parts[3:]...), "|") // all but Seq
		}
		return out
	}
	if !reflect.DeepEqual(ignoreSeq(got), ignoreSeq(want)) || !reflect.DeepEqual(got.Slots, want.Slots) {
		t.Fatalf("imported data differs:\n%v\n%v", ignoreSeq(got), ignoreSeq(want))
	}
	if _, ok, _ := dst.Slots("identity").Get(ctx, "key"); ok {
		t.Fatal("namespace not requested was exported")
	}
	// Importing again changes nothing.
	st, err = dst.Import(ctx, bytes.NewReader(backup), ImportOptions{Passphrase: []byte("backup pass")}, amImporter{dst})
	if err != nil || st.Unchanged != 40 || st.SlotsSkipped != 30 || st.Created+st.Merged+st.Slots != 0 {
		t.Fatalf("second import %+v %v", st, err)
	}
}

func TestBackupMergeSemantics(t *testing.T) {
	ctx := context.Background()
	a := newMemStore(t)
	td := newDoc("c", "r")
	mustWrite(t, a, td.set(t, "title", "v1"))
	a.Slots("ns").Put(ctx, "cursor", []byte("old"))
	old := exportPass(t, a, "p", "ns")

	// Newer local edits; the old backup must not undo them.
	rw := td.set(t, "title", "v2", "body", "b")
	rw.Attrs = []byte("local")
	mustWrite(t, a, rw)
	a.Slots("ns").Put(ctx, "cursor", []byte("new"))
	st, err := a.Import(ctx, bytes.NewReader(old), ImportOptions{Passphrase: []byte("p")}, amImporter{a})
	if err != nil || st.Unchanged != 1 || st.SlotsSkipped != 1 {
		t.Fatalf("old backup: %+v %v", st, err)
	}
	if field(t, a, "c", "r", "title") != "v2" || field(t, a, "c", "r", "body") != "b" {
		t.Fatal("old backup overwrote newer edits")
	}
	if v, _, _ := a.Slots("ns").Get(ctx, "cursor"); string(v) != "new" {
		t.Fatal("old backup overwrote a slot")
	}
	if m, _ := a.Meta(ctx, "c", "r"); string(m.Attrs) != "local" {
		t.Fatal("old backup overwrote newer attrs")
	}

	// Concurrent edits on another store that restored the old backup.
	b := newMemStore(t)
	if _, err := b.Import(ctx, bytes.NewReader(old), ImportOptions{Passphrase: []byte("p")}, amImporter{b}); err != nil {
		t.Fatal(err)
	}
	data, _, _ := b.Load(ctx, "c", "r")
	bd, _ := automerge.Load(data)
	before := bd.Heads()
	bd.RootMap().Set("tag", "from-b")
	bd.Commit("b")
	chs, _ := bd.Changes(before...)
	mustWrite(t, b, RecordWrite{Collection: "c", ID: "r", Changes: automerge.SaveChanges(chs),
		Snapshot: func() ([]byte, error) { return bd.Save(), nil }, Heads: amHeads(bd.Heads()), Attrs: []byte("from-b"),
		Time: time.Now().Add(time.Hour)})
	fromB := exportPass(t, b, "p")
	st, err = a.Import(ctx, bytes.NewReader(fromB), ImportOptions{Passphrase: []byte("p")}, amImporter{a})
	if err != nil || st.Merged != 1 {
		t.Fatalf("merge import: %+v %v", st, err)
	}
	if field(t, a, "c", "r", "title") != "v2" || field(t, a, "c", "r", "body") != "b" || field(t, a, "c", "r", "tag") != "from-b" {
		t.Fatal("concurrent edits did not both survive")
	}
	m, _ := a.Meta(ctx, "c", "r")
	if string(m.Attrs) != "from-b" { // b's meta is newer
		t.Fatalf("attrs %q", m.Attrs)
	}
	// Heads in the meta match the merged document.
	data, m, _ = a.Load(ctx, "c", "r")
	ad, _ := automerge.Load(data)
	if !reflect.DeepEqual(amHeads(ad.Heads()), m.Heads) {
		t.Fatal("meta heads differ from the merged document")
	}
}

// encryptTo age-encrypts plaintext to the test identity.
func encryptTo(t testing.TB, plaintext []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := age.Encrypt(&buf, testIdentity(t).Recipient())
	if err != nil {
		t.Fatal(err)
	}
	w.Write(plaintext)
	w.Close()
	return buf.Bytes()
}

// rawStream builds a backup payload from items, with a correct trailer
// unless the caller mangles it.
func rawStream(t testing.TB, items ...any) []byte {
	t.Helper()
	var out []byte
	h := sha256.New()
	for _, it := range items {
		b, err := bkEnc.Marshal(it)
		if err != nil {
			t.Fatal(err)
		}
		h.Write(b)
		out = append(out, b...)
	}
	tr, _ := bkEnc.Marshal(bkTrailer{K: "end", Items: uint64(len(items)), SHA256: h.Sum(nil)})
	return append(out, tr...)
}

func validDoc(t testing.TB) []byte {
	d := automerge.New()
	d.RootMap().Set("f", "v")
	d.Commit("x")
	return d.Save()
}

func TestBackupRejected(t *testing.T) {
	ctx := context.Background()
	s := newMemStore(t)
	populate(t, s, 10)
	before := rawDump(t, s)
	id := testIdentity(t)
	var buf bytes.Buffer
	if _, err := s.Export(ctx, &buf, ExportOptions{Recipients: []age.Recipient{id.Recipient()}, Namespaces: testNS}); err != nil {
		t.Fatal(err)
	}
	good := buf.Bytes()
	passBackup := exportPass(t, s, "right")
	hdr := bkHeader{K: backupKind, V: 1, Records: 1}
	rec := bkRecord{K: "record", C: "c", ID: "x", Doc: validDoc(t)}
	okStream := rawStream(t, hdr, rec)
	if _, err := readBackupStream(bytes.NewReader(okStream), 1<<20, amCheck); err != nil {
		t.Fatalf("control stream rejected: %v", err)
	}
	badHash := append([]byte(nil), okStream...)
	badHash[len(badHash)-1] ^= 1
	cases := map[string][]byte{
		"empty":             {},
		"garbage":           []byte("not an age file at all"),
		"truncated header":  good[:40],
		"truncated payload": good[:len(good)-1],
		"truncated half":    good[:len(good)/2],
		"appended":          append(append([]byte(nil), good...), 0),
		"flip payload":      flip(good, len(good)-20),
		"flip middle":       flip(good, len(good)/2),
		"flip header MAC":   flip(good, bytes.Index(good, []byte("\n--- "))+8),
		"flip body start":   flip(good, bytes.Index(good, []byte("\n--- "))+50),
		"no trailer":        encryptTo(t, okStream[:len(okStream)-len(rawStream(t))]),
		"bad hash":          encryptTo(t, badHash),
		"extra after end":   encryptTo(t, append(append([]byte(nil), okStream...), okStream...)),
		"count mismatch":    encryptTo(t, rawStream(t, bkHeader{K: backupKind, V: 1, Records: 2}, rec)),
		"bad version":       encryptTo(t, rawStream(t, bkHeader{K: backupKind, V: 2, Records: 1}, rec)),
		"no header":         encryptTo(t, rawStream(t, rec)),
		"dup record":        encryptTo(t, rawStream(t, bkHeader{K: backupKind, V: 1, Records: 2}, rec, rec)),
		"bad doc":           encryptTo(t, rawStream(t, hdr, bkRecord{K: "record", C: "c", ID: "x", Doc: []byte("junk")})),
		"empty id":          encryptTo(t, rawStream(t, hdr, bkRecord{K: "record", C: "c", Doc: rec.Doc})),
		"unknown field":     encryptTo(t, rawStream(t, hdr, map[string]any{"k": "record", "c": "c", "id": "x", "created": 0, "updated": 0, "deleted": false, "attrs": []byte{}, "doc": rec.Doc, "zz": 1})),
		"unknown kind":      encryptTo(t, rawStream(t, hdr, map[string]any{"k": "what"})),
		"huge length":       encryptTo(t, []byte{0x5b, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}),
		"plain cbor":        okStream,
	}
	for name, b := range cases {
		_, err := s.Import(ctx, bytes.NewReader(b), ImportOptions{Identities: []age.Identity{id}}, amImporter{s})
		wantErr(t, err, ErrBadBackup, name)
	}
	// A wrong passphrase or identity is a wrong key, not a bad backup; so
	// is a recipient stanza damaged so that it names another kind of
	// recipient (age cannot tell that from a backup made for someone else).
	wrongKey := map[string]error{}
	_, wrongKey["wrong passphrase"] = s.Import(ctx, bytes.NewReader(passBackup), ImportOptions{Passphrase: []byte("wrong")}, amImporter{s})
	_, wrongKey["wrong non-ASCII passphrase"] = s.Import(ctx, bytes.NewReader(passBackup), ImportOptions{Passphrase: []byte("wrönġ")}, amImporter{s})
	other, _ := age.GenerateX25519Identity()
	_, wrongKey["wrong identity"] = s.Import(ctx, bytes.NewReader(good), ImportOptions{Identities: []age.Identity{other}}, amImporter{s})
	_, wrongKey["passphrase for a recipient backup"] = s.Import(ctx, bytes.NewReader(good), ImportOptions{Passphrase: []byte("right")}, amImporter{s})
	_, wrongKey["identity for a passphrase backup"] = s.Import(ctx, bytes.NewReader(passBackup), ImportOptions{Identities: []age.Identity{id}}, amImporter{s})
	_, wrongKey["stanza type changed"] = s.Import(ctx, bytes.NewReader(flip(good, len("age-encryption.org/v1\n-> X2551"))), ImportOptions{Identities: []age.Identity{id}}, amImporter{s})
	for name, err := range wrongKey {
		wantErr(t, err, ErrWrongKey, name)
		if errors.Is(err, ErrBadBackup) {
			t.Fatalf("%s: %v is also ErrBadBackup", name, err)
		}
	}
	var err error
	_, err = s.Import(ctx, bytes.NewReader(good), ImportOptions{Identities: []age.Identity{id}, MaxBytes: 100}, amImporter{s})
	wantErr(t, err, ErrBadBackup, "over MaxBytes")
	if after := rawDump(t, s); !reflect.DeepEqual(before, after) {
		t.Fatal("a rejected backup changed the store")
	}
	// The good one imports (into the same store: all unchanged).
	st, err := s.Import(ctx, bytes.NewReader(good), ImportOptions{Identities: []age.Identity{id}}, amImporter{s})
	if err != nil || st.Unchanged != 10 {
		t.Fatalf("good backup: %+v %v", st, err)
	}
	_, err = s.Import(ctx, bytes.NewReader(good), ImportOptions{}, amImporter{s})
	wantErr(t, err, ErrInvalid, "no identity")
	_, err = s.Export(ctx, io.Discard, ExportOptions{Passphrase: []byte("p"), Recipients: []age.Recipient{id.Recipient()}})
	wantErr(t, err, ErrInvalid, "passphrase and recipients")
}

func flip(b []byte, i int) []byte {
	c := append([]byte(nil), b...)
	c[i] ^= 0x01
	return c
}

// TestBackupAgeCLI decrypts an X25519 backup with the real age tool and
// decodes the CBOR stream by the documented format.
func TestBackupAgeCLI(t *testing.T) {
	agePath, err := exec.LookPath("age")
	if err != nil {
		t.Skip("age CLI not on PATH (CI installs Debian's age): " + err.Error())
	}
	ctx := context.Background()
	s := newMemStore(t)
	populate(t, s, 5)
	id, _ := age.GenerateX25519Identity()
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "key.txt")
	os.WriteFile(keyFile, []byte(id.String()+"\n"), 0o600)
	bf, err := os.Create(filepath.Join(dir, "backup.age"))
	if err != nil {
		t.Fatal(err)
	}
	stats, err := s.Export(ctx, bf, ExportOptions{Recipients: []age.Recipient{id.Recipient()}, Namespaces: []string{"ns0"}})
	bf.Close()
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(agePath, "-d", "-i", keyFile, filepath.Join(dir, "backup.age")).Output()
	if err != nil {
		t.Fatalf("age -d: %v", err)
	}
	// Decode by hand: a CBOR sequence of maps with text keys.
	dec := cbor.NewDecoder(bytes.NewReader(out))
	h := sha256.New()
	var items []map[string]any
	for {
		var raw cbor.RawMessage
		if err := dec.Decode(&raw); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := cbor.Unmarshal(raw, &m); err != nil {
			t.Fatal(err)
		}
		if m["k"] != "end" {
			h.Write(raw)
		}
		items = append(items, m)
	}
	first, last := items[0], items[len(items)-1]
	if first["k"] != backupKind || first["v"] != uint64(1) || first["records"] != uint64(stats.Records) || first["slots"] != uint64(stats.Slots) {
		t.Fatalf("header %v", first)
	}
	if last["k"] != "end" || last["items"] != uint64(len(items)-1) || !bytes.Equal(last["sha256"].([]byte), h.Sum(nil)) {
		t.Fatalf("trailer %v", last)
	}
	for _, it := range items[1 : 1+stats.Records] {
		if it["k"] != "record" {
			t.Fatalf("item %v", it)
		}
		if _, err := automerge.Load(it["doc"].([]byte)); err != nil {
			t.Fatalf("doc of %v/%v does not load: %v", it["c"], it["id"], err)
		}
	}
	if stats.Records != 5 || stats.Slots != 15 {
		t.Fatalf("stats %+v", stats)
	}
}

// Fuzzing: FuzzImport feeds arbitrary bytes (seeds: valid backups to the
// fixed identity) to Import; FuzzBackupStream feeds arbitrary plaintext to
// the CBOR decoder behind age, where mutations actually land.

var (
	fuzzOnce  sync.Once
	fuzzStore *Store
)

func fuzzTarget(t testing.TB) *Store {
	fuzzOnce.Do(func() {
		o := testOpts()
		o.InMemory = true
		s, err := Create(context.Background(), "", o)
		if err != nil {
			t.Fatal(err)
		}
		fuzzStore = s
	})
	return fuzzStore
}

func seedBackup(t testing.TB) []byte {
	s := newMemStore(t)
	populate(t, s, 3)
	var buf bytes.Buffer
	if _, err := s.Export(context.Background(), &buf, ExportOptions{Recipients: []age.Recipient{testIdentity(t).Recipient()}, Namespaces: []string{"ns0"}}); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func FuzzImport(f *testing.F) {
	f.Add(seedBackup(f))
	f.Add([]byte("age-encryption.org/v1\n"))
	id := testIdentity(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		s := fuzzTarget(t)
		_, err := s.Import(context.Background(), bytes.NewReader(data), ImportOptions{Identities: []age.Identity{id}, MaxBytes: 1 << 20}, amImporter{s})
		if err != nil && !errors.Is(err, ErrBadBackup) {
			t.Fatalf("Import: %v", err)
		}
	})
}

func FuzzBackupStream(f *testing.F) {
	f.Add(rawStream(f, bkHeader{K: backupKind, V: 1, Records: 1, Slots: 1},
		bkRecord{K: "record", C: "c", ID: "i", Doc: validDoc(f)}, bkSlot{K: "slot", NS: "n", Key: "k", Value: []byte("v")}))
	f.Add(rawStream(f, bkHeader{K: backupKind, V: 1}))
	f.Fuzz(func(t *testing.T, data []byte) {
		st, err := readBackupStream(bytes.NewReader(data), 1<<20, amCheck)
		if err != nil {
			if !errors.Is(err, ErrBadBackup) {
				t.Fatalf("readBackupStream: %v", err)
			}
			return
		}
		if uint64(len(st.records)) != st.hdr.Records || uint64(len(st.slots)) != st.hdr.Slots {
			t.Fatal("accepted a stream whose counts do not match")
		}
		for _, r := range st.records {
			if _, err := amLoad(r.Doc); err != nil {
				t.Fatal("accepted an unloadable document")
			}
		}
	})
}
