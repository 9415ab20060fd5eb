#!/usr/bin/env bash
# The idle_scale cost curve in a virtual machine of its own, for hosts whose container caps
# RLIMIT_NOFILE below what the bench needs and withholds CAP_SYS_RESOURCE (this project's
# VMs: a hard limit of 20,000, so no process can hold 100,000 sockets). Inside the guest
# the bench is root of its own kernel, raises the limit to what `--sizes` needs and runs
# unchanged: server and client processes, loopback, the same binary.
#
#   bash benches/idle_scale/vm.sh                       # --sizes 1000,15000,100000
#   bash benches/idle_scale/vm.sh --sizes 1000,100000   # any idle_scale arguments
#
# It installs qemu-system-x86 and busybox-static from Debian, takes Debian's kernel image
# (unpacked, not installed), packs the bench binary and its libraries into an initramfs
# and boots it with 2 vCPUs and 16 GiB (TCP_HYGIENE_VM_MEMORY). It runs the guest under
# qemu's software emulation (TCG), or under KVM with TCP_HYGIENE_VM_KVM=1 where KVM runs a
# guest (nested KVM hangs at boot on this project's VMs). Under emulation every figure of
# time (FIN detection, reap lateness, idle CPU) is that of an emulated machine, several
# times the host's, so compare sizes within one run, not with the host's figures. Memory
# per connection is counted by the bench's allocator and is the same on any machine.
set -euo pipefail

cd "$(dirname "$0")/../.."
args=("$@")
[ ${#args[@]} -gt 0 ] || args=(--sizes 1000,15000,100000)
work=${TCP_HYGIENE_VM_DIR:-target/idle_scale_vm}
mkdir -p "$work"
work=$(cd "$work" && pwd)

# busybox-static: Debian's other busybox needs libraries the initramfs would lack.
if ! command -v qemu-system-x86_64 >/dev/null || ! dpkg -s busybox-static >/dev/null 2>&1 ||
    ! command -v cpio >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        qemu-system-x86 busybox-static cpio >/dev/null
fi

kernel=$(ls "$work"/k/boot/vmlinuz-* 2>/dev/null | head -1 || true)
if [ -z "$kernel" ]; then
    pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-/ {print $2; exit}')
    if [ -z "$pkg" ]; then
        apt-get update -qq
        pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-/ {print $2; exit}')
    fi
    [ -n "$pkg" ] || { echo "vm.sh: no Debian kernel package (linux-image-amd64) found" >&2; exit 1; }
    (cd "$work" && apt-get download "$pkg" && dpkg-deb -x "$pkg"_*.deb k && rm -f "$pkg"_*.deb)
    kernel=$(ls "$work"/k/boot/vmlinuz-* | head -1)
fi

bin=$(cargo bench --bench idle_scale --no-run --message-format=json |
    sed -n 's/.*"executable":"\([^"]*idle_scale[^"]*\)".*/\1/p' | tail -1) || true
[ -x "$bin" ] || { echo "vm.sh: the idle_scale bench did not build" >&2; exit 1; }

root="$work/root"
rm -rf "$root"
mkdir -p "$root"/{bin,proc,sys,dev,tmp}
cp /bin/busybox "$root/bin/"
for tool in sh mount ip cat echo sleep; do ln -s busybox "$root/bin/$tool"; done
cp "$bin" "$root/bin/idle_scale"
# The bench's shared libraries, at the paths its interpreter looks for them.
for lib in $(ldd "$bin" | grep -oE '/[^ ]+'); do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
done
# `--bench`, as `cargo bench` passes it: the full run, not the smoke test.
printf '%s\n' --bench "${args[@]}" > "$root/args"
cat > "$root/init" <<'EOF'
#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
ip link set lo up
# The bench raises its descriptor limit itself, up to fs.nr_open (1,048,576); its clients
# use 127.x.y.z sources, 1,000 connections each, so the default port range is enough.
echo "vm: kernel $(cat /proc/sys/kernel/osrelease), $(grep -c ^processor /proc/cpuinfo) vCPUs, $(grep MemTotal /proc/meminfo | tr -s ' ')"
set --
while read -r arg; do set -- "$@" "$arg"; done < /args
/bin/idle_scale "$@"
echo "vm: idle_scale exit $?"
echo o > /proc/sysrq-trigger
sleep 30
EOF
chmod +x "$root/init"
(cd "$root" && find . | cpio -o -H newc 2>/dev/null | gzip -1 > "$work/initrd.gz")

accel=(-accel tcg,thread=multi -cpu max)
if [ -w /dev/kvm ] && [ "${TCP_HYGIENE_VM_KVM:-0}" = 1 ]; then
    # Nested KVM hangs at boot on some hosts (this project's VMs among them), so it is
    # asked for, not guessed.
    accel=(-enable-kvm -cpu host)
fi
memory=${TCP_HYGIENE_VM_MEMORY:-16G}
echo "vm.sh: booting $(basename "$kernel") with ${accel[*]}, $memory; idle_scale ${args[*]}"
# The guest's console is the bench's output; qemu exits 0 whatever the bench did, so the
# bench's own exit status is read from the console. A guest that hangs is stopped.
timeout "${TCP_HYGIENE_VM_TIMEOUT:-7200}" \
    qemu-system-x86_64 "${accel[@]}" -m "$memory" -smp 2 -nographic -no-reboot -net none \
    -kernel "$kernel" -initrd "$work/initrd.gz" \
    -append "console=ttyS0 quiet panic=-1" |
    tr -d '\r' | tee "$work/console.log" || true
if ! grep -q '^vm: idle_scale exit 0$' "$work/console.log"; then
    echo "vm.sh: the bench did not finish well in the guest (see $work/console.log)" >&2
    exit 1
fi
