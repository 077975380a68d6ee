package crdt

import (
	"bytes"
	"fmt"
	"math"
	"reflect"
	"sort"
	"time"
	"unicode/utf8"

	"github.com/automerge/automerge-go"
	"github.com/ferrysync/ferry/internal/cborx"
	"github.com/fxamacker/cbor/v2"
)

// Text is a collaborative text value: Set(path, Text("hi")) creates an
// Automerge text object that concurrent splices merge into. Reading gives a
// plain string.
type Text string

// Counter is a collaborative counter: Set(path, Counter(0)) creates it,
// Increment adds to it, and concurrent increments add up. Reading gives an
// int64.
type Counter int64

// ValueKind classifies a document value.
type ValueKind uint8

// Value kinds. Ints are int64, Uint is uint64 (values above MaxInt64), Time
// has millisecond precision.
const (
	KindNone ValueKind = iota // no value (deleted or absent)
	KindNull
	KindBool
	KindInt
	KindUint
	KindFloat
	KindString
	KindBytes
	KindTime
	KindMap
	KindList
	KindText
	KindCounter
)

var kindNames = [...]string{"none", "null", "bool", "int", "uint", "float", "string", "bytes", "time", "map", "list", "text", "counter"}

func (k ValueKind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// class groups kinds for type-conflict detection: numbers are one class,
// string and text are not (a text merges splices, a string does not).
func (k ValueKind) class() ValueKind {
	switch k {
	case KindInt, KindUint, KindFloat:
		return KindInt
	}
	return k
}

// node is the package's typed value tree. It keeps the distinctions the
// application-visible JSON loses (text vs string, counter vs int).
type node struct {
	k ValueKind
	b bool
	i int64 // int, counter, time (unix millis)
	u uint64
	f float64
	s string // string, text
	y []byte
	m map[string]*node
	l []*node
}

// fromGo converts an application value to a node.
func fromGo(v any) (*node, error) { return fromGoDepth(v, 0) }

const maxDepth = 64

func fromGoDepth(v any, depth int) (*node, error) {
	if depth > maxDepth {
		return nil, fmt.Errorf("%w: nested deeper than %d", ErrUnsupportedValue, maxDepth)
	}
	switch x := v.(type) {
	case nil:
		return &node{k: KindNull}, nil
	case bool:
		return &node{k: KindBool, b: x}, nil
	case int:
		return &node{k: KindInt, i: int64(x)}, nil
	case int8:
		return &node{k: KindInt, i: int64(x)}, nil
	case int16:
		return &node{k: KindInt, i: int64(x)}, nil
	case int32:
		return &node{k: KindInt, i: int64(x)}, nil
	case int64:
		return &node{k: KindInt, i: x}, nil
	case uint:
		return fromUint(uint64(x)), nil
	case uint8:
		return &node{k: KindInt, i: int64(x)}, nil
	case uint16:
		return &node{k: KindInt, i: int64(x)}, nil
	case uint32:
		return &node{k: KindInt, i: int64(x)}, nil
	case uint64:
		return fromUint(x), nil
	case float32:
		return fromFloat(float64(x))
	case float64:
		return fromFloat(x)
	case string:
		if !utf8.ValidString(x) {
			return nil, fmt.Errorf("%w: invalid UTF-8 string", ErrUnsupportedValue)
		}
		return &node{k: KindString, s: x}, nil
	case Text:
		if !utf8.ValidString(string(x)) {
			return nil, fmt.Errorf("%w: invalid UTF-8 text", ErrUnsupportedValue)
		}
		return &node{k: KindText, s: string(x)}, nil
	case Counter:
		return &node{k: KindCounter, i: int64(x)}, nil
	case []byte:
		return &node{k: KindBytes, y: bytes.Clone(x)}, nil
	case time.Time:
		return fromTime(x)
	case map[string]any:
		n := &node{k: KindMap, m: make(map[string]*node, len(x))}
		for k, e := range x {
			if err := checkKey(k); err != nil {
				return nil, err
			}
			c, err := fromGoDepth(e, depth+1)
			if err != nil {
				return nil, err
			}
			n.m[k] = c
		}
		return n, nil
	case []any:
		n := &node{k: KindList, l: make([]*node, len(x))}
		for i, e := range x {
			c, err := fromGoDepth(e, depth+1)
			if err != nil {
				return nil, err
			}
			n.l[i] = c
		}
		return n, nil
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Slice, reflect.Array:
		n := &node{k: KindList, l: make([]*node, rv.Len())}
		for i := range rv.Len() {
			c, err := fromGoDepth(rv.Index(i).Interface(), depth+1)
			if err != nil {
				return nil, err
			}
			n.l[i] = c
		}
		return n, nil
	case reflect.Map:
		if rv.Type().Key().Kind() != reflect.String {
			return nil, fmt.Errorf("%w: map key type %s (want string)", ErrUnsupportedValue, rv.Type().Key())
		}
		n := &node{k: KindMap, m: make(map[string]*node, rv.Len())}
		it := rv.MapRange()
		for it.Next() {
			if err := checkKey(it.Key().String()); err != nil {
				return nil, err
			}
			c, err := fromGoDepth(it.Value().Interface(), depth+1)
			if err != nil {
				return nil, err
			}
			n.m[it.Key().String()] = c
		}
		return n, nil
	case reflect.String:
		return fromGoDepth(rv.String(), depth)
	case reflect.Bool:
		return &node{k: KindBool, b: rv.Bool()}, nil
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return &node{k: KindInt, i: rv.Int()}, nil
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return fromUint(rv.Uint()), nil
	case reflect.Float32, reflect.Float64:
		return fromFloat(rv.Float())
	}
	return nil, fmt.Errorf("%w: %T", ErrUnsupportedValue, v)
}

// checkKey refuses map keys Automerge cannot hold or JSON cannot carry:
// the empty string (Automerge refuses it) and invalid UTF-8.
func checkKey(k string) error {
	if k == "" {
		return fmt.Errorf("%w: empty map key (Automerge does not allow empty keys)", ErrUnsupportedValue)
	}
	if !utf8.ValidString(k) {
		return fmt.Errorf("%w: invalid UTF-8 map key %q", ErrUnsupportedValue, k)
	}
	return nil
}

// fromFloat refuses NaN and the infinities: JSON cannot carry them and
// most Automerge applications cannot compare them, so ferry never writes
// them (it still reads them from foreign documents; see EncodeJSON).
func fromFloat(f float64) (*node, error) {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return nil, fmt.Errorf("%w: non-finite float %v (only finite floats can be stored)", ErrUnsupportedValue, f)
	}
	return &node{k: KindFloat, f: f}, nil
}

