package kv

import (
	"context"
	"sync"
)

// Log is an append-only log of opaque records (the consent ledger and the
// conflict audit keep theirs in one). Sequence numbers start at 1 and
// grow by one per record. The storage package's sealed log implements it
// over the encrypted store; MemLog is the in-memory one for tests.
type Log interface {
	// Append stores value as the next record and returns its sequence
	// number.
	Append(ctx context.Context, value []byte) (seq uint64, err error)
	// Scan calls fn for every record with sequence number > after, in
	// order; an error from fn stops it and is returned.
	Scan(ctx context.Context, after uint64, fn func(seq uint64, value []byte) error) error
}

// MemLog is an in-memory Log, safe for concurrent use. Values are copied
// in; Scan works over a snapshot, so fn may append.
type MemLog struct {
	mu   sync.Mutex
	recs [][]byte
}

var _ Log = (*MemLog)(nil)

// Append implements Log.
func (l *MemLog) Append(_ context.Context, value []byte) (uint64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.recs = append(l.recs, append([]byte(nil), value...))
	return uint64(len(l.recs)), nil
}

// Scan implements Log.
func (l *MemLog) Scan(ctx context.Context, after uint64, fn func(seq uint64, value []byte) error) error {
	l.mu.Lock()
	recs := l.recs[:len(l.recs):len(l.recs)]
	l.mu.Unlock()
	for i := after; i < uint64(len(recs)); i++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fn(i+1, recs[i]); err != nil {
			return err
		}
	}
	return nil
}

// Rewrite replaces the log's records with what f returns for them (f gets
// the log's own slice): tests use it to damage a log as a disk or an
// attacker would, altering, dropping or reordering records.
func (l *MemLog) Rewrite(f func(recs [][]byte) [][]byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.recs = f(l.recs)
}
