package anon

import (
	"bytes"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base32"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
	"pgregory.net/rapid"
)

var testSecret = bytes.Repeat([]byte{0x5a, 0xc3, 0x11, 0x7e}, 8) // 32 bytes

func mustNew(t testing.TB, secret []byte, epoch string, r Rules, opts ...Option) *Anonymizer {
	t.Helper()
	a, err := New(secret, epoch, r, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func mustApply(t testing.TB, a *Anonymizer, recs ...map[string]any) Result {
	t.Helper()
	res, err := a.Apply(recs)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func TestDropsEverythingNotKept(t *testing.T) {
	r := Rules{Collection: "notes", Purpose: "stats", Fields: map[string]FieldRule{
		"id":         {Kind: Drop},
		"secret":     {Kind: Drop},
		"title":      {Kind: Keep},
		"meta.lang":  {Kind: Keep},
		"meta.words": {Kind: Keep},
		"extra":      {Kind: Keep},
	}}
	a := mustNew(t, testSecret, "2026-11", r)
	in := map[string]any{
		"id":           "rec-123",
		"_ferry":       map[string]any{"actor": "actor-9", "hlc": int64(77)},
		"_ferry:hist":  []any{"h1"},
		"secret":       "hunter2",
		"unnamed":      "should not leave",
		"created":      time.Date(2026, 11, 5, 14, 3, 0, 0, time.UTC),
		"title":        "hello",
		"meta":         map[string]any{"lang": "en", "words": 12, "author": "ann", "_ferry": "x"},
		"extra":        map[string]any{"ok": true, "_ferryActor": "actor-9", "at": time.Now(), "n": []any{uint8(1), 2.5}},
		"not-a-map-ok": 1,
	}
	res := mustApply(t, a, in)
	want := []map[string]any{{
		"title": "hello",
		"meta":  map[string]any{"lang": "en", "words": int64(12)},
		"extra": map[string]any{"ok": true, "n": []any{int64(1), 2.5}},
	}}
	if !reflect.DeepEqual(res.Records, want) {
		t.Fatalf("records\n got %#v\nwant %#v", res.Records, want)
	}
	// id, _ferry, _ferry:hist, secret, unnamed, created, not-a-map-ok,
	// meta.author, meta._ferry, extra._ferryActor.
	if res.DroppedFields != 10 {
		t.Errorf("DroppedFields = %d, want 10", res.DroppedFields)
	}
	if res.Rejected != 1 { // extra.at: a raw timestamp under keep
		t.Errorf("Rejected = %d, want 1", res.Rejected)
	}
}

func TestRejectsMisfits(t *testing.T) {
	r := Rules{Collection: "c", Purpose: "p", Epsilon: 1, Fields: map[string]FieldRule{
		"n":       {Kind: Noise},
		"when":    {Kind: Generalize, Truncate: Day},
		"who":     {Kind: Pseudonymize},
		"deep.x":  {Kind: Keep},
		"nothing": {Kind: Keep},
	}}
	a := mustNew(t, testSecret, "e1", r)
	res := mustApply(t, a, map[string]any{
		"n":       2.5,                      // not an integer
		"when":    "yesterday",              // not RFC 3339
		"who":     map[string]any{"a": "b"}, // not a scalar
		"deep":    "flat",                   // not a map
		"nothing": nil,                      // null stays null
	})
	want := []map[string]any{{"nothing": nil}}
	if !reflect.DeepEqual(res.Records, want) || res.Rejected != 4 {
		t.Fatalf("got %#v rejected %d", res.Records, res.Rejected)
	}
}

func TestPseudonyms(t *testing.T) {
	rules := func(purpose string) Rules {
		return Rules{Collection: "c", Purpose: purpose, Fields: map[string]FieldRule{
			"user": {Kind: Pseudonymize}, "tags": {Kind: Pseudonymize},
		}}
	}
	tok := func(a *Anonymizer, v any) string {
		t.Helper()
		res := mustApply(t, a, map[string]any{"user": v})
		return res.Records[0]["user"].(string)
	}
	a := mustNew(t, testSecret, "2026-11", rules("stats"))
	again := mustNew(t, append([]byte{}, testSecret...), "2026-11", rules("stats"))
	nextEpoch := mustNew(t, testSecret, "2026-12", rules("stats"))
	otherPurpose := mustNew(t, testSecret, "2026-11", rules("ml-training"))
	otherSecret := mustNew(t, bytes.Repeat([]byte{1}, 32), "2026-11", rules("stats"))

	x := tok(a, "alice@example.com")
	if len(x) != 16 || strings.Trim(x, "abcdefghijklmnopqrstuvwxyz234567") != "" {
		t.Fatalf("token %q is not 16 lowercase base32 characters", x)
	}
	if tok(a, "alice@example.com") != x || tok(again, "alice@example.com") != x {
		t.Error("pseudonym not stable within an epoch")
	}
	for name, other := range map[string]*Anonymizer{"epoch": nextEpoch, "purpose": otherPurpose, "secret": otherSecret} {
		if tok(other, "alice@example.com") == x {
			t.Errorf("same pseudonym across %s", name)
		}
	}
	if tok(a, "bob@example.com") == x {
		t.Error("two values, one pseudonym")
	}
	if tok(a, int64(5)) == tok(a, "5") {
		t.Error(`5 and "5" share a pseudonym`)
	}
	if tok(a, int64(5)) != tok(a, 5.0) || tok(a, int64(5)) != tok(a, uint16(5)) || tok(a, int64(5)) != tok(a, json.Number("5")) {
		t.Error("one number, several pseudonyms")
	}

	// The derivation is the documented one.
	key, err := hkdf.Key(sha256.New, testSecret, nil, "ferry-pseudonym/stats/2026-11", 32)
	if err != nil {
		t.Fatal(err)
	}
	m := hmac.New(sha256.New, key)
	m.Write([]byte("\x71alice@example.com")) // CBOR text string, 17 bytes
	want := strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(m.Sum(nil)[:10]))
	if x != want {
		t.Fatalf("token %q, want %q from the documented derivation", x, want)
	}

	// Lists of scalars are pseudonymized element by element.
	res := mustApply(t, a, map[string]any{"tags": []any{"alice@example.com", int64(5)}})
	if got := res.Records[0]["tags"]; !reflect.DeepEqual(got, []any{x, tok(a, int64(5))}) {
		t.Fatalf("tags = %v", got)
	}

	// Neither the secret nor the key shows anywhere.
	out := mustApply(t, a,
		map[string]any{"user": "alice@example.com", "tags": []any{"a", "b"}},
		map[string]any{"user": testSecret},
	)
	js, err := json.Marshal(out)
	if err != nil {
		t.Fatal(err)
	}
	cb, err := cbor.Marshal(out)
	if err != nil {
		t.Fatal(err)
	}
	printed := fmt.Sprintf("%v %+v %#v %s", a, a, a, a)
	for _, secret := range [][]byte{testSecret, key} {
		forms := [][]byte{secret, []byte(hex.EncodeToString(secret)), []byte(base64.StdEncoding.EncodeToString(secret)),
			[]byte(strings.ToLower(base32.StdEncoding.EncodeToString(secret))), secret[:16]}
		for _, f := range forms {
			for what, hay := range map[string][]byte{"json": js, "cbor": cb, "fmt": []byte(printed)} {
				if bytes.Contains(bytes.ToLower(hay), bytes.ToLower(f)) {
					t.Errorf("key material %x shows in the %s output", f, what)
				}
			}
		}
	}
}

func TestNewErrors(t *testing.T) {
	r := Rules{Collection: "c", Purpose: "p", Fields: map[string]FieldRule{"a": {Kind: Keep}}}
	if _, err := New(testSecret[:31], "e", r); !errors.Is(err, ErrBadSecret) {
		t.Errorf("short secret: %v", err)
	}
	if _, err := New(make([]byte, 32), "e", r); !errors.Is(err, ErrBadSecret) {
		t.Errorf("zero secret: %v", err)
	}
	for _, e := range []string{"", "2026/11", strings.Repeat("x", 65), "2026 11"} {
		if _, err := New(testSecret, e, r); !errors.Is(err, ErrBadEpoch) {
			t.Errorf("epoch %q: %v", e, err)
		}
	}
}

func TestEpochFor(t *testing.T) {
	at := func(y int, m time.Month, d int) time.Time { return time.Date(y, m, d, 12, 0, 0, 0, time.UTC) }
	tests := []struct {
		t    time.Time
		p    Period
		want string
	}{
		{at(2026, 11, 5), Monthly, "2026-11"},
		{at(2026, 11, 5), Daily, "2026-11-05"},
		{at(2026, 11, 5), Yearly, "2026"},
		{at(2026, 11, 5), Quarterly, "2026-Q4"},
		{at(2026, 3, 31), Quarterly, "2026-Q1"},
		{at(2026, 4, 1), Quarterly, "2026-Q2"},
		{at(2026, 1, 1), Weekly, "2026-W01"},
		{at(2027, 1, 1), Weekly, "2026-W53"},
		// 23:30 on Nov 30 at UTC-5 is Dec 1 in UTC.
		{time.Date(2026, 11, 30, 23, 30, 0, 0, time.FixedZone("EST", -5*3600)), Monthly, "2026-12"},
	}
	for _, tt := range tests {
		got, err := EpochFor(tt.t, tt.p)
		if err != nil || got != tt.want {
			t.Errorf("EpochFor(%v, %s) = %q, %v; want %q", tt.t, tt.p, got, err, tt.want)
		}
		if err := checkLabel(got); err != nil {
			t.Errorf("epoch %q is not a valid label: %v", got, err)
		}
	}
	if _, err := EpochFor(at(2026, 1, 1), "fortnight"); !errors.Is(err, ErrBadEpoch) {
		t.Errorf("unknown period: %v", err)
	}
}

func TestOutputOrderIgnoresInputOrder(t *testing.T) {
	r := Rules{Collection: "c", Purpose: "p", Fields: map[string]FieldRule{
		"user": {Kind: Pseudonymize}, "n": {Kind: Keep},
	}}
	a := mustNew(t, testSecret, "e", r)
	var in []map[string]any
	for i := range 50 {
		in = append(in, map[string]any{"user": fmt.Sprint("u", i), "n": int64(i)})
	}
	first := mustApply(t, a, in...)
	rng := rand.New(rand.NewPCG(1, 2))
	rng.Shuffle(len(in), func(i, j int) { in[i], in[j] = in[j], in[i] })
	second := mustApply(t, a, in...)
	if !reflect.DeepEqual(first.Records, second.Records) {
		t.Fatal("output order depends on input order")
	}
}

func TestApplyDoesNotModifyInput(t *testing.T) {
	r := Rules{Collection: "c", Purpose: "p", Epsilon: 1, Fields: map[string]FieldRule{
		"m": {Kind: Keep}, "n": {Kind: Noise}, "s": {Kind: Generalize, Prefix: 1},
	}}
	a := mustNew(t, testSecret, "e", r)
	mk := func() map[string]any {
		return map[string]any{"m": map[string]any{"a": []any{int64(1)}, "_ferry": 1}, "n": int64(3), "s": "abc", "id": "x"}
	}
	in := mk()
	res := mustApply(t, a, in)
	if !reflect.DeepEqual(in, mk()) {
		t.Fatalf("input modified: %v", in)
	}
	// The output shares no maps or slices with the input.
	res.Records[0]["m"].(map[string]any)["a"].([]any)[0] = "changed"
	if !reflect.DeepEqual(in, mk()) {
		t.Fatalf("output aliases input: %v", in)
	}
}

// Records full of metadata, ids, actor ids and timestamps, under rules that
// keep whole subtrees: none of it survives.
func TestPropertyNoMetadataIdsOrTimestamps(t *testing.T) {
	r := Rules{Collection: "c", Purpose: "p", Fields: map[string]FieldRule{
		"id":      {Kind: Drop},
		"payload": {Kind: Keep},
		"when":    {Kind: Generalize, Truncate: Hour},
		"who":     {Kind: Pseudonymize},
	}}
	a := mustNew(t, testSecret, "e", r)
	keys := []string{"id", "_ferry", "_ferry:actor", "_ferryx", "a", "b", "when", "who", "payload"}
	const actor, recID = "ACTOR-1f2e", "REC-77aa"
	var genMap func(t *rapid.T, depth int, top bool) map[string]any
	genValue := func(t *rapid.T, depth int) any {
		switch rapid.IntRange(0, 5).Draw(t, "kind") {
		case 0:
			return rapid.Int64().Draw(t, "int")
		case 1:
			return time.Unix(rapid.Int64Range(0, 1<<40).Draw(t, "unix"), 0)
		case 2:
			return rapid.StringN(0, 5, -1).Draw(t, "string")
		case 3:
			if depth > 0 {
				return genMap(t, depth-1, false)
			}
		case 4:
			if depth > 0 {
				return []any{genMap(t, depth-1, false), rapid.Bool().Draw(t, "bool")}
			}
		}
		return nil
	}
	genMap = func(t *rapid.T, depth int, top bool) map[string]any {
		m := map[string]any{}
		for range rapid.IntRange(0, 5).Draw(t, "size") {
			k := rapid.SampledFrom(keys).Draw(t, "key")
			switch {
			case strings.HasPrefix(k, MetaPrefix):
				m[k] = map[string]any{"actor": actor, "seq": int64(3)}
			case top && k == "id":
				m[k] = recID
			default:
				m[k] = genValue(t, depth)
			}
		}
		return m
	}
	rapid.Check(t, func(t *rapid.T) {
		var recs []map[string]any
		for range rapid.IntRange(0, 5).Draw(t, "records") {
			recs = append(recs, genMap(t, 3, true))
		}
		res, err := a.Apply(recs)
		if err != nil {
			t.Fatal(err)
		}
		for _, out := range res.Records {
			if _, ok := out["id"]; ok {
				t.Fatalf("record id survived: %v", out)
			}
			if err := scan(out); err != nil {
				t.Fatalf("%v in %v", err, out)
			}
		}
		js, err := json.Marshal(res.Records)
		if err != nil {
			t.Fatal(err)
		}
		for _, marker := range []string{actor, recID} {
			if bytes.Contains(js, []byte(marker)) {
				t.Fatalf("%s left the device: %s", marker, js)
			}
		}
	})
}

// scan fails on a metadata key or a time value anywhere in v.
func scan(v any) error {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			if strings.HasPrefix(k, MetaPrefix) {
				return fmt.Errorf("metadata key %q", k)
			}
			if err := scan(e); err != nil {
				return err
			}
		}
	case []any:
		for _, e := range x {
			if err := scan(e); err != nil {
				return err
			}
		}
	case time.Time:
		return fmt.Errorf("timestamp %v", x)
	case nil, string, int64, float64, bool, []byte:
	default:
		return fmt.Errorf("unnormalized %T", v)
	}
	return nil
}

