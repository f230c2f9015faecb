#!/usr/bin/env bash
# Proves the Debian packages (`make package-test`, as root):
#
#  1. builds iotfabric-gateway and iotfabric-controller 0.0.1 and 0.0.2 for amd64
#     (scripts/release.sh, scripts/deb.sh; DIST in a temporary directory);
#  2. lintian: no errors (warnings are printed; docs/install.md lists them);
#  3. in a pristine Debian 12 root (scripts/fresh-root.sh), as a new machine would:
#     - apt-get install ./iotfabric-*_0.0.1_amd64.deb resolves the dependencies (adduser);
#     - every binary answers --version with 0.0.1; the users and the config's modes are right;
#     - systemd-analyze verify accepts every unit (systemd installed for it, as on any host);
#     - the manual pages are installed; the copyright files name the licence of
#       packaging/LICENSE-ID;
#     - a controller started from the packaged config keeps a network in its store, and the
#       agent's state files (endpoints.json, routes.log) are in /var/lib/iotfabric/agent;
#     - upgrade to 0.0.2: the binaries say 0.0.2, the state is byte-identical and the
#       controller still has the network, an edited conffile is kept;
#     - apt-get remove: every packaged file is gone but the configuration (/etc/iotfabric)
#       and the state (/var/lib/iotfabric), as Debian keeps them;
#     - apt-get purge: /etc/iotfabric, /var/lib/iotfabric and the unit links are gone.
#
#   scripts/package-test.sh            everything
#   scripts/package-test.sh --inner    step 3 (run by step 3 inside the root)
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = --inner ]; then
  debs=$2
  fail() { echo "package-test: FAIL: $*" >&2; exit 1; }
  step() { echo "package-test: $*"; }
  export DEBIAN_FRONTEND=noninteractive
  t0=$(date +%s)
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends systemd >/dev/null
  step "systemd installed for systemd-analyze in $(( $(date +%s) - t0 )) s"

  step "install 0.0.1"
  apt-get install -y -qq --no-install-recommends "$debs"/0.0.1/iotfabric-gateway_0.0.1_amd64.deb \
    "$debs"/0.0.1/iotfabric-controller_0.0.1_amd64.deb >/tmp/apt.log 2>&1 || { cat /tmp/apt.log; fail "apt-get install 0.0.1"; }
  dpkg-query -W -f='${Package} ${Version} ${Status}\n' iotfabric-gateway iotfabric-controller adduser
  checkversion() {
    local v=$1 b
    for b in /usr/sbin/controller /usr/sbin/vrouter-agent /usr/sbin/iqrf-collector /opt/cni/bin/iotfabric /usr/bin/iotfabricctl; do
      out=$("$b" --version) || fail "$b --version"
      [[ $out == *" $v (commit "* ]] || fail "$b --version says '$out', want $v"
      echo "  $out"
    done
    /usr/bin/iotfabricctl version | grep -q " $v " || fail "iotfabricctl version"
  }
  checkversion 0.0.1
  getent passwd iotfabric >/dev/null || fail "no user iotfabric"
  getent passwd iotfabric-iqrf >/dev/null || fail "no user iotfabric-iqrf"
  [ "$(stat -c '%U:%G %a' /etc/iotfabric/controller.yaml)" = "root:iotfabric 640" ] ||
    fail "controller.yaml is $(stat -c '%U:%G %a' /etc/iotfabric/controller.yaml)"
  grep -qx mpls_router /usr/lib/modules-load.d/iotfabric.conf || fail "modules-load.d"
  grep -q '^net.mpls.platform_labels' /usr/lib/sysctl.d/60-iotfabric.conf || fail "sysctl.d"
  for p in man8/vrouter-agent.8 man8/iqrf-collector.8 man8/iotfabric-cni.8 man8/controller.8 man1/iotfabricctl.1; do
    zcat "/usr/share/man/$p.gz" | grep -q '^\.SH DESCRIPTION' || fail "manual page $p"
  done
  lic=$(cat packaging/LICENSE-ID)
  for p in iotfabric-gateway iotfabric-controller; do
    grep -qx "License: $lic (see the upstream repository)." "/usr/share/doc/$p/copyright" || fail "$p copyright does not say $lic"
  done
  echo "  manual pages installed; licence in the copyright files: $lic (packaging/LICENSE-ID)"

  step "systemd-analyze verify"
  vdir=$(mktemp -d)
  ln -s /lib/systemd/system/iotfabric-iqrf-collector@.service "$vdir/iotfabric-iqrf-collector@ttyACM0.service"
  out=$(systemd-analyze verify /lib/systemd/system/iotfabric-agent.service /lib/systemd/system/iotfabric-controller.service \
    "$vdir/iotfabric-iqrf-collector@ttyACM0.service" 2>&1) || fail "systemd-analyze verify: $out"
  if grep -i 'iotfabric' <<<"$out"; then fail "systemd-analyze verify complains (above)"; fi
  echo "  accepted: iotfabric-agent.service iotfabric-controller.service iotfabric-iqrf-collector@ttyACM0.service"

  # State as the services make it (StateDirectory=, User=), without systemd running here.
  step "state: a controller with a network, the agent's state files"
  install -d -m 0755 /var/lib/iotfabric
  install -d -m 0700 -o iotfabric -g iotfabric /var/lib/iotfabric/controller
  install -d -m 0700 /var/lib/iotfabric/agent
  startctl() {
    setpriv --reuid iotfabric --regid iotfabric --init-groups /usr/sbin/controller --config /etc/iotfabric/controller.yaml \
      --api-listen 127.0.0.1:25051 --metrics-listen off >/tmp/controller.log 2>&1 &
    ctlpid=$!
    for _ in $(seq 100); do
      iotfabricctl --server 127.0.0.1:25051 --timeout 1s network list >/dev/null 2>&1 && return 0
      sleep 0.1
    done
    cat /tmp/controller.log; fail "controller did not start"
  }
  stopctl() { kill -TERM $ctlpid; wait $ctlpid || true; }
  startctl
  iotfabricctl --server 127.0.0.1:25051 network create sensors --subnet 10.10.0.0/24 >/dev/null
  stopctl
  # The agent's files (endpoints.json: endpoints, labels, blocks; routes.log: the routes from
  # the controllers), in the formats the agent reads (pkg/agent's TestPackagedStateFixture
  # loads the same files), copied here rather than made by an agent with pods: what counts
  # is that the packages leave them alone.
  install -m 0600 pkg/agent/testdata/packaged-state/endpoints.json pkg/agent/testdata/packaged-state/routes.log \
    /var/lib/iotfabric/agent/
  sed -i 's/^IOTFABRIC_GATEWAY=$/IOTFABRIC_GATEWAY=gw-1/' /etc/iotfabric/agent.env
  before=$(find /var/lib/iotfabric -type f -exec sha256sum {} + | sort)
  echo "$before" | sed 's/^/  /'

  step "upgrade to 0.0.2"
  apt-get install -y -qq --no-install-recommends "$debs"/0.0.2/iotfabric-gateway_0.0.2_amd64.deb \
    "$debs"/0.0.2/iotfabric-controller_0.0.2_amd64.deb >/tmp/apt.log 2>&1 || { cat /tmp/apt.log; fail "upgrade"; }
  checkversion 0.0.2
  after=$(find /var/lib/iotfabric -type f -exec sha256sum {} + | sort)
  [ "$before" = "$after" ] || fail "state changed across the upgrade: $after"
  grep -qx 'IOTFABRIC_GATEWAY=gw-1' /etc/iotfabric/agent.env || fail "the edited agent.env was not kept"
  [ "$(stat -c '%U:%G %a' /var/lib/iotfabric/controller)" = "iotfabric:iotfabric 700" ] || fail "controller state dir owner changed"
  startctl
  iotfabricctl --server 127.0.0.1:25051 network list | grep -q '^sensors ' || fail "the network is gone after the upgrade"
  stopctl
  echo "  state byte-identical; the 0.0.2 controller lists the network made by 0.0.1; the edited agent.env kept"
  before=$(find /var/lib/iotfabric -type f -exec sha256sum {} + | sort)   # the 0.0.2 controller wrote to its store

  step "remove"
  files=$(dpkg -L iotfabric-gateway iotfabric-controller | sort -u)
  conffiles=$(dpkg-query -W -f='${Conffiles}\n' iotfabric-gateway iotfabric-controller | awk 'NF {print $1}')
  apt-get remove -y -qq iotfabric-gateway iotfabric-controller >/tmp/apt.log 2>&1 || { cat /tmp/apt.log; fail "remove"; }
  left=()
  while read -r f; do
    [ -n "$f" ] && [ ! -d "$f" ] && { [ -e "$f" ] || [ -L "$f" ]; } && ! grep -qxF "$f" <<<"$conffiles" && left+=("$f")
  done <<<"$files"
  [ ${#left[@]} -eq 0 ] || fail "left after remove: ${left[*]}"
  for f in $conffiles; do [ -f "$f" ] || fail "remove took the conffile $f"; done
  [ "$before" = "$(find /var/lib/iotfabric -type f -exec sha256sum {} + | sort)" ] || fail "remove touched the state"
  echo "  left: $(echo $conffiles) and /var/lib/iotfabric"

  step "purge"
  apt-get purge -y -qq iotfabric-gateway iotfabric-controller >/tmp/apt.log 2>&1 || { cat /tmp/apt.log; fail "purge"; }
  for d in /etc/iotfabric /var/lib/iotfabric /opt/cni/bin/iotfabric /usr/lib/cni/iotfabric; do
    [ ! -e "$d" ] || fail "$d left after purge: $(find "$d" | head)"
  done
  if find /etc/systemd /var/lib/systemd -name '*iotfabric*' | grep .; then fail "unit links left after purge (above)"; fi
  dpkg-query -W -f='${Status}\n' iotfabric-gateway 2>/dev/null | grep -q 'install ok' && fail "still installed"
  step "PASS in $(( $(date +%s) - t0 )) s"
  exit 0
fi

[ "$(id -u)" -eq 0 ] || { echo "package-test: run as root (fresh-root.sh, chroot)" >&2; exit 1; }
command -v lintian >/dev/null || { echo "package-test: lintian not found (Debian package lintian)" >&2; exit 1; }
t0=$(date +%s)
work=$(mktemp -d /var/tmp/iotfabric-package-test.XXXXXX)
trap 'rm -rf "$work"' EXIT
for v in 0.0.1 0.0.2; do
  # RELEASE_FOR_TEST: no -trimpath (the packages `go test` compiled are reused: links only)
  # and no archives; reproducibility is make release-verify's.
  DIST=$work/$v RELEASE_PLATFORMS=amd64 RELEASE_FOR_TEST=1 scripts/release.sh $v >/dev/null
  DIST=$work/$v DEB_ARCHES=amd64 DEB_COMPRESSION=gzip scripts/deb.sh $v >/dev/null
done
mkdir -p "$work/debs/0.0.1" "$work/debs/0.0.2"
cp "$work"/0.0.1/iotfabric-*.deb "$work/debs/0.0.1/" && cp "$work"/0.0.2/iotfabric-*.deb "$work/debs/0.0.2/"
t1=$(date +%s)
echo "package-test: built 0.0.1 and 0.0.2 (amd64) in $((t1 - t0)) s"

echo "package-test: lintian"
lintian --fail-on error --suppress-tags-from-file /dev/null "$work"/debs/0.0.2/*.deb || { echo "package-test: FAIL: lintian errors (above)" >&2; exit 1; }
t2=$(date +%s)
echo "package-test: lintian: no errors ($((t2 - t1)) s)"
if [ "$(cat packaging/LICENSE-ID)" = NOASSERTION ]; then
  echo "package-test: NOTE: no licence chosen: the packages and images say NOASSERTION (packaging/LICENSE-ID)"
fi

FRESH_ROOT_COPY="$work/debs:/tmp" scripts/fresh-root.sh scripts/package-test.sh --inner /tmp/debs
echo "package-test: PASS in $(( $(date +%s) - t0 )) s (build $((t1 - t0)) s, lintian $((t2 - t1)) s, fresh root $(( $(date +%s) - t2 )) s)"
