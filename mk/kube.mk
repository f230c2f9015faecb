# Kubernetes (pkg/kube, pkg/kube/podwatch, internal/kubetest, internal/kubee2e, deploy/kubernetes, tools/kube).
.PHONY: kube-bin test-kube bench-kube

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
bench-kube: kube-bin ## 3,000 nodes / 30,000 pods in a real API server: controller cold start to reconciled, steady-state API writes, beside plain informers
	IOTFABRIC_BENCH=1 $(GO) test -count=1 -timeout 30m -run '^TestBenchKube$$' -v ./pkg/kube/ 2>&1 | grep -vE '^(=== RUN|time=)' ; exit $${PIPESTATUS[0]}
