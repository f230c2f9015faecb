#!/usr/bin/env bash
# Downloads Debian packages of another architecture (arm64, armhf) with `apt-get download`
# from this machine's apt sources and unpacks each with `dpkg-deb -x`. apt runs on a private
# state (its own architecture, package lists and empty status file under CACHE/apt-ARCH), so
# the machine's dpkg architectures and lists stay as they are: nothing is installed.
#
#   scripts/vmtest/foreign.sh ARCH CACHE resolve META   print the package META depends on
#                                                       first (linux-image-arm64 -> linux-image-6.1.0-N-arm64)
#   scripts/vmtest/foreign.sh ARCH CACHE unpack DIR PKG...  download PKGs, unpack into DIR
#
# The lists are fetched once (the Packages indices only, about 18 MB per architecture: no
# translations, no AppStream metadata) and again when a download fails (the archive moved on).
set -euo pipefail
arch=$1 cache=$2 cmd=$3
shift 3
d="$cache/apt-$arch"
mkdir -p "$d/lists/partial" "$d/cache/archives/partial"
touch "$d/status"
opts=(-o "APT::Architecture=$arch" -o "APT::Architectures=$arch" -o "Dir::State::Lists=$d/lists"
  -o "Dir::Cache=$d/cache" -o "Dir::State::status=$d/status" -o Debug::NoLocking=1
  -o APT::Sandbox::User=root -o Acquire::Languages=none
  -o Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false
  -o Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false
  -o Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false
  -o Acquire::IndexTargets::deb::DEP-11-icons-hidpi::DefaultEnabled=false)
update() {
  echo "vmtest: apt-get update for $arch (private lists in $d)" >&2
  # An index that fails (a mirror mid-sync) is reported; the others are used.
  apt-get -qq "${opts[@]}" update >&2 || echo "vmtest: apt-get update for $arch reported errors" >&2
}
ls "$d"/lists/*_Packages* >/dev/null 2>&1 || update

case "$cmd" in
  resolve)
    dep=$(apt-cache "${opts[@]}" depends "$1" 2>/dev/null | awk '/Depends:/{print $2; exit}')
    if [ -z "$dep" ]; then update; dep=$(apt-cache "${opts[@]}" depends "$1" | awk '/Depends:/{print $2; exit}'); fi
    [ -n "$dep" ] || { echo "vmtest: cannot resolve $1 for $arch" >&2; exit 1; }
    echo "${dep%%:*}" ;;
  unpack)
    dir=$1; shift
    dl=$(mktemp -d "$cache/dl.XXXXXX")
    trap 'rm -rf "$dl"' EXIT
    (cd "$dl" && apt-get -qq "${opts[@]}" download "$@" >&2) || { update; (cd "$dl" && apt-get -qq "${opts[@]}" download "$@" >&2); }
    mkdir -p "$dir"
    for f in "$dl"/*.deb; do dpkg-deb -x "$f" "$dir"; done ;;
  *) echo "usage: $0 ARCH CACHE resolve META | unpack DIR PKG..." >&2; exit 2 ;;
esac
