package storage

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"
)

// trimWriteChild is runChild's "trimwrite" mode: a store whose trim pages
// out everything (the write-ahead logs *.mem included, written through
// their mapping) every millisecond, with small memtables (so logs and
// tables come and go), writing 1.5 KB documents (inline since format
// version 3), acknowledging each write.
func trimWriteChild(dir string) int {
	ctx := context.Background()
	o := testOpts()
	o.Sizes = Sizes{MemTableSize: 1 << 20, MappedTrimInterval: time.Millisecond, MappedBudget: -1}
	s, err := Open(ctx, dir, o)
	if err != nil {
		fmt.Fprintf(os.Stdout, "error %v\n", err)
		return 2
	}
	for i := 0; i < 100000; i++ {
		td := newDoc("c", "r"+strconv.Itoa(i))
		td.d.RootMap().Set("n", strconv.Itoa(i))
		td.d.RootMap().Set("pad", randText(i, 1200))
		td.d.Commit("w")
		if _, err := s.Write(ctx, Batch{Records: []RecordWrite{td.write()}}); err != nil {
			fmt.Fprintf(os.Stdout, "error %v\n", err)
			return 2
		}
		fmt.Fprintf(os.Stdout, "ack %d\n", i)
	}
	return 0
}

// TestCrashDuringWritesWhileTrimming: kill -9 while the trim pages out
// the store's write-ahead logs as Badger writes them; every acknowledged
// record survives. (With the per-store budget, the other crash tests'
// small stores never reach MappedBudget, so they no longer run a
// page-out at all.)
func TestCrashDuringWritesWhileTrimming(t *testing.T) {
	if testing.Short() {
		t.Skip("subprocess crash test")
	}
	ctx := context.Background()
	rng := crashRand(t)
	s, dir := newDiskStore(t)
	s.Close()
	acked := -1
	for round := 0; round < 3; round++ {
		acked = lastAck(runUntil(t, "trimwrite", dir, "ack", 50+rng.IntN(400)), acked)
		s, err := Open(ctx, dir, testOpts())
		if err != nil {
			t.Fatalf("round %d: reopen after kill: %v", round, err)
		}
		checkAcked(t, s, round, acked)
		s.Close()
	}
}
