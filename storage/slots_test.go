package storage

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"testing"
)

func TestSlots(t *testing.T) {
	ctx := context.Background()
	s, dir := newDiskStore(t)
	a, b := s.Slots("peers"), s.Slots("queue")
	if _, ok, err := a.Get(ctx, "k"); ok || err != nil {
		t.Fatalf("empty Get: %v %v", ok, err)
	}
	for i := 0; i < 5; i++ {
		if err := a.Put(ctx, "k"+strconv.Itoa(i), []byte("a"+strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Put(ctx, "k0", []byte("b0")); err != nil {
		t.Fatal(err)
	}
	if err := a.Put(ctx, "k1", []byte("a1-v2")); err != nil {
		t.Fatal(err)
	}
	if err := a.Put(ctx, "empty", nil); err != nil {
		t.Fatal(err)
	}
	if err := a.Delete(ctx, "k2"); err != nil {
		t.Fatal(err)
	}
	if err := a.Delete(ctx, "never"); err != nil {
		t.Fatal(err)
	}
	s = reopen(t, s, dir)
	a, b = s.Slots("peers"), s.Slots("queue")
	want := map[string]string{"k0": "a0", "k1": "a1-v2", "k3": "a3", "k4": "a4", "empty": ""}
	got := map[string]string{}
	if err := a.Range(ctx, func(k string, v []byte) error { got[k] = string(v); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("Range %v", got)
	}
	for k, v := range want {
		if got[k] != v {
			t.Fatalf("Range %s=%q want %q", k, got[k], v)
		}
		gv, ok, err := a.Get(ctx, k)
		if err != nil || !ok || string(gv) != v {
			t.Fatalf("Get %s: %q %v %v", k, gv, ok, err)
		}
	}
	if v, ok, _ := b.Get(ctx, "k0"); !ok || string(v) != "b0" {
		t.Fatal("namespace mix-up")
	}
	if _, ok, _ := a.Get(ctx, "k2"); ok {
		t.Fatal("deleted slot present")
	}
	stop := errors.New("stop")
	if err := a.Range(ctx, func(string, []byte) error { return stop }); !errors.Is(err, stop) {
		t.Fatalf("Range stop: %v", err)
	}
	wantErr(t, s.Slots("").Put(ctx, "k", nil), ErrInvalid, "empty namespace")
	wantErr(t, a.Put(ctx, "", nil), ErrInvalid, "empty key")
}

func TestLog(t *testing.T) {
	ctx := context.Background()
	s, dir := newDiskStore(t)
	if err := s.ScanLog(ctx, "audit", 0, func(uint64, []byte) error { t.Fatal("empty log called"); return nil }); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 10; i++ {
		n, err := s.Append(ctx, "audit", []byte("e"+strconv.Itoa(i)))
		if err != nil || n != uint64(i) {
			t.Fatalf("Append %d: %d %v", i, n, err)
		}
	}
	if n, _ := s.Append(ctx, "other", []byte("x")); n != 1 {
		t.Fatalf("other log starts at %d", n)
	}
	s = reopen(t, s, dir)
	var got []string
	err := s.ScanLog(ctx, "audit", 4, func(n uint64, v []byte) error {
		if string(v) != "e"+strconv.FormatUint(n, 10) {
			t.Fatalf("entry %d = %q", n, v)
		}
		got = append(got, string(v))
		return nil
	})
	if err != nil || len(got) != 6 || got[0] != "e5" {
		t.Fatalf("ScanLog after 4: %v %v", got, err)
	}
	n, err := s.Append(ctx, "audit", []byte("e11"))
	if err != nil || n != 11 {
		t.Fatalf("Append after reopen: %d %v", n, err)
	}
	// Concurrent appends get distinct, contiguous numbers.
	var wg sync.WaitGroup
	var mu sync.Mutex
	nums := map[uint64]bool{}
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 10; i++ {
				n, err := s.Append(ctx, "audit", []byte("c"))
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				nums[n] = true
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	for i := uint64(12); i <= 51; i++ {
		if !nums[i] {
			t.Fatalf("entry %d missing among concurrent appends", i)
		}
	}
	count := 0
	if err := s.ScanLog(ctx, "audit", 0, func(uint64, []byte) error { count++; return nil }); err != nil || count != 51 {
		t.Fatalf("ScanLog all: %d %v", count, err)
	}
}