// fromTime accepts exactly the instants an Automerge timestamp holds:
// whole milliseconds since the Unix epoch that fit an int64 (about 292
// million years either side of 1970). A finer time would come back
// changed, so it is refused rather than truncated.
func fromTime(t time.Time) (*node, error) {
	ms := t.UnixMilli()
	back := time.UnixMilli(ms)
	if back.Unix() != t.Unix() || back.Nanosecond()/1e6 != t.Nanosecond()/1e6 {
		return nil, fmt.Errorf("%w: time %s is outside the range of an Automerge timestamp (int64 milliseconds since 1970)", ErrUnsupportedValue, t)
	}
	if t.Nanosecond()%1e6 != 0 {
		return nil, fmt.Errorf("%w: time %s has sub-millisecond precision; Automerge timestamps are whole milliseconds (use t.Truncate(time.Millisecond))", ErrUnsupportedValue, t.Format(time.RFC3339Nano))
	}
	return &node{k: KindTime, i: ms}, nil
}

func fromUint(u uint64) *node {
	if u <= math.MaxInt64 {
		return &node{k: KindInt, i: int64(u)}
	}
	return &node{k: KindUint, u: u}
}

// toGo converts a node to the application-visible JSON-like value.
func (n *node) toGo() any {
	if n == nil {
		return nil
	}
	switch n.k {
	case KindBool:
		return n.b
	case KindInt, KindCounter:
		return n.i
	case KindUint:
		return n.u
	case KindFloat:
		return n.f
	case KindString, KindText:
		return n.s
	case KindBytes:
		return bytes.Clone(n.y)
	case KindTime:
		return time.UnixMilli(n.i).UTC()
	case KindMap:
		out := make(map[string]any, len(n.m))
		for k, c := range n.m {
			out[k] = c.toGo()
		}
		return out
	case KindList:
		out := make([]any, len(n.l))
		for i, c := range n.l {
			out[i] = c.toGo()
		}
		return out
	}
	return nil
}

