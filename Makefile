# iotfabric — top-level build. `make help` lists the targets.
# Parts of the system add their own targets in mk/*.mk and extend the lists below:
#   TEST_EXTRA  targets `make test` runs after the Go tests (e.g. vmtest)
#   BENCH_TARGETS  targets `make bench` runs
#   DEMO_STEPS  scripts `make demo` runs, in order, after the core demo

SHELL := /bin/bash
export PATH := /usr/local/go/bin:$(PATH)
GO ?= go
BIN := bin
CMDS := $(notdir $(wildcard cmd/*))
TEST_EXTRA :=
BENCH_TARGETS :=
DEMO_STEPS :=
GOTESTFLAGS ?= -count=1 -timeout 25m

-include mk/*.mk

.DEFAULT_GOAL := help
.PHONY: help build test go-test bench proto proto-check lint demo deps clean

help: ## Show this help
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | sort | awk 'BEGIN{FS=":.*## "}{printf "  %-16s %s\n", $$1, $$2}'

deps: ## Install the Debian packages the tests and demo need (as root)
	@scripts/install-deps.sh

build: ## Build every binary into bin/
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/ ./cmd/...

test: deps proto-check lint go-test $(TEST_EXTRA) ## Install what is needed, then run every test (as root)

go-test:
	$(GO) test $(GOTESTFLAGS) ./...

bench: $(BENCH_TARGETS) ## Run every benchmark and print its figures

proto: ## Regenerate Go code from proto/ with the pinned generators
	@scripts/protogen.sh

proto-check: ## Fail when the committed generated code differs from a fresh `make proto`
	@scripts/protogen.sh --check

lint: ## gofmt and go vet
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go') ); \
	  if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

demo: build ## Build, start a controller and walk through the main job
	@scripts/demo.sh $(DEMO_STEPS)

clean: ## Remove build output
	rm -rf $(BIN)
