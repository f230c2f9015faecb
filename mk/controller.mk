# Controller core (pkg/ipam, pkg/controller): benchmarks.
.PHONY: bench-ipam bench-controller bench-list

BENCH_TARGETS += bench-ipam bench-controller bench-list

##@ bench
bench-ipam: ## IPAM: persisted allocations/s and p50/p99 latency (bbolt, fsync on) against one-transaction-per-allocation
	$(GO) test -run '^$$' -bench 'BenchmarkAllocate' -benchtime 50000x ./pkg/ipam/

bench-controller: ## Controller: endpoints/s created in one bulk call (store, IPAM, bbolt with fsync)
	$(GO) test -run '^$$' -bench 'BenchmarkCreateEndpoints' -benchtime 50000x ./pkg/controller/

bench-list: ## Lists at scale: 300,000 endpoints and 200,000 routes paged through gRPC and iotfabricctl (time, peak live heap; about 5 min)
	$(GO) test -run '^$$' -bench 'BenchmarkListAtScale' -benchtime 1x -timeout 30m ./cmd/iotfabricctl/
