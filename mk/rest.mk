# REST API (pkg/rest): benchmark.
.PHONY: bench-rest

BENCH_TARGETS += bench-rest

##@ bench
bench-rest: ## REST API vs gRPC on one controller: GetNetwork per call, and endpoint-created-to-event latency p50/p99 on a watch (server-sent events vs gRPC stream)
	$(GO) test -run '^$$' -bench '^BenchmarkREST$$' -benchtime 2000x ./pkg/server/
