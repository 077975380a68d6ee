package kv

import (
	"context"
	"errors"
	"fmt"
	"testing"
)

func TestMemLogAppendScan(t *testing.T) {
	ctx := context.Background()
	l := &MemLog{}
	for i := range 5 {
		seq, err := l.Append(ctx, []byte{byte(i)})
		if err != nil || seq != uint64(i+1) {
			t.Fatalf("append %d: seq %d, %v", i, seq, err)
		}
	}
	var got []string
	err := l.Scan(ctx, 2, func(seq uint64, v []byte) error {
		got = append(got, fmt.Sprintf("%d:%d", seq, v[0]))
		if seq == 3 { // appending inside Scan does not extend this scan
			if _, err := l.Append(ctx, []byte{9}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil || fmt.Sprint(got) != "[3:2 4:3 5:4]" {
		t.Fatalf("scan after 2: %v, %v", got, err)
	}
	stop := errors.New("stop")
	n := 0
	if err := l.Scan(ctx, 0, func(uint64, []byte) error { n++; return stop }); !errors.Is(err, stop) || n != 1 {
		t.Fatalf("fn's error: %v after %d calls", err, n)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := l.Scan(cctx, 0, func(uint64, []byte) error { return nil }); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled scan: %v", err)
	}
	l.Rewrite(func(rs [][]byte) [][]byte { return rs[:1] })
	n = 0
	_ = l.Scan(ctx, 0, func(uint64, []byte) error { n++; return nil })
	if n != 1 {
		t.Fatalf("after Rewrite to one record, scan saw %d", n)
	}
}

func TestMemLogCopiesValues(t *testing.T) {
	ctx := context.Background()
	l := &MemLog{}
	v := []byte("abc")
	if _, err := l.Append(ctx, v); err != nil {
		t.Fatal(err)
	}
	v[0] = 'x'
	_ = l.Scan(ctx, 0, func(_ uint64, got []byte) error {
		if string(got) != "abc" {
			t.Fatalf("stored value changed with the caller's slice: %q", got)
		}
		return nil
	})
}
