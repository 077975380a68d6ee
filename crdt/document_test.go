package crdt

import (
	"errors"
	"math"
	"reflect"
	"testing"
	"time"
)

func TestValuesRoundTrip(t *testing.T) {
	clk := newTestClock()
	d := mustNew(t, clk.actor("A", 0))
	when := time.UnixMilli(1_650_000_000_123).UTC()
	cases := []struct {
		in, want any
	}{
		{nil, nil},
		{true, true},
		{42, int64(42)},
		{int8(-3), int64(-3)},
		{uint32(7), int64(7)},
		{uint64(math.MaxUint64), uint64(math.MaxUint64)},
		{int64(math.MinInt64), int64(math.MinInt64)},
		{1.5, 1.5},
		{float32(0.5), 0.5},
		{"héllo", "héllo"},
		{[]byte{0, 1, 2}, []byte{0, 1, 2}},
		{when, when},
		{map[string]any{"a": 1, "b": map[string]any{"c": "d"}}, map[string]any{"a": int64(1), "b": map[string]any{"c": "d"}}},
		{[]any{1, "x", []any{true}}, []any{int64(1), "x", []any{true}}},
		{[]string{"p", "q"}, []any{"p", "q"}},
		{map[string]int{"z": 9}, map[string]any{"z": int64(9)}},
		{Text("collab"), "collab"},
		{Counter(5), int64(5)},
	}
	for i, tc := range cases {
		if err := d.Set([]any{"v"}, tc.in); err != nil {
			t.Fatalf("%d: set %#v: %v", i, tc.in, err)
		}
		got, err := d.Get("v")
		if err != nil {
			t.Fatalf("%d: %v", i, err)
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Fatalf("%d: got %#v, want %#v", i, got, tc.want)
		}
		b, err := EncodeValue(tc.in)
		if err != nil {
			t.Fatal(err)
		}
		back, _, err := DecodeValue(b)
		if err != nil || !reflect.DeepEqual(back, tc.want) {
			t.Fatalf("%d: value codec %#v %v", i, back, err)
		}
	}
}

func TestUnsupportedValues(t *testing.T) {
	d := mustNew(t, newTestClock().actor("A", 0))
	type S struct{ A int }
	for _, v := range []any{make(chan int), func() {}, complex(1, 2), S{1}, &S{1}, map[int]any{1: 2},
		[]any{struct{}{}}, string([]byte{0xff})} {
		if err := d.Set("x", v); !errors.Is(err, ErrUnsupportedValue) {
			t.Fatalf("%T: %v", v, err)
		}
	}
	if m, _ := d.ToMap(); len(m) != 0 {
		t.Fatalf("failed writes left %v", m)
	}
}

func TestPaths(t *testing.T) {
	d := mustNew(t, newTestClock().actor("A", 0))
	if err := d.Put(map[string]any{"items": []any{map[string]any{"name": "a"}}, "a.b": 1}); err != nil {
		t.Fatal(err)
	}
	if err := d.Set("items.0.name", "b"); err != nil {
		t.Fatal(err)
	}
	if v, err := d.Get([]any{"items", 0, "name"}); err != nil || v != "b" {
		t.Fatalf("%v %v", v, err)
	}
	if v, err := d.Get([]any{"a.b"}); err != nil || v != int64(1) {
		t.Fatalf("key with a dot: %v %v", v, err)
	}
	for _, tc := range []struct {
		path any
		err  error
	}{
		{"missing", ErrNotFound},
		{"items.5", ErrNotFound},
		{"items.x", ErrBadPath},
		{"a..b", ErrBadPath},
		{[]any{1.5}, ErrBadPath},
		{"_ferry:/a", ErrBadPath},
		{42, ErrBadPath},
	} {
		if _, err := d.Get(tc.path); !errors.Is(err, tc.err) {
			t.Fatalf("Get(%v) = %v, want %v", tc.path, err, tc.err)
		}
	}
	for _, p := range []any{"", "_ferry", "_ferryx.y"} {
		if err := d.Set(p, 1); !errors.Is(err, ErrBadPath) {
			t.Fatalf("Set(%q) = %v", p, err)
		}
	}
	if err := d.Put(map[string]any{"_ferry:x": 1}); !errors.Is(err, ErrBadPath) {
		t.Fatalf("Put reserved: %v", err)
	}
	if err := d.Delete("nope"); !errors.Is(err, ErrNotFound) {
		t.Fatal(err)
	}
	if err := d.Set("items.0.name.deeper", 1); !errors.Is(err, ErrBadPath) {
		t.Fatalf("through a scalar: %v", err)
	}
}

func TestMetadataHidden(t *testing.T) {
	clk := newTestClock()
	d := mustNew(t, clk.actor("A", 4))
	if err := d.Put(map[string]any{"x": 1, "m": map[string]any{"y": 2}}); err != nil {
		t.Fatal(err)
	}
	m, _ := d.ToMap()
	if !reflect.DeepEqual(m, map[string]any{"x": int64(1), "m": map[string]any{"y": int64(2)}}) {
		t.Fatalf("ToMap shows %v", m)
	}
	meta, ok, err := d.FieldMeta("m.y")
	if err != nil || !ok || meta.ReplicaID != "A" || meta.Priority != 4 || meta.HLC.WallMillis != clk.now().UnixMilli() {
		t.Fatalf("meta %+v %v %v", meta, ok, err)
	}
	// The raw document does hold the metadata, under the reserved prefix.
	keys, _ := d.Automerge().RootMap().Keys()
	hidden := 0
	for _, k := range keys {
		if isReserved(k) {
			hidden++
		}
	}
	if hidden == 0 {
		t.Fatal("no metadata keys in the document")
	}
	// Every change message is a decodable write-set.
	chs, _ := d.Changes()
	for _, c := range chs {
		ws, ok, err := decodeWriteSet(c.Message())
		if !ok || err != nil || ws.M.ReplicaID != "A" || len(ws.E) == 0 {
			t.Fatalf("message %q: %v %v", c.Message(), ok, err)
		}
	}
}