// fromAM reads an Automerge value (recursively).
func fromAM(v *automerge.Value) (*node, error) {
	switch v.Kind() {
	case automerge.KindVoid:
		return nil, nil
	case automerge.KindNull, automerge.KindUnknown:
		return &node{k: KindNull}, nil
	case automerge.KindBool:
		return &node{k: KindBool, b: v.Bool()}, nil
	case automerge.KindInt64:
		return &node{k: KindInt, i: v.Int64()}, nil
	case automerge.KindUint64:
		return &node{k: KindUint, u: v.Uint64()}, nil
	case automerge.KindFloat64:
		return &node{k: KindFloat, f: v.Float64()}, nil
	case automerge.KindStr:
		return &node{k: KindString, s: v.Str()}, nil
	case automerge.KindBytes:
		return &node{k: KindBytes, y: v.Bytes()}, nil
	case automerge.KindTime:
		return &node{k: KindTime, i: v.Time().UnixMilli()}, nil
	case automerge.KindCounter:
		c, err := v.Counter().Get()
		if err != nil {
			return nil, err
		}
		return &node{k: KindCounter, i: c}, nil
	case automerge.KindText:
		s, err := v.Text().Get()
		if err != nil {
			return nil, err
		}
		return &node{k: KindText, s: s}, nil
	case automerge.KindMap:
		vals, err := v.Map().Values()
		if err != nil {
			return nil, err
		}
		n := &node{k: KindMap, m: make(map[string]*node, len(vals))}
		for k, e := range vals {
			c, err := fromAM(e)
			if err != nil {
				return nil, err
			}
			n.m[k] = c
		}
		return n, nil
	case automerge.KindList:
		vals, err := v.List().Values()
		if err != nil {
			return nil, err
		}
		n := &node{k: KindList, l: make([]*node, len(vals))}
		for i, e := range vals {
			c, err := fromAM(e)
			if err != nil {
				return nil, err
			}
			n.l[i] = c
		}
		return n, nil
	}
	return &node{k: KindNull}, nil
}

// amKind maps an Automerge kind to a ValueKind without reading the value.
func amKind(v *automerge.Value) ValueKind {
	switch v.Kind() {
	case automerge.KindVoid:
		return KindNone
	case automerge.KindBool:
		return KindBool
	case automerge.KindInt64:
		return KindInt
	case automerge.KindUint64:
		return KindUint
	case automerge.KindFloat64:
		return KindFloat
	case automerge.KindStr:
		return KindString
	case automerge.KindBytes:
		return KindBytes
	case automerge.KindTime:
		return KindTime
	case automerge.KindCounter:
		return KindCounter
	case automerge.KindText:
		return KindText
	case automerge.KindMap:
		return KindMap
	case automerge.KindList:
		return KindList
	}
	return KindNull
}

// amScalar returns the value automerge-go writes for a scalar node.
func (n *node) amScalar() any {
	switch n.k {
	case KindBool:
		return n.b
	case KindInt:
		return n.i
	case KindUint:
		return n.u
	case KindFloat:
		return n.f
	case KindString:
		return n.s
	case KindBytes:
		return n.y
	case KindTime:
		return time.UnixMilli(n.i)
	}
	return nil
}

// ---- canonical wire form -------------------------------------------------

// The wire form of a node is a CBOR array [kind, payload] (payload omitted
// for null), encoded with CBOR core deterministic rules, so equal values have
// equal bytes on every replica.
var (
	encMode = cborx.Enc
	decMode = cborx.NewDec(cbor.DecOptions{
		MaxNestedLevels:  2*maxDepth + 8,
		MaxArrayElements: 1 << 20,
		MaxMapPairs:      1 << 20,
		DefaultMapType:   reflect.TypeOf(map[string]any{}),
		IntDec:           cbor.IntDecConvertNone,
	})
)

func (n *node) wire() any {
	if n == nil {
		return []any{uint8(KindNone)}
	}
	switch n.k {
	case KindNull:
		return []any{uint8(KindNull)}
	case KindBool:
		return []any{uint8(n.k), n.b}
	case KindInt, KindCounter, KindTime:
		return []any{uint8(n.k), n.i}
	case KindUint:
		return []any{uint8(n.k), n.u}
	case KindFloat:
		return []any{uint8(n.k), n.f}
	case KindString, KindText:
		return []any{uint8(n.k), n.s}
	case KindBytes:
		return []any{uint8(n.k), n.y}
	case KindMap:
		m := make(map[string]any, len(n.m))
		for k, c := range n.m {
			m[k] = c.wire()
		}
		return []any{uint8(n.k), m}
	case KindList:
		l := make([]any, len(n.l))
		for i, c := range n.l {
			l[i] = c.wire()
		}
		return []any{uint8(n.k), l}
	}
	return []any{uint8(KindNull)}
}

