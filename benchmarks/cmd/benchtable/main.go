// Command benchtable turns `go test -bench` output into a table of figures
// and ratios, with a description of the machine, and (with -node) sets
// ferry's sync and local-write figures beside automerge-repo's on the same
// workloads (the JSON that benchmarks/js/bench.mjs prints).
//
//	go test -run '^$' -bench . -benchtime 1x ./benchmarks/ 2>&1 | benchtable -o benchmarks/results/DATE.md
//	benchtable -go go.txt -node node.json -o benchmarks/results/compare-DATE.md
//
// Reading standard input, it copies every line to standard output as it
// arrives (so a long run shows progress), then prints the table. It exits
// 1 if the run failed (a FAIL line, or no PASS/ok line) or had no
// benchmark result.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"
)

type result struct {
	name    string
	runs    int
	nsPerOp []float64
	metrics map[string][]float64
	order   []string
}

type run struct {
	results []*result
	byName  map[string]*result
	raw     []string
	failed  bool
	passed  bool
	syncN   int // n= of the sync benchmarks' log lines
}

var (
	benchLine = regexp.MustCompile(`^(Benchmark\S+?)(-\d+)?\s+(\d+)\s+(.*)$`)
	syncNLine = regexp.MustCompile(`sync_bench_test\.go:\d+: n=(\d+) `)
)

func parse(r io.Reader, echo io.Writer) (*run, error) {
	out := &run{byName: map[string]*result{}}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		line := sc.Text()
		if echo != nil {
			fmt.Fprintln(echo, line)
		}
		out.raw = append(out.raw, line)
		t := strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(t, "FAIL") || strings.HasPrefix(t, "--- FAIL") || strings.HasPrefix(t, "panic:"):
			out.failed = true
		case t == "PASS" || strings.HasPrefix(t, "ok "):
			out.passed = true
		}
		if m := syncNLine.FindStringSubmatch(line); m != nil {
			out.syncN, _ = strconv.Atoi(m[1])
		}
		m := benchLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		f := strings.Fields(m[4])
		if len(f) < 2 || len(f)%2 != 0 {
			continue
		}
		res := out.byName[m[1]]
		if res == nil {
			res = &result{name: m[1], metrics: map[string][]float64{}}
			out.byName[m[1]] = res
			out.results = append(out.results, res)
		}
		res.runs++
		for i := 0; i < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				continue
			}
			unit := f[i+1]
			switch unit {
			case "ns/op":
				res.nsPerOp = append(res.nsPerOp, v)
			case "B/op", "allocs/op":
				// -benchmem figures of whole iterations: not shown.
			default:
				if _, ok := res.metrics[unit]; !ok {
					res.order = append(res.order, unit)
				}
				res.metrics[unit] = append(res.metrics[unit], v)
			}
		}
	}
	return out, sc.Err()
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// num formats a figure with about three significant digits, without
// exponents, with thousands separators for large ones.
func num(v float64) string {
	if math.IsNaN(v) {
		return "—"
	}
	a := math.Abs(v)
	switch {
	case a >= 1000:
		return group(strconv.FormatFloat(math.Round(v), 'f', 0, 64))
	case a >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	case a >= 1:
		return strconv.FormatFloat(v, 'f', 2, 64)
	case a == 0:
		return "0"
	default:
		return strconv.FormatFloat(v, 'g', 3, 64)
	}
}

