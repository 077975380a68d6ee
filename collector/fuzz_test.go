package collector

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
)

// FuzzDecodeBatch feeds the server's batch decoder arbitrary bodies, as
// CBOR or as JSON. It must never panic, must fail only with ErrBadBatch,
// and whatever it accepts must pass the batch checks and survive a CBOR
// round trip unchanged (and re-encode to the same bytes).
func FuzzDecodeBatch(f *testing.F) {
	// Seeds live in testdata/fuzz/FuzzDecodeBatch; two more from code.
	for _, b := range []Batch{sampleBatch(true), {Purpose: "p", Collection: "c", Records: []map[string]any{}}} {
		data, err := encodeBatch(CBOR, b)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(false, data)
	}
	f.Fuzz(func(t *testing.T, asJSON bool, data []byte) {
		format := CBOR
		if asJSON {
			format = JSON
		}
		b, err := decodeBatch(format, data)
		if err != nil {
			if !errors.Is(err, ErrBadBatch) {
				t.Fatalf("error %v does not wrap ErrBadBatch", err)
			}
			return
		}
		if err := checkBatch(b); err != nil {
			t.Fatalf("accepted a batch that fails the checks: %v", err)
		}
		enc, err := encodeBatch(CBOR, b)
		if err != nil {
			t.Fatalf("accepted batch does not encode: %v", err)
		}
		again, err := decodeBatch(CBOR, enc)
		if err != nil {
			t.Fatalf("re-encoded batch does not decode: %v", err)
		}
		if !reflect.DeepEqual(again, b) {
			t.Fatalf("round trip changed the batch:\n%#v\n%#v", b, again)
		}
		enc2, err := encodeBatch(CBOR, again)
		if err != nil || !bytes.Equal(enc, enc2) {
			t.Fatalf("encoding is not deterministic: %v", err)
		}
		if _, err := encodeBatch(JSON, b); err != nil {
			t.Fatalf("accepted batch does not encode as JSON: %v", err)
		}
	})
}
