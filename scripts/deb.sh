#!/usr/bin/env bash
# Builds the Debian packages from the binaries `make release` put in dist/bin/, with Debian's
# own dpkg-deb (see docs/install.md, "Why dpkg-deb"):
#
#   scripts/deb.sh VERSION      ->  dist/iotfabric-gateway_VERSION_{amd64,arm64,armhf}.deb
#                                   dist/iotfabric-controller_VERSION_{amd64,arm64,armhf}.deb
#                                   dist/SHA256SUMS.packages
#
# The packages' files are in packaging/: systemd units (packaging/systemd), configuration
# (packaging/etc, installed in /etc/iotfabric as conffiles), modules-load.d and sysctl.d
# (packaging/lib), manual pages made from the binaries' --help (internal/manpage), and per package the control template, conffiles, maintainer scripts and
# lintian overrides (packaging/deb/PACKAGE). The .debs are reproducible: file modes are set
# here, owners are root (--root-owner-group) and every time stamp is the commit's
# (SOURCE_DATE_EPOCH).
#
# Environment: DIST (default dist), DEB_ARCHES (a subset of "amd64 arm64 armhf"),
# DEB_MAINTAINER, DEB_COMPRESSION (default xz; the package test uses gzip, faster).
set -euo pipefail
cd "$(dirname "$0")/.."
version=${1:-}
[[ $version =~ ^[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.]+)?$ ]] ||
  { echo "deb: VERSION must look like 1.2.3 or 1.2.3-rc1, got '$version'" >&2; exit 2; }
debversion=${version/-/\~}   # 1.2.3-rc1 sorts before 1.2.3 as 1.2.3~rc1
maintainer=${DEB_MAINTAINER:-iotfabric developers <iotfabric@lists.iotfabric.org>}
homepage=https://github.com/iotfabric/iotfabric
dist=${DIST:-dist}
[ -f "$dist/release.env" ] && . "$dist/release.env" && [ "$VERSION" = "$version" ] ||
  { echo "deb: $dist holds no release $version: run make release VERSION=$version first" >&2; exit 2; }
export SOURCE_DATE_EPOCH=$EPOCH
changedate=$(LC_ALL=C date -u -R -d "@$SOURCE_DATE_EPOCH")
pk=packaging
# Debian architecture -> dist/bin/linux-NAME
declare -A bindir=([amd64]=amd64 [arm64]=arm64 [armhf]=armv7)

