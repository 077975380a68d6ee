package crdt

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"reflect"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// ferry's JSON form of record values (what `ferry get` prints and `ferry
// put` reads). Plain JSON covers null, booleans, strings, maps and lists;
// numbers are exact:
//
//   - an integer literal (no '.', 'e' or 'E') is an int64, or a uint64 above
//     MaxInt64; beyond uint64 or below MinInt64 it is refused;
//   - a literal with a fraction or exponent is a float64, always printed with
//     one (1.0, not 1), so it reads back as a float; a literal outside the
//     float64 range, or a non-zero one that rounds to zero, is refused.
//
// Values JSON lacks are single-key objects whose key starts with "$":
//
//	{"$bytes": "<standard base64>"}                    bytes
//	{"$date": "2024-05-01T10:00:00.123Z"}              timestamp, years 0000-9999 (RFC 3339, UTC, milliseconds)
//	{"$date_ms": -62198755200001}                      timestamp, any (milliseconds since 1970, int64)
//	{"$float": "NaN" | "Infinity" | "-Infinity"}       non-finite float (read from foreign documents only)
//	{"$map": {...}}                                    a map that itself has exactly one key starting with "$"
//
// Every other single-key object whose key starts with "$" is refused by
// DecodeJSON (reserved for future types). Text reads as a string and a
// counter as an integer, as Doc.Get returns them.

// maxRenderDepth bounds EncodeJSON's recursion. It is far above maxDepth:
// ferry writes at most 64 levels, but a foreign document may nest deeper
// and must still print.
const maxRenderDepth = 100_000

// Tag keys of the JSON form.
const (
	tagBytes  = "$bytes"
	tagDate   = "$date"
	tagDateMS = "$date_ms"
	tagFloat  = "$float"
	tagMap    = "$map"
)

// EncodeJSON renders an application value (as Doc.Get, Doc.ToMap or
// DecodeJSON return it: nil, bool, ints, uints, floats, string, []byte,
// time.Time, map[string]any, []any) as compact JSON in ferry's form (see
// above): map keys sorted, every value representable, so the result is
// always valid JSON. A Go value outside that set gives ErrUnsupportedValue.
func EncodeJSON(v any) ([]byte, error) {
	return appendJSON(nil, v, 0)
}

