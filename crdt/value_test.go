package crdt

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/automerge/automerge-go"
	"github.com/ferrysync/ferry/internal/amjs"
	"github.com/ferrysync/ferry/internal/valuegen"
	"pgregory.net/rapid"
)

// sameValue: see valuegen.Same.
var sameValue = valuegen.Same

// tb is what testing.TB and *rapid.T share.
type tb interface {
	Helper()
	Fatal(...any)
	Fatalf(string, ...any)
}

func newDoc(t tb, id string) *Doc {
	t.Helper()
	d, err := New(Actor{ReplicaID: id})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// readBack returns the value at "v" after Set, after Save/Load and after a
// merge into a fresh document.
func readBack(t tb, d *Doc) []any {
	t.Helper()
	var out []any
	v, err := d.Get("v")
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	out = append(out, v)
	c, err := Load(d.Save(), d.Actor())
	if err != nil {
		t.Fatal(err)
	}
	if v, err = c.Get("v"); err != nil {
		t.Fatalf("Get after Save/Load: %v", err)
	}
	out = append(out, v)
	f := newDoc(t, "other")
	if _, err := f.MergeFrom(d); err != nil {
		t.Fatal(err)
	}
	if v, err = f.Get("v"); err != nil {
		t.Fatalf("Get after merge: %v", err)
	}
	out = append(out, v)
	return out
}

// TestValueLimitsRoundTrip: the limits of every scalar type read back
// exactly after Set, Save/Load and merge, and through the JSON form.
func TestValueLimitsRoundTrip(t *testing.T) {
	cases := []any{
		int64(math.MaxInt64), int64(math.MinInt64), uint64(math.MaxInt64 + 1), uint64(math.MaxUint64),
		math.MaxFloat64, -math.MaxFloat64, math.SmallestNonzeroFloat64, math.Copysign(0, -1), 1.0, 1e21, 1e-7,
		time.UnixMilli(math.MaxInt64).UTC(), time.UnixMilli(math.MinInt64).UTC(),
		time.Date(-1, 12, 31, 23, 59, 59, 999e6, time.UTC), time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(9999, 12, 31, 23, 59, 59, 999e6, time.UTC),
		"a\x00b\x01\x7f", []byte{0, 0xff}, []byte{},
		map[string]any{"$bytes": "not bytes"}, map[string]any{"$map": map[string]any{"x": int64(1)}},
	}
	for _, want := range cases {
		d := mustNew(t, Actor{ReplicaID: "a"})
		if err := d.Set("v", want); err != nil {
			t.Fatalf("Set(%#v): %v", want, err)
		}
		for i, got := range readBack(t, d) {
			if !sameValue(got, want) {
				t.Fatalf("%#v read back (step %d) as %#v", want, i, got)
			}
		}
		j, err := EncodeJSON(want)
		if err != nil || !json.Valid(j) {
			t.Fatalf("EncodeJSON(%#v) = %s, %v", want, j, err)
		}
		back, err := DecodeJSON(j)
		if err != nil || !sameValue(back, want) {
			t.Fatalf("DecodeJSON(%s) = %#v, %v; want %#v", j, back, err, want)
		}
	}
}

// TestValueRefusedAtWrite: values ferry cannot store faithfully are refused
// with ErrUnsupportedValue (or ErrBadPath for an empty key in a path) by
// every setter, and the document is left unchanged.
func TestValueRefusedAtWrite(t *testing.T) {
	bad := map[string]any{
		"NaN":                      math.NaN(),
		"+Inf":                     math.Inf(1),
		"-Inf":                     math.Inf(-1),
		"float32 Inf":              float32(math.Inf(-1)),
		"nested NaN":               map[string]any{"a": []any{int64(1), math.NaN()}},
		"empty key":                map[string]any{"": "x"},
		"nested empty key":         map[string]any{"a": map[string]any{"": int64(1)}},
		"map[string]int empty key": map[string]int{"": 1},
		"sub-ms time":              time.UnixMilli(1_700_000_000_000).Add(time.Nanosecond),
		"time after int64 ms":      time.Date(300_000_000, 1, 1, 0, 0, 0, 0, time.UTC),
		"time before int64 ms":     time.Date(-300_000_000, 1, 1, 0, 0, 0, 0, time.UTC),
		"invalid UTF-8":            "\xff",
		"invalid UTF-8 key":        map[string]any{"\xff": 1},
	}
	for name, v := range bad {
		d := mustNew(t, Actor{ReplicaID: "a"})
		if err := d.Put(map[string]any{"keep": "x", "l": []any{}}); err != nil {
			t.Fatal(err)
		}
		heads := d.Heads()
		writes := map[string]func() error{
			"Set":        func() error { return d.Set("v", v) },
			"Put":        func() error { return d.Put(map[string]any{"v": v}) },
			"ListAppend": func() error { return d.ListAppend("l", v) },
			"Resolve":    func() error { return d.Resolve(Resolution{Conflict: Conflict{Path: "/v"}, Winner: -1, Value: v}) },
		}
		for wn, w := range writes {
			err := w()
			if !errors.Is(err, ErrUnsupportedValue) {
				t.Fatalf("%s: %s(%#v) = %v, want ErrUnsupportedValue", name, wn, v, err)
			}
			if !SameHeads(heads, d.Heads()) {
				t.Fatalf("%s: %s changed the document", name, wn)
			}
		}
	}
	// An empty key in a path is a bad path, not Automerge's raw error.
	d := mustNew(t, Actor{ReplicaID: "a"})
	for _, p := range []any{[]any{""}, []any{"a", ""}, []string{"", "b"}, Path{""}} {
		if err := d.Set(p, 1); !errors.Is(err, ErrBadPath) {
			t.Fatalf("Set(%#v) = %v, want ErrBadPath", p, err)
		}
	}
}

// TestCounterOverflowRefused: an increment that would wrap the counter
// around is refused and the counter keeps its value.
func TestCounterOverflowRefused(t *testing.T) {
	d := mustNew(t, Actor{ReplicaID: "a"})
	if err := d.Set("c", Counter(math.MaxInt64-1)); err != nil {
		t.Fatal(err)
	}
	if err := d.Increment("c", 1); err != nil {
		t.Fatal(err)
	}
	if err := d.Increment("c", 1); !errors.Is(err, ErrUnsupportedValue) {
		t.Fatalf("overflowing increment = %v, want ErrUnsupportedValue", err)
	}
	if err := d.Set("m", Counter(math.MinInt64)); err != nil {
		t.Fatal(err)
	}
	if err := d.Increment("m", -1); !errors.Is(err, ErrUnsupportedValue) {
		t.Fatalf("underflowing increment = %v, want ErrUnsupportedValue", err)
	}
	if v, _ := d.Get("c"); v != int64(math.MaxInt64) {
		t.Fatalf("counter = %v", v)
	}
}

// TestDecodeJSON: the CLI's JSON reader is exact and strict.
func TestDecodeJSON(t *testing.T) {
	ok := map[string]any{
		`1`:                                    int64(1),
		`-0`:                                   int64(0),
		`1.0`:                                  1.0,
		`-0.0`:                                 math.Copysign(0, -1),
		`9223372036854775807`:                  int64(math.MaxInt64),
		`-9223372036854775808`:                 int64(math.MinInt64),
		`9223372036854775808`:                  uint64(math.MaxInt64 + 1),
		`18446744073709551615`:                 uint64(math.MaxUint64),
		`1e308`:                                1e308,
		`4.9e-324`:                             math.SmallestNonzeroFloat64,
		`0e-999`:                               0.0,
		` {"a":1} `:                            map[string]any{"a": int64(1)},
		`{"$bytes":"AP8="}`:                    []byte{0, 0xff},
		`{"$date":"2024-05-01T10:00:00.123Z"}`: time.UnixMilli(1714557600123).UTC(),
		`{"$date":"2024-05-01T12:00:00.123+02:00"}`: time.UnixMilli(1714557600123).UTC(),
		`{"$date_ms":-9223372036854775808}`:         time.UnixMilli(math.MinInt64).UTC(),
		`{"$map":{"$bytes":"x"}}`:                   map[string]any{"$bytes": "x"},
		`{"$map":{"a":{"$bytes":""}}}`:              map[string]any{"a": []byte{}},
		`{"$map":{"$bytes":"AA=="},"b":1}`:          map[string]any{"$map": []byte{0}, "b": int64(1)},
		`{"$bytes":"AA==","b":1}`:                   map[string]any{"$bytes": "AA==", "b": int64(1)},
		`"\ud83d\ude00"`:                            "\U0001F600",
		`"a\u0000b"`:                                "a\x00b",
		`"\\ud800"`:                                 `\ud800`,
	}
	for in, want := range ok {
		got, err := DecodeJSON([]byte(in))
		if err != nil {
			t.Fatalf("DecodeJSON(%s): %v", in, err)
		}
		if !sameValue(got, want) {
			t.Fatalf("DecodeJSON(%s) = %#v, want %#v", in, got, want)
		}
	}
	bad := map[string]string{
		`{"a":1} garbage`:                       "after",
		`{"a":1}{"b":2}`:                        "after",
		`1 2`:                                   "after",
		``:                                      "end",
		`{"a":`:                                 "end",
		`18446744073709551616`:                  "outside int64 and uint64",
		`-9223372036854775809`:                  "outside int64 and uint64",
		`1e400`:                                 "range",
		`-1e400`:                                "range",
		`1e-400`:                                "too small",
		`{"a":1,"a":2}`:                         "duplicate",
		`"\ud800"`:                              "surrogate",
		`"\udc00x"`:                             "surrogate",
		`"\ud800\u0041"`:                        "surrogate",
		"\"\xff\"":                              "UTF-8",
		`{"$unknown":1}`:                        "unknown tag",
		`{"$bytes":1}`:                          "base64",
		`{"$bytes":"!!"}`:                       "illegal base64",
		`{"$date":"yesterday"}`:                 "$date",
		`{"$date":"2024-05-01T10:00:00.1234Z"}`: "sub-millisecond",
		`{"$date_ms":1.5}`:                      "int64",
		`{"$float":"nan"}`:                      "NaN",
		`{"$map":1}`:                            "object",
		`[1,]`:                                  "malformed",
		strings.Repeat("[", 70) + strings.Repeat("]", 70): "deeper",
	}
	for in, want := range bad {
		v, err := DecodeJSON([]byte(in))
		if !errors.Is(err, ErrUnsupportedValue) || !strings.Contains(err.Error(), want) {
			t.Fatalf("DecodeJSON(%q) = %#v, %v; want ErrUnsupportedValue mentioning %q", in, v, err, want)
		}
	}
}

// TestEncodeJSONForeignValues: values only foreign documents hold render as
// valid JSON in the documented tagged forms.
func TestEncodeJSONForeignValues(t *testing.T) {
	cases := map[string]any{
		`{"$float":"NaN"}`:                          math.NaN(),
		`{"$float":"Infinity"}`:                     math.Inf(1),
		`[{"$float":"-Infinity"}]`:                  []any{math.Inf(-1)},
		`{"$date_ms":253402300800000}`:              time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC),
		`{"$date":"0000-01-01T00:00:00.000Z"}`:      time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC),
		`{"$date_ms":-62167219200001}`:              time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC).Add(-time.Millisecond),
		`{"$bytes":"AQI="}`:                         []byte{1, 2},
		`18446744073709551615`:                      uint64(math.MaxUint64),
		`2.0`:                                       2.0,
		`1e+21`:                                     1e21,
		`{"$map":{"$x":1}}`:                         map[string]any{"$x": int64(1)},
		`{"a":{"$map":{"$map":{"$bytes":"AA=="}}}}`: map[string]any{"a": map[string]any{"$map": []byte{0}}},
	}
	for want, v := range cases {
		got, err := EncodeJSON(v)
		if err != nil || string(got) != want || !json.Valid(got) {
			t.Fatalf("EncodeJSON(%#v) = %s, %v; want %s", v, got, err, want)
		}
	}
	if _, err := EncodeJSON(struct{}{}); !errors.Is(err, ErrUnsupportedValue) {
		t.Fatalf("EncodeJSON(struct) = %v", err)
	}
}

