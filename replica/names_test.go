package replica

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/automerge/automerge-go"
	"github.com/ferrysync/ferry/crdt"
	"github.com/ferrysync/ferry/internal/names"
	"github.com/ferrysync/ferry/policy"
	"github.com/ferrysync/ferry/privacy/anon"
	"github.com/ferrysync/ferry/privacy/consent"
	"github.com/ferrysync/ferry/relay"
	"github.com/ferrysync/ferry/storage"
	"github.com/ferrysync/ferry/transport"
	"pgregory.net/rapid"
)

// invalidNames are names the rule refuses, one per reason.
var invalidNames = map[string]string{
	"empty":       "",
	"NUL":         "b\x00c",
	"tab":         "tab\there",
	"newline":     "two\nlines",
	"escape":      "\x1b[31mred",
	"DEL":         "del\x7f",
	"C1":          "next\u0085line",
	"broken UTF8": "bad\xffbyte",
	"surrogate":   "\xed\xa0\x80",
	"too long":    strings.Repeat("x", names.MaxLen+1),
}

func wantInvalid(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("%s: err = %v, want ErrInvalid", what, err)
	}
	if strings.ContainsAny(err.Error(), "\n\r") {
		t.Fatalf("%s: message spans lines: %q", what, err)
	}
}

// TestNULShiftedNamesRefused is the example of issue 11: ("a", "b\x00c")
// and ("a\x00b", "c") used to become one record in the cache, the locks
// and the shared-heads slots. Both are refused now, and nothing is
// stored.
func TestNULShiftedNamesRefused(t *testing.T) {
	e := newEnv(t)
	r := e.replica("a")
	ctx := context.Background()
	wantInvalid(t, "put a/b\\x00c", r.Put(ctx, "a", "b\x00c", map[string]any{"v": 1}))
	wantInvalid(t, "put a\\x00b/c", r.Put(ctx, "a\x00b", "c", map[string]any{"v": 2}))
	if cols, err := r.Collections(ctx); err != nil || len(cols) != 0 {
		t.Fatalf("collections after refused puts: %q %v", cols, err)
	}
}

// TestInvalidNamesRefusedEverywhere: every entry point that takes a
// collection name or record id refuses each kind of invalid name with
// ErrInvalid, before anything is written or sent.
func TestInvalidNamesRefusedEverywhere(t *testing.T) {
	e := newEnv(t)
	r, peer := e.replica("a"), e.replica("b")
	ctx := context.Background()
	mustPut(t, r, "notes", "ok", map[string]any{"v": 1})
	doc, err := r.ExportDoc(ctx, "notes", "ok")
	if err != nil {
		t.Fatal(err)
	}
	for why, bad := range invalidNames {
		for _, c := range []struct{ coll, id string }{{bad, "ok"}, {"notes", bad}} {
			what := fmt.Sprintf("%s (%q/%q)", why, c.coll, c.id)
			wantInvalid(t, "Put "+what, r.Put(ctx, c.coll, c.id, map[string]any{"v": 1}))
			wantInvalid(t, "Update "+what, r.Update(ctx, c.coll, c.id, func(d *crdt.Doc) error { return d.Set("v", 1) }))
			_, err := r.Get(ctx, c.coll, c.id)
			wantInvalid(t, "Get "+what, err)
			wantInvalid(t, "Delete "+what, r.Delete(ctx, c.coll, c.id))
			_, err = r.ExportDoc(ctx, c.coll, c.id)
			wantInvalid(t, "ExportDoc "+what, err)
			_, err = r.ImportDoc(ctx, c.coll, c.id, doc)
			wantInvalid(t, "ImportDoc "+what, err)
		}
		_, err := r.List(ctx, bad, ListOptions{})
		wantInvalid(t, "List "+why, err)
		_, err = r.Pair(ctx, peer.ID(), []string{"notes", bad}, 0)
		wantInvalid(t, "Pair "+why, err)
		_, err = r.Share(ctx, ShareOptions{Rules: shareRules(bad), DestinationID: "x"})
		wantInvalid(t, "Share "+why, err)
		// Refused before the relay is contacted: there is none at this URL.
		_, err = r.CreateSpace(ctx, "http://127.0.0.1:1", []string{bad})
		wantInvalid(t, "CreateSpace "+why, err)
	}
	// Pair refused the whole list: no grant for "notes" beyond newEnv's.
	grants := 0
	for _, g := range r.Consent().Live() {
		if g.Destination == peer.ID() {
			grants++
		}
	}
	if grants != len(testCollections) {
		t.Fatalf("%d grants to the peer, want %d", grants, len(testCollections))
	}
	if cols, _ := r.Collections(ctx); !slices.Equal(cols, []string{"notes"}) {
		t.Fatalf("collections: %q", cols)
	}
}

