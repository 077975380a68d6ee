package crdt

import (
	"encoding/json"
	"errors"
	"testing"
)

// FuzzDecodeJSON feeds outside text to DecodeJSON (the CLI's value reader):
// it never panics; what it accepts renders back (EncodeJSON) as valid JSON
// that decodes to the same value; and storing it either succeeds and reads
// back identically or is refused with ErrUnsupportedValue.
func FuzzDecodeJSON(f *testing.F) {
	for _, s := range []string{
		`{"a":1}`, `{"a":1} garbage`, `18446744073709551615`, `18446744073709551616`, `-9223372036854775809`,
		`1e400`, `1e-400`, `1.0`, `-0.0`, `"\ud800"`, `"\ud83d\ude00"`, `{"a":1,"a":2}`, `{"":1}`,
		`{"$bytes":"AP8="}`, `{"$date":"2024-05-01T10:00:00.123Z"}`, `{"$date_ms":-9223372036854775808}`,
		`{"$float":"NaN"}`, `{"$map":{"$map":{"$bytes":""}}}`, `{"$map":{"$bytes":"AA=="},"b":1}`, `{"$x":1}`,
		`[[[[]]]]`, `null`, `"a\u0000b"`, "\"\xff\"",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		v, err := DecodeJSON(data)
		if err != nil {
			if !errors.Is(err, ErrUnsupportedValue) {
				t.Fatalf("DecodeJSON error %v does not wrap ErrUnsupportedValue", err)
			}
			return
		}
		j, err := EncodeJSON(v)
		if err != nil || !json.Valid(j) {
			t.Fatalf("EncodeJSON(%#v) = %q, %v", v, j, err)
		}
		back, err := DecodeJSON(j)
		if err != nil || !sameValue(back, v) {
			t.Fatalf("DecodeJSON(EncodeJSON(v)) = %#v, %v; want %#v", back, err, v)
		}
		d := newDoc(t, "fuzz")
		if err := d.Set("v", v); err != nil {
			if !errors.Is(err, ErrUnsupportedValue) {
				t.Fatalf("Set(%#v) = %v", v, err)
			}
			return
		}
		got, err := d.Get("v")
		if err != nil || !sameValue(got, v) {
			t.Fatalf("Get = %#v, %v; want %#v", got, err, v)
		}
	})
}