func group(s string) string {
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

func isRatio(unit string) bool { return strings.Contains(unit, "ratio") || unit == "ferry/raw" }

// isMemory tells a peak-memory figure (MiB of resident memory, the
// memory benchmarks' units end in "-MiB").
func isMemory(unit string) bool {
	return strings.HasSuffix(unit, "-MiB") || strings.HasSuffix(unit, "-MB")
}

// memTable is the markdown table of the run's memory figures: one row per
// benchmark that reports any, its figures in MiB and its ratios (the
// memory benchmarks' ratios are of memory). Empty when no benchmark
// reports memory.
func memTable(r *run) string {
	var b strings.Builder
	for _, res := range r.results {
		var figs, ratios []string
		for _, u := range res.order {
			v := num(median(res.metrics[u]))
			switch {
			case isMemory(u):
				figs = append(figs, v+" "+strings.TrimSuffix(strings.TrimSuffix(u, "-MiB"), "-MB"))
			case isRatio(u):
				ratios = append(ratios, v+" "+u)
			}
		}
		if len(figs) == 0 {
			continue
		}
		if b.Len() == 0 {
			b.WriteString("| benchmark | peak RSS, MiB | ratios |\n|---|---|---|\n")
		}
		fmt.Fprintf(&b, "| %s | %s | %s |\n", strings.TrimPrefix(res.name, "Benchmark"), strings.Join(figs, ", "), strings.Join(ratios, ", "))
	}
	return b.String()
}

func duration(ns float64) string {
	if math.IsNaN(ns) {
		return "—"
	}
	return time.Duration(ns).Round(time.Microsecond).String()
}

// table is the markdown table of a run: one row per benchmark, figures and
// ratios (medians over -count runs).
func table(r *run) string {
	var b strings.Builder
	b.WriteString("| benchmark | runs | time/op | figures | ratios |\n|---|---|---|---|---|\n")
	for _, res := range r.results {
		var figs, ratios []string
		for _, u := range res.order {
			if isMemory(u) {
				continue // in the memory table
			}
			s := num(median(res.metrics[u])) + " " + u
			if isRatio(u) {
				ratios = append(ratios, s)
			} else {
				figs = append(figs, s)
			}
		}
		fmt.Fprintf(&b, "| %s | %d | %s | %s | %s |\n", strings.TrimPrefix(res.name, "Benchmark"), res.runs,
			duration(median(res.nsPerOp)), strings.Join(figs, ", "), strings.Join(ratios, ", "))
	}
	return b.String()
}

// node is what benchmarks/js/bench.mjs prints.
type node struct {
	N             int     `json:"n"`
	Node          string  `json:"node"`
	AutomergeRepo string  `json:"automerge_repo"`
	Automerge     string  `json:"automerge"`
	QuietMS       float64 `json:"quiet_ms"`
	MaxRSSMiB     float64 `json:"max_rss_mib"`
	LocalWrites   struct {
		Records int     `json:"records"`
		Seconds float64 `json:"seconds"`
		RecPerS float64 `json:"rec_per_s"`
	} `json:"local_writes"`
	Initial, Delta, Idle struct {
		Seconds         float64 `json:"seconds"`
		HeadsSeconds    float64 `json:"heads_seconds"`
		LastMsgSeconds  float64 `json:"last_message_seconds"`
		Messages        float64 `json:"messages"`
		Bytes           float64 `json:"bytes"`
		BytesPerRecord  float64 `json:"bytes_per_record"`
		BytesPerChanged float64 `json:"bytes_per_changed"`
		TimedOut        bool    `json:"timed_out"`
		Unavailable     int     `json:"unavailable_at_find"`
	}
	Incomplete bool `json:"incomplete"`
}

func (r *run) metric(bench, unit string) float64 {
	res := r.byName[bench]
	if res == nil {
		return math.NaN()
	}
	return median(res.metrics[unit])
}

func secs(v float64) string {
	if math.IsNaN(v) {
		return "—"
	}
	if v < 1 {
		return num(v*1000) + " ms"
	}
	return num(v) + " s"
}

// compare is the side-by-side table. ratio = ferry's time / automerge-repo's
// time for the same work (below 1: ferry faster).
func compare(r *run, nd *node) (string, int) {
	var b strings.Builder
	misses := 0
	b.WriteString("| workload | ferry | automerge-repo | ferry/automerge-repo (time) | faster |\n|---|---|---|---|---|\n")
	row := func(what, f, a string, ratio float64, bound bool) {
		faster := "—"
		r := num(ratio) + "×"
		if bound { // automerge-repo timed out: its time is a lower bound
			r = "≤ " + r
			a = "> " + a + " (timed out)"
		}
		if !math.IsNaN(ratio) {
			if ratio < 1 {
				faster = "ferry"
			} else {
				faster = "automerge-repo"
				misses++
			}
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", what, f, a, r, faster)
	}
	info := func(what, f, a string) { fmt.Fprintf(&b, "| %s | %s | %s | | |\n", what, f, a) }
	n := nd.N
	fs := r.metric("BenchmarkSyncInitial10k", "ferry-s")
	row(fmt.Sprintf("initial sync, %d records", n), secs(fs), secs(nd.Initial.Seconds), fs/nd.Initial.Seconds, nd.Initial.TimedOut)
	if nd.Initial.Unavailable > 0 {
		info("  automerge-repo documents find() reported unavailable (60 s request timeout; waited for)", "", strconv.Itoa(nd.Initial.Unavailable))
	}
	info("  bytes per record", num(r.metric("BenchmarkSyncInitial10k", "ferry-B/rec")), num(nd.Initial.BytesPerRecord))
	fs = r.metric("BenchmarkSyncDelta10of10k", "ferry-s")
	row(fmt.Sprintf("delta sync, 10 of %d changed", n), secs(fs), secs(nd.Delta.Seconds), fs/nd.Delta.Seconds, nd.Delta.TimedOut)
	info("  bytes per changed record", num(r.metric("BenchmarkSyncDelta10of10k", "ferry-B/chg")), num(nd.Delta.BytesPerChanged))
	fs = r.metric("BenchmarkSyncIdle10k", "ferry-s")
	row(fmt.Sprintf("idle resync, %d records", n), secs(fs), secs(nd.Idle.Seconds), fs/nd.Idle.Seconds, nd.Idle.TimedOut)
	info("  bytes", num(r.metric("BenchmarkSyncIdle10k", "ferry-B")), num(nd.Idle.Bytes))
	for _, v := range []struct{ sub, label string }{
		{"sync=on", "fsync per Put"}, {"sync=off", "NoSync"},
	} {
		rate := r.metric("BenchmarkLocalPut/"+v.sub, "ferry-rec/s")
		row(fmt.Sprintf("local writes, rec/s (ferry %s; automerge-repo: %d creates + flush, no fsync)", v.label, nd.LocalWrites.Records),
			num(rate), num(nd.LocalWrites.RecPerS), nd.LocalWrites.RecPerS/rate, false)
	}
	return b.String(), misses
}

// machine describes the machine; loadStart is the load average when the
// run began ("" when the output was read from a file: then only the
// load when the report was written is known).
func machine(loadStart string) string {
	var b strings.Builder
	model := "unknown"
	if c, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(c), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	gov := runtime.Version() + " (benchtable's build)"
	goCmd := os.Getenv("GO")
	if goCmd == "" {
		goCmd = "go"
	}
	if out, err := exec.Command(goCmd, "version").Output(); err == nil {
		gov = strings.TrimSpace(string(out))
	}
	mem := ""
	if m, err := os.ReadFile("/proc/meminfo"); err == nil {
		mem = strings.TrimSpace(strings.TrimPrefix(strings.SplitN(string(m), "\n", 2)[0], "MemTotal:"))
	}
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	fmt.Fprintf(&b, "- report written: %s\n", time.Now().UTC().Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(&b, "- nproc: %d\n", runtime.NumCPU())
	fmt.Fprintf(&b, "- cpu: %s\n", model)
	fmt.Fprintf(&b, "- memory: %s\n", mem)
	fmt.Fprintf(&b, "- kernel: %s %s/%s\n", strings.TrimSpace(string(kernel)), runtime.GOOS, runtime.GOARCH)
	fmt.Fprintf(&b, "- %s\n", gov)
	if loadStart != "" {
		fmt.Fprintf(&b, "- load average (1, 5, 15 min) at start: %s; at end: %s\n", loadStart, loadavg())
	} else {
		fmt.Fprintf(&b, "- load average (1, 5, 15 min) when this report was written: %s\n", loadavg())
	}
	return b.String()
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

func main() {
	var (
		outFile = flag.String("o", "", "write a markdown report (machine, table, raw output) to this file")
		rawFile = flag.String("raw", "", "also write the raw go test output to this file")
		goFile  = flag.String("go", "", "read go test output from this file instead of standard input")
		nodeF   = flag.String("node", "", "automerge-repo results (benchmarks/js/bench.mjs JSON): print the comparison")
		title   = flag.String("title", "ferry benchmarks", "report title")
		cmdline = flag.String("cmd", "", "the command that produced the output, for the report")
	)
	flag.Parse()
	loadStart := loadavg()
	if *goFile != "" {
		loadStart = ""
	}
	var (
		r   *run
		err error
	)
	if *goFile != "" {
		f, ferr := os.Open(*goFile)
		if ferr != nil {
			fatal(ferr)
		}
		r, err = parse(f, nil)
		f.Close()
	} else {
		r, err = parse(os.Stdin, os.Stdout)
	}
	if err != nil {
		fatal(err)
	}
	if *rawFile != "" {
		if err := os.WriteFile(*rawFile, []byte(strings.Join(r.raw, "\n")+"\n"), 0o644); err != nil {
			fatal(err)
		}
	}
	var rep strings.Builder
	fmt.Fprintf(&rep, "# %s\n\n## Machine\n\n%s\n", *title, machine(loadStart))
	if *cmdline != "" {
		fmt.Fprintf(&rep, "## Command\n\n```\n%s\n```\n\n", *cmdline)
	}
	tab := table(r)
	fmt.Fprintf(&rep, "## Go benchmarks\n\nMedians over runs; ratios are ferry / baseline unless named otherwise (below 1: ferry faster or smaller).\n\n%s\n", tab)
	fmt.Println()
	fmt.Print(tab)
	if mt := memTable(r); mt != "" {
		fmt.Fprintf(&rep, "## Memory\n\nPeak resident memory of child processes, one per workload (benchmarks/mem_bench_test.go), MiB.\n\n%s\n", mt)
		fmt.Println()
		fmt.Print(mt)
	}
	misses := 0
	if *nodeF != "" {
		b, err := os.ReadFile(*nodeF)
		if err != nil {
			fatal(err)
		}
		var nd node
		if err := json.Unmarshal(b, &nd); err != nil {
			fatal(fmt.Errorf("%s: %w", *nodeF, err))
		}
		if r.syncN != 0 && r.syncN != nd.N {
			fmt.Fprintf(os.Stderr, "benchtable: warning: Go sync benchmarks ran with n=%d, automerge-repo with n=%d\n", r.syncN, nd.N)
		}
		cmp, m := compare(r, &nd)
		misses = m
		head := fmt.Sprintf("## ferry against automerge-repo %s (automerge %s, Node.js %s), same machine, N = %d\n\n",
			nd.AutomergeRepo, nd.Automerge, nd.Node, nd.N)
		fmt.Fprintf(&rep, "%s%s\nautomerge-repo's process peak RSS (both repos): %s MiB.\n\n", head, cmp, num(nd.MaxRSSMiB))
		fmt.Println()
		fmt.Print(head, cmp)
		fmt.Printf("\n%d of the workloads faster on automerge-repo\n", misses)
		fmt.Fprintf(&rep, "%d of the workloads faster on automerge-repo.\n\n```json\n%s\n```\n\n", misses, strings.TrimSpace(string(b)))
	}
	fmt.Fprintf(&rep, "## Raw output\n\n```\n%s\n```\n", strings.Join(r.raw, "\n"))
	if *outFile != "" {
		if err := os.WriteFile(*outFile, []byte(rep.String()), 0o644); err != nil {
			fatal(err)
		}
		fmt.Printf("\nreport written to %s\n", *outFile)
	}
	switch {
	case r.failed || !r.passed:
		fmt.Fprintln(os.Stderr, "benchtable: the benchmark run failed (see above)")
		os.Exit(1)
	case len(r.results) == 0:
		fmt.Fprintln(os.Stderr, "benchtable: no benchmark results")
		os.Exit(1)
	}
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "benchtable:", err)
	os.Exit(2)
}
