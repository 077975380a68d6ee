# ferry — developer targets. `make test` is what CI runs (see .ci/run).
GO        ?= go
PKGS      ?= ./...
FUZZTIME  ?= 20s
BENCHTIME ?= 1x
export CGO_ENABLED = 1

.PHONY: test test-short lint vet fmt bench fuzz demo soak tidy build

## test: lint (gofmt, vet, staticcheck), then every test with the race detector (what CI runs).
test: lint
	$(GO) test -race -count=1 -timeout 14m $(PKGS)

## test-short: the same without the race detector, for a quick loop.
test-short:
	$(GO) test -count=1 $(PKGS)

vet:
	$(GO) vet $(PKGS)

## lint: gofmt, go vet and staticcheck (installed from the Go module proxy).
lint: vet
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 $(PKGS)

fmt:
	gofmt -w $$(git ls-files '*.go')

## bench: the Go benchmarks with their in-process baselines; prints ratios.
# bench knobs: BENCH (-bench regexp), BENCH_N (FERRY_BENCH_N for every
# benchmark; empty: each one's default), RESULTS (where reports go).
BENCH      ?= .
BENCH_N    ?=
RESULTS    ?= benchmarks/results
BENCH_TIMEOUT ?= 90m
BENCH_DATE := $(shell date -u +%Y-%m-%d)
BENCH_CMD   = $(GO) test -run '^$$' -bench '$(BENCH)' -benchmem -benchtime $(BENCHTIME) -timeout $(BENCH_TIMEOUT) ./benchmarks/
bench:
	@mkdir -p $(RESULTS) bin
	$(GO) build -o bin/benchtable ./benchmarks/cmd/benchtable
	$(if $(BENCH_N),FERRY_BENCH_N=$(BENCH_N)) $(BENCH_CMD) 2>&1 | \
	  GO=$(GO) bin/benchtable -o $(RESULTS)/$(BENCH_DATE).md -cmd "$(if $(BENCH_N),FERRY_BENCH_N=$(BENCH_N) )$(BENCH_CMD)"

## bench-mem: the memory benchmarks (peak RSS of child processes, issue
## 14's targets) at 100,000 records.
.PHONY: bench-mem bench-large
bench-mem:
	$(MAKE) bench BENCH='^BenchmarkMem' BENCH_N=100000

## bench-large: the memory benchmarks at 1,000,000 records, a 100,000-change
## history and a 5,000,000-character text (hours; not part of make test).
bench-large:
	FERRY_MEM_HISTORY=100000 FERRY_MEM_TEXT=5000000 $(MAKE) bench BENCH='^BenchmarkMem' BENCH_N=1000000 BENCH_TIMEOUT=48h

## bench-compare: ferry's sync and local-write benchmarks and automerge-repo
## (Node.js, benchmarks/js) on the same workloads with COMPARE_N records;
## prints the side-by-side table, writes $(RESULTS)/compare-DATE-nN.md.
COMPARE_N ?= 10000
COMPARE    = $(RESULTS)/compare-$(BENCH_DATE)-n$(COMPARE_N)
.PHONY: bench-compare
bench-compare:
	@mkdir -p $(RESULTS) bin
	npm install --prefix benchmarks/js --no-audit --no-fund
	$(GO) build -o bin/benchtable ./benchmarks/cmd/benchtable
	FERRY_BENCH_N=$(COMPARE_N) $(GO) test -run '^$$' -bench '^Benchmark(SyncInitial10k|SyncDelta10of10k|SyncIdle10k|LocalPut)$$' \
	  -benchtime $(BENCHTIME) -timeout 90m ./benchmarks/ 2>&1 | GO=$(GO) bin/benchtable -raw $(COMPARE)-go.txt
	node benchmarks/js/bench.mjs --n $(COMPARE_N) > $(COMPARE)-automerge-repo.json
	GO=$(GO) bin/benchtable -go $(COMPARE)-go.txt -node $(COMPARE)-automerge-repo.json -o $(COMPARE).md \
	  -title "ferry against automerge-repo" -cmd "make bench-compare COMPARE_N=$(COMPARE_N)"

## fuzz: every go-test fuzz target for FUZZTIME each.
fuzz:
	FUZZTIME=$(FUZZTIME) bash scripts/fuzz-all.sh

## soak: replicas on disk, random edits, faulty syncs and restarts for
## SOAK_TIME, then convergence and no-loss checks (fuzz/soak). SEED replays
## a run's choices (printed by every run).
SOAK_TIME     ?= 60s
SOAK_REPLICAS ?= 4
SEED          ?=
soak:
	$(GO) run ./fuzz/soak -time $(SOAK_TIME) -replicas $(SOAK_REPLICAS) $(if $(SEED),-seed $(SEED))

## build: the ferry binary in bin/.
build:
	$(GO) build -o bin/ferry ./cmd/ferry

## demo: the whole story in one process, then the real CLI on two stores.
demo: build
	bin/ferry demo
	bash scripts/cli-tour.sh

tidy:
	$(GO) mod tidy