tmp=$(mktemp -d /var/tmp/iotfabric-deb.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
umask 022

# Manual pages, made from the binaries' own --help (internal/manpage) by running this
# machine's (amd64) build; the text is the same on every architecture.
[ -x "$dist/bin/linux-amd64/vrouter-agent" ] ||
  { echo "deb: the manual pages are made by running $dist/bin/linux-amd64/*: make release with amd64" >&2; exit 2; }
go run ./internal/manpage/mangen -bin "$dist/bin/linux-amd64" -out "$tmp/man" -version "$version" \
  -date "$(date -u -d "@$SOURCE_DATE_EPOCH" +%F)" >/dev/null
# manpages ROOT PAGE...: install the pages, compressed as Debian does.
manpages() {
  local root=$1 p sec; shift
  for p in "$@"; do
    sec=${p##*.}
    install -d "$root/usr/share/man/man$sec"
    gzip -n -9 <"$tmp/man/$p" >"$root/usr/share/man/man$sec/$p.gz"
    chmod 0644 "$root/usr/share/man/man$sec/$p.gz"
  done
}

# docs PKG ROOT BIN...: copyright, changelog, install guide and the Go modules linked in.
docs() {
  local pkg=$1 root=$2; shift 2
  local d=$root/usr/share/doc/$pkg
  install -d "$d"
  install -m 0644 docs/install.md "$d/install.md"
  printf '%s (%s) stable; urgency=medium\n\n  * Release %s: https://github.com/iotfabric/iotfabric\n\n -- %s  %s\n' \
    "$pkg" "$debversion" "$version" "$maintainer" "$changedate" | gzip -n -9 >"$d/changelog.gz"
  chmod 0644 "$d/changelog.gz"
  {
    echo "iotfabric, packaged as $pkg $debversion."
    echo
    echo "Upstream: $homepage"
    echo
    echo "Copyright $(date -u -d "@$SOURCE_DATE_EPOCH" +%Y) the iotfabric authors."
    echo "License: $(cat packaging/LICENSE-ID) (see the upstream repository)."
    echo
    echo "The binaries are statically linked Go programs. They contain the Go standard library"
    echo "(BSD-3-Clause, Copyright The Go Authors) and the following Go modules, each under its own"
    echo "licence (see each module's source):"
    echo
    for b in "$@"; do go version -m "$b"; done | awk '$1 == "dep" {print "  " $2 " " $3}' | sort -u
  } >"$d/copyright"
  chmod 0644 "$d/copyright"
}

# control PKG ARCH ROOT: DEBIAN/control, conffiles, maintainer scripts, md5sums.
control() {
  local pkg=$1 arch=$2 root=$3 src=$pk/deb/$1
  install -d -m 0755 "$root/DEBIAN"
  if [ -f "$src/lintian-overrides" ]; then
    install -D -m 0644 "$src/lintian-overrides" "$root/usr/share/lintian/overrides/$pkg"
  fi
  local size
  size=$(du -k -s --apparent-size --exclude=DEBIAN "$root" | cut -f1)
  {
    sed -n '1p' "$src/control"
    printf 'Version: %s\nArchitecture: %s\nMaintainer: %s\nInstalled-Size: %s\nHomepage: %s\n' \
      "$debversion" "$arch" "$maintainer" "$size" "$homepage"
    sed '1d' "$src/control"
  } >"$root/DEBIAN/control"
  install -m 0644 "$src/conffiles" "$root/DEBIAN/conffiles"
  for s in postinst prerm postrm; do install -m 0755 "$src/$s" "$root/DEBIAN/$s"; done
  ( cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z |
      xargs -0 md5sum >DEBIAN/md5sums )
  chmod 0644 "$root/DEBIAN/md5sums"
  dpkg-deb --root-owner-group -Z"${DEB_COMPRESSION:-xz}" --build "$root" "$dist/${pkg}_${debversion}_${arch}.deb" >/dev/null
  echo "deb: $dist/${pkg}_${debversion}_${arch}.deb"
}

for arch in ${DEB_ARCHES:-amd64 arm64 armhf}; do
  bin=$dist/bin/linux-${bindir[$arch]}
  for b in controller iotfabricctl vrouter-agent cni-plugin iqrf-collector; do
    [ -x "$bin/$b" ] || { echo "deb: no $bin/$b: run make release VERSION=$version first" >&2; exit 2; }
  done

  # iotfabric-gateway
  r=$tmp/gateway-$arch
  install -D -m 0755 "$bin/vrouter-agent" "$r/usr/sbin/vrouter-agent"
  install -D -m 0755 "$bin/iqrf-collector" "$r/usr/sbin/iqrf-collector"
  install -D -m 0755 "$bin/cni-plugin" "$r/usr/lib/cni/iotfabric"
  install -d "$r/opt/cni/bin"
  ln -s /usr/lib/cni/iotfabric "$r/opt/cni/bin/iotfabric"
  install -D -m 0644 $pk/systemd/iotfabric-agent.service "$r/lib/systemd/system/iotfabric-agent.service"
  install -D -m 0644 $pk/systemd/iotfabric-iqrf-collector@.service "$r/lib/systemd/system/iotfabric-iqrf-collector@.service"
  install -D -m 0644 $pk/etc/agent.env "$r/etc/iotfabric/agent.env"
  install -D -m 0644 $pk/etc/iqrf-collector.env "$r/etc/iotfabric/iqrf-collector.env"
  install -D -m 0644 $pk/lib/modules-load.conf "$r/usr/lib/modules-load.d/iotfabric.conf"
  install -D -m 0644 $pk/lib/sysctl.conf "$r/usr/lib/sysctl.d/60-iotfabric.conf"
  install -D -m 0644 examples/cni/10-iotfabric.conflist "$r/usr/share/doc/iotfabric-gateway/examples/10-iotfabric.conflist"
  manpages "$r" vrouter-agent.8 iqrf-collector.8 iotfabric-cni.8
  docs iotfabric-gateway "$r" "$bin/vrouter-agent" "$bin/cni-plugin" "$bin/iqrf-collector"
  control iotfabric-gateway "$arch" "$r"

  # iotfabric-controller
  r=$tmp/controller-$arch
  install -D -m 0755 "$bin/controller" "$r/usr/sbin/controller"
  install -D -m 0755 "$bin/iotfabricctl" "$r/usr/bin/iotfabricctl"
  install -D -m 0644 $pk/systemd/iotfabric-controller.service "$r/lib/systemd/system/iotfabric-controller.service"
  install -D -m 0644 $pk/etc/controller.yaml "$r/etc/iotfabric/controller.yaml"   # 0640 root:iotfabric by the postinst
  install -d "$r/usr/share/bash-completion/completions"
  "$dist/bin/linux-amd64/iotfabricctl" completion bash >"$r/usr/share/bash-completion/completions/iotfabricctl"
  chmod 0644 "$r/usr/share/bash-completion/completions/iotfabricctl"
  manpages "$r" controller.8 iotfabricctl.1
  docs iotfabric-controller "$r" "$bin/controller" "$bin/iotfabricctl"
  control iotfabric-controller "$arch" "$r"
done
( cd "$dist" && sha256sum ./*.deb | sed 's| \./| |' >SHA256SUMS.packages )
