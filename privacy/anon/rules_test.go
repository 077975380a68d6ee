package anon

import (
	"errors"
	"strings"
	"testing"
)

const exampleRules = `{
  "collection": "workouts",
  "purpose": "fitness-stats",
  "fields": {
    "user":     {"kind": "pseudonymize"},
    "age":      {"kind": "generalize", "bucket": 10, "format": "range"},
    "started":  {"kind": "generalize", "truncate": "day"},
    "place":    {"kind": "generalize", "decimals": 1},
    "postcode": {"kind": "generalize", "prefix": 3},
    "steps":    {"kind": "noise", "sensitivity": 1000},
    "sport":    {"kind": "keep"},
    "notes":    {"kind": "drop"}
  },
  "quasi_identifiers": ["age", "postcode"],
  "k": 5,
  "epsilon": 1.0
}`

func TestParseRulesExample(t *testing.T) {
	r, err := ParseRules([]byte(exampleRules))
	if err != nil {
		t.Fatal(err)
	}
	if r.Collection != "workouts" || r.Purpose != "fitness-stats" || r.K != 5 || r.Epsilon != 1 {
		t.Fatalf("header: %+v", r)
	}
	if got := r.Fields["age"]; got.Kind != Generalize || got.Bucket != 10 || got.Format != Range {
		t.Fatalf("age: %+v", got)
	}
	if got := r.Fields["place"]; got.Decimals == nil || *got.Decimals != 1 {
		t.Fatalf("place: %+v", got)
	}
	if got := r.Fields["steps"]; got.Kind != Noise || got.Sensitivity != 1000 {
		t.Fatalf("steps: %+v", got)
	}
	c, err := compile(r)
	if err != nil {
		t.Fatal(err)
	}
	if c.epsilon != 1 || c.fieldEp["steps"] != 1 {
		t.Fatalf("epsilon split: %v %v", c.epsilon, c.fieldEp)
	}
}

func TestEpsilonSplit(t *testing.T) {
	r := Rules{Collection: "c", Purpose: "p", Epsilon: 1, Fields: map[string]FieldRule{
		"a": {Kind: Noise, Epsilon: 0.5},
		"b": {Kind: Noise},
		"c": {Kind: Noise},
	}}
	c, err := compile(r)
	if err != nil {
		t.Fatal(err)
	}
	if c.fieldEp["a"] != 0.5 || c.fieldEp["b"] != 0.25 || c.fieldEp["c"] != 0.25 || c.epsilon != 1 {
		t.Fatalf("split: %v total %v", c.fieldEp, c.epsilon)
	}
}

