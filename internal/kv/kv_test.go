package kv

import (
	"context"
	"errors"
	"testing"
)

func TestMem(t *testing.T) {
	ctx := context.Background()
	m := NewMem()
	in := []byte("v1")
	if err := m.Put(ctx, "b", in); err != nil {
		t.Fatal(err)
	}
	in[0] = 'X' // the stored value is a copy
	m.Put(ctx, "a", []byte("v0"))
	v, ok, err := m.Get(ctx, "b")
	if err != nil || !ok || string(v) != "v1" {
		t.Fatalf("get b = %q %v %v", v, ok, err)
	}
	if _, ok, _ := m.Get(ctx, "zz"); ok {
		t.Fatal("found a missing key")
	}
	var keys []string
	err = m.Range(ctx, func(k string, _ []byte) error {
		keys = append(keys, k)
		return m.Delete(ctx, k) // writing during Range is allowed
	})
	if err != nil || len(keys) != 2 || keys[0] != "a" || keys[1] != "b" {
		t.Fatalf("range = %v, %v", keys, err)
	}
	stop := errors.New("stop")
	m.Put(ctx, "c", nil)
	if err := m.Range(ctx, func(string, []byte) error { return stop }); !errors.Is(err, stop) {
		t.Fatalf("range error: %v", err)
	}
}