func appendJSON(b []byte, v any, depth int) ([]byte, error) {
	if depth > maxRenderDepth {
		return nil, fmt.Errorf("%w: nested deeper than %d (a cyclic value?)", ErrUnsupportedValue, maxRenderDepth)
	}
	switch x := v.(type) {
	case nil:
		return append(b, "null"...), nil
	case bool:
		return strconv.AppendBool(b, x), nil
	case int:
		return strconv.AppendInt(b, int64(x), 10), nil
	case int8:
		return strconv.AppendInt(b, int64(x), 10), nil
	case int16:
		return strconv.AppendInt(b, int64(x), 10), nil
	case int32:
		return strconv.AppendInt(b, int64(x), 10), nil
	case int64:
		return strconv.AppendInt(b, x, 10), nil
	case Counter:
		return strconv.AppendInt(b, int64(x), 10), nil
	case uint:
		return strconv.AppendUint(b, uint64(x), 10), nil
	case uint8:
		return strconv.AppendUint(b, uint64(x), 10), nil
	case uint16:
		return strconv.AppendUint(b, uint64(x), 10), nil
	case uint32:
		return strconv.AppendUint(b, uint64(x), 10), nil
	case uint64:
		return strconv.AppendUint(b, x, 10), nil
	case float32:
		return appendFloat(b, float64(x), 32), nil
	case float64:
		return appendFloat(b, x, 64), nil
	case string:
		return appendString(b, x), nil
	case Text:
		return appendString(b, string(x)), nil
	case []byte:
		b = append(b, `{"`+tagBytes+`":"`...)
		b = base64.StdEncoding.AppendEncode(b, x)
		return append(b, `"}`...), nil
	case time.Time:
		ms := x.UnixMilli()
		t := time.UnixMilli(ms).UTC()
		if y := t.Year(); y >= 0 && y <= 9999 {
			b = append(b, `{"`+tagDate+`":"`...)
			b = t.AppendFormat(b, "2006-01-02T15:04:05.000Z")
			return append(b, `"}`...), nil
		}
		b = append(b, `{"`+tagDateMS+`":`...)
		b = strconv.AppendInt(b, ms, 10)
		return append(b, '}'), nil
	case map[string]any:
		keys := sortedKeys(x)
		wrap := len(keys) == 1 && strings.HasPrefix(keys[0], "$")
		if wrap {
			b = append(b, `{"`+tagMap+`":`...)
		}
		b = append(b, '{')
		for i, k := range keys {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, k)
			b = append(b, ':')
			var err error
			if b, err = appendJSON(b, x[k], depth+1); err != nil {
				return nil, err
			}
		}
		b = append(b, '}')
		if wrap {
			b = append(b, '}')
		}
		return b, nil
	case []any:
		b = append(b, '[')
		for i, e := range x {
			if i > 0 {
				b = append(b, ',')
			}
			var err error
			if b, err = appendJSON(b, e, depth+1); err != nil {
				return nil, err
			}
		}
		return append(b, ']'), nil
	}
	// Other slices and string-keyed maps, as fromGo accepts them.
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Slice, reflect.Array:
		l := make([]any, rv.Len())
		for i := range l {
			l[i] = rv.Index(i).Interface()
		}
		return appendJSON(b, l, depth)
	case reflect.Map:
		if rv.Type().Key().Kind() == reflect.String {
			m := make(map[string]any, rv.Len())
			it := rv.MapRange()
			for it.Next() {
				m[it.Key().String()] = it.Value().Interface()
			}
			return appendJSON(b, m, depth)
		}
	}
	return nil, fmt.Errorf("%w: %T has no JSON form", ErrUnsupportedValue, v)
}

// appendFloat writes a float so that it reads back as the same float64:
// shortest round-trip digits, always with a '.' or an exponent.
func appendFloat(b []byte, f float64, bits int) []byte {
	switch {
	case math.IsNaN(f):
		return append(b, `{"`+tagFloat+`":"NaN"}`...)
	case math.IsInf(f, 1):
		return append(b, `{"`+tagFloat+`":"Infinity"}`...)
	case math.IsInf(f, -1):
		return append(b, `{"`+tagFloat+`":"-Infinity"}`...)
	}
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	start := len(b)
	b = strconv.AppendFloat(b, f, format, -1, bits)
	if !bytes.ContainsAny(b[start:], ".e") {
		b = append(b, ".0"...)
	}
	return b
}

func appendString(b []byte, s string) []byte {
	q, _ := json.Marshal(s) // a string always marshals
	return append(b, q...)
}

// DecodeJSON parses one JSON value in ferry's form (see EncodeJSON) into an
// application value: nil, bool, int64, uint64, float64, string, []byte,
// time.Time (UTC), map[string]any or []any. It refuses, with
// ErrUnsupportedValue, anything it could not store exactly: malformed JSON,
// data after the value, invalid UTF-8 or lone surrogate escapes, duplicate
// keys, integers outside int64 ∪ uint64, float literals outside the float64
// range (or non-zero ones that round to zero), unknown "$" tags, and nesting
// deeper than 64. Non-finite floats ({"$float":"NaN"}) decode, but Doc
// writes refuse them.
func DecodeJSON(data []byte) (any, error) {
	if !utf8.Valid(data) {
		return nil, fmt.Errorf("%w: JSON text is not valid UTF-8", ErrUnsupportedValue)
	}
	if err := checkSurrogates(data); err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	p := jsonParser{dec: dec}
	v, err := p.value(0)
	if err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: data after the JSON value at offset %d", ErrUnsupportedValue, dec.InputOffset())
	}
	return v, nil
}

type jsonParser struct{ dec *json.Decoder }

