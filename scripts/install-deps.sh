#!/usr/bin/env bash
# Installs the Debian packages the tests and the demo need.
# Each part of iotfabric lists its packages in scripts/deps/<part>.txt (one per line, # comments).
# Runs apt-get only for packages that are missing, and only as root; otherwise says what to install.
set -euo pipefail
cd "$(dirname "$0")"
want=$(cat deps/*.txt 2>/dev/null | sed 's/#.*//' | tr -s ' \t' '\n' | sed '/^$/d' | sort -u)
[ -n "$want" ] || exit 0
missing=()
for p in $want; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing Debian packages: ${missing[*]}" >&2
  echo "install-deps: run as root, or: sudo apt-get install ${missing[*]}" >&2
  exit 1
fi
echo "install-deps: installing ${missing[*]}"
t0=$(date +%s)
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-deps: installed ${#missing[@]} packages (and their dependencies) in $(( $(date +%s) - t0 )) s"
# Package post-install scripts start some daemons system-wide; the tests start their own
# instances on loopback with temporary directories, so stop the system ones (no-op without systemd).
for svc in etcd mosquitto carbon-cache frr bird gobgpd; do
  service "$svc" stop >/dev/null 2>&1 || true
done
