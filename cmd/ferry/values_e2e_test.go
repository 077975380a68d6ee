package main

import (
	"bytes"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferrysync/ferry/crdt"
	"github.com/ferrysync/ferry/internal/amjs"
	"github.com/ferrysync/ferry/internal/valuegen"
	"github.com/ferrysync/ferry/policy"
)

// compactJSON returns s without insignificant white space.
func compactJSON(t *testing.T, s string) string {
	t.Helper()
	var b bytes.Buffer
	if err := json.Compact(&b, []byte(s)); err != nil {
		t.Fatalf("not JSON (%v):\n%s", err, s)
	}
	return b.String()
}

// TestE2EValuesExact: put and get keep every value exactly: integers at the
// int64 and uint64 limits, floats (1.0 stays a float, -0.0 keeps its sign),
// bytes, dates inside and outside 0000-9999, and maps that look like tags;
// get's output put back changes nothing.
func TestE2EValuesExact(t *testing.T) {
	s := newStore(t, "a", "pw")
	in := `{"big":18446744073709551615,"above":9223372036854775808,"max":9223372036854775807,"min":-9223372036854775808,` +
		`"f":1.0,"neg":-0.0,"tiny":5e-324,"huge":1.7976931348623157e308,"b":{"$bytes":"AP8="},` +
		`"d":{"$date":"2024-05-01T10:00:00.123Z"},"far":{"$date_ms":253402300800000},"m":{"$map":{"$x":1}},` +
		`"s":"nul\u0000 and \u2028","l":[1,2.5,null,true,{"k":[]}]}`
	s.must("put", "notes", "n", in)
	want := `{"above":9223372036854775808,"b":{"$bytes":"AP8="},"big":18446744073709551615,` +
		`"d":{"$date":"2024-05-01T10:00:00.123Z"},"f":1.0,"far":{"$date_ms":253402300800000},"huge":1.7976931348623157e+308,` +
		`"l":[1,2.5,null,true,{"k":[]}],"m":{"$map":{"$x":1}},"max":9223372036854775807,"min":-9223372036854775808,` +
		`"neg":-0.0,"s":"nul\u0000 and \u2028","tiny":5e-324}`
	got := s.must("get", "notes", "n")
	if c := compactJSON(t, got); c != want {
		t.Fatalf("get:\n%s\nwant:\n%s", c, want)
	}
	// What get prints, put back, is the same record.
	s.must("put", "notes", "n", got)
	if again := s.must("get", "notes", "n"); again != got {
		t.Fatalf("get after putting get's output back:\n%s\nwas:\n%s", again, got)
	}
}

// TestE2EValuesRefused: values ferry cannot store exactly are refused with
// exit 2 and a clear message, and the record is left as it was.
func TestE2EValuesRefused(t *testing.T) {
	s := newStore(t, "a", "pw")
	s.must("put", "notes", "n", `{"keep":1}`)
	before := s.must("get", "notes", "n")
	cases := map[string]string{
		`{"a":18446744073709551616}`:  "outside int64 and uint64",
		`{"a":-9223372036854775809}`:  "outside int64 and uint64",
		`{"a":1e400}`:                 "outside the range of a 64-bit float",
		`{"a":1e-400}`:                "too small",
		`{"a":1} garbage`:             "data after the JSON value",
		`{"a":1}{"b":2}`:              "data after the JSON value",
		`{"":1}`:                      "empty map key",
		`{"a":{"":1}}`:                "empty map key",
		`{"a":{"$float":"NaN"}}`:      "non-finite float",
		`{"a":{"$float":"Infinity"}}`: "non-finite float",
		`{"a":{"$date":"2024-05-01T10:00:00.0001Z"}}`: "sub-millisecond",
		`{"a":{"$unknown":1}}`:                        "unknown tag",
		`{"a":1,"a":2}`:                               "duplicate key",
		`{"a":"\ud800"}`:                              "surrogate",
		`[1]`:                                         "want a JSON object",
	}
	for in, msg := range cases {
		_, stderr, code := s.ferry("put", "notes", "n", in)
		assertFailure(t, stderr, code, exitUsage, msg)
		if strings.Contains(stderr, "key must not be an empty string") {
			t.Fatalf("put %s shows Automerge's raw message: %s", in, stderr)
		}
	}
	if after := s.must("get", "notes", "n"); after != before {
		t.Fatalf("refused puts changed the record:\n%s", after)
	}
	// resolve --value reads values the same way, before touching the store.
	_, stderr, code := s.ferry("resolve", "0123", "--value", `1 garbage`)
	assertFailure(t, stderr, code, exitUsage, "data after the JSON value")
	_, stderr, code = s.ferry("resolve", "0123", "--value", `18446744073709551616`)
	assertFailure(t, stderr, code, exitUsage, "outside int64 and uint64")
}