func TestDeleteRecord(t *testing.T) {
	d := mustNew(t, newTestClock().actor("A", 0))
	_ = d.Put(map[string]any{"x": 1, "y": 2})
	if d.Deleted() {
		t.Fatal("deleted too early")
	}
	if err := d.DeleteRecord(); err != nil {
		t.Fatal(err)
	}
	if m, _ := d.ToMap(); len(m) != 0 || !d.Deleted() {
		t.Fatalf("after delete %v %v", m, d.Deleted())
	}
	_ = d.Set("z", 3)
	if d.Deleted() {
		t.Fatal("a write must bring the record back")
	}
}

func TestActorIDAndSeq(t *testing.T) {
	clk := newTestClock()
	again := ActorIDFor
	if ActorIDFor("r1") != again("r1") || ActorIDFor("r1") == ActorIDFor("r2") || len(ActorIDFor("r1")) != 32 {
		t.Fatal("actor ids")
	}
	d1 := mustNew(t, clk.actor("r1", 0))
	d2 := mustNew(t, clk.actor("r1", 0))
	_ = d1.Set("a", 1)
	_ = d2.Set("a", 1)
	_ = d1.Set("a", 2)
	d1b, err := Load(d1.Save(), clk.actor("r1", 0))
	if err != nil {
		t.Fatal(err)
	}
	_ = d1b.Set("a", 3)
	chs, _ := d1b.Changes()
	seqs := map[uint64]bool{}
	for _, c := range chs {
		if c.ActorID() != ActorIDFor("r1") {
			t.Fatalf("actor %s", c.ActorID())
		}
		if seqs[c.ActorSeq()] {
			t.Fatalf("seq %d reused", c.ActorSeq())
		}
		seqs[c.ActorSeq()] = true
	}
	if len(seqs) != 3 {
		t.Fatalf("seqs %v", seqs)
	}
	if v, _ := d2.Get("a"); v != int64(1) {
		t.Fatal("docs on one replica are independent")
	}
}

func TestSaveLoadIncremental(t *testing.T) {
	d := mustNew(t, newTestClock().actor("A", 0))
	_ = d.Set("a", 1)
	snap := d.Save()
	_ = d.Set("b", 2)
	inc := d.SaveIncremental()
	e, err := Load(append(append([]byte{}, snap...), inc...), d.Actor())
	if err != nil {
		t.Fatal(err)
	}
	m1, _ := d.ToMap()
	m2, _ := e.ToMap()
	if !reflect.DeepEqual(m1, m2) {
		t.Fatalf("%v vs %v", m1, m2)
	}
}

func TestHLC(t *testing.T) {
	now := time.UnixMilli(1_000)
	c := NewClock(func() time.Time { return now }, time.Minute)
	a := c.Now()
	b := c.Now()
	if b.Compare(a) <= 0 || b.WallMillis != 1000 || b.Logical != 1 {
		t.Fatalf("%v then %v", a, b)
	}
	now = time.UnixMilli(500) // the physical clock goes backwards
	if x := c.Now(); x.Compare(b) <= 0 {
		t.Fatalf("went backwards: %v after %v", x, b)
	}
	now = time.UnixMilli(2_000)
	if x := c.Now(); x != (Timestamp{WallMillis: 2000}) {
		t.Fatalf("%v", x)
	}
	if err := c.Observe(Timestamp{WallMillis: 50_000, Logical: 3}); err != nil {
		t.Fatal(err)
	}
	if x := c.Now(); x != (Timestamp{WallMillis: 50_000, Logical: 4}) {
		t.Fatalf("after observe %v", x)
	}
	before := c.Last()
	if err := c.Observe(Timestamp{WallMillis: 2_000 + time.Minute.Milliseconds() + 1}); !errors.Is(err, ErrClockSkew) {
		t.Fatalf("skew: %v", err)
	}
	if c.Last() != before {
		t.Fatal("a refused timestamp moved the clock")
	}
	b1, _ := before.MarshalBinary()
	var back Timestamp
	if err := back.UnmarshalBinary(b1); err != nil || back != before {
		t.Fatalf("binary %v %v", back, err)
	}
	if p, err := ParseTimestamp(before.String()); err != nil || p != before {
		t.Fatalf("string %q %v %v", before.String(), p, err)
	}
	if NewClock(nil, 0).MaxDrift() != DefaultMaxDrift {
		t.Fatal("default drift")
	}
}

func TestMergeReportsClockSkew(t *testing.T) {
	clk := newTestClock()
	a := mustNew(t, clk.actor("A", 0))
	future := &testClock{t: clk.now().Add(48 * time.Hour)}
	b := mustNew(t, future.actor("B", 0))
	_ = b.Set("x", 1)
	res := mustMerge(t, a, b)
	if !errors.Is(res.ClockSkew, ErrClockSkew) {
		t.Fatalf("skew not reported: %v", res.ClockSkew)
	}
	if v, _ := a.Get("x"); v != int64(1) {
		t.Fatal("the merge must still happen")
	}
}
