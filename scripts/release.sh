#!/usr/bin/env bash
# Cross-compiles every binary of cmd/ for the gateway and controller platforms, static and
# reproducible, into dist/:
#
#   scripts/release.sh VERSION            e.g. scripts/release.sh 1.2.0
#   scripts/release.sh --verify VERSION   build again in a fresh Go build cache from a copy of the
#                                         checkout at another path, with the stamp of dist/release.env,
#                                         and compare byte by byte (RELEASE_PLATFORMS=armv7: one platform)
#
# Output (dist/ is ignored by git):
#   dist/bin/linux-amd64/{controller,iotfabricctl,vrouter-agent,cni-plugin,iqrf-collector}
#   dist/bin/linux-arm64/...    dist/bin/linux-armv7/...   (GOARM=7: Raspberry Pi 2 and later)
#   dist/iotfabric-VERSION-linux-ARCH.tar.gz   the same binaries, one archive per platform
#   dist/SHA256SUMS                            every binary and archive
#   dist/sizes.txt                             the size table the README shows
#   dist/release.env                           VERSION, COMMIT, DATE, EPOCH as stamped
#
# Environment: DIST (output directory, default dist), RELEASE_PLATFORMS (a subset of
# "amd64 arm64 armv7", e.g. for a quick local package test), RELEASE_LDFLAGS (default -s -w),
# RELEASE_FOR_TEST=1 (the package and image tests: no -trimpath, so that the build reuses the
# packages `go test` compiled and only links; no archives; not reproducible across paths,
# which make release-verify checks of real releases).
#
# Reproducible: CGO_ENABLED=0, -trimpath, -buildvcs=false, and the version, the commit and the
# commit's date (from git, not the clock) stamped with -X into internal/buildinfo; the archives
# have sorted members, owner 0 and the commit's date as mtime, gzip without a name or time.
# Symbols and DWARF are stripped (-s -w): see docs/install.md, "Sizes".
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/usr/local/go/bin:$PATH

verify=0
if [ "${1:-}" = "--verify" ]; then verify=1; shift; fi
version=${1:-}
[[ $version =~ ^[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.]+)?$ ]] ||
  { echo "release: VERSION must look like 1.2.3 or 1.2.3-rc1, got '$version'" >&2; exit 2; }

# Platforms: name GOARCH GOARM
platforms=()
for p in "amd64 amd64 -" "arm64 arm64 -" "armv7 arm 7"; do
  [[ " ${RELEASE_PLATFORMS:-amd64 arm64 armv7} " == *" ${p%% *} "* ]] && platforms+=("$p")
done
dist=${DIST:-dist}
cmds=$(cd cmd && ls -d */ | tr -d /)
pkg=github.com/iotfabric/iotfabric/internal/buildinfo
commit=$(git rev-parse HEAD)
[ -z "$(git status --porcelain --untracked-files=no 2>/dev/null)" ] || commit="$commit-dirty"
epoch=$(git log -1 --format=%ct)
date=$(TZ=UTC git log -1 --format=%cd --date=format-local:%Y-%m-%dT%H:%M:%SZ)
if [ $verify = 1 ]; then
  # The stamp of the build being checked (same sources, later commits of other files allowed).
  [ -f "$dist/release.env" ] || { echo "release: no $dist/release.env: run make release VERSION=$version first" >&2; exit 2; }
  . "$dist/release.env"
  [ "$VERSION" = "$version" ] || { echo "release: $dist holds $VERSION, not $version" >&2; exit 2; }
  commit=$COMMIT date=$DATE
fi
trimpath=-trimpath
[ "${RELEASE_FOR_TEST:-0}" = 1 ] && [ $verify = 0 ] && trimpath=
ldflags="${RELEASE_LDFLAGS--s -w} -X $pkg.Version=$version -X $pkg.Commit=$commit -X $pkg.Date=$date"

