// Package kv holds the two small storage interfaces several layers keep
// their state in, each with an in-memory implementation for tests: KV, a
// key/value store (the conflict queue, relay senders and verifiers, the
// consent ledger's anchor), and Log, an append-only log (the consent
// ledger, the conflict audit). The storage package's *Slots implements KV
// and its sealed log implements Log over the encrypted store.
package kv
