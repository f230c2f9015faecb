# Web console (pkg/console): time to interactive of the overview with a large store.
.PHONY: bench-console

BENCH_TARGETS += bench-console

CONSOLE_BENCH_GATEWAYS ?= 3000

##@ bench
bench-console: ## Headless chromium loads the console's overview with 3,000 gateways and 30,000 endpoints in the store: time to interactive (the page's own performance mark, goal < 1 s) and API change to page p50/p99 (goal p99 < 500 ms)
	IOTFABRIC_BENCH_CONSOLE_GATEWAYS=$(CONSOLE_BENCH_GATEWAYS) $(GO) test -count=1 -timeout 20m -run '^TestBenchConsole$$' -v ./pkg/console/ 2>&1 | grep -vE '^(=== RUN|time=)' ; exit $${PIPESTATUS[0]}

.PHONY: bench-link-history
BENCH_TARGETS += bench-link-history

##@ bench
bench-link-history: ## Memory of the controller's in-memory gateway link history at its bound (50 transitions) for 10,000 gateways
	$(GO) test -run '^$$' -bench '^BenchmarkLinkHistoryMemory$$' -benchtime 1x ./pkg/controller/ | grep -E '^Benchmark'
