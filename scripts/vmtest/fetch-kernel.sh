#!/usr/bin/env bash
# Fetches Debian's kernel (linux-image-amd64 -> the versioned linux-image package)
# with `apt-get download` and unpacks it with `dpkg -x` into the cache directory
# given as $1 (default .vmtest). Nothing is installed. Prints the unpack directory.
set -euo pipefail
cache=${1:-.vmtest}
mkdir -p "$cache"
cache=$(cd "$cache" && pwd)
pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
if [ -z "$pkg" ]; then
  apt-get update -qq >/dev/null
  pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
fi
[ -n "$pkg" ] || { echo "fetch-kernel: cannot resolve linux-image-amd64" >&2; exit 1; }
dir="$cache/$pkg"
if [ ! -f "$dir/.unpacked" ]; then
  rm -rf "$dir" "$cache"/dl && mkdir -p "$cache/dl"
  (cd "$cache/dl" && apt-get download -q "$pkg" >&2)
  dpkg -x "$cache"/dl/"$pkg"_*.deb "$dir"
  rm -rf "$cache/dl"
  touch "$dir/.unpacked"
fi
echo "$dir"