func TestKAnonymityWithholdsSmallGroups(t *testing.T) {
	r := Rules{Collection: "c", Purpose: "p", K: 2, QuasiIdentifiers: []string{"age", "zip"}, Fields: map[string]FieldRule{
		"age": {Kind: Generalize, Bucket: 10, Format: Range},
		"zip": {Kind: Generalize, Prefix: 2},
		"ok":  {Kind: Keep},
	}}
	a := mustNew(t, testSecret, "e", r)
	res := mustApply(t, a,
		map[string]any{"age": 31, "zip": "10115", "ok": true},
		map[string]any{"age": 39, "zip": "10999", "ok": false},
		map[string]any{"age": 41, "zip": "10115", "ok": true}, // alone in 40-50
		map[string]any{"age": 35, "zip": "20095", "ok": true}, // alone in 20...
		map[string]any{"zip": "99"},                           // no age: its own group
	)
	want := []map[string]any{
		{"age": "30-40", "zip": "10", "ok": false},
		{"age": "30-40", "zip": "10", "ok": true},
	}
	if res.Withheld != 3 || !reflect.DeepEqual(res.Records, want) {
		t.Fatalf("withheld %d, records %v", res.Withheld, res.Records)
	}

	// K without quasi-identifiers: a share smaller than K is withheld whole.
	r = Rules{Collection: "c", Purpose: "p", K: 3, Fields: map[string]FieldRule{"ok": {Kind: Keep}}}
	a = mustNew(t, testSecret, "e", r)
	if res := mustApply(t, a, map[string]any{"ok": 1}, map[string]any{"ok": 2}); res.Withheld != 2 || len(res.Records) != 0 {
		t.Fatalf("small share: %+v", res)
	}
}

