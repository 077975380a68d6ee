package valuegen

import (
	"math"
	"time"

	"pgregory.net/rapid"
)

var awkwardStrings = []string{
	"", "x", "\x00", "a\x00b", "\x01\x1f\x7f", "\t\n\r", "é", "日本語", "\U0001F600", "\u2028\u2029",
	"\uFEFF", "\"quoted\\", "</script>&", "$bytes", "$map", "$date", "a.b", "a/b", "~0~1", "-0", "1e400",
}

// String generates valid UTF-8 strings, awkward ones often.
func String() *rapid.Generator[string] {
	return rapid.OneOf(
		rapid.SampledFrom(awkwardStrings),
		rapid.String(),
		rapid.StringOf(rapid.RuneFrom([]rune{0, 1, 0x1f, 0x7f, 0x80, 0x9f, 'a', '"', '\\', 'é', 0x2028, 0xFFFD, 0xFEFF, 0x10FFFF})),
	)
}

// Key generates map keys: non-empty, valid UTF-8, never starting with
// "_ferry" (ferry's reserved root namespace).
func Key() *rapid.Generator[string] {
	return rapid.OneOf(
		rapid.SampledFrom([]string{"a", "b", "\x00", "k\x00", "\x7f", "é", "$bytes", "$map", "$float", "$x", "a.b", "a/b", "~", "0", "-1", " "}),
		rapid.StringMatching(`[a-z$.\x00-\x1f]{1,6}`),
	).Filter(func(s string) bool { return s != "" && !(len(s) >= 6 && s[:6] == "_ferry") })
}

// Int generates int64s, the limits often.
func Int() *rapid.Generator[int64] {
	return rapid.OneOf(
		rapid.SampledFrom([]int64{0, 1, -1, math.MaxInt64, math.MinInt64, math.MaxInt64 - 1, math.MinInt64 + 1,
			1 << 53, 1<<53 + 1, -(1<<53 + 1), math.MaxInt32, math.MinInt32}),
		rapid.Int64(),
	)
}

// Uint generates uint64s above MaxInt64 (smaller ones are ints).
func Uint() *rapid.Generator[uint64] {
	return rapid.OneOf(
		rapid.SampledFrom([]uint64{math.MaxInt64 + 1, math.MaxUint64, math.MaxUint64 - 1, 1<<63 + 1<<53 + 1}),
		rapid.Uint64Range(math.MaxInt64+1, math.MaxUint64),
	)
}

// Float generates finite float64s, the limits and negative zero often.
func Float() *rapid.Generator[float64] {
	return rapid.OneOf(
		rapid.SampledFrom([]float64{0, math.Copysign(0, -1), 1, -1, 0.1, 1e21, 1e-7, 1e20, 123456789012345678,
			math.MaxFloat64, -math.MaxFloat64, math.SmallestNonzeroFloat64, -math.SmallestNonzeroFloat64,
			2.2250738585072014e-308, math.Nextafter(math.MaxFloat64, 0), 1 << 63, 1 << 64, math.Pi}),
		rapid.Float64().Filter(func(f float64) bool { return !math.IsNaN(f) && !math.IsInf(f, 0) }),
	)
}

// Time generates UTC times with whole milliseconds across the whole int64
// millisecond range (years far outside 0000-9999 included).
func Time() *rapid.Generator[time.Time] {
	return rapid.Custom(func(t *rapid.T) time.Time {
		ms := rapid.OneOf(
			rapid.SampledFrom([]int64{0, -1, math.MaxInt64, math.MinInt64, -62167219200000, -62167219200001,
				253402300799999, 253402300800000, 1_700_000_000_123}),
			rapid.Int64(),
			rapid.Int64Range(-62167219200000, 253402300799999),
		).Draw(t, "ms")
		return time.UnixMilli(ms).UTC()
	})
}

