# Soak test and the bounds it checks (internal/soak, docs/soak.md).
.PHONY: bench-route-watch

BENCH_TARGETS += bench-route-watch

##@ bench
bench-route-watch: ## Heap a RouteService watch holds while it sends the snapshot of 200,000 routes, paged vs the whole copy it made before
	IOTFABRIC_WATCH_ROUTES=200000 $(GO) test -count=1 -timeout 10m -run '^TestRouteWatchSnapshotMemory$$' -v ./pkg/vpn/ 2>&1 | grep -E '^(route watch|--- FAIL|FAIL|ok)'; exit $${PIPESTATUS[0]}
