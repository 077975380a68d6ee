package main

import (
	"strings"
	"testing"
)

// TestMemoryTable: memory figures (units ending in -MiB) leave the time
// table for the memory table, with the benchmark's ratios beside them; a
// run without memory figures has no memory table.
func TestMemoryTable(t *testing.T) {
	out := `BenchmarkMemReplica-2   	       1	79884862444 ns/op	       104.0 badger-scan-MiB	         2.419 flat-ratio	       178.5 peak-MiB	     10000 records
BenchmarkLocalPut-2   	       1	1000 ns/op	       3.5 ferry/raw
PASS
`
	r, err := parse(strings.NewReader(out), nil)
	if err != nil {
		t.Fatal(err)
	}
	tab, mem := table(r), memTable(r)
	if strings.Contains(tab, "MiB") || strings.Contains(tab, "peak") {
		t.Errorf("time table holds memory figures:\n%s", tab)
	}
	if !strings.Contains(tab, "10,000 records") || !strings.Contains(tab, "3.50 ferry/raw") {
		t.Errorf("time table lost figures:\n%s", tab)
	}
	want := "| MemReplica | 104 badger-scan, 178 peak | 2.42 flat-ratio |"
	if !strings.Contains(mem, want) {
		t.Errorf("memory table:\n%s\nwant a row %q", mem, want)
	}
	if strings.Contains(mem, "LocalPut") {
		t.Errorf("memory table lists a benchmark without memory figures:\n%s", mem)
	}
	r2, _ := parse(strings.NewReader("BenchmarkLocalPut-2 1 1000 ns/op 3.5 ferry/raw\nPASS\n"), nil)
	if m := memTable(r2); m != "" {
		t.Errorf("memory table without memory figures: %q", m)
	}
}
