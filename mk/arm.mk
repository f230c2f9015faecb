# ARM gateways (linux/arm GOARM=7, the Raspberry Pi 2 class, and linux/arm64): the Go
# tests under Debian's qemu-user, and the data plane on Debian's ARM kernels under
# qemu-system (docs/arm.md).
.PHONY: test-arm vet-arm vmtest-arm64 vmtest-armv7 vmtest-arm-smoke bench-footprint bench-agent

TEST_EXTRA += test-arm vmtest-arm-smoke
BENCH_TARGETS += bench-footprint

# The packages whose tests run whole under qemu-user: codecs, IPAM, the stores, the route
# table, the API logic, the BGP types, the CNI protocol, IQRF, and the route codec's kernel
# round trip in a fresh netns (root). The tests that start etcd, carbon or mosquitto run
# the host's (amd64) daemons: qemu-user passes execve of a native binary to the kernel.
ARM_TEST_PKGS := ./pkg/encap ./pkg/keys ./pkg/model ./pkg/logkey ./pkg/ipam ./pkg/vpn ./pkg/cni \
	./pkg/store/bolt ./pkg/store/etcd ./pkg/api ./pkg/controller ./pkg/bgp ./pkg/bgp/bgptest \
	./pkg/tlsconfig ./pkg/overlay/internal/rtnl ./pkg/overlay/overlaytest ./pkg/iqrf/...

# Run with some tests skipped: pkg/agent's core (labels, addresses, desired state, state
# file, headless mode, TLS, goroutine leaks) and pkg/server. Skipped, and why:
# - tests that start the test binary again as a child (agent or controller processes to
#   SIGKILL): the kernel cannot exec an ARM binary without binfmt_misc, which is not mounted;
# - tests that program a gateway through pkg/overlay in network namespaces: qemu-user's
#   netlink translation refuses generic netlink (FOU) and has no rule or nexthop messages.
#   `make vmtest-arm64` / `make vmtest-armv7` run those on ARM kernels instead;
# - TestRoleTable: each call has 500 ms, too little for a first TLS handshake under emulation.
ARM_TEST_PARTIAL_PKGS := ./pkg/agent ./pkg/server
ARM_TEST_SKIP := ^Test(DeadPathNoticedByKeepalive|SIGKILLDuringAdd|PodsRoutesAtFRR|TwoControllersShareEtcd|AgentRestartKeepsLabelsAndTraffic|TwoGatewaysThroughTheController|KilledControllerMarkersSweptAtRestart|GatewayDownAfterOtherControllerKilled|RoleTable)$$

# Not run under qemu-user at all:
# - pkg/overlay, cmd/cni-plugin, cmd/vrouter-agent: the netlink limits above (vmtest-arm*);
# - internal/netnstest, internal/testenv, pkg/bgp/gobgp, cmd/controller, cmd/iotfabricctl,
#   cmd/iqrf-collector: their TestMain or tests exec the test binary or a binary built
#   for the target (exec format error without binfmt_misc).

# The VMs make bench-footprint measures the agent in (scripts/vmtest/arch.sh targets).
FOOTPRINT_ARCHS ?= amd64 armv7

# The VM make bench-agent measures the agent in.
BENCH_AGENT_ARCH ?= amd64

# The kernels make vmtest-arm-smoke boots (scripts/vmtest/arch.sh targets), and the tests it
# runs there (go test -run; VMTEST_SMOKE_RUN of scripts/vmtest/arch.sh). docs/arm.md has
# the times.
ARM_SMOKE_ARCHS ?= armv7 arm64
ARM_SMOKE_RUN ?= ^TestVMOverlay$$

# GOARCH:GOARM:qemu-user binary
ARM_TARGETS := arm:7:qemu-arm arm64::qemu-aarch64

##@ test
test-arm: vet-arm ## Go tests for linux/arm (GOARM=7) and linux/arm64 under qemu-user (ARM_TEST_PKGS; root for the netns test)
	@set -e; t0=$$(date +%s); for t in $(ARM_TARGETS); do \
	  IFS=: read -r arch arm qemu <<<"$$t"; \
	  command -v $$qemu >/dev/null || { echo "test-arm: $$qemu missing (scripts/deps/arm.txt; run make deps)" >&2; exit 2; }; \
	  echo "== linux/$$arch$${arm:+ GOARM=$$arm} under $$qemu"; \
	  export GOARCH=$$arch GOARM=$$arm CGO_ENABLED=0 IOTFABRIC_TEST_STRICT=1; \
	  $(GO) test $(GOTESTFLAGS) -exec $$qemu $(ARM_TEST_PKGS); \
	  $(GO) test $(GOTESTFLAGS) -exec $$qemu -skip '$(ARM_TEST_SKIP)' $(ARM_TEST_PARTIAL_PKGS); \
	done; echo "test-arm: $$(( $$(date +%s) - t0 )) s"

