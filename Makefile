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
bench:
	$(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) ./benchmarks/...

## fuzz: every go-test fuzz target for FUZZTIME each.
fuzz:
	FUZZTIME=$(FUZZTIME) bash scripts/fuzz-all.sh

## build: the ferry binary in bin/.
build:
	$(GO) build -o bin/ferry ./cmd/ferry

## demo: the whole story in one process, then the real CLI on two stores.
demo: build
	bin/ferry demo
	bash scripts/cli-tour.sh

tidy:
	$(GO) mod tidy