func TestBadRules(t *testing.T) {
	base := func(f map[string]FieldRule) Rules {
		return Rules{Collection: "c", Purpose: "p", Fields: f}
	}
	dec := func(d int) *int { return &d }
	tests := []struct {
		name string
		r    Rules
		want string
	}{
		{"no collection", Rules{Purpose: "p", Fields: map[string]FieldRule{"a": {Kind: Keep}}}, "collection"},
		{"purpose with slash", Rules{Collection: "c", Purpose: "a/b", Fields: map[string]FieldRule{"a": {Kind: Keep}}}, "purpose"},
		{"no fields", base(nil), "no fields"},
		{"missing kind", base(map[string]FieldRule{"a": {}}), "kind is missing"},
		{"unknown kind", base(map[string]FieldRule{"a": {Kind: "hash"}}), "unknown kind"},
		{"keep id", base(map[string]FieldRule{"id": {Kind: Keep}}), "record ids"},
		{"pseudonymize id", base(map[string]FieldRule{"id": {Kind: Pseudonymize}}), "record ids"},
		{"meta path", base(map[string]FieldRule{"_ferry": {Kind: Keep}}), "metadata"},
		{"nested meta path", base(map[string]FieldRule{"a._ferry:x": {Kind: Keep}}), "metadata"},
		{"empty element", base(map[string]FieldRule{"a..b": {Kind: Keep}}), "empty path element"},
		{"prefix overlap", base(map[string]FieldRule{"a": {Kind: Keep}, "a-b": {Kind: Keep}, "a.b": {Kind: Keep}}), `"a" is a prefix of field "a.b"`},
		{"keep with params", base(map[string]FieldRule{"a": {Kind: Keep, Bucket: 3}}), "no parameters"},
		{"generalize nothing", base(map[string]FieldRule{"a": {Kind: Generalize}}), "exactly one"},
		{"generalize two", base(map[string]FieldRule{"a": {Kind: Generalize, Prefix: 2, Truncate: Day}}), "exactly one"},
		{"bucket negative", base(map[string]FieldRule{"a": {Kind: Generalize, Bucket: -1}}), "bucket"},
		{"bad format", base(map[string]FieldRule{"a": {Kind: Generalize, Bucket: 1, Format: "mid"}}), "format"},
		{"format alone", base(map[string]FieldRule{"a": {Kind: Generalize, Prefix: 1, Format: Range}}), "format goes with bucket"},
		{"bad unit", base(map[string]FieldRule{"a": {Kind: Generalize, Truncate: "minute"}}), "truncate"},
		{"prefix negative", base(map[string]FieldRule{"a": {Kind: Generalize, Prefix: -2}}), "prefix"},
		{"decimals too many", base(map[string]FieldRule{"a": {Kind: Generalize, Decimals: dec(11)}}), "decimals"},
		{"noise without epsilon", base(map[string]FieldRule{"a": {Kind: Noise}}), "epsilon > 0"},
		{"noise with bucket", base(map[string]FieldRule{"a": {Kind: Noise, Bucket: 2}}), "generalize parameters"},
		{"negative sensitivity", base(map[string]FieldRule{"a": {Kind: Noise, Sensitivity: -1}}), "sensitivity"},
		{"field epsilon too small", base(map[string]FieldRule{"a": {Kind: Noise, Epsilon: 1e-9}}), "epsilon"},
		{"k negative", Rules{Collection: "c", Purpose: "p", K: -1, Fields: map[string]FieldRule{"a": {Kind: Keep}}}, "negative"},
		{"qi without k", Rules{Collection: "c", Purpose: "p", QuasiIdentifiers: []string{"a"}, Fields: map[string]FieldRule{"a": {Kind: Keep}}}, "must be >= 2"},
		{"qi not a field", Rules{Collection: "c", Purpose: "p", K: 2, QuasiIdentifiers: []string{"b"}, Fields: map[string]FieldRule{"a": {Kind: Keep}}}, "not a field"},
		{"qi dropped", Rules{Collection: "c", Purpose: "p", K: 2, QuasiIdentifiers: []string{"a"}, Fields: map[string]FieldRule{"a": {Kind: Drop}}}, "dropped"},
		{"qi noised", Rules{Collection: "c", Purpose: "p", K: 2, Epsilon: 1, QuasiIdentifiers: []string{"a"}, Fields: map[string]FieldRule{"a": {Kind: Noise}}}, "noised"},
		{"qi twice", Rules{Collection: "c", Purpose: "p", K: 2, QuasiIdentifiers: []string{"a", "a"}, Fields: map[string]FieldRule{"a": {Kind: Keep}}}, "twice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.r.Validate()
			if !errors.Is(err, ErrBadRules) {
				t.Fatalf("Validate = %v, want ErrBadRules", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate = %v, want it to mention %q", err, tt.want)
			}
			if _, err := New(testSecret, "e", tt.r); !errors.Is(err, ErrBadRules) {
				t.Fatalf("New = %v, want ErrBadRules", err)
			}
		})
	}
}

func TestBadRulesNoiseBudget(t *testing.T) {
	r := Rules{Collection: "c", Purpose: "p", Epsilon: 1, Fields: map[string]FieldRule{
		"a": {Kind: Noise, Epsilon: 0.8},
		"b": {Kind: Noise, Epsilon: 0.7},
	}}
	if err := r.Validate(); !errors.Is(err, ErrBadRules) || !strings.Contains(err.Error(), "more than epsilon") {
		t.Fatalf("overspent: %v", err)
	}
	r.Fields = map[string]FieldRule{"a": {Kind: Noise, Epsilon: 1}, "b": {Kind: Noise}}
	if err := r.Validate(); !errors.Is(err, ErrBadRules) || !strings.Contains(err.Error(), "below") {
		t.Fatalf("nothing left for b: %v", err)
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	r := Rules{Collection: "", Purpose: "", Fields: map[string]FieldRule{"id": {Kind: Keep}, "x": {Kind: "?"}}}
	err := r.Validate()
	for _, want := range []string{"collection", "purpose", "record ids", "unknown kind"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func TestParseRulesStrict(t *testing.T) {
	for name, in := range map[string]string{
		"unknown top key":   `{"collection":"c","purpose":"p","fields":{"a":{"kind":"keep"}},"kk":2}`,
		"unknown rule key":  `{"collection":"c","purpose":"p","fields":{"a":{"kind":"keep","widht":2}}}`,
		"trailing data":     `{"collection":"c","purpose":"p","fields":{"a":{"kind":"keep"}}} {}`,
		"not json":          `collection: c`,
		"wrong type":        `{"collection":"c","purpose":"p","fields":{"a":{"kind":"keep"}},"k":"5"}`,
		"valid json, rules": `{"collection":"c","purpose":"p","fields":{}}`,
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := ParseRules([]byte(in)); !errors.Is(err, ErrBadRules) {
				t.Fatalf("ParseRules = %v, want ErrBadRules", err)
			}
		})
	}
	if _, err := ParseRules([]byte(`{"collection":"c","purpose":"p","fields":{"a":{"kind":"keep"}}}` + "\n")); err != nil {
		t.Fatalf("trailing newline: %v", err)
	}
}
