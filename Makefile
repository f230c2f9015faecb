# iotfabric — top-level build. `make help` lists the public targets by group.
#
# Each part of the system keeps its own targets in mk/<part>.mk and may extend:
#   TEST_EXTRA     targets `make test` runs after the Go tests (e.g. vmtest)
#   BENCH_TARGETS  targets `make bench` runs
# The demo's steps are listed here, in the order they run (DEMO_STEPS below).
#
# Every .PHONY target is public and carries its help after `## ` on its rule
# line; a `##@ GROUP` line (build, test, bench, demo, other) names the group of
# the targets below it in the same file. `make help-check` (part of `make lint`)
# fails when a public target has no help text.

SHELL := /bin/bash
export PATH := /usr/local/go/bin:$(PATH)
GO ?= go
BIN := bin
CMDS := $(notdir $(wildcard cmd/*))
TEST_EXTRA :=
BENCH_TARGETS :=
GOTESTFLAGS ?= -count=1 -timeout 25m

# The steps `make demo` runs after scripts/demo-core.sh, in this order.
DEMO_STEPS := \
	scripts/demo-bgp.sh \
	scripts/demo-iqrf.sh \
	scripts/demo-overlay.sh \
	scripts/demo-cni.sh

-include mk/*.mk

.DEFAULT_GOAL := help
.PHONY: help help-check build test go-test bench proto proto-check lint demo deps clean

##@ other
help: ## Show the public targets by group
	@awk -f mk/help.awk $(MAKEFILE_LIST)

help-check: ## Fail when a .PHONY target has no `## help` text (or a target with help is not .PHONY)
	@awk -v mode=check -f mk/help.awk $(MAKEFILE_LIST)

deps: ## Install the Debian packages the tests and demo need (as root)
	@scripts/install-deps.sh

clean: ## Remove build output
	rm -rf $(BIN)

##@ build
build: ## Build every binary into bin/
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/ ./cmd/...

proto: ## Regenerate Go code from proto/ with the pinned generators
	@scripts/protogen.sh

##@ test
test: deps proto-check lint go-test $(TEST_EXTRA) ## Install what is needed, then run every test (as root)

go-test: ## Run the Go tests only (`go test ./...` with GOTESTFLAGS)
	IOTFABRIC_TEST_STRICT=1 $(GO) test $(GOTESTFLAGS) ./...

proto-check: ## Fail when the committed generated code differs from a fresh `make proto`
	@scripts/protogen.sh --check

lint: help-check ## help-check, gofmt, go vet and staticcheck (pinned in go.mod as a tool)
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go') ); \
	  if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) tool staticcheck ./...

##@ bench
bench: $(BENCH_TARGETS) ## Run every benchmark and print its figures

##@ demo
demo: build ## Build, start a controller and walk through the main job (steps: DEMO_STEPS)
	@scripts/demo.sh $(DEMO_STEPS)
