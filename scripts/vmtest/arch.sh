#!/usr/bin/env bash
# Runs the data-plane tests on Debian's kernel of an architecture under qemu-system (TCG):
#   arm64: linux-image-arm64 under qemu-system-aarch64 -M virt -cpu cortex-a57, GOARCH=arm64
#   armv7: linux-image-armmp-lpae (the Raspberry Pi 2 class) under qemu-system-arm -M virt
#          -cpu cortex-a15, GOARCH=arm GOARM=7
#   amd64: linux-image-amd64 under qemu-system-x86_64 (make vmtest runs scripts/vmtest/run.sh)
# 1. fetch the kernel and, for ARM, iproute2 with the shared libraries `ip` needs, with
#    apt-get download + dpkg-deb -x (scripts/vmtest/foreign.sh; cached in $VMTEST_CACHE,
#    default /var/cache/iotfabric/vmtest)
# 2. cross-compile, statically: pkg/overlay's and pkg/agent's test binaries, the CNI plugin,
#    two builds of vrouter-agent (the upgrade test) and the init
# 3. boot; suite `test` (default) runs every pkg/overlay test (MPLSoUDP/MPLSoGRE pod to pod
#    in TestVMOverlay, and the kernel tests), then pkg/agent's TestVM* (pods through libcni
#    and the plugin, the agent upgrade under traffic); suite `footprint` runs
#    TestFootprintAgent (make bench-footprint); suite `smoke` (make vmtest-arm-smoke) builds
#    only pkg/overlay's test binary and runs the tests named by $VMTEST_SMOKE_RUN (default
#    TestVMOverlay: MPLSoUDP and MPLSoGRE pod to pod, the GRE fallback, and a restarted
#    manager adopting the kernel state without a change). The VM's result is ours.
# Usage: scripts/vmtest/arch.sh arm64|armv7|amd64 [test|footprint|smoke] [extra go test flags for pkg/overlay...]
set -euo pipefail
cd "$(dirname "$0")/../.."
target=${1:?usage: $0 arm64|armv7|amd64 [test|footprint]}
shift
suite=test
case "${1:-}" in test|footprint|smoke) suite=$1; shift ;; esac
export PATH=/usr/local/go/bin:$PATH
cache=${VMTEST_CACHE:-/var/cache/iotfabric/vmtest}
timeout_s=${VMTEST_TIMEOUT:-2400}  # TCG on a busy machine: the armv7 run took 20 min under load
[ "$suite" = smoke ] && timeout_s=${VMTEST_TIMEOUT:-900}  # about 1 min idle, 4 min at load 20
case "$target" in
  arm64) darch=arm64 goarch=arm64 goarm= triplet=aarch64-linux-gnu
    qemu=(qemu-system-aarch64 -M virt -cpu cortex-a57) ;;
  armv7) darch=armhf goarch=arm goarm=7 triplet=arm-linux-gnueabihf
    qemu=(qemu-system-arm -M virt -cpu cortex-a15) ;;
  amd64) darch=amd64 goarch=amd64 goarm= triplet=x86_64-linux-gnu
    qemu=(qemu-system-x86_64 -cpu max) ;;
  *) echo "usage: $0 arm64|armv7|amd64" >&2; exit 2 ;;
esac
for tool in "${qemu[0]}" cpio apt-get dpkg-deb; do
  command -v "$tool" >/dev/null || { echo "vmtest-$target: $tool missing (scripts/deps/arm.txt; run make deps)" >&2; exit 2; }
done
t0=$(date +%s%N)

kcache=$cache
[ "$darch" = amd64 ] && kcache=.vmtest  # make vmtest's copy
kdir=$(scripts/vmtest/fetch-kernel.sh "$kcache" "$darch")
kver=$(basename "$(ls -d "$kdir"/lib/modules/*)")

