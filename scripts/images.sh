#!/usr/bin/env bash
# Assembles the multi-platform OCI images from the binaries `make release` put in dist/bin,
# without a container daemon (tools/images, go-containerregistry):
#
#   scripts/images.sh VERSION   ->  dist/images/{controller,vrouter-agent,iqrf-collector}/   OCI layouts
#                                   dist/images/iotfabric-NAME-VERSION.oci.tar              OCI archives
#
# Environment: DIST (default dist), IMAGE_REPO (default ghcr.io/iotfabric: the images are
# named IMAGE_REPO/NAME:VERSION when imported).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/usr/local/go/bin:$PATH
version=${1:-}
dist=$(realpath -m "${DIST:-dist}")
[ -f "$dist/release.env" ] && . "$dist/release.env" && [ "$VERSION" = "$version" ] ||
  { echo "images: $dist holds no release '$version': run make release VERSION=$version first" >&2; exit 2; }
for d in amd64 arm64 armv7; do
  [ -d "$dist/bin/linux-$d" ] || { echo "images: no $dist/bin/linux-$d: make release builds every platform" >&2; exit 2; }
done
mkdir -p "$dist/images"
( cd tools/images && GOFLAGS=-mod=readonly go run . --dist "$dist" --version "$VERSION" --commit "$COMMIT" --date "$DATE" \
    --license "$(cat ../../packaging/LICENSE-ID)" ${IMAGE_REPO:+--repo "$IMAGE_REPO"} )
( cd "$dist/images" && sha256sum ./*.oci.tar | sed 's| \./| |' >SHA256SUMS )
