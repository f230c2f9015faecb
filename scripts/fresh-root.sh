#!/usr/bin/env bash
# Runs a command in a pristine Debian 12 (bookworm) root, as a fresh machine would, so that a
# missing install step cannot hide behind packages this machine already has.
#
#   scripts/fresh-root.sh CMD [ARG...]        e.g. scripts/fresh-root.sh make test
#
# 1. A minbase root is made once with debootstrap, from the mirror this machine's apt uses,
#    and kept as a tarball in $FRESH_ROOT_CACHE (default /var/cache/iotfabric/fresh-root);
#    later runs unpack it in seconds. Delete the tarball to rebuild it.
# 2. A fresh copy is unpacked under /var/tmp (mode 0755: FRR's daemons drop privileges and
#    must still read their libraries), with this checkout (tracked and untracked files, not
#    ignored ones such as bin/ and .vmtest/) in /src/iotfabric, Go at /usr/local/go (read-only
#    bind), the host's CA bundle and resolv.conf, and the host's Go module and build caches
#    (Go code only, no Debian packages) bound in, and so is the cache of the kube-apiserver
#    and kubectl binaries that scripts/kube-build.sh builds from Go modules (by version).
# 3. The command runs chrooted, as root, in its own mount and PID namespaces, with /proc
#    (new), /sys, /dev and /dev/pts, and / a mount point (`ip netns exec` remounts / as a
#    slave). Daemons that packages' postinst scripts would start are held off with
#    policy-rc.d, as on any container build; install-deps.sh starts nothing system-wide.
# 4. When the command ends (or fails, or is interrupted) every process left in the root is
#    killed with its PID namespace, every mount under it is undone deepest first (network
#    namespaces the tests left included) and the copy is removed. The command's exit code
#    is ours.
#
# Environment: FRESH_ROOT_CACHE (tarball directory), FRESH_ROOT_KEEP=1 (keep the copy for a
# look afterwards; its path is printed), FRESH_ROOT_SUITE (default bookworm), FRESH_ROOT_COPY
# ("HOSTPATH:DIR ...": copy files or directories from this machine into DIR inside the root).
set -euo pipefail

die() { echo "fresh-root: $*" >&2; exit 2; }

# ---- inside the new mount and PID namespaces (PID 1): mount, chroot, run -------------
if [ "${1:-}" = "--inner" ]; then
  root=$2; shift 2
  mount --make-rprivate /
  mount --bind "$root" "$root"              # / inside the root is a mount point
  mount -t proc proc "$root/proc"           # this PID namespace's processes only
  mount --rbind /sys "$root/sys"
  mount --rbind /dev "$root/dev"            # includes /dev/pts, /dev/shm
  mount --bind -o ro /usr/local/go "$root/usr/local/go"
  mount -o remount,bind,ro "$root/usr/local/go"
  mount --bind "$FRESH_ROOT_GOMODCACHE" "$root/root/go/pkg/mod"
  mount --bind "$FRESH_ROOT_GOCACHE" "$root/root/.cache/go-build"
  mount --bind "$FRESH_ROOT_KUBECACHE" "$root/var/cache/iotfabric/kube"
  mkdir -p "$root/run/netns"
  # PID 1 forwards TERM/INT to the command, then waits for it.
  chroot "$root" /usr/bin/env -i \
    HOME=/root USER=root LOGNAME=root TERM="${TERM:-dumb}" LANG=C.UTF-8 \
    PATH=/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    SSL_CERT_FILE=/etc/ssl/host-ca-certificates.crt \
    GOPROXY="$FRESH_ROOT_GOPROXY" GOSUMDB="$FRESH_ROOT_GOSUMDB" GOFLAGS="$FRESH_ROOT_GOFLAGS" \
    GONOSUMDB="$FRESH_ROOT_GONOSUMDB" GOPRIVATE="$FRESH_ROOT_GOPRIVATE" \
    /bin/bash -c 'cd /src/iotfabric && exec "$@"' fresh-root "$@" &
  child=$!
  trap 'kill -TERM $child 2>/dev/null' TERM INT
  rc=0
  while :; do
    wait $child && rc=0 || rc=$?
    kill -0 $child 2>/dev/null || break     # wait returned early for a trapped signal
  done
  exit $rc
