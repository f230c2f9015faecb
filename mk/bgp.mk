# BGP speaker (pkg/bgp) and the controller's BGP path (cmd/controller): FRR,
# BIRD and gobgpd in network namespaces (root).
.PHONY: bench-bgp bench-bgp-api bench-bgp-import test-bgp

BENCH_TARGETS += bench-bgp bench-bgp-api bench-bgp-import
BGP_BENCH_ROUTES ?= 100000
BGP_API_BENCH_ENDPOINTS ?= 100000

##@ bench
bench-bgp: ## 100,000 VPNv4 routes: iotfabric speaker vs BIRD into FRR, time ratio and memory per route (root)
	IOTFABRIC_BENCH_BGP=$(BGP_BENCH_ROUTES) $(GO) test -count=1 -timeout 20m -run '^TestBenchFRRvsBIRD$$' -v ./pkg/bgp/gobgp/ 2>&1 | grep -E '^(bench-bgp|  [a-zA-Z]|--- |ok|FAIL|PASS)' ; exit $${PIPESTATUS[0]}

bench-bgp-api: ## 100,000 endpoints through the API until FRR holds their routes, against BIRD sending as many (root)
	IOTFABRIC_BENCH_BGP_API=$(BGP_API_BENCH_ENDPOINTS) $(GO) test -count=1 -timeout 20m -run '^TestBenchEndpointsToFRR$$' -v ./cmd/controller/ 2>&1 | grep -E '^(bench-bgp-api|  |--- |ok|FAIL|PASS)'; exit $${PIPESTATUS[0]}

bench-bgp-import: ## 100,000 VPNv4 routes from BIRD into the speaker and route table: import rate with 0 and 1 gateway streams, live heap per route (root)
	IOTFABRIC_BENCH_BGP_IMPORT=$(BGP_BENCH_ROUTES) $(GO) test -count=1 -timeout 30m -run '^TestBenchImport$$' -v ./pkg/bgp/gobgp/ 2>&1 | grep -E '^(bench-bgp-import|  [a-zA-Z]|--- |ok|FAIL|PASS)' ; exit $${PIPESTATUS[0]}

##@ test
test-bgp: ## Interop tests of the BGP speaker with FRR, BIRD and gobgpd (root)
	$(GO) test -count=1 -v ./pkg/bgp/...