// TestRecordKeysNeverCollide, below the validation: the document cache,
// the lock stripes' keys and the per-peer shared-heads slots keep apart
// any two different (collection, id) pairs, whatever bytes they hold.
func TestRecordKeysNeverCollide(t *testing.T) {
	e := newEnv(t)
	r := e.replica("a")
	ctx := context.Background()
	b := rapid.SampledFrom([]byte{0x00, 0x00, 0x01, 0x1f, 0x7f, 0xff, 'a', 'b'})
	name := rapid.Custom(func(t *rapid.T) string { return string(rapid.SliceOfN(b, 1, 5).Draw(t, "b")) })
	rapid.Check(t, func(t *rapid.T) {
		c1, i1 := name.Draw(t, "c1"), name.Draw(t, "i1")
		var c2, i2 string
		if rapid.Bool().Draw(t, "shift") {
			all := c1 + i1
			cut := rapid.IntRange(1, len(all)-1).Draw(t, "cut")
			c2, i2 = all[:cut], all[cut:]
		} else {
			c2, i2 = name.Draw(t, "c2"), name.Draw(t, "i2")
		}
		if c1 == c2 && i1 == i2 {
			return
		}
		k1, k2 := recordKey(c1, i1), recordKey(c2, i2)
		if k1 == k2 {
			t.Fatalf("recordKey(%q,%q) == recordKey(%q,%q)", c1, i1, c2, i2)
		}
		// Cache: each key keeps its own document.
		cache := newDocCache(4, DefaultCacheBytes)
		d1, _ := crdt.New(r.actor())
		d2, _ := crdt.New(r.actor())
		cache.put(k1, d1)
		cache.put(k2, d2)
		if cache.get(k1) != d1 || cache.get(k2) != d2 {
			t.Fatalf("cache mixes %q/%q and %q/%q", c1, i1, c2, i2)
		}
		// Shared-heads slots: each record reads back its own heads.
		h1, h2 := automerge.ChangeHash{1}, automerge.ChangeHash{2}
		peer := "peer-" + fmt.Sprint(rapid.IntRange(0, 1<<30).Draw(t, "peer"))
		w1 := headsWrite(peer, c1, i1, []automerge.ChangeHash{h1}, []automerge.ChangeHash{h1})
		w2 := headsWrite(peer, c2, i2, []automerge.ChangeHash{h2}, []automerge.ChangeHash{h2})
		if _, err := r.store.Write(ctx, storage.Batch{Slots: []storage.SlotWrite{w1, w2}}); err != nil {
			t.Fatal(err)
		}
		g1, err1 := r.sharedHeads(ctx, peer, c1, i1)
		g2, err2 := r.sharedHeads(ctx, peer, c2, i2)
		if err1 != nil || err2 != nil || !reflect.DeepEqual(g1, crdt.Heads{h1}) || !reflect.DeepEqual(g2, crdt.Heads{h2}) {
			t.Fatalf("shared heads mixed: %q/%q -> %v %v, %q/%q -> %v %v", c1, i1, g1, err1, c2, i2, g2, err2)
		}
	})
	// The slot key of every valid name is the one stores already hold.
	if got := recordKey("notes", "n1"); got != "notes\x00n1" {
		t.Fatalf("recordKey = %q", got)
	}
}

