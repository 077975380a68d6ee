package collector

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"reflect"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/ferrysync/ferry/internal/cborx"
	"github.com/fxamacker/cbor/v2"
)

// Batch is one one-way share: anonymized records of one collection for one
// purpose. Records hold JSON-like values only: nil, bool, string, integers
// (within int64), finite floats, []byte, []any and map[string]any, nested
// at most MaxDepth deep. A time.Time is refused: timestamps leave only as
// the strings a generalize rule makes of them.
type Batch struct {
	Purpose    string           `cbor:"purpose" json:"purpose"`
	Collection string           `cbor:"collection" json:"collection"`
	Records    []map[string]any `cbor:"records" json:"records"`
}

// Format is a wire encoding of a Batch.
type Format string

// Formats. The zero Format means CBOR.
const (
	CBOR Format = "cbor" // application/cbor, core deterministic encoding
	JSON Format = "json" // application/json; []byte values become base64 strings
)

// Content types of the formats.
const (
	ContentTypeCBOR = "application/cbor"
	ContentTypeJSON = "application/json"
)

// Limits on a batch.
const (
	// DefaultMaxBody bounds an encoded batch (both sides).
	DefaultMaxBody = 8 << 20
	// MaxDepth bounds the nesting of values inside a record: a record's
	// fields are at depth 1, the elements of a list field at depth 2.
	MaxDepth = 32
	// MaxLabel bounds Purpose and Collection (bytes).
	MaxLabel = 256
	// maxItems bounds the elements of one CBOR array or map.
	maxItems = 1 << 20
)

var (
	encMode = cborx.Enc
	decMode = cborx.NewDec(cbor.DecOptions{
		MaxNestedLevels:   MaxDepth + 4, // batch map, records array, record map; checkValue is exact
		MaxArrayElements:  maxItems,
		MaxMapPairs:       maxItems,
		IntDec:            cbor.IntDecConvertSignedOrFail,
		DefaultMapType:    reflect.TypeFor[map[string]any](),
		UTF8:              cbor.UTF8RejectInvalid,
		NaN:               cbor.NaNDecodeForbidden,
		Inf:               cbor.InfDecodeForbidden,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
		FieldNameMatching: cbor.FieldNameMatchingCaseSensitive,
	})
)

// contentType returns the content type of f, or false for an unknown
// format.
func (f Format) contentType() (string, bool) {
	switch f {
	case CBOR, "":
		return ContentTypeCBOR, true
	case JSON:
		return ContentTypeJSON, true
	}
	return "", false
}

// encodeBatch checks b and encodes it.
func encodeBatch(f Format, b Batch) ([]byte, error) {
	if err := checkBatch(b); err != nil {
		return nil, err
	}
	if b.Records == nil {
		b.Records = []map[string]any{}
	}
	switch f {
	case CBOR, "":
		out, err := encMode.Marshal(b)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrBadBatch, err)
		}
		return out, nil
	case JSON:
		out, err := json.Marshal(b)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrBadBatch, err)
		}
		return out, nil
	}
	return nil, fmt.Errorf("%w: format %q", ErrBadBatch, f)
}

// decodeBatch decodes and checks a batch in format f. It never panics;
// every error wraps ErrBadBatch.
func decodeBatch(f Format, data []byte) (Batch, error) {
	var b Batch
	switch f {
	case CBOR:
		rest, err := decMode.UnmarshalFirst(data, &b)
		if err != nil {
			return Batch{}, fmt.Errorf("%w: %w", ErrBadBatch, err)
		}
		if len(rest) != 0 {
			return Batch{}, fmt.Errorf("%w: %d bytes after the batch", ErrBadBatch, len(rest))
		}
	case JSON:
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.UseNumber()
		dec.DisallowUnknownFields()
		if err := dec.Decode(&b); err != nil {
			return Batch{}, fmt.Errorf("%w: %w", ErrBadBatch, err)
		}
		if _, err := dec.Token(); !errors.Is(err, io.EOF) {
			return Batch{}, fmt.Errorf("%w: data after the batch", ErrBadBatch)
		}
		for _, r := range b.Records {
			for k, v := range r {
				n, err := fromJSON(v, 1)
				if err != nil {
					return Batch{}, err
				}
				r[k] = n
			}
		}
	default:
		return Batch{}, fmt.Errorf("%w: format %q", ErrBadBatch, f)
	}
	if b.Records == nil {
		b.Records = []map[string]any{}
	}
	if err := checkBatch(b); err != nil {
		return Batch{}, err
	}
	return b, nil
}

