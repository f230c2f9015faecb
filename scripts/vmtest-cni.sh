#!/usr/bin/env bash
# make vmtest-cni: pkg/agent's TestVMPodsPingOverMPLS under Debian's kernel in
# qemu (the kernel and the init of the vmtest harness, scripts/vmtest): a
# controller, two gateways each with an agent, pods added through libcni with
# the plugin; the pods reach each other over MPLSoUDP between the gateways.
# TestVMAgentUpgrade: the agent binary is replaced under pod traffic.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/usr/local/go/bin:$PATH
cache=.vmtest
timeout_s=${VMTEST_TIMEOUT:-300}
for tool in qemu-system-x86_64 cpio; do
  command -v "$tool" >/dev/null || { echo "vmtest-cni: $tool missing (scripts/deps/overlay.txt; run make deps)" >&2; exit 2; }
done
kdir=$(scripts/vmtest/fetch-kernel.sh "$cache")
kver=$(basename "$(ls -d "$kdir"/lib/modules/*)")
root="$cache/root-cni"
rm -rf "$root"
mkdir -p "$root"/{bin,modules,etc,proc,sys,dev,run,tmp,var}
echo "vmtest-cni: building static binaries" >&2
CGO_ENABLED=0 go test -c -o "$root/bin/agent.test" ./pkg/agent
CGO_ENABLED=0 go build -o "$root/bin/iotfabric" ./cmd/cni-plugin
CGO_ENABLED=0 go build -o "$root/init" ./scripts/vmtest/vminit
# Two builds of the agent with different version strings: TestVMAgentUpgrade.
for v in 1 2; do
  CGO_ENABLED=0 go build -ldflags "-X github.com/iotfabric/iotfabric/internal/buildinfo.Version=0.0.$v-upgrade" -o "$root/bin/vrouter-agent-$v" ./cmd/vrouter-agent
done
mods="udp_tunnel ip6_udp_tunnel tunnel4 ip_tunnel ipip gre ip_gre fou mpls_router mpls_iptunnel veth vrf"
for m in $mods; do
  src=$(find "$kdir/lib/modules/$kver" -name "$m.ko" | head -1)
  [ -n "$src" ] || { echo "vmtest-cni: module $m not in $kver" >&2; exit 2; }
  cp "$src" "$root/modules/"
done
echo "$mods" > "$root/modules/order"
printf '%s\n' /bin/agent.test -test.v -test.count=1 -test.timeout=240s -test.run '^TestVM' > "$root/vmtest.args"
printf '%s\n' IOTFABRIC_PLUGIN_DIR=/bin IOTFABRIC_AGENT_BUILDS=/bin/vrouter-agent-1,/bin/vrouter-agent-2 > "$root/vmtest.env"
initrd="$cache/initramfs-cni.cpio"
(cd "$root" && find . | cpio -o -H newc --quiet) > "$initrd"
log="$cache/console-cni.log"
echo "vmtest-cni: booting $kver under qemu (TCG), log in $log" >&2
set +e
timeout "$timeout_s" qemu-system-x86_64 \
  -accel tcg,thread=multi -cpu max -smp 2 -m 2048 \
  -kernel "$kdir/boot/vmlinuz-$kver" -initrd "$initrd" \
  -append "console=ttyS0 quiet panic=-1 oops=panic loglevel=3 no_timer_check" \
  -nographic -no-reboot -nodefaults -serial stdio -monitor none < /dev/null | tee "$log"
set -e
rc=$(grep -a -o 'VMTEST-EXIT [0-9]*' "$log" | tail -1 | awk '{print $2}')
[ -n "$rc" ] || { echo "vmtest-cni: the VM ended without reporting a result" >&2; exit 1; }
echo "vmtest-cni: tests inside the VM exited with $rc" >&2
exit "$rc"
