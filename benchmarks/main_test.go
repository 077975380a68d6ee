package benchmarks

import (
	"fmt"
	"os"
	"strconv"
	"testing"
)

// TestMain runs the memory benchmark's child processes (FERRY_RSS_CHILD
// set: see BenchmarkScanRSS100k) and removes the shared fixture of the
// open benchmarks when the run ends.
func TestMain(m *testing.M) {
	if mode := os.Getenv("FERRY_RSS_CHILD"); mode != "" {
		n, _ := strconv.Atoi(os.Getenv("FERRY_RSS_N"))
		if err := rssChild(mode, os.Getenv("FERRY_RSS_DIR"), n); err != nil {
			fmt.Fprintln(os.Stderr, "rss child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	code := m.Run()
	if fixtureRoot != "" {
		os.RemoveAll(fixtureRoot)
	}
	os.Exit(code)
}
