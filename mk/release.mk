# Release artefacts: cross-compiled binaries (scripts/release.sh), Debian packages
# (scripts/deb.sh, packaging/), OCI images (scripts/images.sh, tools/images), and their checks.
# Output goes to dist/ (ignored by git). docs/install.md describes all of it.
.PHONY: release release-verify deb

VERSION ?=

##@ build
release: ## Cross-compile every binary for linux/amd64, arm64, arm/v7 into dist/ (VERSION=x.y.z; static, reproducible, SHA256SUMS, size table)
	@scripts/release.sh $(VERSION)

release-verify: ## Build VERSION again from scratch (empty Go cache, another path) and check every binary is byte-identical to dist/
	@scripts/release.sh --verify $(VERSION)

deb: release ## Debian packages iotfabric-gateway and iotfabric-controller for amd64, arm64, armhf into dist/ (VERSION=x.y.z)
	@scripts/deb.sh $(VERSION)