func (p *jsonParser) token() (json.Token, error) {
	tok, err := p.dec.Token()
	if err == io.EOF {
		return nil, fmt.Errorf("%w: malformed JSON: unexpected end", ErrUnsupportedValue)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: malformed JSON: %w", ErrUnsupportedValue, err)
	}
	return tok, nil
}

func (p *jsonParser) value(depth int) (any, error) {
	tok, err := p.token()
	if err != nil {
		return nil, err
	}
	return p.from(tok, depth)
}

func (p *jsonParser) from(tok json.Token, depth int) (any, error) {
	switch x := tok.(type) {
	case nil, bool, string:
		return x, nil
	case json.Number:
		return parseNumber(string(x))
	case json.Delim:
		if depth >= maxDepth {
			return nil, fmt.Errorf("%w: JSON nested deeper than %d", ErrUnsupportedValue, maxDepth)
		}
		switch x {
		case '[':
			l := []any{}
			for p.dec.More() {
				e, err := p.value(depth + 1)
				if err != nil {
					return nil, err
				}
				l = append(l, e)
			}
			if _, err := p.token(); err != nil { // ']'
				return nil, err
			}
			return l, nil
		case '{':
			m, err := p.object(depth)
			if err != nil {
				return nil, err
			}
			return untag(m)
		}
	}
	return nil, fmt.Errorf("%w: malformed JSON: unexpected %v", ErrUnsupportedValue, tok)
}

// object reads the members of an object whose '{' was read.
func (p *jsonParser) object(depth int) (map[string]any, error) {
	m := map[string]any{}
	for p.dec.More() {
		kt, err := p.token()
		if err != nil {
			return nil, err
		}
		k, ok := kt.(string)
		if !ok {
			return nil, fmt.Errorf("%w: malformed JSON: object key %v", ErrUnsupportedValue, kt)
		}
		if _, dup := m[k]; dup {
			return nil, fmt.Errorf("%w: duplicate key %q", ErrUnsupportedValue, k)
		}
		var v any
		if len(m) == 0 && k == tagMap {
			// {"$map": {...}}: the inner object is a map as it stands.
			vt, err := p.token()
			if err != nil {
				return nil, err
			}
			if d, ok := vt.(json.Delim); ok && d == '{' {
				if depth+1 >= maxDepth {
					return nil, fmt.Errorf("%w: JSON nested deeper than %d", ErrUnsupportedValue, maxDepth)
				}
				inner, err := p.object(depth + 1)
				if err != nil {
					return nil, err
				}
				// The inner object is taken as it stands, so its own
				// "$map" member (if any) is an ordinary value.
				if err := settle(inner); err != nil {
					return nil, err
				}
				v = literalMap(inner)
			} else if v, err = p.from(vt, depth+1); err != nil {
				return nil, err
			}
		} else if v, err = p.value(depth + 1); err != nil {
			return nil, err
		}
		m[k] = v
	}
	if _, err := p.token(); err != nil { // '}'
		return nil, err
	}
	if len(m) > 1 {
		// "$map" was one key among others: its value is an ordinary object.
		if err := settle(m); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// settle reads m's "$map" member, if it was read as a literal map, as an
// ordinary object instead (m is not a {"$map": ...} tag).
func settle(m map[string]any) error {
	lm, ok := m[tagMap].(literalMap)
	if !ok {
		return nil
	}
	v, err := untag(map[string]any(lm))
	if err != nil {
		return err
	}
	m[tagMap] = v
	return nil
}

// literalMap marks a map read under "$map" so untag leaves it alone.
type literalMap map[string]any

// untag turns a single-key "$" object into the value it stands for.
func untag(m map[string]any) (any, error) {
	if len(m) != 1 {
		return m, nil
	}
	var k string
	var v any
	for k, v = range m {
	}
	if !strings.HasPrefix(k, "$") {
		return m, nil
	}
	bad := func(want string) error {
		return fmt.Errorf("%w: {%q: ...} wants %s", ErrUnsupportedValue, k, want)
	}
	switch k {
	case tagMap:
		lm, ok := v.(literalMap)
		if !ok {
			return nil, bad("an object")
		}
		return map[string]any(lm), nil
	case tagBytes:
		s, ok := v.(string)
		if !ok {
			return nil, bad("a base64 string")
		}
		b, err := base64.StdEncoding.Strict().DecodeString(s)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrUnsupportedValue, tagBytes, err)
		}
		return b, nil
	case tagDate:
		s, ok := v.(string)
		if !ok {
			return nil, bad("an RFC 3339 string")
		}
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrUnsupportedValue, tagDate, err)
		}
		if t.Nanosecond()%1e6 != 0 {
			return nil, fmt.Errorf("%w: %s %q has sub-millisecond precision", ErrUnsupportedValue, tagDate, s)
		}
		return t.UTC(), nil
	case tagDateMS:
		ms, ok := v.(int64)
		if !ok {
			return nil, bad("an int64 of milliseconds")
		}
		return time.UnixMilli(ms).UTC(), nil
	case tagFloat:
		switch v {
		case "NaN":
			return math.NaN(), nil
		case "Infinity":
			return math.Inf(1), nil
		case "-Infinity":
			return math.Inf(-1), nil
		}
		return nil, bad(`"NaN", "Infinity" or "-Infinity"`)
	}
	return nil, fmt.Errorf("%w: unknown tag %q (to write a map with this single key, wrap it: {%q: {...}})", ErrUnsupportedValue, k, tagMap)
}

