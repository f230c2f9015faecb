# Gateway data plane (pkg/overlay, cmd/vrouter-agent).
.PHONY: vmtest bench-overlay

TEST_EXTRA += vmtest
BENCH_TARGETS += bench-overlay

##@ test
vmtest: ## Run pkg/overlay's tests on Debian's kernel inside qemu (MPLSoUDP/MPLSoGRE end to end, BPF fast path, an FRR edge router)
	@scripts/vmtest/run.sh test

##@ bench
bench-overlay: ## Overlay route programming vs ip -batch (host and VM); TCP throughput, frames and CPU s per Gbit (sender, receiver) plain, VXLAN, MPLSoUDP/MPLSoGRE kernel path, lwt and tc BPF fast path at MTU 1500 and 9000 (VM)
	$(GO) test -run '^$$' -bench 'BenchmarkSet' -benchtime 1x -count 1 ./pkg/overlay
	@scripts/vmtest/run.sh bench
