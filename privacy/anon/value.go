package anon

import (
	"encoding/json"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/ferrysync/ferry/internal/cborx"
)

// Output values are JSON-like and normalized: string, int64, float64
// (finite), bool, nil, []byte, []any and map[string]any. Every integer type
// becomes int64 (a uint64 above MaxInt64 is rejected), float32 becomes
// float64, json.Number becomes int64 or float64.

// maxCopyDepth bounds the nesting of a kept value.
const maxCopyDepth = 32

// number reads v as a number. isInt reports an exact integer in i; f holds
// the value as a float64 in every case.
func number(v any) (i int64, f float64, isInt, ok bool) {
	switch x := v.(type) {
	case int:
		return int64(x), float64(x), true, true
	case int8:
		return int64(x), float64(x), true, true
	case int16:
		return int64(x), float64(x), true, true
	case int32:
		return int64(x), float64(x), true, true
	case int64:
		return x, float64(x), true, true
	case uint:
		if uint64(x) > math.MaxInt64 {
			return 0, 0, false, false
		}
		return int64(x), float64(x), true, true
	case uint8:
		return int64(x), float64(x), true, true
	case uint16:
		return int64(x), float64(x), true, true
	case uint32:
		return int64(x), float64(x), true, true
	case uint64:
		if x > math.MaxInt64 {
			return 0, 0, false, false
		}
		return int64(x), float64(x), true, true
	case float32:
		return floatNumber(float64(x))
	case float64:
		return floatNumber(x)
	case json.Number:
		if n, err := strconv.ParseInt(string(x), 10, 64); err == nil {
			return n, float64(n), true, true
		}
		fl, err := strconv.ParseFloat(string(x), 64)
		if err != nil {
			return 0, 0, false, false
		}
		return floatNumber(fl)
	}
	return 0, 0, false, false
}

// floatNumber accepts finite floats; integral ones within +-2^53 count as
// integers, so 5.0 from a JSON decoder and 5 from CBOR are the same value.
func floatNumber(f float64) (int64, float64, bool, bool) {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, 0, false, false
	}
	if f == math.Trunc(f) && math.Abs(f) <= 1<<53 {
		return int64(f), f, true, true
	}
	return 0, f, false, true
}

// scalar normalizes a scalar value; ok is false for anything else.
func scalar(v any) (any, bool) {
	switch x := v.(type) {
	case nil:
		return nil, true
	case string:
		return x, true
	case bool:
		return x, true
	case []byte:
		return append([]byte{}, x...), true
	}
	if i, f, isInt, ok := number(v); ok {
		if isInt {
			return i, true
		}
		return f, true
	}
	return nil, false
}

// copyValue deep-copies a kept value into normal form. Keys starting with
// MetaPrefix are dropped (counted in dropped); time.Time values and values
// of other types are removed (counted in rejected). ok is false when v
// itself cannot be kept.
func copyValue(v any, depth int, dropped, rejected *int) (any, bool) {
	if depth > maxCopyDepth {
		*rejected++
		return nil, false
	}
	switch x := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			if strings.HasPrefix(k, MetaPrefix) {
				*dropped++
				continue
			}
			if c, ok := copyValue(e, depth+1, dropped, rejected); ok {
				out[k] = c
			}
		}
		return out, true
	case []any:
		out := make([]any, 0, len(x))
		for _, e := range x {
			if c, ok := copyValue(e, depth+1, dropped, rejected); ok {
				out = append(out, c)
			}
		}
		return out, true
	case time.Time:
		// Raw timestamps never leave: generalize them with truncate.
		*rejected++
		return nil, false
	}
	if s, ok := scalar(v); ok {
		return s, true
	}
	*rejected++
	return nil, false
}

// canonical encodes a normalized value deterministically (CBOR, core
// deterministic encoding): the same value gives the same bytes, and values
// of different types give different bytes.
func canonical(v any) []byte {
	b, err := canonicalMode.Marshal(v)
	if err != nil {
		// Normalized values are always encodable.
		panic("anon: canonical encoding: " + err.Error())
	}
	return b
}

var canonicalMode = cborx.Enc
