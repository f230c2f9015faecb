#!/usr/bin/env bash
# `make demo`: the core walk-through, then each extra step script given as an argument
# (the Makefile lists them in order in DEMO_STEPS).
# Every step gets DEMO_DIR (a temporary directory removed at the end) and BIN (built binaries).
set -euo pipefail
cd "$(dirname "$0")/.."
export BIN="$PWD/bin"
export DEMO_DIR=$(mktemp -d /tmp/iotfabric-demo.XXXXXX)
cleanup() { rc=$?; [ -f "$DEMO_DIR/cleanup.sh" ] && bash "$DEMO_DIR/cleanup.sh" || true; rm -rf "$DEMO_DIR"; exit $rc; }
trap cleanup EXIT INT TERM
scripts/install-deps.sh
for step in scripts/demo-core.sh "$@"; do
  [ -f "$step" ] || continue
  echo
  echo "=== $step"
  bash "$step"
done
echo
echo "demo finished"
