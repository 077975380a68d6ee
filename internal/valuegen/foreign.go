package valuegen

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"time"
)

// ForeignScript is a Node.js script (for internal/amjs) that builds, with
// @automerge/automerge, a document holding every value type the library
// can write, awkward values included (NaN and infinities, int64 limits,
// dates beyond year 9999 and before year 0, empty keys, nested lists and
// maps, a counter incremented in a later change). It prints one JSON
// object: {"doc": base64 of A.save, "view": the document as the JS library
// reports it}. Given a base64 document as its argument it loads that
// instead (and prints its view), so a test can check what the JS library
// reads back from ferry's export.
//
// The view tags every value with the library's own datatype:
// ["str"|"text", s], ["int"|"uint"|"counter", decimal string],
// ["f64", String(n) or "-0"], ["timestamp", decimal ms], ["bytes", base64],
// ["boolean", b], ["null", null], ["map", {key: view}], ["list", [view]].
const ForeignScript = `
import * as A from "@automerge/automerge"
let d
if (process.argv[2]) {
  d = A.load(Uint8Array.from(Buffer.from(process.argv[2], "base64")))
} else {
  d = A.change(A.init(), d => {
    d.str = new A.ImmutableString("plain str \u0000 \u00e9 \u2028")
    d.text = "collaborative text"
    d.int = new A.Int(-5)
    d.intmax = 9223372036854775807n
    d.intmin = -9223372036854775808n
    d.uint = new A.Uint(5)
    d.uintbig = new A.Uint(Number.MAX_SAFE_INTEGER)
    d.float = new A.Float64(1.5)
    d.floatint = new A.Float64(2)
    d.floatmax = new A.Float64(Number.MAX_VALUE)
    d.floattiny = new A.Float64(Number.MIN_VALUE)
    d.nan = NaN
    d.inf = Infinity
    d.ninf = -Infinity
    d.counter = new A.Counter(3)
    d.date = new Date(1714557600123)
    d.datemax = new Date(8.64e15)
    d.datemin = new Date(-8.64e15)
    d.datebc = new Date(-62198755200001)
    d.bytes = new Uint8Array([0, 1, 255])
    d.nobytes = new Uint8Array([])
    d.yes = true
    d.no = false
    d.nothing = null
    d.list = [1, new A.ImmutableString("x"), [2.5, null, NaN], {k: new Uint8Array([7])}, new A.Counter(1), new Date(0), "text in a list"]
    d.map = {nested: {t: "inner text"}, "": "empty key", "$bytes": new A.ImmutableString("not bytes")}
    d[""] = new A.ImmutableString("root empty key")
    d.map.nested.deep = new A.Uint(7)
  })
  d = A.change(d, d => { d.counter.increment(4); d.list[4].increment(-2) })
}
const be = A.getBackend(d)
function view(obj, prop) {
  const [t, v] = be.getWithType(obj, prop)
  switch (t) {
  case "map": {
    const out = {}
    for (const k of be.keys(v)) out[k] = view(v, k)
    return ["map", out]
  }
  case "list": {
    const out = []
    for (let i = 0; i < be.length(v); i++) out.push(view(v, i))
    return ["list", out]
  }
  case "text": return ["text", be.text(v)]
  case "int": case "uint": case "counter": return [t, String(v)]
  case "f64": return [t, Object.is(v, -0) ? "-0" : String(v)]
  case "timestamp": return [t, String(v.getTime())]
  case "bytes": return [t, Buffer.from(v).toString("base64")]
  default: return [t, v]
  }
}
const root = {}
for (const k of be.keys("_root")) root[k] = view("_root", k)
process.stdout.write(JSON.stringify({doc: Buffer.from(A.save(d)).toString("base64"), view: ["map", root]}))
`

// ForeignOutput is what ForeignScript prints.
type ForeignOutput struct {
	Doc  []byte          `json:"doc"`
	View json.RawMessage `json:"view"`
}

// FromJSView converts a ForeignScript view into the value ferry's Get must
// return for it: str and text as string, int and counter as int64, uint as
// uint64, f64 as float64, timestamp as time.Time (UTC), bytes as []byte.
func FromJSView(raw json.RawMessage) (any, error) {
	var tv []json.RawMessage
	if err := json.Unmarshal(raw, &tv); err != nil || len(tv) != 2 {
		return nil, fmt.Errorf("view %s: want [type, value]", raw)
	}
	var typ string
	if err := json.Unmarshal(tv[0], &typ); err != nil {
		return nil, err
	}
	var s string
	str := func() error { return json.Unmarshal(tv[1], &s) }
	switch typ {
	case "map":
		var m map[string]json.RawMessage
		if err := json.Unmarshal(tv[1], &m); err != nil {
			return nil, err
		}
		out := make(map[string]any, len(m))
		for k, e := range m {
			v, err := FromJSView(e)
			if err != nil {
				return nil, err
			}
			out[k] = v
		}
		return out, nil
	case "list":
		var l []json.RawMessage
		if err := json.Unmarshal(tv[1], &l); err != nil {
			return nil, err
		}
		out := make([]any, len(l))
		for i, e := range l {
			v, err := FromJSView(e)
			if err != nil {
				return nil, err
			}
			out[i] = v
		}
		return out, nil
	case "str", "text":
		return s, str()
	case "int", "counter", "timestamp":
		if err := str(); err != nil {
			return nil, err
		}
		i, err := strconv.ParseInt(s, 10, 64)
		if typ == "timestamp" {
			return time.UnixMilli(i).UTC(), err
		}
		return i, err
	case "uint":
		if err := str(); err != nil {
			return nil, err
		}
		return strconv.ParseUint(s, 10, 64)
	case "f64":
		if err := str(); err != nil {
			return nil, err
		}
		if s == "-0" {
			return math.Copysign(0, -1), nil
		}
		return strconv.ParseFloat(s, 64)
	case "bytes":
		if err := str(); err != nil {
			return nil, err
		}
		return base64.StdEncoding.DecodeString(s)
	case "boolean":
		var b bool
		return b, json.Unmarshal(tv[1], &b)
	case "null":
		return nil, nil
	}
	return nil, fmt.Errorf("view: unknown datatype %q", typ)
}