// fromJSON turns the json.Numbers of a decoded value into int64 (integers
// in range) or float64.
func fromJSON(v any, depth int) (any, error) {
	if depth > MaxDepth {
		return nil, fmt.Errorf("%w: nested deeper than %d", ErrBadBatch, MaxDepth)
	}
	switch x := v.(type) {
	case json.Number:
		if i, err := strconv.ParseInt(string(x), 10, 64); err == nil {
			return i, nil
		}
		f, err := strconv.ParseFloat(string(x), 64)
		if err != nil || math.IsInf(f, 0) {
			return nil, fmt.Errorf("%w: number %.32q out of range", ErrBadBatch, string(x))
		}
		return f, nil
	case map[string]any:
		for k, e := range x {
			n, err := fromJSON(e, depth+1)
			if err != nil {
				return nil, err
			}
			x[k] = n
		}
	case []any:
		for i, e := range x {
			n, err := fromJSON(e, depth+1)
			if err != nil {
				return nil, err
			}
			x[i] = n
		}
	}
	return v, nil
}

func checkBatch(b Batch) error {
	for name, s := range map[string]string{"purpose": b.Purpose, "collection": b.Collection} {
		if s == "" || len(s) > MaxLabel || !utf8.ValidString(s) {
			return fmt.Errorf("%w: %s must be 1..%d bytes of UTF-8", ErrBadBatch, name, MaxLabel)
		}
	}
	for i, r := range b.Records {
		if r == nil {
			return fmt.Errorf("%w: record %d is null", ErrBadBatch, i)
		}
		if err := checkValue(r, 0); err != nil {
			return fmt.Errorf("%w: record %d: %w", ErrBadBatch, i, err)
		}
	}
	return nil
}

var errTooDeep = fmt.Errorf("nested deeper than %d", MaxDepth)

// checkValue accepts the JSON-like values a Batch may hold.
func checkValue(v any, depth int) error {
	if depth > MaxDepth {
		return errTooDeep
	}
	switch x := v.(type) {
	case nil, bool, int, int8, int16, int32, int64, uint8, uint16, uint32, []byte:
		return nil
	case string:
		if !utf8.ValidString(x) {
			return errors.New("string is not UTF-8")
		}
	case uint:
		if uint64(x) > math.MaxInt64 {
			return errors.New("integer beyond int64")
		}
	case uint64:
		if x > math.MaxInt64 {
			return errors.New("integer beyond int64")
		}
	case float32:
		return checkValue(float64(x), depth)
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return errors.New("non-finite number")
		}
	case map[string]any:
		for k, e := range x {
			if !utf8.ValidString(k) {
				return errors.New("key is not UTF-8")
			}
			if err := checkValue(e, depth+1); err != nil {
				return err
			}
		}
	case []any:
		for _, e := range x {
			if err := checkValue(e, depth+1); err != nil {
				return err
			}
		}
	case time.Time:
		return errors.New("raw timestamp (generalize it first)")
	default:
		return fmt.Errorf("unsupported value type %T", v)
	}
	return nil
}

// cloneBatch deep-copies b's records.
func cloneBatch(b Batch) Batch {
	out := Batch{Purpose: b.Purpose, Collection: b.Collection, Records: make([]map[string]any, len(b.Records))}
	for i, r := range b.Records {
		out.Records[i] = cloneValue(r).(map[string]any)
	}
	return out
}

func cloneValue(v any) any {
	switch x := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(x))
		for k, e := range x {
			m[k] = cloneValue(e)
		}
		return m
	case []any:
		l := make([]any, len(x))
		for i, e := range x {
			l[i] = cloneValue(e)
		}
		return l
	case []byte:
		return append([]byte{}, x...)
	}
	return v
}

// EncodeBatch encodes a batch in the given format (as HTTPDestination
// sends it), for destinations other than HTTP.
func EncodeBatch(f Format, b Batch) ([]byte, error) { return encodeBatch(f, b) }

// DecodeBatch decodes and checks a batch from outside bytes, with the same
// bounds as the collector server.
func DecodeBatch(f Format, data []byte) (Batch, error) { return decodeBatch(f, data) }
