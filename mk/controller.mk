# Controller core (pkg/ipam, pkg/controller): benchmarks.
.PHONY: bench-ipam bench-controller bench-controller-bulk fuzz-validate

BENCH_TARGETS += bench-ipam bench-controller bench-controller-bulk

##@ bench
bench-ipam: ## IPAM: persisted allocations/s and p50/p99 latency (bbolt, fsync on) against one-transaction-per-allocation
	$(GO) test -run '^$$' -bench 'BenchmarkAllocate' -benchtime 50000x ./pkg/ipam/

bench-controller: ## Controller: endpoints/s created in one bulk call (store, IPAM, bbolt with fsync)
	$(GO) test -run '^$$' -bench 'BenchmarkCreateEndpoints' -benchtime 50000x ./pkg/controller/

bench-controller-bulk: ## Controller: 150,000 endpoints by one client in CreateEndpoints calls of 1,000 (bbolt): endpoints/s, never Aborted
	IOTFABRIC_BULK_ENDPOINTS=150000 $(GO) test -count=1 -run 'TestBulkCreateNeverAborted' -v -timeout 30m ./pkg/controller/ | grep -E 'endpoints/s|FAIL|ok'

##@ test
VALIDATE_FUZZTIME ?= 10s
fuzz-validate: ## Validation (pkg/validate): run each fuzzer of names, ids, subnets, underlay, route targets and RDs for VALIDATE_FUZZTIME (default 10s)
	@set -e; for fn in FuzzName FuzzEndpointIDOf FuzzSubnet FuzzUnderlay FuzzRouteTarget FuzzRouteDistinguisher; do \
	  echo "== $$fn"; $(GO) test -run '^$$' -fuzz "^$$fn$$" -fuzztime $(VALIDATE_FUZZTIME) ./pkg/validate/; done
