package crdt

import (
	"bytes"
	"encoding/hex"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/automerge/automerge-go"
)

// importTestDoc is a history of several shapes: ferry writes by two
// replicas (write-sets in the messages, one conflicting pair), plain
// Automerge changes by another actor editing objects the others created
// (a change naming other actors), an empty message, a time in seconds
// (older writers) and a long text.
func importTestDoc(t *testing.T) []byte {
	t.Helper()
	clk := newTestClock()
	a := mustNew(t, clk.actor("a", 0))
	if err := a.Put(map[string]any{"title": "x", "n": 1, "tags": []any{"p"}}); err != nil {
		t.Fatal(err)
	}
	if err := a.NewText("body", "hello"); err != nil {
		t.Fatal(err)
	}
	b := copyDoc(t, a)
	b.actor = clk.actor("b", 0)
	if err := b.Automerge().SetActorID(b.actor.automergeID()); err != nil {
		t.Fatal(err)
	}
	clk.tick(time.Second)
	if err := a.Set("title", "from a"); err != nil {
		t.Fatal(err)
	}
	if err := b.Set("title", "from b"); err != nil {
		t.Fatal(err)
	}
	mustMerge(t, a, b)
	plain, err := automerge.Load(a.Save())
	if err != nil {
		t.Fatal(err)
	}
	if err := plain.SetActorID("0badc0de"); err != nil {
		t.Fatal(err)
	}
	if err := plain.Path("body").Text().Insert(5, ", world"); err != nil {
		t.Fatal(err)
	}
	if _, err := plain.Commit("", automerge.CommitOptions{AllowEmpty: true, Time: ptr(time.Unix(1_600_000_000, 0))}); err != nil {
		t.Fatal(err)
	}
	if err := plain.Path("tags").List().Append("q"); err != nil {
		t.Fatal(err)
	}
	if _, err := plain.Commit("plain edit"); err != nil {
		t.Fatal(err)
	}
	return plain.Save()
}

func ptr[T any](v T) *T { return &v }

// TestParseChangeChunkMatchesAutomerge: the Go parse of every change's
// header gives what automerge-go reads, and encoding it again gives the
// same bytes and hash.
func TestParseChangeChunkMatchesAutomerge(t *testing.T) {
	am, err := automerge.Load(importTestDoc(t))
	if err != nil {
		t.Fatal(err)
	}
	chs, err := am.Changes()
	if err != nil {
		t.Fatal(err)
	}
	others := 0
	for _, c := range chs {
		raw := c.Save()
		h, err := parseChangeChunk(raw)
		if err != nil {
			t.Fatalf("change %s: %v", c.Hash(), err)
		}
		if h.hash != c.Hash() || hex.EncodeToString(h.actor) != c.ActorID() || h.seq != c.ActorSeq() ||
			h.message != c.Message() || !time.UnixMilli(h.time).Equal(c.Timestamp()) || !Heads(h.deps).Equal(c.Dependencies()) {
			t.Fatalf("change %s: parsed %+v; automerge-go: actor %s seq %d msg %q time %v deps %v",
				c.Hash(), h, c.ActorID(), c.ActorSeq(), c.Message(), c.Timestamp(), c.Dependencies())
		}
		if g, w := metaFromHeader(h, nil), metaFrom(c); g.hash != w.hash || !Heads(g.deps).Equal(w.deps) || g.gen != w.gen ||
			g.plain != w.plain || g.meta != w.meta || !reflect.DeepEqual(g.ws, w.ws) {
			t.Fatalf("change %s: meta %+v, want %+v", c.Hash(), metaFromHeader(h, nil), metaFrom(c))
		}
		others += len(h.others)
		cp := *h
		if got := cp.encode(); !bytes.Equal(got, raw) || cp.hash != c.Hash() {
			t.Fatalf("change %s: encoding the parsed header gives other bytes", c.Hash())
		}
	}
	if others == 0 {
		t.Fatal("no change names other actors: the test history lost a shape")
	}
}