// TestValueProperty: every generated accepted value reads back identically
// after Set, Save/Load and merge, and through EncodeJSON/DecodeJSON; every
// generated refused value is refused and leaves the document unchanged.
func TestValueProperty(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		d := newDoc(rt, "a")
		if rapid.Bool().Draw(rt, "refused") {
			v := valuegen.Refused().Draw(rt, "v")
			heads := d.Heads()
			if err := d.Set("v", v); !errors.Is(err, ErrUnsupportedValue) {
				rt.Fatalf("Set(%#v) = %v, want ErrUnsupportedValue", v, err)
			}
			if !SameHeads(heads, d.Heads()) {
				rt.Fatal("a refused write changed the document")
			}
			return
		}
		want := valuegen.Value(3).Draw(rt, "v")
		if err := d.Set("v", want); err != nil {
			rt.Fatalf("Set(%#v): %v", want, err)
		}
		for i, got := range readBack(rt, d) {
			if !sameValue(got, want) {
				rt.Fatalf("read back (step %d) %#v, want %#v", i, got, want)
			}
		}
		j, err := EncodeJSON(want)
		if err != nil || !json.Valid(j) {
			rt.Fatalf("EncodeJSON: %s, %v", j, err)
		}
		back, err := DecodeJSON(j)
		if err != nil || !sameValue(back, want) {
			rt.Fatalf("DecodeJSON(%s) = %#v, %v", j, back, err)
		}
	})
}

