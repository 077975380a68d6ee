// Package benchmarks holds ferry's cross-package benchmarks. Each runs its
// baseline (raw automerge-go, ...) in the same process and reports the ratio
// with b.ReportMetric. Run them with `make bench` or
// `go test -run '^$' -bench . -benchtime 200x ./benchmarks/`.
package benchmarks
