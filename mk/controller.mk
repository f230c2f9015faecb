# Controller core (pkg/ipam, pkg/controller): benchmarks.
.PHONY: bench-ipam bench-controller bench-controller-bulk bench-tls bench-list bench-register bench-admission fuzz-validate

BENCH_TARGETS += bench-ipam bench-controller bench-controller-bulk bench-tls bench-list bench-register bench-admission

# Endpoints per bulk call of bench-controller's authorization on/off figure.
AUTHZ_BENCH_ENDPOINTS ?= 10000
# Gateways reconnecting in bench-tls.
TLS_BENCH_GATEWAYS ?= 1000
# Gateways (2 endpoints each) reconnecting in bench-register.
REGISTER_BENCH_GATEWAYS ?= 2000
# bench-admission's cases: callers,slow work,for how long (then 2 ms). At
# 20 ms 5,000 callers are all served within the 5 s a call may queue (none
# is refused); 20,000 are, but that many goroutines make the figure noisy.
ADMISSION_BENCH_CASES ?= 5000,80ms,2s 5000,200ms,2s 5000,200ms,10m

##@ bench
bench-ipam: ## IPAM: persisted allocations/s and p50/p99 latency (bbolt, fsync on) against one-transaction-per-allocation
	$(GO) test -run '^$$' -bench 'BenchmarkAllocate' -benchtime 50000x ./pkg/ipam/

bench-controller: ## Controller: endpoints/s created in one bulk call (store, IPAM, bbolt with fsync); API authorization on vs off: endpoints/s and CNI ADD p99 (root)
	$(GO) test -run '^$$' -bench 'BenchmarkCreateEndpoints' -benchtime 50000x ./pkg/controller/
	IOTFABRIC_BENCH_AUTHZ=$(AUTHZ_BENCH_ENDPOINTS) $(GO) test -count=1 -timeout 20m -run '^TestBenchCreateEndpointsAuthz$$' -v ./pkg/api/ 2>&1 | grep -E '^(bench-|--- |ok|FAIL|PASS)'; exit $${PIPESTATUS[0]}
	IOTFABRIC_BENCH=1 $(GO) test -count=1 -timeout 10m -run '^TestBenchCNIAddAuthz$$' -v ./pkg/agent/ 2>&1 | grep -vE '^(=== RUN|time=)'; exit $${PIPESTATUS[0]}

bench-controller-bulk: ## Controller: 150,000 endpoints by one client in CreateEndpoints calls of 1,000 (bbolt): endpoints/s, never Aborted
	IOTFABRIC_BULK_ENDPOINTS=150000 $(GO) test -count=1 -run 'TestBulkCreateNeverAborted' -v -timeout 30m ./pkg/controller/ | grep -E 'endpoints/s|FAIL|ok'

bench-tls: ## 1,000 gateways reconnecting with mutual TLS: controller handshakes/s, full vs resumed (session tickets), and their ratio
	IOTFABRIC_BENCH_TLS=$(TLS_BENCH_GATEWAYS) $(GO) test -count=1 -timeout 20m -run '^TestBenchTLSReconnect$$' -v ./pkg/server/ 2>&1 | grep -E '^(bench-|  |--- |ok|FAIL|PASS)'; exit $${PIPESTATUS[0]}

bench-register: ## 2,000 gateways with 2 endpoints reconnecting to a controller on etcd (Register, full report, route stream), 64 at once: reconnects/s now (gateway cache), without the cache, as before, and a bare etcd read+txn; the cache's heap per gateway
	IOTFABRIC_BENCH_REGISTER=$(REGISTER_BENCH_GATEWAYS) $(GO) test -count=1 -timeout 20m -run '^TestBenchReconnect$$' -v ./pkg/controller/ 2>&1 | grep -E '^(bench-|--- |ok|FAIL|PASS)'; exit $${PIPESTATUS[0]}

bench-admission: ## Admission: callers at once on 64 slots, work slow then fast (or slow throughout); time until all served and refusals, delays as before (drain time, agents [d,2d]) vs the reservation clock (agents [d,d+d/4]), and their ratio (about 80 s)
	@set -o pipefail; for c in $(ADMISSION_BENCH_CASES); do IFS=, read -r n slow slowfor <<< "$$c"; \
	  IOTFABRIC_BENCH_ADMISSION=$$n ADMISSION_SLOW=$$slow ADMISSION_SLOW_FOR=$$slowfor $(GO) test -count=1 -timeout 10m -run '^TestBenchAdmission$$' -v ./pkg/api/ 2>&1 | grep -E '^(bench-|--- FAIL|FAIL)' || exit 1; done

bench-list: ## Lists at scale: 300,000 endpoints and 200,000 routes paged through gRPC and iotfabricctl (time, peak live heap; about 5 min)
	$(GO) test -run '^$$' -bench 'BenchmarkListAtScale' -benchtime 1x -timeout 30m ./cmd/iotfabricctl/

##@ test
VALIDATE_FUZZTIME ?= 10s
fuzz-validate: ## Validation (pkg/validate): run each fuzzer of names, ids, subnets, underlay, route targets and RDs for VALIDATE_FUZZTIME (default 10s)
	@set -e; for fn in FuzzName FuzzEndpointIDOf FuzzSubnet FuzzUnderlay FuzzRouteTarget FuzzRouteDistinguisher; do \
	  echo "== $$fn"; $(GO) test -run '^$$' -fuzz "^$$fn$$" -fuzztime $(VALIDATE_FUZZTIME) ./pkg/validate/; done