// TestWriteBackKeepsTextAndCounter: writing back what Get returned (a
// string for a text, an int for a counter) changes nothing: the text and
// counter stay collaborative.
func TestWriteBackKeepsTextAndCounter(t *testing.T) {
	d := newDoc(t, "a")
	if err := d.Put(map[string]any{"t": Text("hello"), "c": Counter(3), "n": map[string]any{"t": Text("x")}}); err != nil {
		t.Fatal(err)
	}
	m, err := d.ToMap()
	if err != nil {
		t.Fatal(err)
	}
	heads := d.Heads()
	if err := d.Put(m); err != nil {
		t.Fatal(err)
	}
	if !SameHeads(heads, d.Heads()) {
		t.Fatal("writing Get's output back made a change")
	}
	for p, k := range map[string]ValueKind{"t": KindText, "c": KindCounter, "n.t": KindText} {
		if got, _ := d.Kind(p); got != k {
			t.Fatalf("%s is a %s after the write-back, want %s", p, got, k)
		}
	}
	// A different value still replaces.
	if err := d.Set("t", "other"); err != nil {
		t.Fatal(err)
	}
	if got, _ := d.Kind("t"); got != KindString {
		t.Fatalf("t is a %s after setting a new string", got)
	}
}

// TestDeepForeignDocumentPrints: a plain Automerge document nested deeper
// than ferry would write still reads and renders as JSON.
func TestDeepForeignDocumentPrints(t *testing.T) {
	am := automerge.New()
	m := am.RootMap()
	for range 300 {
		c := automerge.NewMap()
		if err := m.Set("k", c); err != nil {
			t.Fatal(err)
		}
		m = c
	}
	if err := m.Set("leaf", math.Inf(-1)); err != nil {
		t.Fatal(err)
	}
	if _, err := am.Commit("deep"); err != nil {
		t.Fatal(err)
	}
	d, err := Load(am.Save(), Actor{ReplicaID: "a"})
	if err != nil {
		t.Fatal(err)
	}
	v, err := d.ToMap()
	if err != nil {
		t.Fatal(err)
	}
	j, err := EncodeJSON(v)
	if err != nil || !json.Valid(j) || !bytes.Contains(j, []byte(`{"leaf":{"$float":"-Infinity"}}`)) {
		t.Fatalf("EncodeJSON of a deep foreign document: %.80s..., %v", j, err)
	}
}

