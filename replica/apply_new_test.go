package replica

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/automerge/automerge-go"
	"github.com/ferrysync/ferry/crdt"
	"github.com/ferrysync/ferry/policy"
	"github.com/ferrysync/ferry/storage"
	"pgregory.net/rapid"
)

// storedDoc loads r's stored record afresh (not from the cache).
func storedDoc(t *testing.T, r *Replica, coll, id string) ([]byte, *crdt.Doc) {
	t.Helper()
	b, _, err := r.store.Load(context.Background(), coll, id)
	if err != nil {
		t.Fatalf("%s: load %s/%s: %v", r.Name(), coll, id, err)
	}
	d, err := crdt.Load(b, crdt.Actor{ReplicaID: "reader"})
	if err != nil {
		t.Fatalf("%s: the stored %s/%s does not load: %v", r.Name(), coll, id, err)
	}
	return b, d
}

// TestApplyWholeRecordCreatedLocallySinceItArrived: a record arrives
// whole (the sender's stored bytes: the peer held none of it when the
// batch was made), and this replica writes the same record before the
// batch is applied. The apply finds the record under its lock and merges
// into it like any record it has: both histories are kept (not the
// received bytes as the stored document), the concurrent title is a
// conflict the policy decides, the shared heads record only what the peer
// sent (it does not hold the local write), and a sync then converges.
func TestApplyWholeRecordCreatedLocallySinceItArrived(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	a, b := e.replica("a"), e.replica("b")
	mustPut(t, a, "notes", "x", map[string]any{"title": "from a", "a": int64(1)})
	a.cache.clear() // as after a restart: the record goes as stored
	unlock := a.lockRecords(recordKey("notes", "x"))
	rc, ok, err := a.wholeRecord(ctx, "notes", "x")
	unlock()
	if err != nil || !ok {
		t.Fatalf("wholeRecord: %v %v", ok, err)
	}
	if stored, _ := storedDoc(t, a, "notes", "x"); !bytes.Equal(rc.Changes, stored) {
		t.Fatal("the record did not go as storage holds it")
	}
	sent, err := crdt.HeadsFromBytes(rc.Heads)
	if err != nil {
		t.Fatal(err)
	}

	e.clock.Advance(time.Second)
	mustPut(t, b, "notes", "x", map[string]any{"title": "from b", "b": int64(2)})
	_, mine := storedDoc(t, b, "notes", "x")
	local := mine.Heads()

	_, conflicts, echoes, err := b.applyRecords(ctx, a.ID(), []recordChanges{rc}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if conflicts != 1 {
		t.Fatalf("%d conflicts, want 1 (the title)", conflicts)
	}
	if len(echoes) != 0 {
		t.Fatalf("the merged record counts as an echo of a: %v", echoes)
	}
	got, d := storedDoc(t, b, "notes", "x")
	if bytes.Equal(got, rc.Changes) {
		t.Fatal("b kept the received bytes as the record: its own write is lost")
	}
	for _, h := range local {
		if !d.HasChange(h) {
			t.Fatalf("b's stored record lost its own change %s", h)
		}
	}
	for _, h := range sent {
		if !d.HasChange(h) {
			t.Fatalf("b's stored record lacks a's change %s", h)
		}
	}
	v, err := d.ToMap()
	if err != nil {
		t.Fatal(err)
	}
	if v["a"] != int64(1) || v["b"] != int64(2) || v["title"] != "from b" {
		t.Fatalf("b holds %v, want both fields and the later title", v)
	}
	shared, err := b.sharedHeads(ctx, a.ID(), "notes", "x")
	if err != nil {
		t.Fatal(err)
	}
	if !shared.Equal(sent) {
		t.Fatalf("b records that a holds %v, want what a sent %v", shared, sent)
	}
	e.sync(a, b)
	if da, db := dump(t, a, "notes"), dump(t, b, "notes"); !reflect.DeepEqual(da, db) {
		t.Fatalf("after a sync: a %v, b %v", da, db)
	}
}

// TestSyncWholeRecordsBothSidesCreated: two replicas that never met
// created the same records independently (and one record each alone).
// Their first sync sends the records whole, as stored; each side merges
// them into its own, and both end with every change of both.
func TestSyncWholeRecordsBothSidesCreated(t *testing.T) {
	e := newEnv(t)
	a, b := e.replica("a"), e.replica("b")
	for i := range 5 {
		id := fmt.Sprintf("r%d", i)
		mustPut(t, a, "notes", id, map[string]any{"a": int64(i), "title": "a" + id})
		e.clock.Advance(time.Millisecond)
		mustPut(t, b, "notes", id, map[string]any{"b": int64(i), "title": "b" + id})
	}
	mustPut(t, a, "notes", "only-a", map[string]any{"v": "a"})
	mustPut(t, b, "notes", "only-b", map[string]any{"v": "b"})
	a.cache.clear()
	b.cache.clear()
	e.sync(a, b)
	da, db := dump(t, a, "notes"), dump(t, b, "notes")
	if !reflect.DeepEqual(da, db) || len(da) != 7 {
		t.Fatalf("after the sync: a %v, b %v", da, db)
	}
	for i := range 5 {
		id := fmt.Sprintf("r%d", i)
		if v := da[id]; v["a"] != int64(i) || v["b"] != int64(i) || v["title"] != "b"+id {
			t.Fatalf("%s = %v, want both sides' fields and b's later title", id, v)
		}
		for _, r := range []*Replica{a, b} {
			storedDoc(t, r, "notes", id)
		}
	}
	seqs := []uint64{a.store.LastSeq(), b.store.LastSeq()}
	e.sync(a, b)
	if a.store.LastSeq() != seqs[0] || b.store.LastSeq() != seqs[1] {
		t.Fatal("a second sync wrote again")
	}
}

// TestWholeRecordFromAClockAheadKeepsItsNote: a record new to the
// receiver, written by a device whose clock runs a day ahead, arrives
// whole; the receiver notes the write's time in the document after the
// merge, so the record it stores is its document with the note (Save),
// not the bytes received, and the note survives a reload.
func TestWholeRecordFromAClockAheadKeepsItsNote(t *testing.T) {
	e := newEnv(t)
	a := e.replica("a")
	fast := e.replica("fast", func(o *Options) { o.Now = offsetClock{e.clock, 24 * time.Hour}.Now })
	mustPut(t, fast, "notes", "n", map[string]any{"title": "from-fast"})
	fast.cache.clear()
	sent, _ := storedDoc(t, fast, "notes", "n")
	e.clock.Advance(time.Minute)
	sa, _ := e.sync(a, fast)
	if len(sa.ClockSkew) != 1 {
		t.Fatalf("SyncStats.ClockSkew = %+v", sa.ClockSkew)
	}
	a.cache.clear()
	got, d := storedDoc(t, a, "notes", "n")
	if bytes.Equal(got, sent) {
		t.Fatal("a stored the received bytes: the clock note is not in the record")
	}
	cl, err := d.ClockClamps()
	if err != nil {
		t.Fatal(err)
	}
	if len(cl) != 1 {
		t.Fatalf("stored record holds %d clock notes, want 1", len(cl))
	}
	if v := mustGet(t, a, "notes", "n"); v["title"] != "from-fast" {
		t.Fatalf("a holds %v", v)
	}
}

// TestPropertyLearnHeadsSkipsTheReadOnlyWhenCovered: learnHeads gives
// the slot write that reading what was known and adding the heads learnt
// gives (headsWrite over both), whether or not it reads: the read is
// skipped only when the heads learnt cover the record's own, where the set
// collapses to them anyway. Heads are drawn from a small pool so that
// sets overlap, cover each other, or are empty; the known set may be
// absent.
func TestPropertyLearnHeadsSkipsTheReadOnlyWhenCovered(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	r := e.replica("r")
	const peer = "peer-fp"
	pool := make([]automerge.ChangeHash, 6)
	for i := range pool {
		pool[i][0], pool[i][31] = byte(i+1), byte(7*i)
	}
	heads := rapid.Custom(func(t *rapid.T) crdt.Heads {
		var out crdt.Heads
		for _, i := range rapid.SliceOfN(rapid.IntRange(0, len(pool)-1), 0, 5).Draw(t, "idx") {
			out = append(out, pool[i])
		}
		return out
	})
	n := 0
	rapid.Check(t, func(t *rapid.T) {
		n++
		id := fmt.Sprintf("rec%d", n)
		known := heads.Draw(t, "known")
		if rapid.Bool().Draw(t, "stored") {
			if _, err := r.store.Write(ctx, storage.Batch{Slots: []storage.SlotWrite{{
				Namespace: nsShared + peer, Key: recordKey("notes", id), Value: known.Encode(),
			}}}); err != nil {
				t.Fatal(err)
			}
		} else {
			known = nil
		}
		learnt, mine := heads.Draw(t, "learnt"), heads.Draw(t, "mine")
		got, err := r.learnHeads(ctx, peer, "notes", id, learnt, mine)
		if err != nil {
			t.Fatal(err)
		}
		want := headsWrite(peer, "notes", id, append(append(crdt.Heads{}, learnt...), known...), mine)
		if got.Namespace != want.Namespace || got.Key != want.Key || !bytes.Equal(got.Value, want.Value) {
			t.Fatalf("learnHeads(%v, mine %v) with %v known = %x, want %x", learnt, mine, known, got.Value, want.Value)
		}
	})
}

// TestPropertyPremadeMatchesOneByOne (rapid): apply with the documents of
// records new to the store made in parallel first (premakeNew) decides
// exactly as apply making them one by one: the same error class, needs,
// conflicts and echoes, and the same heads for every record afterwards.
// Batches mix new records (some sent twice), records the receiver holds
// already, bytes that are not a document, and a record whose claimed heads
// are not its own; run with -race, the parallel loads share nothing.
func TestPropertyPremadeMatchesOneByOne(t *testing.T) {
	noMemoryLimit(t)
	ctx := context.Background()
	e := newEnv(t)
	src, pre := e.replica("src"), e.replica("pre")
	// Records every receiver holds already, as received (no local change).
	var held []recordChanges
	for i := range 4 {
		id := fmt.Sprintf("held%d", i)
		mustPut(t, pre, "notes", id, map[string]any{"n": int64(i)})
		whole, ok, err := pre.wholeRecord(ctx, "notes", id)
		if err != nil || !ok {
			t.Fatalf("wholeRecord: %v %v", ok, err)
		}
		held = append(held, whole)
	}
	n := 0
	rapid.Check(t, func(rt *rapid.T) {
		var recs []recordChanges
		for range rapid.IntRange(0, 24).Draw(rt, "new") {
			n++
			id := fmt.Sprintf("new%d", n)
			mustPut(t, src, "notes", id, map[string]any{"n": int64(n), "s": rapid.StringN(0, 40, -1).Draw(rt, "s")})
			whole, ok, err := src.wholeRecord(ctx, "notes", id)
			if err != nil || !ok {
				rt.Fatalf("wholeRecord: %v %v", ok, err)
			}
			recs = append(recs, whole)
			if rapid.IntRange(0, 9).Draw(rt, "twice") == 0 {
				recs = append(recs, whole)
			}
		}
		for _, i := range rapid.SliceOfNDistinct(rapid.IntRange(0, len(held)-1), 0, len(held), rapid.ID[int]).Draw(rt, "held") {
			recs = append(recs, held[i])
		}
		if len(recs) > 0 && rapid.Bool().Draw(rt, "garbage") {
			n++
			recs = append(recs, recordChanges{Collection: "notes", ID: fmt.Sprintf("bad%d", n),
				Changes: rapid.SliceOfN(rapid.Byte(), 1, 64).Draw(rt, "bytes"), Heads: recs[0].Heads})
		}
		if len(recs) > 1 && rapid.IntRange(0, 4).Draw(rt, "wrongHeads") == 0 {
			n++
			w := recs[0]
			w.ID = fmt.Sprintf("wrong%d", n)
			w.Heads = recs[len(recs)-1].Heads
			recs = append(recs, w)
		}
		rand.New(rand.NewPCG(uint64(n), 1)).Shuffle(len(recs), func(i, j int) { recs[i], recs[j] = recs[j], recs[i] })

		type outcome struct {
			needs     []needMsg
			conflicts int
			echoes    []uint64
			failed    bool
			protocol  bool
			heads     map[string]string
		}
		run := func(name string, min int) outcome {
			old := premadeMin
			premadeMin = min
			defer func() { premadeMin = old }()
			r, err := Open(ctx, "", Options{Passphrase: []byte("pw"), KDF: storage.TestKDF(), InMemory: true,
				Name: name, Now: e.clock.Now, Policies: policy.NewSet(policy.Rule{Policy: policy.Timestamp})})
			if err != nil {
				rt.Fatal(err)
			}
			defer r.Close()
			if _, _, _, err := r.applyRecords(ctx, src.ID(), held, 0); err != nil {
				rt.Fatalf("%s: holding the held records: %v", name, err)
			}
			needs, conflicts, echoes, err := r.applyRecords(ctx, src.ID(), slices.Clone(recs), 0)
			o := outcome{needs: needs, conflicts: conflicts, echoes: echoes, failed: err != nil,
				protocol: errors.Is(err, ErrProtocol), heads: map[string]string{}}
			err = r.store.List(ctx, "notes", func(m storage.RecordMeta) error {
				b, _, err := r.store.Load(ctx, "notes", m.ID)
				if err != nil {
					return err
				}
				d, err := crdt.Load(b, crdt.Actor{ReplicaID: "reader"})
				if err != nil {
					return err
				}
				o.heads[m.ID] = fmt.Sprint(d.Heads())
				return nil
			})
			if err != nil {
				rt.Fatalf("%s: reading back: %v", name, err)
			}
			return o
		}
		par, one := run("par", 1), run("one", 1<<30)
		if !reflect.DeepEqual(par, one) {
			rt.Fatalf("premade in parallel:\n%+v\none by one:\n%+v", par, one)
		}
	})
}
