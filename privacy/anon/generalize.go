package anon

import (
	"math"
	"strconv"
	"strings"
	"time"
)

// generalize applies a generalize rule to v; ok is false when the rule does
// not fit the value's type (the field is then removed and counted as
// rejected).
func generalize(fr *FieldRule, v any) (any, bool) {
	switch {
	case fr.Bucket != 0:
		return bucket(v, fr.Bucket, fr.Format)
	case fr.Truncate != "":
		return truncate(v, fr.Truncate)
	case fr.Prefix != 0:
		return prefix(v, fr.Prefix)
	case fr.Decimals != nil:
		return round(v, *fr.Decimals)
	}
	return nil, false
}

// bucket maps v to the bucket [lo, lo+w) that holds it, lo = floor(v/w)*w,
// written as lo (a number) or "lo-hi" (a string).
func bucket(v any, w float64, format BucketFormat) (any, bool) {
	i, f, isInt, ok := number(v)
	if !ok {
		return nil, false
	}
	wInt := w == math.Trunc(w) && w <= 1<<53
	if isInt && wInt {
		// Exact integer arithmetic: floor division for negatives too.
		wi := int64(w)
		q := i / wi
		if i%wi != 0 && i < 0 {
			q--
		}
		lo := q * wi
		if lo > i { // wrapped below MinInt64
			return nil, false
		}
		if format == Range {
			hi := lo + wi
			if hi < lo { // overflow at the top of the range
				return nil, false
			}
			return strconv.FormatInt(lo, 10) + "-" + strconv.FormatInt(hi, 10), true
		}
		return lo, true
	}
	q := math.Floor(f / w)
	d := decimalsOf(w)
	lo := roundTo(q*w, d)
	hi := roundTo((q+1)*w, d)
	if math.IsInf(lo, 0) || math.IsInf(hi, 0) || math.IsNaN(lo) {
		return nil, false
	}
	if format == Range {
		return formatFloat(lo) + "-" + formatFloat(hi), true
	}
	if wInt && math.Abs(lo) <= 1<<53 {
		return int64(lo), true // an integral bucket of a fractional value
	}
	return lo, true
}

// decimalsOf is the number of decimals in the shortest decimal form of w,
// used to round away binary noise (0.1*3 = 0.30000000000000004).
func decimalsOf(w float64) int {
	s := strconv.FormatFloat(w, 'f', -1, 64)
	if i := strings.IndexByte(s, '.'); i >= 0 {
		return len(s) - i - 1
	}
	return 0
}

func roundTo(f float64, d int) float64 {
	if d > 15 {
		return f
	}
	p := math.Pow(10, float64(d))
	r := math.Round(f*p) / p
	if math.IsInf(r, 0) || math.IsNaN(r) {
		return f
	}
	return r
}

func formatFloat(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }

// truncate cuts a time.Time or RFC 3339 string to the unit, in UTC.
func truncate(v any, u Unit) (any, bool) {
	var t time.Time
	switch x := v.(type) {
	case time.Time:
		t = x
	case string:
		p, err := time.Parse(time.RFC3339Nano, x)
		if err != nil {
			return nil, false
		}
		t = p
	default:
		return nil, false
	}
	t = t.UTC()
	switch u {
	case Year:
		return t.Format("2006"), true
	case Month:
		return t.Format("2006-01"), true
	case Day:
		return t.Format("2006-01-02"), true
	case Hour:
		return t.Format("2006-01-02T15"), true
	}
	return nil, false
}

// prefix keeps the first n runes of a string.
func prefix(v any, n int) (any, bool) {
	s, ok := v.(string)
	if !ok {
		return nil, false
	}
	i := 0
	for pos := range s {
		if i == n {
			return s[:pos], true
		}
		i++
	}
	return s, true
}

// round rounds a number, or the "lat" and "lon" of a location map, to d
// decimals. A location map keeps only lat and lon, both of which must be
// numbers.
func round(v any, d int) (any, bool) {
	if m, ok := v.(map[string]any); ok {
		lat, ok1 := roundNumber(m["lat"], d)
		lon, ok2 := roundNumber(m["lon"], d)
		if !ok1 || !ok2 {
			return nil, false
		}
		return map[string]any{"lat": lat, "lon": lon}, true
	}
	return roundNumber(v, d)
}

func roundNumber(v any, d int) (any, bool) {
	i, f, isInt, ok := number(v)
	if !ok {
		return nil, false
	}
	if isInt {
		return i, true
	}
	return roundTo(f, d), true
}
