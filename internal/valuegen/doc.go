// Package valuegen generates record values for property tests: every kind
// ferry accepts, biased to the awkward ones (integer and float limits,
// negative zero, strings with NUL, control bytes and non-ASCII, keys that
// look like JSON tags or paths, timestamps outside RFC 3339's years, deep
// nesting), and values ferry must refuse (non-finite floats, invalid UTF-8,
// empty keys, sub-millisecond or out-of-range times).
//
// Accepted values are generated in the form Get returns them (int64; uint64
// only above MaxInt64; float64; string; []byte; time.Time in UTC with whole
// milliseconds; bool; nil; map[string]any; []any), so a test compares what it
// wrote with what it reads back directly.
package valuegen
