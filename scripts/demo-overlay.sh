#!/usr/bin/env bash
# Overlay demo: vrouter-agent programs a gateway (a network namespace) from a state
# file: two networks with overlapping addresses, pods reaching each other inside a
# network and not across; a file change is followed; on SIGTERM the data plane stays;
# --cleanup removes everything iotfabric owns.
set -euo pipefail
: "${DEMO_DIR:?run through make demo}" "${BIN:?run through make demo}"
say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
fail() { echo "demo-overlay: FAILED: $*" >&2; [ -f "$DEMO_DIR/vrouter.log" ] && tail -20 "$DEMO_DIR/vrouter.log" >&2; exit 1; }

id=$$
gw=iofdemo-gw-$id
ns=("$gw" iofdemo-p1-$id iofdemo-p2-$id iofdemo-p3-$id)
for n in "${ns[@]}"; do
  ip netns add "$n"
  echo "ip netns del $n 2>/dev/null || true" >> "$DEMO_DIR/cleanup.sh"
  ip -n "$n" link set lo up
done
# pod NS HOSTIF ADDR: a pod wired as the CNI plugin wires it.
pod() {
  ip -n "$gw" link add "$2" type veth peer name eth0 netns "$1"
  ip -n "$1" link set eth0 mtu 1468 up
  ip -n "$1" addr add "$3/32" dev eth0
  ip -n "$1" route add 169.254.1.1 dev eth0 scope link
  ip -n "$1" route add default via 169.254.1.1 dev eth0
}
pod "${ns[1]}" vred1 10.1.0.1
pod "${ns[2]}" vred2 10.1.0.2
pod "${ns[3]}" vblue1 10.1.0.1

state="$DEMO_DIR/gateway.yaml"
cat > "$state" <<'YAML'
networks:
- name: red
  table: 7001
  endpoints:
  - {interface: vred1, address: 10.1.0.1, label: 1001}
  - {interface: vred2, address: 10.1.0.2, label: 1002}
- name: blue
  table: 7002
  endpoints:
  - {interface: vblue1, address: 10.1.0.1, label: 2001}
YAML
say "cat $state"; cat "$state"

say "vrouter-agent --state $state --netns /run/netns/$gw &"
"$BIN/vrouter-agent" --state "$state" --netns "/run/netns/$gw" >"$DEMO_DIR/vrouter.log" 2>&1 &
apid=$!
echo "kill -TERM $apid 2>/dev/null; wait $apid 2>/dev/null || true" >> "$DEMO_DIR/cleanup.sh"
# wait_applied N: until the log shows N applies (deadline 10 s).
wait_applied() {
  for _ in $(seq 100); do
    [ "$(grep -c 'state applied' "$DEMO_DIR/vrouter.log" || true)" -ge "$1" ] && return 0
    kill -0 "$apid" 2>/dev/null || fail "agent exited"
    sleep 0.1
  done
  fail "state not applied"
}
wait_applied 1
grep -m1 'kernel lacks' "$DEMO_DIR/vrouter.log" | sed 's/^.*msg=/agent: /' || true

say "ip -n $gw rule show | grep 7000:"; ip -n "$gw" rule show | grep '^7000:'
say "ip -n $gw route show table all proto 165"; ip -n "$gw" route show table all proto 165

say "ip netns exec ${ns[1]} ping -c1 10.1.0.2     # red pod to red pod"
ip netns exec "${ns[1]}" ping -c1 -W2 10.1.0.2 || fail "red pods cannot reach each other"
say "ip netns exec ${ns[3]} ping -c1 10.1.0.2     # blue pod (same address as red's) to red"
if ip netns exec "${ns[3]}" ping -c1 -W1 10.1.0.2; then fail "blue reached red: networks not isolated"; fi
echo "-> no answer: the networks are isolated"

say "remove vred2 from the state file (the agent follows the change)"
sed -i '/vred2/d' "$state"
wait_applied 2
ip -n "$gw" route show table 7001 proto 165
if ip netns exec "${ns[1]}" ping -c1 -W1 10.1.0.2; then fail "route to removed endpoint still works"; fi
echo "-> 10.1.0.2 is gone from network red"

say "kill -TERM vrouter-agent    # the data plane stays in place"
kill -TERM "$apid"; wait "$apid" || fail "agent did not exit cleanly on SIGTERM"
tail -1 "$DEMO_DIR/vrouter.log" | sed 's/^.*msg=/agent: /'
[ -n "$(ip -n "$gw" route show table 7001 proto 165)" ] || fail "routes gone after agent exit"

say "vrouter-agent --cleanup --netns /run/netns/$gw"
"$BIN/vrouter-agent" --cleanup --netns "/run/netns/$gw" 2>&1 | sed 's/^.*msg=/agent: /'
left="$(ip -n "$gw" route show table all proto 165; ip -n "$gw" rule show | grep '^70[0-9][0-9]:' || true)"
[ -z "$left" ] || fail "cleanup left: $left"
echo "-> nothing of iotfabric's is left in $gw"