// TestE2EImportEmptyAndForeign: an empty or garbage .automerge file is
// refused (exit 5, never "merged"); a document made by @automerge/automerge
// with every value type imports, and get prints valid JSON showing exactly
// what the JS library reports.
func TestE2EImportEmptyAndForeign(t *testing.T) {
	s := newStore(t, "a", "pw")
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty.automerge")
	garbage := filepath.Join(dir, "garbage.automerge")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(garbage, []byte("not automerge"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{empty, garbage} {
		out, stderr, code := s.ferry("doc", "import", "notes", "x", f)
		assertFailure(t, stderr, code, exitCorrupt, "bad document")
		if strings.Contains(out, "merged") {
			t.Fatalf("import of %s reported: %s", f, out)
		}
	}
	_, stderr, code := s.ferry("get", "notes", "x")
	assertFailure(t, stderr, code, exitNotFound, "not found")

	var fo valuegen.ForeignOutput
	if err := json.Unmarshal(amjs.Run(t, valuegen.ForeignScript), &fo); err != nil {
		t.Fatal(err)
	}
	want, err := valuegen.FromJSView(fo.View)
	if err != nil {
		t.Fatal(err)
	}
	wantJSON, err := crdt.EncodeJSON(want)
	if err != nil {
		t.Fatal(err)
	}
	js := filepath.Join(dir, "js.automerge")
	if err := os.WriteFile(js, fo.Doc, 0o600); err != nil {
		t.Fatal(err)
	}
	if out := s.must("doc", "import", "notes", "js", js); !strings.Contains(out, "merged") {
		t.Fatalf("import: %s", out)
	}
	got := compactJSON(t, s.must("get", "notes", "js"))
	if got != string(wantJSON) {
		t.Fatalf("get of the JS document:\n%s\nJS reports:\n%s", got, wantJSON)
	}
}

// TestConflictJSONForeignValues: a queued conflict whose candidates hold
// values JSON lacks (a foreign NaN, bytes, a date past 9999) and whose
// times are past year 9999 still lists as valid JSON, and reads back.
func TestConflictJSONForeignValues(t *testing.T) {
	far := crdt.Timestamp{WallMillis: 8_640_000_000_000_000}
	en := policy.Entry{Collection: "notes", RecordID: "n", Deadline: time.UnixMilli(far.WallMillis + 1),
		Conflict: crdt.Conflict{ID: "c1", Path: "/v", Candidates: []crdt.Candidate{
			{Value: math.NaN(), HLC: far, ReplicaID: "r1"},
			{Value: []byte{1}, HLC: crdt.Timestamp{WallMillis: 1_700_000_000_000}, ReplicaID: "r2"},
			{Value: time.UnixMilli(far.WallMillis).UTC(), HLC: far, ReplicaID: "r3"},
		}}}
	b, err := json.Marshal([]conflictJSON{toConflictJSON(en)})
	if err != nil || !json.Valid(b) {
		t.Fatalf("conflicts --json: %s, %v", b, err)
	}
	for _, want := range []string{`"value":{"$float":"NaN"}`, `"value":{"$bytes":"AQ=="}`, `"value":{"$date_ms":8640000000000000}`,
		`"at":{"$date_ms":8640000000000000}`, `"deadline":{"$date_ms":8640000000000001}`, `"at":"2023-11-14T22:13:20Z"`} {
		if !strings.Contains(string(b), want) {
			t.Fatalf("conflicts --json lacks %s:\n%s", want, b)
		}
	}
	var back []conflictJSON
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back[0].Candidates[0].At.UnixMilli() != far.WallMillis || back[0].Candidates[1].At.UnixMilli() != 1_700_000_000_000 {
		t.Fatalf("times read back as %v, %v", back[0].Candidates[0].At, back[0].Candidates[1].At)
	}
}
