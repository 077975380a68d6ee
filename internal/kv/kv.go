package kv

import (
	"bytes"
	"context"
	"maps"
	"slices"
	"sync"
)

// KV is a small persistent key/value store.
type KV interface {
	Get(ctx context.Context, key string) (value []byte, ok bool, err error)
	Put(ctx context.Context, key string, value []byte) error
	Delete(ctx context.Context, key string) error
	// Range calls fn for every key, in key order, over a snapshot (fn may
	// write); an error from fn stops it and is returned.
	Range(ctx context.Context, fn func(key string, value []byte) error) error
}

// Mem is an in-memory KV, safe for concurrent use. Values are copied in
// and out.
type Mem struct {
	mu sync.Mutex
	m  map[string][]byte
}

var _ KV = (*Mem)(nil)

// NewMem returns an empty Mem.
func NewMem() *Mem { return &Mem{m: map[string][]byte{}} }

// Get implements KV.
func (k *Mem) Get(_ context.Context, key string) ([]byte, bool, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	v, ok := k.m[key]
	return bytes.Clone(v), ok, nil
}

// Put implements KV.
func (k *Mem) Put(_ context.Context, key string, value []byte) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.m[key] = bytes.Clone(value)
	return nil
}

// Delete implements KV.
func (k *Mem) Delete(_ context.Context, key string) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	delete(k.m, key)
	return nil
}

// Range implements KV.
func (k *Mem) Range(_ context.Context, fn func(key string, value []byte) error) error {
	k.mu.Lock()
	snap := maps.Clone(k.m)
	k.mu.Unlock()
	for _, key := range slices.Sorted(maps.Keys(snap)) {
		if err := fn(key, bytes.Clone(snap[key])); err != nil {
			return err
		}
	}
	return nil
}