// parseNumber reads a JSON number exactly (see EncodeJSON).
func parseNumber(s string) (any, error) {
	if !strings.ContainsAny(s, ".eE") {
		if i, err := strconv.ParseInt(s, 10, 64); err == nil {
			return i, nil
		}
		if u, err := strconv.ParseUint(s, 10, 64); err == nil {
			return u, nil
		}
		return nil, fmt.Errorf("%w: integer %s is outside int64 and uint64 (-9223372036854775808 to 18446744073709551615); write it as a string, or as a float (e.g. %se0) if rounding is fine",
			ErrUnsupportedValue, s, s)
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return nil, fmt.Errorf("%w: number %s is outside the range of a 64-bit float", ErrUnsupportedValue, s)
	}
	if f == 0 && nonZeroMantissa(s) {
		return nil, fmt.Errorf("%w: number %s is too small for a 64-bit float (it would be stored as 0)", ErrUnsupportedValue, s)
	}
	return f, nil
}

// nonZeroMantissa reports whether a JSON number's digits before its
// exponent include a non-zero one.
func nonZeroMantissa(s string) bool {
	if i := strings.IndexAny(s, "eE"); i >= 0 {
		s = s[:i]
	}
	return strings.ContainsAny(s, "123456789")
}

// checkSurrogates refuses \u escapes that encode a lone UTF-16 surrogate:
// encoding/json would silently turn them into U+FFFD.
func checkSurrogates(data []byte) error {
	inStr := false
	for i := 0; i < len(data); i++ {
		c := data[i]
		if !inStr {
			if c == '"' {
				inStr = true
			}
			continue
		}
		switch c {
		case '"':
			inStr = false
		case '\\':
			if i+1 < len(data) && data[i+1] == 'u' {
				r, ok := hex4(data, i+2)
				if ok && r >= 0xD800 && r <= 0xDFFF {
					lo, ok2 := rune(0), false
					if r <= 0xDBFF && i+7 < len(data) && data[i+6] == '\\' && data[i+7] == 'u' {
						lo, ok2 = hex4(data, i+8)
					}
					if !ok2 || lo < 0xDC00 || lo > 0xDFFF {
						return fmt.Errorf("%w: string escape \\u%04X at offset %d is a lone UTF-16 surrogate", ErrUnsupportedValue, r, i)
					}
					i += 11 // both escapes
					continue
				}
			}
			i++ // skip the escaped character
		}
	}
	return nil
}

func hex4(data []byte, at int) (rune, bool) {
	if at+4 > len(data) {
		return 0, false
	}
	v, err := strconv.ParseUint(string(data[at:at+4]), 16, 32)
	if err != nil {
		return 0, false
	}
	return rune(v), true
}