// encode returns the canonical bytes of n.
func (n *node) encode() []byte {
	b, err := encMode.Marshal(n.wire())
	if err != nil {
		panic(fmt.Sprintf("crdt: encoding value: %v", err)) // cannot happen: wire() builds only encodable types
	}
	return b
}

// readsAs reports whether writing plain value n over collaborative value
// cur would change nothing a reader sees: a string equal to a text's
// content, an int equal to a counter's value. Such a write (typically a
// record read with Get or `ferry get` and written back) keeps the text or
// counter instead of replacing it with a plain value.
func readsAs(cur, n *node) bool {
	switch {
	case cur.k == KindText && n.k == KindString:
		return cur.s == n.s
	case cur.k == KindCounter && n.k == KindInt:
		return cur.i == n.i
	}
	return false
}

func equalNodes(a, b *node) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	if a.k != b.k {
		return false
	}
	return bytes.Equal(a.encode(), b.encode())
}

func decodeNode(b []byte) (*node, error) {
	var w any
	if err := decMode.Unmarshal(b, &w); err != nil {
		return nil, err
	}
	return unwire(w, 0)
}

func unwire(w any, depth int) (*node, error) {
	if depth > maxDepth {
		return nil, fmt.Errorf("value nested too deep")
	}
	arr, ok := w.([]any)
	if !ok || len(arr) == 0 {
		return nil, fmt.Errorf("value: want [kind, payload]")
	}
	kind, ok := asUint(arr[0])
	if !ok {
		return nil, fmt.Errorf("value: bad kind")
	}
	k := ValueKind(kind)
	if k == KindNone {
		return nil, nil
	}
	if k == KindNull {
		return &node{k: KindNull}, nil
	}
	if len(arr) != 2 {
		return nil, fmt.Errorf("value: want 2 elements for %s", k)
	}
	p := arr[1]
	n := &node{k: k}
	switch k {
	case KindBool:
		n.b, ok = p.(bool)
	case KindInt, KindCounter, KindTime:
		n.i, ok = asInt(p)
	case KindUint:
		n.u, ok = asUint(p)
	case KindFloat:
		n.f, ok = p.(float64)
		if !ok {
			var f32 float32
			f32, ok = p.(float32)
			n.f = float64(f32)
		}
	case KindString, KindText:
		n.s, ok = p.(string)
	case KindBytes:
		n.y, ok = p.([]byte)
	case KindMap:
		var m map[string]any
		m, ok = p.(map[string]any)
		if ok {
			n.m = make(map[string]*node, len(m))
			for key, e := range m {
				c, err := unwire(e, depth+1)
				if err != nil {
					return nil, err
				}
				if c == nil {
					return nil, fmt.Errorf("value: void map element")
				}
				n.m[key] = c
			}
		}
	case KindList:
		var l []any
		l, ok = p.([]any)
		if ok {
			n.l = make([]*node, len(l))
			for i, e := range l {
				c, err := unwire(e, depth+1)
				if err != nil {
					return nil, err
				}
				if c == nil {
					return nil, fmt.Errorf("value: void list element")
				}
				n.l[i] = c
			}
		}
	default:
		return nil, fmt.Errorf("value: unknown kind %d", kind)
	}
	if !ok {
		return nil, fmt.Errorf("value: bad payload for %s", k)
	}
	return n, nil
}

func asUint(v any) (uint64, bool) {
	switch x := v.(type) {
	case uint64:
		return x, true
	case int64:
		if x >= 0 {
			return uint64(x), true
		}
	}
	return 0, false
}

func asInt(v any) (int64, bool) {
	switch x := v.(type) {
	case uint64:
		if x <= math.MaxInt64 {
			return int64(x), true
		}
	case int64:
		return x, true
	}
	return 0, false
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// EncodeValue returns the canonical encoding of an application value (the
// form write-sets use): equal values, kinds included, give equal bytes.
func EncodeValue(v any) ([]byte, error) {
	n, err := fromGo(v)
	if err != nil {
		return nil, err
	}
	return n.encode(), nil
}

// DecodeValue decodes EncodeValue output into the application value and
// its kind.
func DecodeValue(b []byte) (any, ValueKind, error) {
	n, err := decodeNode(b)
	if err != nil {
		return nil, KindNone, fmt.Errorf("%w: value: %w", ErrBadDocument, err)
	}
	if n == nil {
		return nil, KindNone, nil
	}
	return n.toGo(), n.k, nil
}
