package replica

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/automerge/automerge-go"
	"github.com/ferrysync/ferry/crdt"
	"pgregory.net/rapid"
)

// bigChanges returns a plain Automerge document's changes: one holding n
// random bytes, then a small one, and the document's heads.
func bigChanges(t testing.TB, n int) ([]byte, [][]byte) {
	t.Helper()
	raw := make([]byte, n)
	if _, err := rand.Read(raw); err != nil {
		t.Fatal(err)
	}
	d := automerge.New()
	if err := d.Path("blob").Set(raw); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Commit("big"); err != nil {
		t.Fatal(err)
	}
	if err := d.Path("title").Set("small"); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Commit("small"); err != nil {
		t.Fatal(err)
	}
	chs, err := d.Changes()
	if err != nil {
		t.Fatal(err)
	}
	return automerge.SaveChanges(chs), crdt.Heads(d.Heads()).Bytes()
}

// TestPropertySplitBatchPieces: whatever the sizes, splitBatch's parts
// respect the budget, carry every byte once in order, and each piece's
// Off is the number of bytes of its first change sent before it.
func TestPropertySplitBatchPieces(t *testing.T) {
	var pool [][]byte // change chunks of assorted sizes
	for _, n := range []int{10, 1000, 5000, 20000} {
		raw, _ := bigChanges(t, n)
		cs, err := splitChanges(raw)
		if err != nil {
			t.Fatal(err)
		}
		pool = append(pool, cs...)
	}
	rapid.Check(t, func(t *rapid.T) {
		budget := rapid.IntRange(16, 30000).Draw(t, "budget")
		var recs []recordChanges
		for i := range rapid.IntRange(1, 4).Draw(t, "records") {
			var raw []byte
			for range rapid.IntRange(1, 5).Draw(t, "changes") {
				raw = append(raw, rapid.SampledFrom(pool).Draw(t, "change")...)
			}
			recs = append(recs, recordChanges{Collection: "c", ID: string(rune('a' + i)), Changes: raw, Heads: [][]byte{make([]byte, 32)}})
		}
		groups, err := splitBatch(recs, budget)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string][]byte{}
		for _, g := range groups {
			size := 0
			for _, rc := range g {
				size += len(rc.Changes)
				if rc.Partial == (len(rc.Heads) > 0) {
					t.Fatalf("partial %v with %d heads", rc.Partial, len(rc.Heads))
				}
				if rc.Off > 0 {
					// Off counts the bytes of the change the part starts in.
					prev := got[rc.ID]
					start := 0
					for start < len(prev) {
						n, ok := chunkLen(prev[start:])
						if !ok || start+int(n) > len(prev) {
							break
						}
						start += int(n)
					}
					if uint64(len(prev)-start) != rc.Off {
						t.Fatalf("Off %d, %d bytes of the change sent", rc.Off, len(prev)-start)
					}
				}
				got[rc.ID] = append(got[rc.ID], rc.Changes...)
			}
			if size > budget && len(g) > 1 {
				t.Fatalf("a frame of %d records holds %d bytes, budget %d", len(g), size, budget)
			}
			if len(g) == 1 && len(g[0].Changes) > budget {
				// Only a whole record within the budget, or one part.
				t.Fatalf("a part of %d bytes, budget %d", len(g[0].Changes), budget)
			}
		}
		for _, rc := range recs {
			if !bytes.Equal(got[rc.ID], rc.Changes) {
				t.Fatalf("record %s reassembles to %d bytes, sent %d", rc.ID, len(got[rc.ID]), len(rc.Changes))
			}
		}
	})
}

