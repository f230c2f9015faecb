# Release artefacts: cross-compiled binaries (scripts/release.sh), Debian packages
# (scripts/deb.sh, packaging/), OCI images (scripts/images.sh, tools/images), and their checks.
# Output goes to dist/ (ignored by git). docs/install.md describes all of it.
.PHONY: release release-verify deb images package-test images-test size-check

TEST_EXTRA += size-check

# The gateway's binaries and their size goal on linux/arm/v7 (bytes; MB = 10^6, as the
# README's table), built as make release builds them.
GATEWAY_BINARIES := vrouter-agent cni-plugin iqrf-collector
GATEWAY_MAX_BYTES := 20000000

VERSION ?=

##@ build
release: ## Cross-compile every binary for linux/amd64, arm64, arm/v7 into dist/ (VERSION=x.y.z; static, reproducible, SHA256SUMS, size table)
	@RELEASE_PLATFORMS="$(RELEASE_PLATFORMS)" scripts/release.sh $(VERSION)

release-verify: ## Build VERSION again from scratch (empty Go cache, another path) and check every binary is byte-identical to dist/ (RELEASE_PLATFORMS=armv7: one platform)
	@RELEASE_PLATFORMS="$(RELEASE_PLATFORMS)" scripts/release.sh --verify $(VERSION)

deb: release ## Debian packages iotfabric-gateway and iotfabric-controller for amd64, arm64, armhf into dist/ (VERSION=x.y.z)
	@scripts/deb.sh $(VERSION)

images: release ## Multi-arch OCI images (controller, vrouter-agent, iqrf-collector) into dist/images/, without a container daemon (VERSION=x.y.z)
	@scripts/images.sh $(VERSION)

##@ test
package-test: ## Debian packages: lintian, then install, systemd-analyze verify, upgrade 0.0.1->0.0.2, remove, purge in a fresh Debian 12 root (root)
	@scripts/package-test.sh

size-check: ## Fail when a gateway binary (agent, CNI plugin, collector) is over 20 MB on linux/arm/v7 (-trimpath -s -w, CGO off), or when the agent or the plugin links client-go or k8s.io/api
	@d=$$(mktemp -d); trap 'rm -rf $$d' EXIT; t0=$$(date +%s); \
	  CGO_ENABLED=0 GOOS=linux GOARCH=arm GOARM=7 $(GO) build -trimpath -ldflags '-s -w' -o $$d/ $(addprefix ./cmd/,$(GATEWAY_BINARIES)) || exit 1; \
	  fail=0; for b in $(GATEWAY_BINARIES); do n=$$(stat -c %s $$d/$$b); \
	    printf 'size-check: %-16s %10d bytes on linux/arm/v7 (limit %d)\n' $$b $$n $(GATEWAY_MAX_BYTES); \
	    [ $$n -le $(GATEWAY_MAX_BYTES) ] || { echo "size-check: $$b is over the limit" >&2; fail=1; }; done; \
	  for b in vrouter-agent cni-plugin; do \
	    if $(GO) version -m $$d/$$b | grep -E '^\s+dep\s+k8s.io/(client-go|api)\s'; then \
	      echo "size-check: $$b links client-go or k8s.io/api (pkg/kube/kubelite is the gateway's client)" >&2; fail=1; fi; done; \
	  echo "size-check: $$(( $$(date +%s) - t0 )) s"; exit $$fail

images-test: ## OCI images: skopeo sees three platforms, containerd imports them, ctr run prints --version (root)
	@scripts/images-test.sh
