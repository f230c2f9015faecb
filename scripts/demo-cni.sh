#!/usr/bin/env bash
# CNI demo: two gateways (network namespaces), each with a vrouter agent that
# follows the controller; pods are created with the real CNI plugin, called the
# way a container runtime calls it. The controller learns the pods, each gateway
# learns the other's pods as routes, the edge router (FRR, from the BGP step)
# shows them; where the kernel has MPLS the pods ping each other over MPLSoUDP.
set -euo pipefail
: "${DEMO_DIR:?run through make demo}" "${BIN:?run through make demo}"
say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
fail() { echo "demo-cni: FAILED: $*" >&2; for l in "$DEMO_DIR"/agent-*.log; do [ -f "$l" ] && { echo "--- $l" >&2; tail -5 "$l" >&2; }; done; exit 1; }
if [ "$(id -u)" -ne 0 ]; then echo "skipping the CNI step: it needs root (network namespaces)"; exit 0; fi

export IOTFABRIC_SERVER=$(cat "$DEMO_DIR/api")
ctl() { say "iotfabricctl $*"; "$BIN/iotfabricctl" "$@"; }
id=$$
ctl network create pods --subnet 10.60.0.0/16

# Two gateways joined by an underlay link.
declare -A under=([a]=192.0.2.201 [b]=192.0.2.202)
for g in a b; do
  ns=iotfdemo-gw$g-$id
  ip netns add "$ns"
  echo "ip netns pids $ns 2>/dev/null | xargs -r kill -9 2>/dev/null; ip netns del $ns 2>/dev/null || true" >> "$DEMO_DIR/cleanup.sh"
  ip -n "$ns" link set lo up
done
ip -n iotfdemo-gwa-$id link add ul0 type veth peer name ul0 netns iotfdemo-gwb-$id
for g in a b; do
  ip -n iotfdemo-gw$g-$id addr add "${under[$g]}/24" dev ul0
  ip -n iotfdemo-gw$g-$id link set ul0 up
done

for g in a b; do
  say "vrouter-agent --gateway demo-gw-$g --underlay ${under[$g]} --controller $IOTFABRIC_SERVER --netns /run/netns/iotfdemo-gw$g-$id ... &"
  "$BIN/vrouter-agent" --gateway "demo-gw-$g" --underlay "${under[$g]}" --controller "$IOTFABRIC_SERVER" \
    --netns "/run/netns/iotfdemo-gw$g-$id" --state-dir "$DEMO_DIR/agent-$g" --cni-socket "$DEMO_DIR/agent-$g.sock" \
    >"$DEMO_DIR/agent-$g.log" 2>&1 &
  pid=$!
  echo "kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null || true" >> "$DEMO_DIR/cleanup.sh"
done
for _ in $(seq 100); do [ -S "$DEMO_DIR/agent-a.sock" ] && [ -S "$DEMO_DIR/agent-b.sock" ] && break; sleep 0.1; done
[ -S "$DEMO_DIR/agent-a.sock" ] && [ -S "$DEMO_DIR/agent-b.sock" ] || fail "the agents did not start"

# cni GW CMD POD: run the plugin like a runtime does.
cni() {
  local g=$1 cmd=$2 pod=$3
  printf '{"cniVersion":"1.1.0","name":"iotfabric","type":"iotfabric","socket":"%s","network":"pods"}' "$DEMO_DIR/agent-$g.sock" |
    CNI_COMMAND=$cmd CNI_CONTAINERID=$pod CNI_NETNS=/run/netns/$pod-$id CNI_IFNAME=eth0 CNI_PATH="$BIN" "$BIN/cni-plugin"
}
declare -A addr
for p in a1:a b1:b; do
  pod=${p%:*} g=${p#*:}
  ip netns add "$pod-$id"
  echo "ip netns del $pod-$id 2>/dev/null || true" >> "$DEMO_DIR/cleanup.sh"
  say "CNI_COMMAND=ADD CNI_CONTAINERID=$pod CNI_NETNS=/run/netns/$pod-$id CNI_IFNAME=eth0 cni-plugin < conf   (gateway $g)"
  out=$(cni "$g" ADD "$pod") || fail "ADD $pod: $out"
  echo "$out"
  addr[$pod]=$(echo "$out" | grep -o '"address": *"[0-9.]*' | grep -o '[0-9.]*$')
  [ -n "${addr[$pod]}" ] || fail "no address in the result"
  say "ip -n $pod-$id addr show eth0; ip -n $pod-$id route"
  ip -n "$pod-$id" -br addr show eth0; ip -n "$pod-$id" route
done

ctl endpoint list --network pods
n=$("$BIN/iotfabricctl" endpoint list --network pods | grep -c demo-gw || true)
[ "$n" -ge 2 ] || fail "the controller does not list both pods"
ctl route list --network pods

# Gateway b's agent learned a1 as a route toward gateway a.
for _ in $(seq 50); do grep -q "${addr[a1]}" "$DEMO_DIR/agent-b/routes.log" 2>/dev/null && break; sleep 0.1; done
say "grep ${addr[a1]} $DEMO_DIR/agent-b/routes.log   (gateway b's routes from the controller)"
grep -o "{[^{}]*\"${addr[a1]}/32\"[^{}]*}" "$DEMO_DIR/agent-b/routes.log" | head -1 || fail "gateway b did not learn a1"

frr=$(grep -o '/tmp/iotfabric-demo-frr\.[A-Za-z0-9]*' "$DEMO_DIR/cleanup.sh" 2>/dev/null | head -1 || true)
if [ -n "$frr" ] && [ -S "$frr/bgpd.vty" ]; then
  for _ in $(seq 50); do vtysh --vty_socket "$frr" -c 'show bgp ipv4 vpn' 2>/dev/null | grep -q "${addr[b1]}" && break; sleep 0.1; done
  say "vtysh -c 'show bgp ipv4 vpn'   (the pods' routes at the edge router)"
  vtysh --vty_socket "$frr" -c 'show bgp ipv4 vpn' | grep -E "Route Distinguisher|10\.60\." || true
  vtysh --vty_socket "$frr" -c 'show bgp ipv4 vpn' | grep -q "${addr[a1]}" || fail "FRR does not have a1's route"
fi

if ip netns exec iotfdemo-gwa-$id test -d /proc/sys/net/mpls; then
  say "ip netns exec a1 ping -c 3 ${addr[b1]}   (over MPLSoUDP between the gateways)"
  ip netns exec "a1-$id" ping -c 3 -W 2 "${addr[b1]}" || fail "the pods do not reach each other"
else
  echo
  echo "(this kernel has no MPLS: the pods' routes are in place at both gateways, the tunnels need"
  echo " mpls_router, mpls_iptunnel and fou; make vmtest-cni pings between two pods under Debian's kernel in qemu)"
fi

for p in a1:a b1:b; do
  pod=${p%:*} g=${p#*:}
  say "CNI_COMMAND=DEL ... $pod"
  cni "$g" DEL "$pod" || fail "DEL $pod"
  echo ok
done
