# Controller core: IPAM benchmark.
BENCH_TARGETS += bench-ipam

.PHONY: bench-ipam
bench-ipam: ## IPAM: persisted allocations/s and p50/p99 latency (bbolt, fsync on) against one-transaction-per-allocation
	$(GO) test -run '^$$' -bench 'BenchmarkAllocate' -benchtime 50000x ./pkg/ipam/

# The BGP step of the demo: an FRR edge router peers with the controller.
DEMO_STEPS += scripts/demo-bgp.sh