// TestForeignEmptyKeys: a document from @automerge/automerge with empty map
// keys (the JS library writes them, automerge-go cannot) reads through
// every path form; writes at or under an empty key are refused with a typed
// error before anything changes; other writes work.
func TestForeignEmptyKeys(t *testing.T) {
	out := amjs.Run(t, `
import * as A from "@automerge/automerge"
const d = A.change(A.init(), d => { d[""] = new A.ImmutableString("root"); d.e = {"": {t: "text", l: [1]}} })
process.stdout.write(Buffer.from(A.save(d)).toString("base64"))
`)
	raw, err := base64.StdEncoding.DecodeString(string(out))
	if err != nil {
		t.Fatal(err)
	}
	d, err := Load(raw, Actor{ReplicaID: "a"})
	if err != nil {
		t.Fatal(err)
	}
	if v, err := d.Get([]any{""}); err != nil || v != "root" {
		t.Fatalf(`Get([""]) = %#v, %v`, v, err)
	}
	if v, err := d.Get([]string{"e", "", "t"}); err != nil || v != "text" {
		t.Fatalf(`Get(["e","","t"]) = %#v, %v`, v, err)
	}
	if k, err := d.Kind(Path{"e", "", "t"}); err != nil || k != KindText {
		t.Fatalf("Kind = %v, %v", k, err)
	}
	heads := d.Heads()
	for name, w := range map[string]func() error{
		"Set":        func() error { return d.Set([]any{""}, "x") },
		"Set under":  func() error { return d.Set([]any{"e", "", "n"}, 1) },
		"Delete":     func() error { return d.Delete([]any{""}) },
		"SpliceText": func() error { return d.SpliceText([]any{"e", "", "t"}, 0, 0, "x") },
		"ListAppend": func() error { return d.ListAppend([]any{"e", "", "l"}, 2) },
		"Put":        func() error { return d.Put(map[string]any{"": "x"}) },
		"Put under":  func() error { return d.Put(map[string]any{"e": map[string]any{"": 1}}) },
	} {
		if err := w(); !errors.Is(err, ErrBadPath) && !errors.Is(err, ErrUnsupportedValue) {
			t.Fatalf("%s = %v, want ErrBadPath or ErrUnsupportedValue", name, err)
		}
		if !SameHeads(heads, d.Heads()) {
			t.Fatalf("refused %s changed the document", name)
		}
	}
	if err := d.Put(map[string]any{"other": int64(1)}); err != nil {
		t.Fatal(err)
	}
	m, err := d.ToMap()
	if err != nil || m[""] != "root" || m["other"] != int64(1) {
		t.Fatalf("ToMap = %#v, %v", m, err)
	}
}