vet-arm: ## go vet for linux/arm GOARM=7 (32-bit: atomic alignment, constant overflow, struct layout)
	GOARCH=arm GOARM=7 CGO_ENABLED=0 $(GO) vet ./...

vmtest-arm64: ## pkg/overlay's tests and the agent's VM tests (pods over MPLSoUDP, agent upgrade) on Debian's arm64 kernel in qemu
	@scripts/vmtest/arch.sh arm64

vmtest-armv7: ## The same on Debian's 32-bit armmp-lpae kernel (Raspberry Pi 2 class) in qemu, binaries GOARCH=arm GOARM=7
	@scripts/vmtest/arch.sh armv7

vmtest-arm-smoke: ## Short form for make test: MPLSoUDP/MPLSoGRE pod to pod and the adoption of the kernel state (TestVMOverlay) on the armmp-lpae and arm64 kernels in qemu (ARM_SMOKE_ARCHS)
	@set -e; t0=$$(date +%s); for a in $(ARM_SMOKE_ARCHS); do \
	  VMTEST_SMOKE_RUN='$(ARM_SMOKE_RUN)' scripts/vmtest/arch.sh $$a smoke; \
	done; echo "vmtest-arm-smoke: $(ARM_SMOKE_ARCHS) in $$(( $$(date +%s) - t0 )) s"

##@ bench
bench-footprint: ## Agent RSS/heap with 0, 1,000, 10,000 routes (amd64 and armv7 VMs) and CPU per route change; collector RSS/heap; binary sizes; peak RSS of --version
	@IOTFABRIC_FOOTPRINT=1 $(GO) test -count=1 -timeout 5m -run '^TestFootprintCollector$$' -v ./cmd/iqrf-collector 2>&1 | \
	  grep -E '^(FOOTPRINT|--- FAIL|FAIL)|_test.go'; test $${PIPESTATUS[0]} -eq 0
	@for a in $(FOOTPRINT_ARCHS); do echo "FOOTPRINT == vrouter-agent in the $$a VM"; \
	  scripts/vmtest/arch.sh $$a footprint 2>&1 | grep -aE '^(FOOTPRINT|--- FAIL|FAIL)|_test.go|^vmtest'; test $${PIPESTATUS[0]} -eq 0 || exit 1; done
	@d=$$(mktemp -d); trap 'rm -rf $$d' EXIT; \
	  printf 'FOOTPRINT %-28s %12s %12s %12s (go build -trimpath, CGO off; bytes)\n' binary linux/amd64 linux/arm64 linux/arm/v7; \
	  for c in vrouter-agent cni-plugin iqrf-collector; do \
	    for a in amd64 arm64 arm; do GOARCH=$$a GOARM=7 CGO_ENABLED=0 $(GO) build -trimpath -o $$d/$$c-$$a ./cmd/$$c || exit 1; done; \
	    printf 'FOOTPRINT %-28s %12d %12d %12d\n' $$c $$(stat -c %s $$d/$$c-amd64 $$d/$$c-arm64 $$d/$$c-arm); \
	  done; \
	  for c in vrouter-agent iqrf-collector; do \
	    printf 'FOOTPRINT %-28s %s KiB peak RSS of --version (linux/amd64, on this machine)\n' $$c "$$(/usr/bin/time -f %M $$d/$$c-amd64 --version 2>&1 >/dev/null | tail -1)"; \
	  done

bench-agent: ## The agent alone in the amd64 VM: RSS and heap at 1,000 and 10,000 routes, CPU per route change at 1,000 and at 10,000 routes (BENCH_AGENT_ARCH=armv7 for 32-bit)
	@scripts/vmtest/arch.sh $(BENCH_AGENT_ARCH) footprint 2>&1 | grep -aE '^(FOOTPRINT|--- FAIL|FAIL)|_test.go|^vmtest'; test $${PIPESTATUS[0]} -eq 0