# For ARM: iproute2 for the architecture, and the packages of the libraries `ip` links
# against here (the same packages exist for every architecture).
# One dpkg -S for every library under each of its names (as linked, resolved, under /usr):
# each call reads the whole file database (seconds on a busy machine).
libs=$(ldd /usr/sbin/ip | grep -o '/[^ ]*\.so[^ ]*')
pkgs=$({ echo iproute2
  for l in $libs; do printf '%s\n' "$l" "$(readlink -f "$l")" "/usr$l"; done | sort -u | { xargs dpkg -S 2>/dev/null || true; } |
    sed -n 's/^\([a-z0-9][a-z0-9.+-]*\)\(:[a-z0-9]*\)\{0,1\}: .*/\1/p'; } | sort -u | tr '\n' ' ')
uland="$cache/userland-$darch-$(md5sum <<<"$pkgs" | cut -c1-8)"
if [ "$darch" = amd64 ]; then
  uland=/  # this machine's own
elif [ ! -f "$uland/.unpacked" ]; then
  rm -rf "$uland"
  scripts/vmtest/foreign.sh "$darch" "$cache" unpack "$uland" $pkgs
  touch "$uland/.unpacked"
fi

t_fetch=$(date +%s%N)

work=.vmtest
root="$work/root-$target-$suite"
rm -rf "$root"
mkdir -p "$root"/{bin,modules,etc,proc,sys,dev,run,tmp,var,lib}
echo "vmtest-$target: cross-compiling static binaries (GOARCH=$goarch${goarm:+ GOARM=$goarm})" >&2
export GOARCH=$goarch GOARM=$goarm CGO_ENABLED=0
# The test binaries without symbol table and DWARF (-s -w; tracebacks keep working):
# the initramfs must unpack into the VM's memory next to its own copy.
go test -c -ldflags "-s -w" -o "$root/bin/overlay.test" ./pkg/overlay
go build -ldflags "-s -w" -o "$root/init" ./scripts/vmtest/vminit
if [ "$suite" != smoke ]; then
  go test -c -ldflags "-s -w" -o "$root/bin/agent.test" ./pkg/agent
  go build -o "$root/bin/iotfabric" ./cmd/cni-plugin
  # Two builds of the agent that differ in their version string (the upgrade test).
  for v in 1 2; do
    go build -ldflags "-X github.com/iotfabric/iotfabric/internal/buildinfo.Version=0.0.$v-upgrade" -o "$root/bin/vrouter-agent-$v" ./cmd/vrouter-agent
  done
fi
unset GOARCH GOARM CGO_ENABLED
t_build=$(date +%s%N)

# ip, its libraries and the dynamic loader.
if [ "$darch" = amd64 ]; then
  cp /usr/sbin/ip "$root/bin/ip"
  for lib in $(ldd /usr/sbin/ip | grep -o '/[^ ]*'); do
    mkdir -p "$root$(dirname "$lib")" && cp -L "$lib" "$root$lib"
  done
else
  # The file itself, not a symlink (an absolute one would point into this machine).
  for ipbin in "$uland"/{usr/,}{s,}bin/ip; do [ -f "$ipbin" ] && [ ! -L "$ipbin" ] && break; done
  cp "$ipbin" "$root/bin/ip"
  (cd "$uland" && find lib usr/lib -name '*.so*' ! -path '*gconv*' 2>/dev/null) | while read -r f; do
    mkdir -p "$root/$(dirname "$f")" && cp -a "$uland/$f" "$root/$f"
  done
  [ -e "$root/usr/lib" ] || ln -s ../lib "$root/usr/lib"
fi

# sch_ingress (clsact) and cls_bpf for the BPF fast path's tc filters.
mods="udp_tunnel ip6_udp_tunnel tunnel4 ip_tunnel ipip gre ip_gre fou mpls_router mpls_iptunnel veth vrf sch_ingress cls_bpf"
load=
for m in $mods; do
  src=$(find "$kdir/lib/modules/$kver" -name "$m.ko" | head -1)
  if [ -z "$src" ]; then
    grep -q "/$m.ko\$" "$kdir/lib/modules/$kver/modules.builtin" 2>/dev/null && continue  # built in
    echo "vmtest-$target: module $m not in $kver" >&2; exit 2
  fi
  cp "$src" "$root/modules/"
  load="$load $m"