// TestPiecesAssembleAndRecover: a change sent in pieces is applied once
// the last piece arrives, and nothing is held afterwards; pieces whose
// start was lost are ignored and the record is asked for in full; a
// fresh start replaces an abandoned transfer; a piece delivered twice is
// harmless; a piece announcing a change over the limit is a protocol error.
func TestPiecesAssembleAndRecover(t *testing.T) {
	e := newEnv(t)
	a, b := e.replica("a"), e.replica("b")
	ctx := context.Background()
	raw, heads := bigChanges(t, 200<<10)
	groups, err := splitBatch([]recordChanges{{Collection: "notes", ID: "big", Changes: raw, Heads: heads}}, 64<<10)
	if err != nil {
		t.Fatal(err)
	}
	if len(groups) < 4 {
		t.Fatalf("%d parts", len(groups))
	}
	apply := func(gs [][]recordChanges) []needMsg {
		t.Helper()
		var all []needMsg
		for _, g := range gs {
			needs, _, _, err := b.applyRecords(ctx, a.ID(), g, 0)
			if err != nil {
				t.Fatal(err)
			}
			all = append(all, needs...)
		}
		return all
	}
	held := func() int {
		n := 0
		if err := b.store.Slots(piecesNS(a.ID(), "")).Range(ctx, func(string, []byte) error { n++; return nil }); err != nil {
			t.Fatal(err)
		}
		return n
	}

	// The start is lost: the rest is ignored, the record asked for.
	if needs := apply(groups[1:]); len(needs) != 1 || needs[0].ID != "big" {
		t.Fatalf("needs %v", needs)
	}
	if _, err := b.Get(ctx, "notes", "big"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a record from pieces without their start: %v", err)
	}
	// An abandoned transfer, then a fresh one from the start.
	if needs := apply(groups[:2]); len(needs) != 0 || held() == 0 {
		t.Fatalf("needs %v, %d slots held", needs, held())
	}
	if needs := apply(groups); len(needs) != 0 {
		t.Fatalf("needs %v", needs)
	}
	if n := held(); n != 0 {
		t.Fatalf("%d slots still held after the change was whole", n)
	}
	got := mustGet(t, b, "notes", "big")
	if got["title"] != "small" || len(got["blob"].([]byte)) != 200<<10 {
		t.Fatalf("b: title %v, %d blob bytes", got["title"], len(got["blob"].([]byte)))
	}

	// A piece delivered twice (a relay redelivers a bundle whose apply was
	// not acknowledged) does not break the change.
	again, err := splitBatch([]recordChanges{{Collection: "notes", ID: "again", Changes: raw, Heads: heads}}, 64<<10)
	if err != nil {
		t.Fatal(err)
	}
	if needs := apply(append(append(again[:3:3], again[1:3]...), again[3:]...)); len(needs) != 0 {
		t.Fatalf("needs %v after a redelivered piece", needs)
	}
	if got := mustGet(t, b, "notes", "again"); len(got["blob"].([]byte)) != 200<<10 {
		t.Fatalf("b: %d blob bytes", len(got["blob"].([]byte)))
	}
	if n := held(); n != 0 {
		t.Fatalf("%d slots still held", n)
	}

	// A piece that announces a change over the limit.
	hostile := append([]byte(nil), groups[0][0].Changes[:9]...)
	hostile = append(hostile, 0xff, 0xff, 0xff, 0xff, 0x7f) // length ~32 GiB
	hostile = append(hostile, make([]byte, 100)...)
	_, _, _, err = b.applyRecords(ctx, a.ID(), []recordChanges{{Collection: "notes", ID: "evil", Changes: hostile, Partial: true}}, 0)
	if !errors.Is(err, ErrProtocol) {
		t.Fatalf("a piece of a 32 GiB change: %v", err)
	}
}

// FuzzApplyPieces feeds arbitrary parts (bytes, offset, partial flag) of
// one record to a replica: applying them never panics and fails, if at
// all, with ErrProtocol.
func FuzzApplyPieces(f *testing.F) {
	raw, heads := bigChanges(f, 3000)
	groups, err := splitBatch([]recordChanges{{Collection: "notes", ID: "r", Changes: raw, Heads: heads}}, 1024)
	if err != nil {
		f.Fatal(err)
	}
	var seed []byte
	for _, g := range groups {
		rc := g[0]
		flags := byte(0)
		if rc.Partial {
			flags = 1
		}
		seed = append(seed, flags)
		seed = binary.AppendUvarint(seed, rc.Off)
		seed = binary.AppendUvarint(seed, uint64(len(rc.Changes)))
		seed = append(seed, rc.Changes...)
	}
	f.Add(seed)
	f.Add(seed[:len(seed)/2])
	e := newEnv(f)
	a, b := e.replica("a"), e.replica("b")
	ctx := context.Background()
	f.Fuzz(func(t *testing.T, in []byte) {
		for len(in) > 0 {
			flags := in[0]
			off, w := binary.Uvarint(in[1:])
			if w <= 0 {
				return
			}
			in = in[1+w:]
			n, w := binary.Uvarint(in)
			if w <= 0 || n > uint64(len(in)-w) {
				return
			}
			rc := recordChanges{Collection: "notes", ID: "r", Changes: in[w : w+int(n)], Partial: flags&1 == 1, Off: off}
			in = in[w+int(n):]
			if !rc.Partial {
				rc.Heads = heads
			}
			if rc.validate() != nil {
				continue // the wire decoder refuses it before any apply
			}
			if _, _, _, err := b.applyRecords(ctx, a.ID(), []recordChanges{rc}, 0); err != nil && !errors.Is(err, ErrProtocol) {
				t.Fatalf("apply: %v", err)
			}
		}
	})
}