// Scalar generates one accepted scalar.
func Scalar() *rapid.Generator[any] {
	return rapid.OneOf(
		rapid.Just[any](nil),
		rapid.Map(rapid.Bool(), func(b bool) any { return b }),
		rapid.Map(Int(), func(i int64) any { return i }),
		rapid.Map(Uint(), func(u uint64) any { return u }),
		rapid.Map(Float(), func(f float64) any { return f }),
		rapid.Map(String(), func(s string) any { return s }),
		rapid.Map(rapid.SliceOfN(rapid.Byte(), 0, 16), func(b []byte) any { return b }),
		rapid.Map(Time(), func(t time.Time) any { return t }),
	)
}

// Value generates an accepted value nested up to depth levels.
func Value(depth int) *rapid.Generator[any] {
	if depth <= 0 {
		return Scalar()
	}
	return rapid.OneOf(
		Scalar(),
		rapid.Map(rapid.SliceOfN(Value(depth-1), 0, 4), func(l []any) any { return l }),
		rapid.Map(Map(depth-1), func(m map[string]any) any { return m }),
	)
}

// Map generates a map of accepted values nested up to depth levels below
// it.
func Map(depth int) *rapid.Generator[map[string]any] {
	return rapid.MapOfN(Key(), Value(depth), 0, 4)
}

// Refused generates a value ferry must refuse to store, alone or inside a
// map or list.
func Refused() *rapid.Generator[any] {
	bad := rapid.SampledFrom([]any{
		math.NaN(), math.Inf(1), math.Inf(-1), float32(math.Inf(1)),
		"\xff", "a\xc3", string([]byte{0xed, 0xa0, 0x80}), // invalid UTF-8, a surrogate
		map[string]any{"": 1}, map[string]any{"\xff": 1},
		time.UnixMilli(1_700_000_000_000).Add(time.Microsecond),
		time.Date(300_000_000, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(-300_000_000, 1, 1, 0, 0, 0, 0, time.UTC),
		struct{}{}, complex(1, 2),
	})
	return rapid.Custom(func(t *rapid.T) any {
		v := bad.Draw(t, "bad")
		switch rapid.IntRange(0, 2).Draw(t, "wrap") {
		case 1:
			return []any{int64(1), v}
		case 2:
			return map[string]any{"ok": int64(1), "in": map[string]any{"v": v}}
		}
		return v
	})
}

// Typed generates a map of fields written with the API's other Go types
// (crdt.Text and crdt.Counter are built by the caller-supplied text and
// counter functions, so this package does not import crdt) together with
// the map Get must return for them.
func Typed(text func(string) any, counter func(int64) any) *rapid.Generator[[2]map[string]any] {
	return rapid.Custom(func(t *rapid.T) [2]map[string]any {
		in, want := map[string]any{}, map[string]any{}
		add := func(k string, w, g any) { in[k], want[k] = w, g }
		s := String().Draw(t, "text")
		add("text", text(s), s)
		c := Int().Draw(t, "counter")
		add("counter", counter(c), c)
		i32 := rapid.Int32().Draw(t, "i32")
		add("i32", i32, int64(i32))
		f32 := rapid.Float32().Filter(func(f float32) bool { return !math.IsNaN(float64(f)) && !math.IsInf(float64(f), 0) }).Draw(t, "f32")
		add("f32", f32, float64(f32))
		u := rapid.Uint().Draw(t, "uint")
		if uint64(u) <= math.MaxInt64 {
			add("uint", u, int64(u))
		} else {
			add("uint", u, uint64(u))
		}
		u8 := rapid.Uint8().Draw(t, "u8")
		add("u8", u8, int64(u8))
		ss := rapid.SliceOfN(String(), 0, 3).Draw(t, "strings")
		l := make([]any, len(ss))
		for i, x := range ss {
			l[i] = x
		}
		add("strings", ss, l)
		mi := rapid.MapOfN(Key(), rapid.Int(), 0, 3).Draw(t, "ints")
		m := make(map[string]any, len(mi))
		for k, x := range mi {
			m[k] = int64(x)
		}
		add("ints", mi, m)
		return [2]map[string]any{in, want}
	})
}