fi

# ---- outside: prepare, run, clean up ----------------------------------------------------
[ $# -gt 0 ] || { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 2; }
[ "$(id -u)" -eq 0 ] || die "must run as root (debootstrap, chroot, mounts)"
self=$(readlink -f "$0")
cd "$(dirname "$self")/.."
src=$PWD
suite=${FRESH_ROOT_SUITE:-bookworm}
arch=$(dpkg --print-architecture)
cache=${FRESH_ROOT_CACHE:-/var/cache/iotfabric/fresh-root}
[ -x /usr/local/go/bin/go ] || die "no Go in /usr/local/go (the README's precondition)"
# unshare and chroot come with every Debian (util-linux, coreutils); debootstrap may not.
if ! command -v debootstrap >/dev/null; then
  echo "fresh-root: installing debootstrap on this machine" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null 2>&1 ||
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; } ||
    die "apt-get install debootstrap failed"
fi

# The mirror and the other archives (updates, security) this machine's apt reads.
targets=$(apt-get indextargets --format '$(REPO_URI) $(RELEASE) $(COMPONENT)' 2>/dev/null | sort -u)
mirror=$(awk -v s="$suite" '$2 == s {print $1; exit}' <<<"$targets")
[ -n "$mirror" ] || { apt-get update -qq >/dev/null 2>&1 || true
  targets=$(apt-get indextargets --format '$(REPO_URI) $(RELEASE) $(COMPONENT)' 2>/dev/null | sort -u)
  mirror=$(awk -v s="$suite" '$2 == s {print $1; exit}' <<<"$targets"); }
[ -n "$mirror" ] || die "this machine's apt has no source for $suite; set one in /etc/apt/sources.list.d"

key=$(printf '%s %s %s\n%s' "$suite" "$arch" "$mirror" "$targets" | md5sum | cut -c1-10)
tarball="$cache/debian-$suite-minbase-$arch-$key.tar"
mkdir -p "$cache"
(
  flock 9
  [ -f "$tarball" ] && exit 0
  echo "fresh-root: making a pristine $suite minbase root from $mirror (once; cached in $tarball)" >&2
  t0=$(date +%s)
  build=$(mktemp -d /var/tmp/iotfabric-debootstrap.XXXXXX)
  trap 'rm -rf --one-file-system "$build"' EXIT
  debootstrap --variant=minbase --arch="$arch" "$suite" "$build/root" "$mirror" >"$build/log" 2>&1 ||
    { tail -20 "$build/log" >&2; die "debootstrap failed (log above)"; }
  # The same archives as this machine (updates, security), in Debian 12's deb822 format.
  rm -f "$build/root/etc/apt/sources.list"
  while read -r uri rel comp; do
    [ -n "$uri" ] || continue
    printf 'Types: deb\nURIs: %s\nSuites: %s\nComponents: %s\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n' "$uri" "$rel" "$comp"
  done <<<"$targets" >"$build/root/etc/apt/sources.list.d/debian.sources"
  chroot "$build/root" apt-get clean
  tar -C "$build/root" --numeric-owner -cf "$tarball.part" .
  mv "$tarball.part" "$tarball"
  echo "fresh-root: pristine root made in $(( $(date +%s) - t0 )) s" >&2
) 9>"$cache/.lock"

