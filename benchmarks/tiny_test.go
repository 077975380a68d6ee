package benchmarks

import (
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestBenchmarksRunTiny runs every benchmark of the package once at a tiny
// size, so `make test` catches a benchmark that no longer builds or
// fails. It re-executes this test binary (built with -race under `make
// test`) with -test.bench, so each benchmark runs exactly as under `go test
// -bench`, with its output shown if it fails. Under -race the memory
// benchmark's child processes and the default KDF are skipped; the Node.js
// comparison is not a Go benchmark and is not run here.
func TestBenchmarksRunTiny(t *testing.T) {
	if os.Getenv("FERRY_BENCH_TINY") == "1" {
		t.Skip("already the tiny run")
	}
	start := time.Now()
	cmd := exec.Command(os.Args[0], "-test.run=^$", "-test.bench=.", "-test.benchtime=1x", "-test.timeout=5m")
	cmd.Env = append(os.Environ(),
		"FERRY_BENCH_TINY=1",
		"FERRY_BENCH_N=10",
		"FERRY_BENCH_WRITES=10",
		"FERRY_BENCH_READS=10",
	)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("tiny benchmark run failed: %v\n%s", err, out)
	}
	ran := 0
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "Benchmark") && strings.Contains(line, "ns/op") {
			ran++
		}
	}
	if ran == 0 || !strings.Contains(string(out), "\nPASS") {
		t.Fatalf("tiny benchmark run: no benchmark result\n%s", out)
	}
	t.Logf("%d benchmark results in %v", ran, time.Since(start).Round(time.Millisecond))
	if testing.Verbose() {
		t.Logf("\n%s", out)
	}
}
