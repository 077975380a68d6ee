package cborx

import (
	"bytes"
	"testing"

	"github.com/fxamacker/cbor/v2"
)

func TestNewDecStrictDefaults(t *testing.T) {
	dec := NewDec(cbor.DecOptions{MaxArrayElements: 16})
	refused := map[string][]byte{
		"duplicate map key": {0xa2, 0x61, 'a', 0x01, 0x61, 'a', 0x02},  // {"a":1,"a":2}
		"indefinite array":  {0x9f, 0x01, 0xff},                        // [_ 1]
		"tag":               {0xc1, 0x00},                              // 1(0)
		"array over limit":  append([]byte{0x91}, make([]byte, 17)...), // 17 zeros
	}
	for name, b := range refused {
		var v any
		if err := dec.Unmarshal(b, &v); err == nil {
			t.Errorf("%s: decoded to %v, want an error", name, v)
		}
	}
	var v any
	if err := dec.Unmarshal([]byte{0xa1, 0x61, 'a', 0x01}, &v); err != nil {
		t.Fatalf("a plain map: %v", err)
	}
}

func TestNewDecKeepsExplicitOptions(t *testing.T) {
	dec := NewDec(cbor.DecOptions{DupMapKey: cbor.DupMapKeyEnforcedAPF, ExtraReturnErrors: cbor.ExtraDecErrorUnknownField})
	var s struct {
		A int `cbor:"a"`
	}
	if err := dec.Unmarshal([]byte{0xa2, 0x61, 'a', 0x01, 0x61, 'b', 0x02}, &s); err == nil {
		t.Fatal("an unknown field was accepted with ExtraDecErrorUnknownField")
	}
}

func TestEncDeterministic(t *testing.T) {
	a, err := Enc.Marshal(map[string]int{"b": 1, "a": 2, "aa": 3})
	if err != nil {
		t.Fatal(err)
	}
	// Core deterministic: keys sorted by their encoded bytes ("a" < "b" < "aa").
	want := []byte{0xa3, 0x61, 'a', 0x02, 0x61, 'b', 0x01, 0x62, 'a', 'a', 0x03}
	if !bytes.Equal(a, want) {
		t.Fatalf("got % x, want % x", a, want)
	}
}