func TestPropertyKAnonymity(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		k := rapid.IntRange(2, 6).Draw(t, "k")
		r := Rules{Collection: "c", Purpose: "p", K: k, QuasiIdentifiers: []string{"age", "loc.zip"}, Fields: map[string]FieldRule{
			"age":     {Kind: Generalize, Bucket: 10},
			"loc.zip": {Kind: Generalize, Prefix: 2},
			"v":       {Kind: Keep},
		}}
		a, err := New(testSecret, "e", r)
		if err != nil {
			t.Fatal(err)
		}
		rec := rapid.Custom(func(t *rapid.T) map[string]any {
			m := map[string]any{"v": rapid.Int64().Draw(t, "v")}
			if rapid.IntRange(0, 9).Draw(t, "hasAge") > 0 {
				m["age"] = rapid.Int64Range(0, 60).Draw(t, "age")
			}
			m["loc"] = map[string]any{"zip": rapid.SampledFrom([]string{"101", "109", "201", "3", "302"}).Draw(t, "zip")}
			return m
		})
		in := rapid.SliceOfN(rec, 0, 40).Draw(t, "records")
		res, err := a.Apply(in)
		if err != nil {
			t.Fatal(err)
		}

		// Oracle: the groups computed from the input by hand.
		oracle := func(m map[string]any) string {
			zip := m["loc"].(map[string]any)["zip"].(string)
			if len(zip) > 2 {
				zip = zip[:2]
			}
			age, ok := m["age"].(int64)
			if !ok {
				return "-/" + zip
			}
			return fmt.Sprint(age/10*10, "/", zip)
		}
		sizes := map[string]int{}
		for _, m := range in {
			sizes[oracle(m)]++
		}
		wantWithheld := 0
		for _, n := range sizes {
			if n < k {
				wantWithheld += n
			}
		}
		if res.Withheld != wantWithheld || len(res.Records)+res.Withheld != len(in) {
			t.Fatalf("withheld %d of %d, want %d", res.Withheld, len(in), wantWithheld)
		}
		out := map[string]int{}
		for _, m := range res.Records {
			age, ok := m["age"]
			key := fmt.Sprint(age, ok, "/", m["loc"].(map[string]any)["zip"])
			out[key]++
		}
		for g, n := range out {
			if n < k {
				t.Fatalf("group %s has %d < k=%d records", g, n, k)
			}
		}
	})
}

