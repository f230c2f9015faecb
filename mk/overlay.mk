# Gateway data plane (pkg/overlay, cmd/vrouter-agent).
.PHONY: vmtest bench-overlay

TEST_EXTRA += vmtest
BENCH_TARGETS += bench-overlay

##@ test
vmtest: ## Run pkg/overlay's tests on Debian's kernel inside qemu (MPLSoUDP/MPLSoGRE end to end)
	@scripts/vmtest/run.sh test

##@ bench
bench-overlay: ## Overlay route programming vs ip -batch (host and VM); TCP throughput plain vs VXLAN vs MPLSoUDP kernel path vs BPF fast path (VM)
	$(GO) test -run '^$$' -bench 'BenchmarkSet' -benchtime 1x -count 1 ./pkg/overlay
	@scripts/vmtest/run.sh bench