done
echo "$load" > "$root/modules/order"
case "$suite" in
  test) {
    printf '%s\n' /bin/overlay.test -test.v -test.count=1 -test.timeout=1800s "$@" ';'
    printf '%s\n' /bin/agent.test -test.v -test.count=1 -test.timeout=600s -test.run '^TestVM'
  } > "$root/vmtest.args" ;;
  smoke) printf '%s\n' /bin/overlay.test -test.v -test.count=1 -test.timeout=900s \
    -test.run "${VMTEST_SMOKE_RUN:-^TestVMOverlay\$}" "$@" > "$root/vmtest.args" ;;
  footprint) printf '%s\n' /bin/agent.test -test.v -test.count=1 -test.timeout=900s -test.run '^TestFootprintAgent$' > "$root/vmtest.args" ;;
esac
printf '%s\n' IOTFABRIC_PLUGIN_DIR=/bin IOTFABRIC_AGENT_BUILDS=/bin/vrouter-agent-1,/bin/vrouter-agent-2 \
  IOTFABRIC_FOOTPRINT_AGENT=/bin/vrouter-agent-1 > "$root/vmtest.env"

initrd="$work/initramfs-$target-$suite.cpio"
(cd "$root" && find . | cpio -o -H newc --quiet) > "$initrd"
log="$work/console-$target-$suite.log"
t1=$(date +%s%N)
echo "vmtest-$target: booting $kver under ${qemu[0]} (TCG), log in $log" >&2
set +e
# 1536 MiB for the test suite: its initramfs (about 300 MB: the test binaries and two
# agent builds) did not unpack completely into 1024 ("Initramfs unpacking failed:
# write error", the last files truncated); the footprint suite keeps 1024.
# The smoke suite's initramfs holds one test binary (about 16 MB): 512 MiB.
console=ttyAMA0 mem=1024
[ "$suite" = test ] && mem=1536
[ "$suite" = smoke ] && mem=512
[ "$darch" = amd64 ] && console="ttyS0 no_timer_check" mem=2048
timeout "$timeout_s" "${qemu[@]}" -smp 2 -m $mem -accel tcg,thread=multi \
  -kernel "$kdir/boot/vmlinuz-$kver" -initrd "$initrd" \
  -append "console=$console quiet panic=-1 oops=panic loglevel=3" \
  -nographic -no-reboot -nodefaults -serial stdio -monitor none < /dev/null | tee "$log"
qrc=${PIPESTATUS[0]}
set -e
t2=$(date +%s%N)
if grep -aq 'Initramfs unpacking failed' "$log"; then
  echo "vmtest-$target: the initramfs did not unpack completely (VM memory $mem MiB)" >&2
  exit 1
fi
rc=$(grep -a -o 'VMTEST-EXIT [0-9]*' "$log" | tail -1 | awk '{print $2}')
first=$(grep -a -o 'VMTEST-TIME start: uptime [0-9.]*' "$log" | head -1 | awk '{print $4}')
echo "vmtest-$target: prepare $(( (t1 - t0) / 1000000000 )) s (kernel and userland $(( (t_fetch - t0) / 1000000000 )) s, cross-compiling $(( (t_build - t_fetch) / 1000000000 )) s, initramfs $(du -m "$initrd" | cut -f1) MB), VM $(( (t2 - t1) / 1000000000 )) s (kernel start to the first test: ${first:-?} s), total $(( (t2 - t0) / 1000000000 )) s" >&2
if [ -z "$rc" ]; then
  echo "vmtest-$target: the VM ended (qemu status $qrc) without reporting a result" >&2
  exit 1
fi
echo "vmtest-$target: tests inside the VM exited with $rc" >&2
exit "$rc"