// TestLoadNewMatchesMergeIntoEmpty: LoadNew gives the document, heads and
// merge result that merging the document's changes into an empty one
// gives, and is not yet saved.
func TestLoadNewMatchesMergeIntoEmpty(t *testing.T) {
	b := importTestDoc(t)
	clk := newTestClock()
	d, res, largest, err := LoadNew(b, clk.actor("r", 0))
	if err != nil {
		t.Fatal(err)
	}
	raw, heads, err := DocChanges(b)
	if err != nil {
		t.Fatal(err)
	}
	e := mustNew(t, clk.actor("r", 0))
	want, err := e.MergeChanges(raw, heads)
	if err != nil {
		t.Fatal(err)
	}
	if d.Saved() {
		t.Fatal("LoadNew's document counts as saved")
	}
	if !d.Heads().Equal(e.Heads()) || !Heads(res.HeadsAfter).Equal(want.HeadsAfter) || res.Applied != want.Applied ||
		len(res.Resolutions) != len(want.Resolutions) || len(res.Conflicts) != 0 {
		t.Fatalf("LoadNew: %+v; merge into empty: %+v", res, want)
	}
	gm, _ := d.ToMap()
	wm, _ := e.ToMap()
	if !reflect.DeepEqual(gm, wm) {
		t.Fatalf("LoadNew reads %v, merge %v", gm, wm)
	}
	wt, _ := e.WriterTimes(nil)
	gt, _ := d.WriterTimes(nil)
	if len(wt) == 0 || !reflect.DeepEqual(gt, wt) {
		t.Fatalf("writer times: %v, want %v", gt, wt)
	}
	big := 0
	for _, c := range splitChunks(raw) {
		big = max(big, len(c))
	}
	if largest != big {
		t.Fatalf("largest change %d, want %d", largest, big)
	}
	// A write after it counts the history it loaded.
	if err := d.Set("after", true); err != nil {
		t.Fatal(err)
	}
	if gt, _ := d.WriterTimes(nil); !reflect.DeepEqual(gt, wt) {
		t.Fatalf("writer times after a local write: %v, want %v", gt, wt)
	}
	if _, _, _, err := LoadNew([]byte("garbage"), clk.actor("r", 0)); err == nil {
		t.Fatal("LoadNew of garbage: no error")
	}
}

// FuzzParseChangeChunk: outside bytes never panic the header parser, and
// a header it accepts encodes to a chunk that parses to the same header.
func FuzzParseChangeChunk(f *testing.F) {
	am := automerge.New()
	_ = am.RootMap().Set("k", "v")
	_, _ = am.Commit("m")
	chs, _ := am.Changes()
	for _, c := range chs {
		f.Add(c.Save())
	}
	f.Add([]byte{0x85, 0x6f, 0x4a, 0x83, 0, 0, 0, 0, 1, 3, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := parseChangeChunk(b)
		if err != nil {
			return
		}
		cp := *h
		h2, err := parseChangeChunk(cp.encode())
		if err != nil {
			t.Fatalf("re-encoded header does not parse: %v", err)
		}
		h2.hash = cp.hash
		if !reflect.DeepEqual(normal(h2), normal(&cp)) {
			t.Fatalf("round trip: %+v, want %+v", h2, cp)
		}
	})
}

func normal(h *changeHeader) changeHeader {
	c := *h
	if len(c.rest) == 0 {
		c.rest = nil
	}
	for i, o := range c.others {
		if len(o) == 0 {
			c.others[i] = nil
		}
	}
	if len(c.actor) == 0 {
		c.actor = nil
	}
	return c
}

// writeShapes writes, as d's actor, values that reference the actor's own
// objects (a text edited, a list appended to, a nested map).
func writeShapes(t *testing.T, d *Doc, tag string) {
	t.Helper()
	if err := d.Put(map[string]any{tag: "v-" + tag, "shared": tag, "nested": map[string]any{"k": tag}}); err != nil {
		t.Fatal(err)
	}
	if err := d.NewText("text-"+tag, "abc"); err != nil {
		t.Fatal(err)
	}
	if err := d.SpliceText("text-"+tag, 1, 1, "XY"); err != nil {
		t.Fatal(err)
	}
	if err := d.Set("list-"+tag, []any{1}); err != nil {
		t.Fatal(err)
	}
	if err := d.ListAppend("list-"+tag, 2, 3); err != nil {
		t.Fatal(err)
	}
}

