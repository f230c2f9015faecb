#!/usr/bin/env bash
# Proves the OCI images (`make images-test`, as root), after `make images VERSION=...`:
#
#  1. skopeo (Debian) reads each OCI archive and layout: the index has linux/amd64,
#     linux/arm64 and linux/arm/v7, and each platform's config has the OCI labels;
#  2. containerd (Debian), started here with its own root, state, socket and config (and
#     stopped at the end), imports every archive for all platforms;
#  3. ctr run: each image's entrypoint binary prints --version for this machine's platform,
#     and the agent's image installs the CNI plugin into a host directory (install-cni);
#  4. the images are reproducible: built again from the same binaries, the archives are
#     byte-identical.
#
# Environment: DIST (default dist).
set -euo pipefail
cd "$(dirname "$0")/.."
dist=${DIST:-dist}
fail() { echo "images-test: FAIL: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || fail "run as root (containerd)"
for p in skopeo:skopeo containerd:containerd ctr:containerd runc:runc python3:python3; do
  command -v "${p%%:*}" >/dev/null || fail "${p%%:*} not found (Debian package ${p#*:})"
done
[ -f "$dist/release.env" ] || fail "no $dist/release.env: run make images VERSION=x.y.z first"
. "$dist/release.env"
t0=$(date +%s)
names="controller vrouter-agent iqrf-collector"

echo "images-test: skopeo"
for n in $names; do
  a=$dist/images/iotfabric-$n-$VERSION.oci.tar
  [ -f "$a" ] || fail "no $a: run make images VERSION=$VERSION"
  plats=$(skopeo inspect --raw "oci-archive:$a" | python3 -c '
import json, sys
idx = json.load(sys.stdin)
assert idx["mediaType"] == "application/vnd.oci.image.index.v1+json", idx["mediaType"]
print(" ".join(sorted("/".join(filter(None, [m["platform"]["os"], m["platform"]["architecture"], m["platform"].get("variant")])) for m in idx["manifests"])))')
  [ "$plats" = "linux/amd64 linux/arm/v7 linux/arm64" ] || fail "$n: platforms '$plats'"
  for arch in amd64 arm64 arm; do
    variant=; [ $arch = arm ] && variant=v7
    skopeo inspect --override-os linux --override-arch $arch ${variant:+--override-variant $variant} "oci-archive:$a" |
      python3 -c '
import json, sys
i = json.load(sys.stdin)
want = {"org.opencontainers.image.version": sys.argv[1], "org.opencontainers.image.revision": sys.argv[2],
        "org.opencontainers.image.licenses": sys.argv[4]}
for k, v in want.items():
    assert i["Labels"].get(k) == v, (k, i["Labels"].get(k))
for k in ("org.opencontainers.image.source", "org.opencontainers.image.created"):
    assert i["Labels"].get(k), k
assert i["Architecture"] == sys.argv[3], i["Architecture"]
' "$VERSION" "$COMMIT" $arch "$(cat packaging/LICENSE-ID)" || fail "$n $arch: labels or architecture"
  done
  skopeo inspect --raw "oci:$dist/images/$n:$VERSION" >/dev/null || fail "$n: the OCI layout cannot be read"
  echo "  $n: $plats; labels version $VERSION, revision ${COMMIT:0:12}, source, licenses $(cat packaging/LICENSE-ID), created"
done

echo "images-test: containerd"
tmp=$(mktemp -d /var/tmp/iotfabric-images-test.XXXXXX)
cpid=
cleanup() {
  if [ -n "$cpid" ]; then
    ctr --address "$tmp/sock" tasks ls -q 2>/dev/null | while read -r t; do ctr --address "$tmp/sock" tasks kill -s KILL "$t" >/dev/null 2>&1 || true; done
    kill -TERM "$cpid" 2>/dev/null; wait "$cpid" 2>/dev/null || true
  fi
  grep " $tmp/" /proc/self/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
snap=overlayfs
mkdir -p "$tmp/o/l" "$tmp/o/u" "$tmp/o/w" "$tmp/o/m"
mount -t overlay overlay -o "lowerdir=$tmp/o/l,upperdir=$tmp/o/u,workdir=$tmp/o/w" "$tmp/o/m" 2>/dev/null && umount "$tmp/o/m" || snap=native
cat >"$tmp/config.toml" <<TOML
version = 2
root = "$tmp/root"
state = "$tmp/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$tmp/sock"
[ttrpc]
  address = "$tmp/sock.ttrpc"
[debug]
  address = "$tmp/debug.sock"
TOML
containerd --config "$tmp/config.toml" >"$tmp/containerd.log" 2>&1 &
cpid=$!
for _ in $(seq 100); do ctr --address "$tmp/sock" version >/dev/null 2>&1 && break; sleep 0.1; done
ctr --address "$tmp/sock" version >/dev/null || { tail -20 "$tmp/containerd.log"; fail "containerd did not start"; }
c() { ctr --address "$tmp/sock" "$@"; }
for n in $names; do
  c images import --all-platforms "$dist/images/iotfabric-$n-$VERSION.oci.tar" >/dev/null || fail "ctr import $n"
done
c images ls | awk 'NR == 1 || /iotfabric/' | sed 's/^/  /'
for n in $names; do
  ref=$(c images ls -q | grep "/$n:$VERSION\$") || fail "$n not imported"
  c images check >"$tmp/check" && grep -q "^$ref .*complete" "$tmp/check" || { cat "$tmp/check"; fail "$n: content incomplete"; }
done

echo "images-test: ctr run (snapshotter $snap)"
ran=0
for n in $names; do
  ref=$(c images ls -q | grep "/$n:$VERSION\$")
  bin=/usr/bin/$n
  if out=$(c run --rm --snapshotter "$snap" "$ref" "iotfabric-test-$n" "$bin" --version 2>&1); then
    [[ $out == "$n $VERSION (commit "* ]] || fail "$n: ctr run printed '$out'"
    echo "  $ref: $out"
    ran=$((ran + 1))
  else
    echo "  $ref: ctr run failed: $out"
  fi
done
# The agent's image carries the CNI plugin for an install-cni init container.
ref=$(c images ls -q | grep "/vrouter-agent:$VERSION\$")
if out=$(c run --rm --snapshotter "$snap" "$ref" iotfabric-test-cni /opt/cni/bin/iotfabric --version 2>&1); then
  [[ $out == "cni-plugin $VERSION (commit "* ]] || fail "cni plugin in the agent image: '$out'"
  echo "  $ref /opt/cni/bin/iotfabric: $out"
  # As an install-cni init container: copy the plugin into a host directory.
  mkdir -p "$tmp/hostcni"
  c run --rm --snapshotter "$snap" --mount "type=bind,src=$tmp/hostcni,dst=/host/opt/cni/bin,options=rbind:rw" \
    "$ref" iotfabric-test-install /opt/cni/bin/iotfabric --install /host/opt/cni/bin || fail "install-cni"
  cmp -s "$tmp/hostcni/iotfabric" "$dist/bin/linux-amd64/cni-plugin" || fail "install-cni: the copy differs from dist/bin/linux-amd64/cni-plugin"
  echo "  $ref /opt/cni/bin/iotfabric --install /host/opt/cni/bin: the host directory has the plugin"
fi
[ $ran = 3 ] || fail "ctr run worked for $ran of 3 images (above)"

echo "images-test: reproducible"
mkdir -p "$tmp/again"
ln -s "$(realpath "$dist/bin")" "$tmp/again/bin"
cp "$dist/release.env" "$tmp/again/"
DIST=$tmp/again scripts/images.sh "$VERSION" >/dev/null
if ! diff <(cd "$dist/images" && sha256sum ./*.oci.tar) <(cd "$tmp/again/images" && sha256sum ./*.oci.tar); then
  fail "the images differ when built again (above)"
fi
echo "  built again: the three archives are byte-identical"
echo "images-test: PASS in $(( $(date +%s) - t0 )) s"