// writeLegacy stores a copy of src's record under names the rule refuses,
// as a store written before the rule may hold it.
func writeLegacy(t *testing.T, r *Replica, coll, id string, doc []byte) {
	t.Helper()
	d, err := automerge.Load(doc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.store.Write(context.Background(), storage.Batch{Records: []storage.RecordWrite{{
		Collection: coll, ID: id, Changes: doc, Heads: crdt.Heads(d.Heads()).Bytes()}}}); err != nil {
		t.Fatal(err)
	}
}

// TestLegacyInvalidNamesReadableNeverSynced: records a store holds under
// names the rule now refuses stay listed, readable and exportable (so they
// can be re-imported under a valid name), cannot be written, and never
// leave the device: the session withholds and counts them.
func TestLegacyInvalidNamesReadableNeverSynced(t *testing.T) {
	e := newEnv(t)
	a, b := e.replica("a"), e.replica("b")
	ctx := context.Background()
	mustPut(t, a, "notes", "seed", map[string]any{"title": "kept"})
	doc, err := a.ExportDoc(ctx, "notes", "seed")
	if err != nil {
		t.Fatal(err)
	}
	writeLegacy(t, a, "notes", "tab\tid", doc)
	writeLegacy(t, a, "notes", "a\x00b", doc)
	page, err := a.List(ctx, "notes", ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, it := range page.Items {
		ids = append(ids, it.ID)
	}
	if !slices.Equal(ids, []string{"a\x00b", "seed", "tab\tid"}) {
		t.Fatalf("List: %q", ids)
	}
	if got := mustGet(t, a, "notes", "tab\tid"); got["title"] != "kept" {
		t.Fatalf("legacy record reads %v", got)
	}
	wantInvalid(t, "write to a legacy name", a.Put(ctx, "notes", "tab\tid", map[string]any{"title": "x"}))
	old, err := a.ExportDoc(ctx, "notes", "tab\tid")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.ImportDoc(ctx, "notes", "tab id", old); err != nil {
		t.Fatal(err)
	}
	sa, _ := e.sync(a, b)
	if sa.InvalidNames != 2 {
		t.Fatalf("a withheld %d records, want 2", sa.InvalidNames)
	}
	got := dump(t, b, "notes")
	if len(got) != 2 || got["seed"]["title"] != "kept" || got["tab id"]["title"] != "kept" {
		t.Fatalf("b holds %v", got)
	}
	// A legacy collection lists too; an unknown invalid one is refused.
	writeLegacy(t, a, "old\x01coll", "x", doc)
	if p, err := a.List(ctx, "old\x01coll", ListOptions{}); err != nil || len(p.Items) != 1 {
		t.Fatalf("legacy collection: %v %v", p, err)
	}
	_, err = a.List(ctx, "new\x01coll", ListOptions{})
	wantInvalid(t, "List of an unknown invalid collection", err)
}

// renameConn rewrites the record ids of outgoing batches, as an older or
// hostile peer that holds records under invalid names would send them.
type renameConn struct {
	transport.Conn
	from, to string
}

func (c renameConn) Send(ctx context.Context, b []byte) error {
	m, err := decodeMsg(b)
	if err == nil && m.T == msgBatch {
		for i := range m.Batch.Records {
			if m.Batch.Records[i].ID == c.from {
				m.Batch.Records[i].ID = c.to
			}
		}
		if b, err = encodeMsg(m); err != nil {
			return err
		}
	}
	return c.Conn.Send(ctx, b)
}

// TestPeerRecordWithInvalidNameRefused: a record a peer sends under an
// invalid name is refused and counted; the session succeeds, everything
// else in the batch is applied, and nothing is merged into another record.
func TestPeerRecordWithInvalidNameRefused(t *testing.T) {
	for why, bad := range invalidNames {
		if !names.Fits(bad) {
			continue // out of bounds: a protocol violation (TestProtocolRejects)
		}
		t.Run(why, func(t *testing.T) {
			// CBOR text must be UTF-8: a frame that breaks that is a
			// protocol violation as a whole (it always was), and nothing
			// in it is applied.
			broken := !utf8.ValidString(bad)
			e := newEnv(t)
			a, b := e.replica("a"), e.replica("b")
			mustPut(t, a, "notes", "victim", map[string]any{"v": "hidden"})
			mustPut(t, a, "notes", "b", map[string]any{"v": "other"})
			mustPut(t, a, "notes", "fine", map[string]any{"v": "fine"})
			errA, errB := reviewSync(e, a, b, time.Minute,
				func(c transport.Conn) transport.Conn { return renameConn{c, "victim", bad} }, nil)
			if broken {
				if !errors.Is(errB, ErrProtocol) {
					t.Fatalf("sync: %v / %v, want a protocol violation", errA, errB)
				}
				if got := dump(t, b, "notes"); len(got) != 0 {
					t.Fatalf("b holds %v", got)
				}
				return
			}
			if errA != nil || errB != nil {
				t.Fatalf("sync: %v / %v", errA, errB)
			}
			got := dump(t, b, "notes")
			if len(got) != 2 || got["fine"]["v"] != "fine" || got["b"]["v"] != "other" {
				t.Fatalf("b holds %v", got)
			}
			_, peers := b.Status(context.Background())
			if len(peers) != 1 || peers[0].Peer != a.ID() || peers[0].Progress.InvalidNames != 1 {
				t.Fatalf("b's status of the session: %+v", peers)
			}
		})
	}
}

// TestRelayRecordWithInvalidNameRefused: through a relay too, a bundle
// record under an invalid name is refused and counted, and a stored one
// is not pushed.
func TestRelayRecordWithInvalidNameRefused(t *testing.T) {
	e := newEnv(t)
	a, b := e.replica("a"), e.replica("b")
	ctx := context.Background()
	space := joinAll(t, memRelayURL, "notes", a, b)
	mustPut(t, a, "notes", "seed", map[string]any{"v": 1})
	doc, err := a.ExportDoc(ctx, "notes", "seed")
	if err != nil {
		t.Fatal(err)
	}
	writeLegacy(t, a, "notes", "tab\tid", doc)
	if st := relaySync(t, a, space); st.InvalidNames != 1 || st.RecordsPushed != 1 {
		t.Fatalf("a pushed %d records, withheld %d; want 1, 1", st.RecordsPushed, st.InvalidNames)
	}
	// A member pushes a bundle holding a record under an invalid name.
	sp, _, err := a.Space(ctx, space)
	if err != nil {
		t.Fatal(err)
	}
	rc, _, _, err := a.outgoing(ctx, spacePeer(space), "notes", "seed", true)
	if err != nil {
		t.Fatal(err)
	}
	rc.ID = "vic\x01tim"
	payload, err := encodeMsg(&wireMsg{T: msgBatch, Batch: &batchMsg{Records: []recordChanges{rc}}})
	if err != nil {
		t.Fatal(err)
	}
	sender, err := relay.NewSender(ctx, a.relayClient(sp.RelayURL), sp, a.store.Slots("relay/"+space))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sender.Send(ctx, payload); err != nil {
		t.Fatal(err)
	}
	st := relaySync(t, b, space)
	if st.InvalidNames != 1 {
		t.Fatalf("b refused %d records, want 1", st.InvalidNames)
	}
	if got := dump(t, b, "notes"); len(got) != 1 || got["seed"]["v"] == nil {
		t.Fatalf("b holds %v", got)
	}
}

// validName draws names the rule accepts: every Unicode category but the
// control characters, spaces anywhere, '/', ':', emoji, noncharacters,
// and names of exactly 1 and MaxLen bytes.
func validNameGen() *rapid.Generator[string] {
	r := rapid.OneOf(
		rapid.RuneFrom([]rune(" /:._-~@#%&*+=?!,;'\"\\|<>()[]{}aZ09")),
		rapid.RuneFrom([]rune{'é', 'ß', 'Ω', 'я', 'ע', 'ع', '日', '本', '한', '😀', '🎉', '👩', '\u200d', '\u00a0', '\u3000', '\u0301',
			'\u202e', '\ufeff', '\ufffd', '\uffff', '\U0010ffff', '\ue000'}),
		rapid.RuneFrom(nil, unicode.L, unicode.M, unicode.N, unicode.P, unicode.S, unicode.Z, unicode.Cf, unicode.Co),
	)
	return rapid.Custom(func(t *rapid.T) string {
		switch rapid.IntRange(0, 9).Draw(t, "shape") {
		case 0: // exactly MaxLen bytes, ending in a 4-byte rune
			return strings.Repeat("x", names.MaxLen-4) + "😀"
		case 1:
			return string(rapid.RuneFrom([]rune("a ~/😀é")).Draw(t, "one"))
		}
		s := string(rapid.SliceOfN(r, 1, 24).Draw(t, "runes"))
		if names.Check("name", s) != nil {
			t.Fatalf("generator made an invalid name %q: %v", s, names.Check("name", s))
		}
		return s
	})
}

// TestPropertyValidNamesRoundTrip: every valid name round-trips Put, Get,
// List, a reopen from disk, and sync to a second replica on the in-memory
// network.
func TestPropertyValidNamesRoundTrip(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	ctx := context.Background()
	opts := Options{Passphrase: []byte("pw"), KDF: storage.TestKDF(), Name: "disk", Now: e.clock.Now,
		Policies: policy.NewSet(policy.Rule{Policy: policy.Timestamp}), NoSync: true}
	a, err := Open(ctx, dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { a.Close() }()
	b := e.replica("b")
	type rec struct{ coll, id string }
	var written []rec
	paired := map[string]bool{}
	check := func(t interface{ Fatalf(string, ...any) }, r *Replica, x rec) {
		m, err := r.Get(ctx, x.coll, x.id)
		if err != nil || m["coll"] != x.coll || m["id"] != x.id {
			t.Fatalf("%s: Get(%q, %q) = %v, %v", r.Name(), x.coll, x.id, m, err)
		}
		p, err := r.List(ctx, x.coll, ListOptions{})
		if err != nil || !slices.ContainsFunc(p.Items, func(it RecordInfo) bool { return it.ID == x.id }) {
			t.Fatalf("%s: List(%q) lacks %q: %v", r.Name(), x.coll, x.id, err)
		}
	}
	rapid.Check(t, func(rt *rapid.T) {
		x := rec{validNameGen().Draw(rt, "coll"), validNameGen().Draw(rt, "id")}
		if !paired[x.coll] {
			pairAll(rt, []*Replica{a, b}, x.coll)
			paired[x.coll] = true
		}
		if err := a.Put(ctx, x.coll, x.id, map[string]any{"coll": x.coll, "id": x.id}); err != nil {
			rt.Fatalf("Put(%q, %q): %v", x.coll, x.id, err)
		}
		written = append(written, x)
		check(rt, a, x)
		if rapid.IntRange(0, 7).Draw(rt, "reopen") == 0 {
			if err := a.Close(); err != nil {
				rt.Fatal(err)
			}
			if a, err = Open(ctx, dir, opts); err != nil {
				rt.Fatal(err)
			}
			check(rt, a, x)
		}
		sa, sb, errA, errB := e.trySync(a, b)
		if errA != nil || errB != nil || sa.InvalidNames+sb.InvalidNames != 0 {
			rt.Fatalf("sync: %v / %v, invalid %d/%d", errA, errB, sa.InvalidNames, sb.InvalidNames)
		}
		check(rt, b, x)
	})
	// Everything written is still there, on both, after a last reopen.
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if a, err = Open(ctx, dir, opts); err != nil {
		t.Fatal(err)
	}
	for _, x := range written {
		check(t, a, x)
		check(t, b, x)
	}
}

func shareRules(coll string) anon.Rules {
	return anon.Rules{Collection: coll, Purpose: consent.PurposeImprove}
}
