# Release artefacts: cross-compiled binaries (scripts/release.sh), Debian packages
# (scripts/deb.sh, packaging/), OCI images (scripts/images.sh, tools/images), and their checks.
# Output goes to dist/ (ignored by git). docs/install.md describes all of it.
.PHONY: release release-verify deb images package-test images-test

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

images-test: ## OCI images: skopeo sees three platforms, containerd imports them, ctr run prints --version (root)
	@scripts/images-test.sh
