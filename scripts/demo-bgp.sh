#!/usr/bin/env bash
# BGP demo step: an FRR edge router in a network namespace peers with the
# controller over iBGP (VPNv4/VPNv6, TCP MD5); FRR's VPN table shows the demo
# endpoints; one endpoint is deleted and its route disappears.
set -euo pipefail
: "${DEMO_DIR:?run through make demo}" "${BIN:?run through make demo}"
say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
if [ "$(id -u)" -ne 0 ]; then echo "skipping the BGP step: it needs root (network namespaces)"; exit 0; fi

ns=iotf-demo-edge-$$
host=10.97.0.1
edge=10.97.0.2
# FRR runs as user frr: give it a directory of its own it can reach.
dir=$(mktemp -d /tmp/iotfabric-demo-frr.XXXXXX)
chmod 755 "$dir"
cat >> "$DEMO_DIR/cleanup.sh" <<EOC
for p in $dir/bgpd.pid $dir/zebra.pid; do [ -f \$p ] && kill \$(cat \$p) 2>/dev/null; done
ip netns pids $ns 2>/dev/null | xargs -r kill -9 2>/dev/null
ip link del iotfdemo0 2>/dev/null
ip netns del $ns 2>/dev/null
rm -rf $dir
true
EOC
ip netns add "$ns"
ip link add iotfdemo0 type veth peer name iotfdemo1
ip link set iotfdemo1 netns "$ns"
ip addr add "$host/24" dev iotfdemo0 && ip link set iotfdemo0 up
ip -n "$ns" addr add "$edge/24" dev iotfdemo1 && ip -n "$ns" link set iotfdemo1 up && ip -n "$ns" link set lo up

cat > "$dir/frr.conf" <<EOF2
hostname edge
log file $dir/frr.log
!
router bgp 64512
 bgp router-id $edge
 no bgp default ipv4-unicast
 neighbor $host remote-as 64512
 neighbor $host password pisek-demo
 neighbor $host timers connect 1
 address-family ipv4 vpn
  neighbor $host activate
 exit-address-family
 address-family ipv6 vpn
  neighbor $host activate
 exit-address-family
!
EOF2
chown -R frr:frr "$dir"
common=(-f "$dir/frr.conf" -z "$dir/zserv.api" --vty_socket "$dir" -u frr -g frr -A 127.0.0.1)
ip netns exec "$ns" /usr/lib/frr/zebra -d -i "$dir/zebra.pid" "${common[@]}" >/dev/null 2>&1
for _ in $(seq 50); do [ -S "$dir/zserv.api" ] && break; sleep 0.1; done
ip netns exec "$ns" /usr/lib/frr/bgpd -d -i "$dir/bgpd.pid" "${common[@]}" >/dev/null 2>&1
vtysh() { command vtysh --vty_socket "$dir" "$@"; }
for _ in $(seq 50); do vtysh -c 'show bgp summary' >/dev/null 2>&1 && break; sleep 0.1; done
echo "FRR edge router running in namespace $ns ($edge), AS 64512"

# Restart the controller with its BGP speaker on, peering with FRR.
pid=$(cat "$DEMO_DIR/controller.pid")
api=$(cat "$DEMO_DIR/api")
kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
cat > "$DEMO_DIR/controller.yaml" <<EOF2
data_dir: $DEMO_DIR/controller
api:
  listen: $api
metrics:
  listen: 127.0.0.1:0
bgp:
  asn: 64512
  router_id: $host
  listen_port: -1
  peers:
    - address: $edge
      asn: 64512
      password: pisek-demo
EOF2
say "controller --config controller.yaml   (bgp: router_id $host, peer $edge with an MD5 password)"
cat "$DEMO_DIR/controller.yaml"
"$BIN/controller" --config "$DEMO_DIR/controller.yaml" >"$DEMO_DIR/controller.log" 2>&1 &
pid=$!
echo "$pid" > "$DEMO_DIR/controller.pid"
echo "kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null || true" >> "$DEMO_DIR/cleanup.sh"
export IOTFABRIC_SERVER="$api"
ctl() { say "iotfabricctl $*"; "$BIN/iotfabricctl" "$@"; }

established=""
for _ in $(seq 100); do
  if "$BIN/iotfabricctl" peer list 2>/dev/null | grep -q established; then established=1; break; fi
  sleep 0.2
done
[ -n "$established" ] || { echo "the BGP session did not come up" >&2; tail -20 "$DEMO_DIR/controller.log" >&2; exit 1; }
ctl peer list
ctl route list --network sensors

count() { vtysh -c 'show bgp ipv4 vpn' | grep -c '^ *\*>' || true; }
for _ in $(seq 50); do [ "$(count)" -ge 2 ] && break; sleep 0.1; done
say "vtysh -c 'show bgp ipv4 vpn'   (on the edge router)"
vtysh -c 'show bgp ipv4 vpn'
[ "$(count)" -ge 2 ] || { echo "FRR does not hold the two endpoint routes" >&2; exit 1; }

ctl endpoint delete vm-historian
for _ in $(seq 50); do [ "$(count)" -eq 1 ] && break; sleep 0.1; done
say "vtysh -c 'show bgp ipv4 vpn'   (10.10.0.200/32 is gone)"
vtysh -c 'show bgp ipv4 vpn'
[ "$(count)" -eq 1 ] || { echo "the deleted endpoint's route is still at FRR" >&2; exit 1; }
