package storage

import (
	"fmt"
	"testing"
)

// TestTablesHaveTightBloomFilters: the tables the store writes carry the
// Bloom filters of a 0.1% false-positive rate, 10 bits a key by Badger's
// BloomBitsPerKey, not those of its default 1% (7 bits): every write reads
// the record's meta first, and a false positive on a new record's key is
// a seek into a table (docs/storage.md, "Performance").
func TestTablesHaveTightBloomFilters(t *testing.T) {
	s, dir := newDiskStore(t)
	var rws []RecordWrite
	for i := range 2000 {
		rws = append(rws, newDoc("notes", fmt.Sprintf("n%d", i)).set(t, "k", "v"))
		if len(rws) == 200 {
			mustWrite(t, s, rws...)
			rws = rws[:0]
		}
	}
	s = reopen(t, s, dir) // Close flushes the memtables into tables
	tables := s.db.Tables()
	if len(tables) == 0 {
		t.Fatal("no table after Close flushed the memtables")
	}
	for _, ti := range tables {
		if ti.KeyCount < 100 {
			continue // rounding dominates a tiny table's filter
		}
		if bits := float64(ti.BloomFilterSize*8) / float64(ti.KeyCount); bits < 9.5 {
			t.Errorf("table %d: %.1f Bloom filter bits a key over %d keys, want 10 (0.1%% false positives asked for)", ti.ID, bits, ti.KeyCount)
		}
	}
}
