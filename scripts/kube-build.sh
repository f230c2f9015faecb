#!/usr/bin/env bash
# Builds kube-apiserver and kubectl from the k8s.io/kubernetes module pinned in
# tools/kube/go.mod and caches them by version, so the Kubernetes integration
# tests (internal/kubetest) run against a real API server.
#
#   scripts/kube-build.sh          build into $KUBE_CACHE/<version>/ unless present; print the directory
#   scripts/kube-build.sh --dir    print the directory only (no build)
#
# Cold build: about 6 minutes on 2 cores (2.7 GB of Go build cache); with a
# warm build cache it takes seconds. The binaries are never committed.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/usr/local/go/bin:$PATH
GO=${GO:-go}
KUBE_CACHE=${KUBE_CACHE:-/var/cache/iotfabric/kube}
ver=$(awk '$1=="require" && $2=="k8s.io/kubernetes" {print $3}' tools/kube/go.mod)
[ -n "$ver" ] || { echo "kube-build: no k8s.io/kubernetes version in tools/kube/go.mod" >&2; exit 1; }
dir=$KUBE_CACHE/$ver
if [ "${1:-}" = --dir ]; then echo "$dir"; exit 0; fi
if [ -x "$dir/kube-apiserver" ] && [ -x "$dir/kubectl" ]; then echo "$dir"; exit 0; fi
mkdir -p "$dir"
minor=$(echo "$ver" | cut -d. -f2)
ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$ver -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
start=$(date +%s)
for cmd in kube-apiserver kubectl; do
	[ -x "$dir/$cmd" ] && continue
	echo "kube-build: building $cmd $ver (cold: minutes; warm: seconds)" >&2
	(cd tools/kube && $GO build -trimpath -ldflags "$ldflags" -o "$dir/.$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd")
	mv -f "$dir/.$cmd.tmp" "$dir/$cmd"
done
echo "kube-build: $ver built in $(( $(date +%s) - start )) s" >&2
echo "$dir"
