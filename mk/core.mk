# Controller core: IPAM benchmark.
BENCH_TARGETS += bench-ipam

.PHONY: bench-ipam
bench-ipam: ## IPAM: persisted allocations/s and p50/p99 latency (bbolt, fsync on) against one-transaction-per-allocation
	$(GO) test -run '^$$' -bench 'BenchmarkAllocate' -benchtime 50000x ./pkg/ipam/

# The BGP step of the demo: an FRR edge router peers with the controller.
DEMO_STEPS += scripts/demo-bgp.sh

BENCH_TARGETS += bench-controller bench-bgp-api
BGP_API_BENCH_ENDPOINTS ?= 100000

.PHONY: bench-controller bench-bgp-api
bench-controller: ## Controller: endpoints/s created in one bulk call (store, IPAM, bbolt with fsync)
	$(GO) test -run '^$$' -bench 'BenchmarkCreateEndpoints' -benchtime 50000x ./pkg/controller/

bench-bgp-api: ## 100,000 endpoints through the API until FRR holds their routes, against BIRD sending as many (root)
	IOTFABRIC_BENCH_BGP_API=$(BGP_API_BENCH_ENDPOINTS) $(GO) test -count=1 -timeout 20m -run '^TestBenchEndpointsToFRR$$' -v ./cmd/controller/ 2>&1 | grep -E '^(bench-bgp-api|  |--- |ok|FAIL|PASS)'; exit $${PIPESTATUS[0]}
