// Package kv is the small key/value interface that several layers keep
// their state in (the conflict queue, relay senders and verifiers), and an
// in-memory implementation of it for tests. The storage package's *Slots
// implements KV over the encrypted store.
package kv
