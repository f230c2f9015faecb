# BGP speaker (pkg/bgp): benchmark against BIRD into FRR, in network namespaces (root).
.PHONY: bench-bgp test-bgp

BENCH_TARGETS += bench-bgp
BGP_BENCH_ROUTES ?= 100000

bench-bgp: ## 100,000 VPNv4 routes: iotfabric speaker vs BIRD into FRR, time ratio and memory per route (root)
	IOTFABRIC_BENCH_BGP=$(BGP_BENCH_ROUTES) $(GO) test -count=1 -timeout 20m -run '^TestBenchFRRvsBIRD$$' -v ./pkg/bgp/gobgp/ 2>&1 | grep -E '^(bench-bgp|  [a-zA-Z]|--- |ok|FAIL|PASS)' ; exit $${PIPESTATUS[0]}

test-bgp: ## Interop tests of the BGP speaker with FRR, BIRD and gobgpd (root)
	$(GO) test -count=1 -v ./pkg/bgp/...
