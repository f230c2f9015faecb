# Soak test and the bounds it checks (internal/soak, docs/soak.md).
.PHONY: bench-route-watch soak soak-ci

BENCH_TARGETS += bench-route-watch
TEST_EXTRA += soak-ci

SOAK_DURATION ?= 10m

##@ test
soak: ## Soak (SOAK_DURATION, default 10m, at most 10m): API, CNI, a flapping FRR edge router, SIGKILLed agents and controller at once; then the invariants, memory and log bounds (root)
	IOTFABRIC_SOAK_DURATION=$(SOAK_DURATION) IOTFABRIC_TEST_STRICT=1 $(GO) test -count=1 -timeout 30m -run '^TestSoak$$' -v ./internal/soak/ 2>&1 | grep -vE '^(=== RUN|time=)' ; exit $${PIPESTATUS[0]}

soak-ci: ## The soak's 2-minute form, as `make test` runs it (about 3 minutes)
	@$(MAKE) --no-print-directory soak SOAK_DURATION=2m

##@ bench
bench-route-watch: ## Heap a RouteService watch holds while it sends the snapshot of 200,000 routes, paged vs the whole copy it made before
	IOTFABRIC_WATCH_ROUTES=200000 $(GO) test -count=1 -timeout 10m -run '^TestRouteWatchSnapshotMemory$$' -v ./pkg/vpn/ 2>&1 | grep -E '^(route watch|--- FAIL|FAIL|ok)'; exit $${PIPESTATUS[0]}