// TestForkClashes: a record's history imported into another record the
// same actor wrote independently clashes (duplicate sequence numbers:
// Automerge refuses); forked, it merges, keeps both sides, survives a
// save and load, and importing it again adds nothing. Changes by a second
// actor that name the first one's objects are rewritten along.
func TestForkClashes(t *testing.T) {
	clk := newTestClock()
	me, other := clk.actor("me", 0), clk.actor("other", 0)
	src := mustNew(t, me)
	writeShapes(t, src, "a")
	o := copyDoc(t, src)
	o.actor = other
	if err := o.Automerge().SetActorID(other.automergeID()); err != nil {
		t.Fatal(err)
	}
	if err := o.SpliceText("text-a", 0, 0, "o:"); err != nil {
		t.Fatal(err)
	}
	if err := o.ListAppend("list-a", 4); err != nil {
		t.Fatal(err)
	}
	mustMerge(t, src, o)
	if err := src.Set("after", 1); err != nil {
		t.Fatal(err)
	}
	dst := mustNew(t, me)
	writeShapes(t, dst, "b")
	oo := mustNew(t, other)
	if err := oo.Set("o", 1); err != nil {
		t.Fatal(err)
	}
	mustMerge(t, dst, oo)

	raw, heads, err := DocChanges(src.Save())
	if err != nil {
		t.Fatal(err)
	}
	tainted := copyDoc(t, dst)
	if _, err := tainted.MergeChanges(raw, heads); !errors.Is(err, ErrActorClash) || errors.Is(err, ErrBadDocument) {
		t.Fatalf("merging a clashing history: %v, want ErrActorClash", err)
	}
	before := dst.Heads()
	forked, fheads, err := ForkClashes(dst, raw)
	if err != nil {
		t.Fatal(err)
	}
	if !dst.Heads().Equal(before) {
		t.Fatal("ForkClashes changed the document")
	}
	res, err := dst.MergeChanges(forked, fheads)
	if err != nil {
		t.Fatalf("merging the forked history: %v", err)
	}
	if !Heads(res.HeadsAfter).Covers(fheads) || !Heads(res.HeadsAfter).Covers(before) {
		t.Fatalf("heads after %v cover neither side", res.HeadsAfter)
	}
	got, err := dst.ToMap()
	if err != nil {
		t.Fatal(err)
	}
	want, _ := src.ToMap()
	for k, v := range want {
		if k == "shared" || k == "nested" {
			continue // written on both sides: decided as concurrent writes
		}
		if !reflect.DeepEqual(got[k], v) {
			t.Fatalf("%s: %#v after the import, %#v in the source", k, got[k], v)
		}
	}
	if got["b"] != "v-b" || got["text-b"] != "aXYc" || got["o"] != int64(1) {
		t.Fatalf("the record's own values are lost: %#v", got)
	}
	back, err := Load(dst.Save(), me)
	if err != nil || !back.Heads().Equal(dst.Heads()) {
		t.Fatalf("saved and loaded again: %v (heads %v, want %v)", err, back.Heads(), dst.Heads())
	}
	// Again: the same fork, nothing new.
	forked2, fheads2, err := ForkClashes(dst, raw)
	if err != nil || !bytes.Equal(forked2, forked) || !Heads(fheads2).Equal(fheads) {
		t.Fatalf("second fork differs (%v)", err)
	}
	if res, err := dst.MergeChanges(forked2, fheads2); err != nil || res.Applied != 0 {
		t.Fatalf("importing the same history again: %v, %d applied", err, res.Applied)
	}
}

// TestForkClashesRefusesASharedHistory: when the two histories share an
// actor's first changes and then differ, nothing is rewritten: the error
// says so.
func TestForkClashesRefusesASharedHistory(t *testing.T) {
	clk := newTestClock()
	me := clk.actor("me", 0)
	a := mustNew(t, me)
	if err := a.Set("x", 1); err != nil {
		t.Fatal(err)
	}
	b := copyDoc(t, a)
	if err := a.Set("y", 2); err != nil {
		t.Fatal(err)
	}
	if err := b.Set("z", 3); err != nil {
		t.Fatal(err)
	}
	raw, heads, err := DocChanges(a.Save())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := copyDoc(t, b).MergeChanges(raw, heads); !errors.Is(err, ErrActorClash) {
		t.Fatalf("merge: %v, want ErrActorClash", err)
	}
	_, _, err = ForkClashes(b, raw)
	if !errors.Is(err, ErrActorClash) || !strings.Contains(err.Error(), "share") {
		t.Fatalf("ForkClashes of a shared history: %v", err)
	}
}
