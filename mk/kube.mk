# Kubernetes (pkg/kube, pkg/kube/podwatch, internal/kubetest, internal/kubee2e, deploy/kubernetes, tools/kube).
.PHONY: kube-bin test-kube bench-kube bench-kube-takeover

# The Kubernetes tests run against a real kube-apiserver built from tools/kube.
go-test: kube-bin
BENCH_TARGETS += bench-kube

##@ build
kube-bin: ## Build kube-apiserver and kubectl from tools/kube once per version into /var/cache/iotfabric/kube/<version> (cold about 6 min on 2 cores; warm build cache: seconds)
	@scripts/kube-build.sh >/dev/null

##@ test
test-kube: kube-bin ## The Kubernetes tests only: CRD reconciliation, namespaces, nodes, pod GC, lease, manifests and RBAC, and the end-to-end test (controller, FRR, two agents, libcni), against a real API server
	IOTFABRIC_TEST_STRICT=1 $(GO) test -count=1 -timeout 15m ./internal/kubetest/ ./internal/kubee2e/ ./pkg/kube/... ./deploy/...

##@ bench
# BENCH_KUBE_STEADY is how long steady state is watched for API writes (CI may keep a short form, e.g. 30s).
BENCH_KUBE_STEADY ?= 5m

bench-kube: kube-bin ## 3,000 nodes / 30,000 pods in a real API server: controller cold start to reconciled, steady-state API writes over BENCH_KUBE_STEADY (5m), beside plain informers; ADD->FRR p50/p99 (empty cluster and at that scale)
	IOTFABRIC_BENCH=1 IOTFABRIC_KUBE_STEADY=$(BENCH_KUBE_STEADY) $(GO) test -count=1 -timeout 60m -run '^TestBenchKube$$' -v ./pkg/kube/ 2>&1 | grep -vE '^(=== RUN|time=)' ; exit $${PIPESTATUS[0]}
	IOTFABRIC_BENCH=1 $(GO) test -count=1 -timeout 60m -run '^TestBenchKubeAddToFRR$$' -v ./internal/kubee2e/ 2>&1 | grep -E '^(bench-kube|---|ok|FAIL)|setup:' ; exit $${PIPESTATUS[0]}

bench-kube-takeover: kube-bin ## Two controller processes on one API server's Lease: the leader SIGKILLed, the time until the other holds the Lease
	$(GO) test -count=1 -timeout 5m -run '^TestLeaderTakeoverSIGKILL$$' -v ./internal/kubee2e/ 2>&1 | grep -E 'took the Lease|^(---|ok|FAIL)' ; exit $${PIPESTATUS[0]}
