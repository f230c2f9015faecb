#!/usr/bin/env bash
# Runs pkg/overlay's tests (or its benchmark) inside qemu on Debian's kernel,
# which has MPLS, FOU, GRE, ipip and VRF. Nothing is installed on the host:
#   1. fetch linux-image-amd64's kernel with apt-get download + dpkg -x (cached in .vmtest/)
#   2. build the test binary and the init statically (CGO_ENABLED=0)
#   3. pack them, the kernel modules and iproute2's `ip` into an initramfs
#   4. boot qemu-system-x86_64 (TCG) and report the tests' exit code as ours
# Usage: scripts/vmtest/run.sh [test|bench] [extra go test flags...]
set -euo pipefail
cd "$(dirname "$0")/../.."
mode=${1:-test}
shift || true
export PATH=/usr/local/go/bin:$PATH
cache=.vmtest
timeout_s=${VMTEST_TIMEOUT:-720}
[ "$mode" = bench ] && timeout_s=${VMTEST_TIMEOUT:-3900}

for tool in qemu-system-x86_64 cpio ip; do
  command -v "$tool" >/dev/null || { echo "vmtest: $tool missing (scripts/deps/overlay.txt; run make deps)" >&2; exit 2; }
done

kdir=$(scripts/vmtest/fetch-kernel.sh "$cache")
kver=$(basename "$(ls -d "$kdir"/lib/modules/*)")
vmlinuz="$kdir/boot/vmlinuz-$kver"

root="$cache/root-$mode"
rm -rf "$root"
mkdir -p "$root"/{bin,modules,etc,proc,sys,dev,run,tmp}

echo "vmtest: building static binaries" >&2
CGO_ENABLED=0 go test -c -o "$root/bin/overlay.test" ./pkg/overlay
CGO_ENABLED=0 go build -o "$root/init" ./scripts/vmtest/vminit

# iproute2 and the shared libraries it needs.
cp /usr/sbin/ip "$root/bin/ip"
for lib in $(ldd /usr/sbin/ip | grep -o '/[^ ]*'); do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done

# FRR's zebra for the edge router of TestVMFastPathFRREdge, their
# libraries, and the users they check for.
for d in zebra; do
  [ -x /usr/lib/frr/$d ] || { echo "vmtest: /usr/lib/frr/$d missing (frr, scripts/deps/overlay.txt; run make deps)" >&2; exit 2; }
  mkdir -p "$root/usr/lib/frr"
  cp /usr/lib/frr/$d "$root/usr/lib/frr/$d"
  for lib in $(ldd /usr/lib/frr/$d | grep -o '/[^ ]*'); do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done
done
printf 'root:x:0:0:root:/tmp:/bin/false\nfrr:x:100:101::/tmp:/bin/false\n' > "$root/etc/passwd"
printf 'root:x:0:\nfrr:x:101:\nfrrvty:x:102:frr\n' > "$root/etc/group"
mkdir -p "$root/var/run/frr" "$root/var/tmp/frr" "$root/etc/frr"

# Kernel modules, in dependency order.
mods="udp_tunnel ip6_udp_tunnel tunnel4 ip_tunnel ipip gre ip_gre fou mpls_router mpls_iptunnel veth vrf vxlan sch_ingress cls_bpf"
for m in $mods; do
  src=$(find "$kdir/lib/modules/$kver" -name "$m.ko" | head -1)
  [ -n "$src" ] || { echo "vmtest: module $m not in $kver" >&2; exit 2; }
  cp "$src" "$root/modules/"
done
echo "$mods" > "$root/modules/order"

case "$mode" in
  test) printf '%s\n' /bin/overlay.test -test.v -test.count=1 -test.timeout=600s "$@" > "$root/vmtest.args" ;;
  bench) printf '%s\n' /bin/overlay.test -test.run '^$' -test.bench 'BenchmarkVM|BenchmarkSet' -test.benchtime=1x -test.timeout=3600s "$@" > "$root/vmtest.args" ;;
  *) echo "usage: $0 [test|bench] [go test flags]" >&2; exit 2 ;;
esac

{ env | grep -E '^IOTFABRIC_BENCH_' || true; echo IOTFABRIC_VMTEST_FRR=1; } > "$root/vmtest.env"

initrd="$cache/initramfs-$mode.cpio"
(cd "$root" && find . | cpio -o -H newc --quiet) > "$initrd"

log="$cache/console-$mode.log"
echo "vmtest: booting $kver under qemu (TCG), log in $log" >&2
set +e
timeout "$timeout_s" qemu-system-x86_64 \
  -accel tcg,thread=multi -cpu max -smp 2 -m 2048 \
  -kernel "$vmlinuz" -initrd "$initrd" \
  -append "console=ttyS0 quiet panic=-1 oops=panic loglevel=3 no_timer_check" \
  -nographic -no-reboot -nodefaults -serial stdio -monitor none < /dev/null | tee "$log"
qrc=${PIPESTATUS[0]}
set -e
rc=$(grep -a -o 'VMTEST-EXIT [0-9]*' "$log" | tail -1 | awk '{print $2}')
if [ -z "$rc" ]; then
  echo "vmtest: the VM ended (qemu status $qrc) without reporting a result" >&2
  exit 1
fi
echo "vmtest: tests inside the VM exited with $rc" >&2
exit "$rc"
