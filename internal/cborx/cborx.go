// Package cborx is ferry's one CBOR setup (RFC 8949): the encoder every
// package writes with and the strict decoder defaults every package reads
// with.
//
// Encoding follows the core deterministic rules (RFC 8949 §4.2.1: shortest
// forms, map keys sorted bytewise, no indefinite lengths), so equal values
// have equal bytes on every replica, which signatures, hashes and
// conflict ids rely on.
//
// Decoders are built per use with [NewDec] from the limits that use needs
// (nesting depth, array and map sizes); the strict rules below apply to all
// of them unless a use says otherwise: duplicate map keys, indefinite
// lengths and tags are refused, so one value has one encoding and a hostile
// peer cannot smuggle a second reading past a check.
//
// storage keeps a setup of its own: it imports nothing of ferry.
package cborx

import "github.com/fxamacker/cbor/v2"

// Enc is the core deterministic encoder (cbor.CoreDetEncOptions).
var Enc = must(cbor.CoreDetEncOptions().EncMode())

// NewDec returns a decoder with o's limits and options, where each strict
// rule o leaves at its zero value is set: duplicate map keys are an error
// (DupMapKeyEnforcedAPF), indefinite-length items are refused
// (IndefLengthForbidden) and so are tags (TagsForbidden). Other fields of o
// (MaxNestedLevels, MaxArrayElements, MaxMapPairs, ExtraReturnErrors,
// DefaultMapType, IntDec, ...) are used as given. It panics if o is
// invalid, which is a programming error found by any test (decoders are
// built in package variables).
func NewDec(o cbor.DecOptions) cbor.DecMode {
	if o.DupMapKey == cbor.DupMapKeyQuiet {
		o.DupMapKey = cbor.DupMapKeyEnforcedAPF
	}
	if o.IndefLength == cbor.IndefLengthAllowed {
		o.IndefLength = cbor.IndefLengthForbidden
	}
	if o.TagsMd == cbor.TagsAllowed {
		o.TagsMd = cbor.TagsForbidden
	}
	return must(o.DecMode())
}

func must[T any](v T, err error) T {
	if err != nil {
		panic("cborx: " + err.Error())
	}
	return v
}