work=$(mktemp -d /var/tmp/iotfabric-fresh.XXXXXX)
root="$work/root"
cleanup() {
  rc=$?
  trap - EXIT INT TERM
  # Everything under the root was mounted in the command's own mount namespace, which ended
  # with it; undo whatever is still visible here anyway, deepest first.
  for m in $(awk -v w="$work" 'index($5, w"/") == 1 {print $5}' /proc/self/mountinfo | sort -r); do
    umount -l "$m" 2>/dev/null || true
  done
  if [ "${FRESH_ROOT_KEEP:-0}" = 1 ]; then
    echo "fresh-root: kept $root" >&2
  elif awk -v w="$work" 'index($5, w"/") == 1 {found=1} END {exit !found}' /proc/self/mountinfo; then
    echo "fresh-root: mounts remain under $work; not removing it" >&2
  else
    rm -rf --one-file-system "$work"
  fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
t0=$(date +%s)
mkdir -p "$root" && chmod 0755 "$work" "$root"
tar -C "$root" -xf "$tarball"

# The checkout: tracked and untracked files (not ignored build output) and .git.
mkdir -p "$root/src/iotfabric"
{ git -C "$src" ls-files -z -co --exclude-standard 2>/dev/null; if [ -d "$src/.git" ]; then printf '.git\0'; fi; } |
  { tar -C "$src" --null -T - --warning=no-file-changed -cf - || [ $? -eq 1 ]; } | tar -C "$root/src/iotfabric" -xf -
[ -f "$root/src/iotfabric/Makefile" ] || die "copying the checkout failed"
# Extra files the command needs (e.g. packages to install): FRESH_ROOT_COPY="HOSTPATH:DIR ...".
for c in ${FRESH_ROOT_COPY:-}; do
  mkdir -p "$root/${c#*:}" && cp -a "${c%%:*}" "$root/${c#*:}/" || die "FRESH_ROOT_COPY $c failed"
done

cp -L /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt" 2>/dev/null ||
  { mkdir -p "$root/etc/ssl/certs"; cp -L /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"; }
# Installing Debian's ca-certificates inside regenerates the bundle; Go keeps the host's.
cp -L /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/host-ca-certificates.crt"
cp -L /etc/resolv.conf "$root/etc/resolv.conf"
printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$root/etc/hosts"
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d" && chmod 0755 "$root/usr/sbin/policy-rc.d"
mkdir -p "$root/usr/local/go" "$root/root/go/pkg/mod" "$root/root/.cache/go-build" "$root/var/cache/iotfabric/kube"

hostgo() { /usr/local/go/bin/go env "$1" 2>/dev/null || true; }
export FRESH_ROOT_GOMODCACHE=$(hostgo GOMODCACHE) FRESH_ROOT_GOCACHE=$(hostgo GOCACHE)
export FRESH_ROOT_GOPROXY=$(hostgo GOPROXY) FRESH_ROOT_GOSUMDB=$(hostgo GOSUMDB) FRESH_ROOT_GOFLAGS=$(hostgo GOFLAGS)
export FRESH_ROOT_GONOSUMDB=$(hostgo GONOSUMDB) FRESH_ROOT_GOPRIVATE=$(hostgo GOPRIVATE)
[ -n "$FRESH_ROOT_GOMODCACHE" ] && [ -n "$FRESH_ROOT_GOCACHE" ] || die "cannot read the host's Go caches (go env)"
export FRESH_ROOT_KUBECACHE=${KUBE_CACHE:-/var/cache/iotfabric/kube}
mkdir -p "$FRESH_ROOT_GOMODCACHE" "$FRESH_ROOT_GOCACHE" "$FRESH_ROOT_KUBECACHE"
echo "fresh-root: root ready in $(( $(date +%s) - t0 )) s at $root; running: $*" >&2

# In the background so that a TERM or INT reaches us now, not after the command. unshare
# itself ignores TERM and INT: pass them to the namespace's PID 1 (which passes them to the
# command), give it 10 s, then kill unshare, whose death kills PID 1 (--kill-child) and with
# it every process in the namespace.
unshare --mount --pid --fork --kill-child -- "$self" --inner "$root" "$@" &
inner=$!
stop() {
  pkill -TERM -P $inner 2>/dev/null || true
  for _ in $(seq 20); do kill -0 $inner 2>/dev/null || break; sleep 0.5; done
  kill -KILL $inner 2>/dev/null || true
  wait $inner 2>/dev/null || true
  echo "fresh-root: interrupted" >&2
  exit "$1"
}
trap 'stop 143' TERM
trap 'stop 130' INT
rc=0
wait $inner || rc=$?
echo "fresh-root: '$*' exited $rc after $(( $(date +%s) - t0 )) s" >&2
exit $rc