func TestNoiseRejectsAndSaturates(t *testing.T) {
	r := Rules{Collection: "c", Purpose: "p", Epsilon: 1, Fields: map[string]FieldRule{"n": {Kind: Noise}}}
	a := mustNew(t, testSecret, "e", r, WithRandom(rand.NewChaCha8([32]byte{7})))
	saturated := 0
	for range 200 {
		res := mustApply(t, a, map[string]any{"n": int64(math.MaxInt64)}, map[string]any{"n": int64(math.MinInt64)})
		hi, lo := res.Records[0]["n"].(int64), res.Records[1]["n"].(int64)
		if hi < lo {
			hi, lo = lo, hi
		}
		if hi < math.MaxInt64-100 || lo > math.MinInt64+100 {
			t.Fatalf("wrapped around: %d %d", hi, lo)
		}
		if hi == math.MaxInt64 && lo == math.MinInt64 {
			saturated++
		}
	}
	if saturated < 50 { // noise >= 0 has probability ~0.73 at epsilon 1
		t.Fatalf("only %d of 200 draws saturated", saturated)
	}
	res := mustApply(t, a, map[string]any{"n": "12"}, map[string]any{"n": 1.5})
	if res.Rejected != 2 || len(res.Records) != 2 || len(res.Records[0]) != 0 {
		t.Fatalf("non-integers: %+v", res)
	}
	if res.Epsilon != 1 {
		t.Fatalf("Epsilon = %v", res.Epsilon)
	}

	broken := mustNew(t, testSecret, "e", r, WithRandom(bytes.NewReader(nil)))
	if _, err := broken.Apply([]map[string]any{{"n": int64(1)}}); !errors.Is(err, ErrRandom) {
		t.Fatalf("failing reader: %v", err)
	}
}

func TestApplyConcurrent(t *testing.T) {
	r := Rules{Collection: "c", Purpose: "p", Epsilon: 1, Fields: map[string]FieldRule{
		"n": {Kind: Noise}, "u": {Kind: Pseudonymize},
	}}
	a := mustNew(t, testSecret, "e", r)
	var wg sync.WaitGroup
	toks := make([]any, 4)
	for i := range toks {
		wg.Go(func() {
			res, err := a.Apply([]map[string]any{{"n": int64(i), "u": "same"}})
			if err != nil {
				t.Error(err)
				return
			}
			toks[i] = res.Records[0]["u"]
		})
	}
	wg.Wait()
	for _, tk := range toks[1:] {
		if tk != toks[0] {
			t.Fatalf("tokens differ: %v", toks)
		}
	}
}
