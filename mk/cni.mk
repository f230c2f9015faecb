# Gateway agent and CNI plugin (pkg/agent, pkg/cni, cmd/cni-plugin).
.PHONY: bench-cni test-cni-faults install-cni vmtest-cni

BENCH_TARGETS += bench-cni
TEST_EXTRA += vmtest-cni

##@ bench
bench-cni: ## CNI ADD p50/p99 (serial, 32 at a time) vs reference bridge+host-local; propagation p99, 1,000 endpoints over 10 gateways (root)
	IOTFABRIC_BENCH=1 $(GO) test -count=1 -timeout 10m -run '^TestBench(CNIAdd|Propagation)$$' -v ./pkg/agent/ 2>&1 | grep -vE '^(=== RUN|time=)' ; exit $${PIPESTATUS[0]}

##@ test
test-cni-faults: ## SIGKILL of the plugin or the agent during ADD, 1,000 rounds, then GC: no leak, no duplicate (root)
	IOTFABRIC_FAULT_ROUNDS=1000 $(GO) test -count=1 -timeout 20m -run '^TestSIGKILLDuringAdd$$' -v ./pkg/agent/

vmtest-cni: ## Two gateways' agents and pods added through libcni, under Debian's kernel in qemu: the pods reach each other over MPLSoUDP
	@scripts/vmtest-cni.sh

##@ build
install-cni: build ## Install the plugin as /opt/cni/bin/iotfabric and the example /etc/cni/net.d/10-iotfabric.conflist (root)
	install -D -m 0755 $(BIN)/cni-plugin /opt/cni/bin/iotfabric
	install -D -m 0644 examples/cni/10-iotfabric.conflist /etc/cni/net.d/10-iotfabric.conflist
