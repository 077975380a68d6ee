package anon

import (
	"reflect"
	"testing"
	"time"
)

func TestGeneralize(t *testing.T) {
	dec := func(d int) *int { return &d }
	ts := time.Date(2026, 11, 5, 14, 37, 12, 999, time.UTC)
	tests := []struct {
		name string
		rule FieldRule
		in   any
		want any // nil with ok false: rejected
		ok   bool
	}{
		{"bucket floor", FieldRule{Bucket: 10}, int64(37), int64(30), true},
		{"bucket floor exact", FieldRule{Bucket: 10}, 40, int64(40), true},
		{"bucket floor negative", FieldRule{Bucket: 10}, int64(-1), int64(-10), true},
		{"bucket floor negative exact", FieldRule{Bucket: 10}, int64(-20), int64(-20), true},
		{"bucket range", FieldRule{Bucket: 10, Format: Range}, int64(37), "30-40", true},
		{"bucket range negative", FieldRule{Bucket: 5, Format: Range}, int64(-3), "-5-0", true},
		{"bucket float value, int width", FieldRule{Bucket: 10}, 37.9, int64(30), true},
		{"bucket float width", FieldRule{Bucket: 0.1}, 0.37, 0.3, true},
		{"bucket float width range", FieldRule{Bucket: 0.25, Format: Range}, 1.3, "1.25-1.5", true},
		{"bucket uint64", FieldRule{Bucket: 100}, uint64(1234), int64(1200), true},
		{"bucket string", FieldRule{Bucket: 10}, "37", nil, false},
		{"bucket huge uint64", FieldRule{Bucket: 10}, uint64(1 << 63), nil, false},
		{"bucket range overflow", FieldRule{Bucket: 10, Format: Range}, int64(1<<63 - 1), nil, false},

		{"truncate hour", FieldRule{Truncate: Hour}, ts, "2026-11-05T14", true},
		{"truncate day", FieldRule{Truncate: Day}, ts, "2026-11-05", true},
		{"truncate month", FieldRule{Truncate: Month}, ts, "2026-11", true},
		{"truncate year", FieldRule{Truncate: Year}, ts, "2026", true},
		{"truncate in UTC", FieldRule{Truncate: Day}, time.Date(2026, 11, 5, 23, 0, 0, 0, time.FixedZone("", -3*3600)), "2026-11-06", true},
		{"truncate RFC 3339 string", FieldRule{Truncate: Hour}, "2026-11-05T14:37:12.5+01:00", "2026-11-05T13", true},
		{"truncate bad string", FieldRule{Truncate: Day}, "5 Nov 2026", nil, false},
		{"truncate number", FieldRule{Truncate: Day}, int64(1762300000), nil, false},

		{"prefix", FieldRule{Prefix: 3}, "10115", "101", true},
		{"prefix runes", FieldRule{Prefix: 2}, "Zürich", "Zü", true},
		{"prefix short", FieldRule{Prefix: 8}, "abc", "abc", true},
		{"prefix exact", FieldRule{Prefix: 3}, "abc", "abc", true},
		{"prefix number", FieldRule{Prefix: 3}, int64(10115), nil, false},

		{"decimals", FieldRule{Decimals: dec(2)}, 3.14159, 3.14, true},
		{"decimals zero", FieldRule{Decimals: dec(0)}, 2.5, 3.0, true},
		{"decimals integer", FieldRule{Decimals: dec(1)}, int64(7), int64(7), true},
		{"location", FieldRule{Decimals: dec(1)},
			map[string]any{"lat": 52.52437, "lon": 13.41053, "accuracy": 5.0, "label": "home"},
			map[string]any{"lat": 52.5, "lon": 13.4}, true},
		{"location negative", FieldRule{Decimals: dec(2)},
			map[string]any{"lat": -33.86785, "lon": 151.20732},
			map[string]any{"lat": -33.87, "lon": 151.21}, true},
		{"location without lon", FieldRule{Decimals: dec(1)}, map[string]any{"lat": 1.0}, nil, false},
		{"decimals string", FieldRule{Decimals: dec(1)}, "1.25", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := generalize(&tt.rule, tt.in)
			if ok != tt.ok || !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("generalize(%v) = %#v, %v; want %#v, %v", tt.in, got, ok, tt.want, tt.ok)
			}
		})
	}
}

// Through Apply: a generalized timestamp is the only time that leaves, as a
// string.
func TestGeneralizeApply(t *testing.T) {
	r := Rules{Collection: "c", Purpose: "p", Fields: map[string]FieldRule{
		"at":    {Kind: Generalize, Truncate: Month},
		"where": {Kind: Generalize, Decimals: new(1)},
	}}
	a := mustNew(t, testSecret, "e", r)
	res := mustApply(t, a, map[string]any{
		"at":      time.Date(2026, 11, 5, 1, 2, 3, 0, time.UTC),
		"where":   map[string]any{"lat": 48.8566, "lon": 2.3522, "_ferry": "x"},
		"updated": time.Date(2026, 11, 5, 1, 2, 3, 0, time.UTC),
	})
	want := []map[string]any{{"at": "2026-11", "where": map[string]any{"lat": 48.9, "lon": 2.4}}}
	if !reflect.DeepEqual(res.Records, want) {
		t.Fatalf("got %v", res.Records)
	}
}
