# Gateway data plane (pkg/overlay, cmd/vrouter-agent).
.PHONY: vmtest bench-overlay

TEST_EXTRA += vmtest
BENCH_TARGETS += bench-overlay

##@ test
vmtest: ## Run pkg/overlay's tests on Debian's kernel inside qemu (MPLSoUDP/MPLSoGRE end to end)
	@scripts/vmtest/run.sh test

##@ bench
bench-overlay: ## Overlay route programming vs ip -batch (host and VM) and MPLSoUDP vs plain TCP throughput (VM)
	$(GO) test -run '^$$' -bench 'BenchmarkSet' -benchtime 1x -count 1 ./pkg/overlay
	@scripts/vmtest/run.sh bench
