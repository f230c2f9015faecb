#!/usr/bin/env bash
# Core demo: a controller on a bbolt file, a network, a gateway and two endpoints.
# Leaves the controller running for later steps: its API address is in $DEMO_DIR/api.
set -euo pipefail
: "${DEMO_DIR:?run through make demo}" "${BIN:?run through make demo}"
say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
# start_controller LISTEN: runs the controller, waits until it serves, sets $pid and $api.
start_controller() {
  : > "$DEMO_DIR/controller.log"
  "$BIN/controller" --data-dir "$DEMO_DIR/controller" --api-listen "$1" --metrics-listen 127.0.0.1:0 \
    >"$DEMO_DIR/controller.log" 2>&1 &
  pid=$!
  echo "kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null || true" >> "$DEMO_DIR/cleanup.sh"
  api=""
  for _ in $(seq 100); do
    api=$(sed -n 's/.*msg="controller serving" api=\([^ ]*\).*/\1/p' "$DEMO_DIR/controller.log")
    [ -n "$api" ] && break
    kill -0 "$pid" 2>/dev/null || { cat "$DEMO_DIR/controller.log" >&2; exit 1; }
    sleep 0.1
  done
  [ -n "$api" ] || { echo "controller did not start" >&2; cat "$DEMO_DIR/controller.log" >&2; exit 1; }
  export IOTFABRIC_SERVER="$api"
  echo "$api" > "$DEMO_DIR/api"
}

start_controller 127.0.0.1:0
echo "controller (pid $pid) serving on $api, state in $DEMO_DIR/controller/state.db"

ctl() { say "iotfabricctl $*"; "$BIN/iotfabricctl" "$@"; }
ctl network create sensors --subnet 10.10.0.0/24 --subnet fd00:10::/64 --export-rt target:64512:100
ctl gateway create gw-pisek-1 --address 192.0.2.11 --encap mplsoudp,mplsogre
ctl endpoint create --network sensors --gateway gw-pisek-1 --name iqrf-collector-0 --label 100
ctl endpoint create --network sensors --gateway gw-pisek-1 --name vm-historian --ip 10.10.0.200 --label 101
ctl endpoint list
ctl ipam show sensors
say "iotfabricctl endpoint create ... (an address already in use: a clear error, nothing written)"
if "$BIN/iotfabricctl" endpoint create --network sensors --gateway gw-pisek-1 --name dup --ip 10.10.0.200; then
  echo "expected an error" >&2; exit 1
fi

say "restart the controller: state survives"
kill -TERM "$pid"; wait "$pid" || true
start_controller "$api"
n=$("$BIN/iotfabricctl" -o json endpoint list | grep -c '"id"')
ctl endpoint list
[ "$n" = 2 ] || { echo "expected 2 endpoints after restart, found $n" >&2; exit 1; }
echo "$pid" > "$DEMO_DIR/controller.pid"
