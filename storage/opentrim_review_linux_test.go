//go:build linux

package storage

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"testing"
	"time"
)

// goroutinesIn counts the goroutines whose stack holds fn.
func goroutinesIn(fn string) int {
	buf := make([]byte, 1<<22)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, fn) {
			n++
		}
	}
	return n
}

// TestOpenTrimEndsOnEveryPath: the open trim's goroutine is gone when
// Create, Open (read-write, read-only, failing in Badger's open, wrong
// key, trim off) and reopenBadger (the space recovery, a value-log GC
// round) return, and the store's trim loop runs once (none with the
// trim off, none in memory), ending with Close.
func TestOpenTrimEndsOnEveryPath(t *testing.T) {
	ctx := context.Background()
	const openTrim, loop = "storage.beginOpenTrim.func1", "storage.(*Store).trimLoop"
	begun := openTrimsBegun.Load()
	check := func(what string, wantLoops int, wantBegun int64) {
		t.Helper()
		// Each path that opens Badger on disk with the trim on starts one
		// open trim: Create, Open up to Badger's open, reopenBadger.
		if n := openTrimsBegun.Load() - begun; n != wantBegun {
			t.Fatalf("%s: %d open trims started, want %d", what, n, wantBegun)
		}
		begun += wantBegun
		// A goroutine that has closed its done channel (in a deferred
		// call) may still be on its way out when end or Close returns:
		// there is no later point to synchronise with, so wait for the
		// counts, bounded.
		deadline := time.Now().Add(5 * time.Second)
		for {
			o, l := goroutinesIn(openTrim), goroutinesIn(loop)
			if o == 0 && l == wantLoops {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d open-trim goroutines left, %d trim loops (want 0, %d)", what, o, l, wantLoops)
			}
			runtime.Gosched()
		}
	}
	free := int64(1 << 40)
	withFree(t, &free)
	o := gcOpts()
	dir := t.TempDir()
	s, err := Create(ctx, dir, o)
	if err != nil {
		t.Fatal(err)
	}
	check("Create", 1, 1)
	gcRewrite(t, s, 200, 0, 3<<10)
	gcRewrite(t, s, 200, 1, 3<<10)

	if _, err := Open(ctx, dir, o); err == nil {
		t.Fatal("a second Open of an open store succeeded")
	}
	check("Open failing on Badger's lock", 1, 1)

	s.gcForce.Store(true)
	if r := s.runValueLogGC(vlogGCMaxRewrites); r.err != nil || !r.compacted {
		t.Fatalf("GC round: %+v", r)
	}
	check("value-log GC round", 1, 1)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	check("Close", 0, 0)

	bad := o
	bad.Passphrase = []byte("wrong")
	if _, err := Open(ctx, dir, bad); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("wrong key: %v", err)
	}
	check("Open with a wrong key", 0, 0)

	free = Reserve(o) - 1
	s, err = Open(ctx, dir, o)
	if err != nil || !s.readOnly.Load() {
		t.Fatalf("read-only open: %v", err)
	}
	check("read-only Open", 1, 1)
	free = 1 << 40
	mustWrite(t, s, newDoc("c", "w").set(t, "n", "1")) // reopens read-write
	if s.readOnly.Load() {
		t.Fatal("still read-only")
	}
	check("reopen read-write", 1, 1)
	s.Close()
	check("Close", 0, 0)

	off := o
	off.MappedTrimInterval = -1
	s, err = Open(ctx, dir, off)
	if err != nil {
		t.Fatal(err)
	}
	check("Open with the trim off", 0, 0)
	s.Close()

	long := o
	long.MappedTrimInterval = time.Hour
	s, err = Open(ctx, dir, long)
	if err != nil {
		t.Fatal(err)
	}
	check("Open", 1, 1)
	s.Close()
	check("Close", 0, 0)

	m := testOpts()
	m.InMemory = true
	s, err = Create(ctx, "", m)
	if err != nil {
		t.Fatal(err)
	}
	check("Create in memory", 0, 0)
	s.Close()
}
