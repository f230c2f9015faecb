#!/usr/bin/env bash
# Fetches Debian's kernel with `apt-get download` and unpacks it with `dpkg -x` into the
# cache directory given as $1 (default .vmtest). Nothing is installed. Prints the unpack
# directory. $2 is the Debian architecture: amd64 (default: linux-image-amd64 -> the
# versioned package), arm64 (linux-image-arm64) or armhf (linux-image-armmp-lpae, the
# Raspberry Pi 2 class); the ARM ones come through scripts/vmtest/foreign.sh.
set -euo pipefail
cache=${1:-.vmtest}
arch=${2:-amd64}
mkdir -p "$cache"
cache=$(cd "$cache" && pwd)
if [ "$arch" != amd64 ]; then
  case "$arch" in
    arm64) meta=linux-image-arm64 ;;
    armhf) meta=linux-image-armmp-lpae ;;
    *) echo "fetch-kernel: unknown architecture $arch" >&2; exit 2 ;;
  esac
  foreign="$(dirname "$0")/foreign.sh"
  pkg=$("$foreign" "$arch" "$cache" resolve "$meta")
  dir="$cache/$pkg"
  if [ ! -f "$dir/.unpacked" ]; then
    rm -rf "$dir"
    "$foreign" "$arch" "$cache" unpack "$dir" "$pkg"
    touch "$dir/.unpacked"
  fi
  echo "$dir"
  exit 0
fi
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