# build OUT: every command for every platform into OUT/bin/linux-NAME/.
build() {
  local out=$1 name goarch goarm
  for p in "${platforms[@]}"; do
    read -r name goarch goarm <<<"$p"
    mkdir -p "$out/bin/linux-$name"
    [ "$goarm" = - ] && goarm=
    # One go build for every command: the links run in parallel.
    CGO_ENABLED=0 GOOS=linux GOARCH="$goarch" GOARM="$goarm" GOFLAGS=-buildvcs=false \
      go build $trimpath -ldflags "$ldflags" -o "$out/bin/linux-$name/" $(printf './cmd/%s ' $cmds)
  done
}

if [ $verify = 1 ]; then
  [ -f "$dist/SHA256SUMS" ] || { echo "release: no $dist/SHA256SUMS: run make release VERSION=$version first" >&2; exit 2; }
  tmp=$(mktemp -d /var/tmp/iotfabric-release-verify.XXXXXX)
  trap 'chmod -R u+w "$tmp" 2>/dev/null; rm -rf "$tmp"' EXIT
  # The same commit (and the same uncommitted changes) at another path, built with an empty cache.
  git ls-files -z -c | tar --null -T - -cf - | { mkdir -p "$tmp/src"; tar -C "$tmp/src" -xf -; }
  t0=$(date +%s)
  ( cd "$tmp/src" && export GOCACHE="$tmp/cache" TZ=Pacific/Kiritimati && umask 077 && build "$tmp/out" )
  fail=0
  for f in "$tmp"/out/bin/*/*; do
    rel=${f#"$tmp/out/"}
    if cmp -s "$f" "$dist/$rel"; then echo "identical  $rel"; else echo "DIFFERENT  $rel"; fail=1; fi
  done
  echo "release: second build from scratch took $(( $(date +%s) - t0 )) s"
  [ $fail = 0 ] && echo "release: $(ls "$tmp"/out/bin/*/* | wc -l) binaries byte-identical across two builds" && exit 0
  echo "release: builds differ" >&2; exit 1
fi

rm -rf "$dist"/bin "$dist"/iotfabric-*.tar.gz "$dist"/SHA256SUMS "$dist"/sizes.txt "$dist"/release.env
t0=$(date +%s)
build "$dist"
for p in "${platforms[@]}"; do
  [ "${RELEASE_FOR_TEST:-0}" = 1 ] && break
  read -r name _ _ <<<"$p"
  tar -C "$dist/bin/linux-$name" --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$epoch" \
    --mode=go-w -cf - $cmds | gzip -n -9 >"$dist/iotfabric-$version-linux-$name.tar.gz"
done
( cd "$dist" && sha256sum bin/*/* $(ls iotfabric-*.tar.gz 2>/dev/null) >SHA256SUMS )
# What was stamped, for scripts/deb.sh and scripts/images.sh.
printf 'VERSION=%s\nCOMMIT=%s\nDATE=%s\nEPOCH=%s\n' "$version" "$commit" "$date" "$epoch" >"$dist/release.env"

# Size table, MB = 10^6 bytes (as the goal is written).
{
  printf '| binary |'; for p in "${platforms[@]}"; do read -r name _ _ <<<"$p"; printf ' linux/%s |' "${name/armv7/arm\/v7}"; done; echo
  printf '| --- |'; for _ in "${platforms[@]}"; do printf ' ---: |'; done; echo
  for c in $cmds; do
    printf '| `%s` |' "$c"
    for p in "${platforms[@]}"; do
      read -r name _ _ <<<"$p"
      awk -v b="$(stat -c %s "$dist/bin/linux-$name/$c")" 'BEGIN { printf " %.1f MB |", b / 1e6 }'
    done
    echo
  done
} >"$dist/sizes.txt"
echo "release: iotfabric $version ($commit, $date) built in $(( $(date +%s) - t0 )) s into $dist/"
cat "$dist/sizes.txt"
