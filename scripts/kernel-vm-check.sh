#!/usr/bin/env bash
# ebpftool on another kernel: Debian 12's own Linux 6.1 (the kernel of many nodes), booted in a VM, with
# this working tree installed the README's way. The development machines run 6.18, where every program's
# verifier is newer and more paths (BTF tracepoints, the arrival hook) exist: what 6.1 refuses or lacks
# shows only there.
#
#   sudo scripts/kernel-vm-check.sh                      # install, doctor, verifier figures, `trace`
#   sudo scripts/kernel-vm-check.sh tests/test_net.py    # and these tests (pytest arguments)
#
# The VM's disk is built once with mmdebstrap (Debian 12 + linux-image-amd64) in $EBPFTOOL_VM_DIR
# (/var/tmp/ebpftool-vm) and kept: what the job installs stays for the next run (--rebuild starts over).
# qemu runs it with TCG (software CPU: slow, but it needs no nested virtualisation, which these machines'
# /dev/kvm does not give; EBPFTOOL_VM_ACCEL=kvm where it does). The VM reaches the network through qemu's
# user-mode NAT and trusts the CAs this machine added (/usr/local/share/ca-certificates). Its output:
# $EBPFTOOL_VM_DIR/share/out.log; the exit status is the job's. EBPFTOOL_VM_BEFORE_TESTS: a shell command the
# VM runs before the tests (a diagnosis: files put in $EBPFTOOL_VM_DIR/share are its /host).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DIR=${EBPFTOOL_VM_DIR:-/var/tmp/ebpftool-vm}
ACCEL=${EBPFTOOL_VM_ACCEL:-tcg}
REBUILD=0
[ "${1:-}" = "--rebuild" ] && { REBUILD=1; shift; }
[ "$(id -u)" -eq 0 ] || { echo "kernel-vm-check.sh builds a disk image and boots a VM: run as root" >&2; exit 1; }

need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
if [ ${#need[@]} -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

mkdir -p "$DIR/share"
if [ "$REBUILD" = 1 ] || [ ! -e "$DIR/disk.img" ]; then
  rm -rf "$DIR/rootfs" "$DIR/disk.img"
  mmdebstrap --variant=minbase \
    --include=linux-image-amd64,initramfs-tools,kmod,iproute2,ca-certificates,python3,sudo,procps,udev \
    bookworm "$DIR/rootfs" "deb http://deb.debian.org/debian bookworm main" \
    "deb http://deb.debian.org/debian-security bookworm-security main"
  # PID 1: mounts, loopback and the NAT's network, the host's share; runs /host/job.sh; powers off.
  cat > "$DIR/rootfs/sbin/vm-init" <<'INIT'
#!/bin/sh
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
mount -o remount,rw /
mount -t proc proc /proc 2>/dev/null; mount -t sysfs sys /sys 2>/dev/null; mount -t devtmpfs dev /dev 2>/dev/null
mkdir -p /dev/pts /dev/shm; mount -t devpts devpts /dev/pts; mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /run; mount -t tmpfs tmpfs /tmp
mount -t cgroup2 none /sys/fs/cgroup; mount -t bpf bpf /sys/fs/bpf
mount -t debugfs nodev /sys/kernel/debug; mount -t tracefs nodev /sys/kernel/tracing
hostname ebpftool-vm
ip link set lo up
modprobe virtio_net 2>/dev/null
for i in $(seq 50); do IF=$(ls /sys/class/net | grep -v '^lo$' | head -1); [ -n "$IF" ] && break; sleep 0.2; done
ip link set "$IF" up && ip addr add 10.0.2.15/24 dev "$IF" && ip route add default via 10.0.2.2
echo "nameserver 10.0.2.3" > /etc/resolv.conf
modprobe 9pnet_virtio; modprobe 9p
mkdir -p /host && mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 hostshare /host
if [ -x /host/job.sh ]; then /host/job.sh > /host/out.log 2>&1; echo "rc=$?" >> /host/out.log; fi
sync
echo o > /proc/sysrq-trigger
sleep 10
INIT
  chmod +x "$DIR/rootfs/sbin/vm-init"
  truncate -s 16G "$DIR/disk.img"
  mke2fs -q -t ext4 -d "$DIR/rootfs" "$DIR/disk.img"
fi

# The working tree as it is (tracked files), this machine's added CAs, the job.
(cd "$ROOT" && git ls-files -z | tar --null -czf "$DIR/share/ebpftool.tar.gz" -T -)
rm -f "$DIR/share/"*.crt "$DIR/share/out.log"
cp /usr/local/share/ca-certificates/*.crt "$DIR/share/" 2>/dev/null || true
tests=""
[ $# -gt 0 ] && tests=$(printf '%q ' "$@")
cat > "$DIR/share/job.sh" <<JOB
#!/bin/bash
cp /host/*.crt /usr/local/share/ca-certificates/ 2>/dev/null && update-ca-certificates >/dev/null 2>&1
rm -rf /root/ebpftool && mkdir -p /root/ebpftool && tar -xzf /host/ebpftool.tar.gz -C /root/ebpftool
cd /root/ebpftool
uname -r
scripts/install.sh > /host/install.log 2>&1 || { echo "install.sh failed: /host/install.log"; exit 1; }
if [ -n "$tests" ]; then
  # what the BPF tests need, not install.sh --dev's whole set (real model servers, podman, Go): slow under TCG
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx-light wrk iperf3 bpftool gcc \
    libc6-dev curl >> /host/install.log 2>&1
  /opt/ebpftool/venv/bin/pip install -q pytest pytest-timeout hypothesis grpcio opentelemetry-proto >> /host/install.log 2>&1
fi
ebpftool doctor
/opt/ebpftool/venv/bin/python scripts/verifier_stats.py inference | grep -v "│\|┃\|━\|─"
ebpftool trace --duration 5 --no-ui
${EBPFTOOL_VM_BEFORE_TESTS:-}
[ -z "$tests" ] || /opt/ebpftool/venv/bin/python -m pytest -p no:cacheprovider -q -rs $tests
JOB
chmod +x "$DIR/share/job.sh"

shopt -s nullglob
kernels=("$DIR"/rootfs/boot/vmlinuz-*)
initrds=("$DIR"/rootfs/boot/initrd.img-*)
[ ${#kernels[@]} -gt 0 ] || { echo "no kernel in $DIR/rootfs/boot: run again with --rebuild" >&2; exit 1; }
if [ "$ACCEL" = kvm ]; then cpu=(-enable-kvm -cpu host); else cpu=(-accel tcg,thread=multi -cpu max); fi
timeout "${EBPFTOOL_VM_TIMEOUT:-7200}" qemu-system-x86_64 "${cpu[@]}" -smp "$(nproc)" -m 8G \
  -kernel "${kernels[-1]}" -initrd "${initrds[-1]}" \
  -append "root=/dev/vda rw console=ttyS0 init=/sbin/vm-init loglevel=4" \
  -drive file="$DIR/disk.img",if=virtio,format=raw -netdev user,id=n0 -device virtio-net-pci,netdev=n0 \
  -virtfs local,path="$DIR/share",mount_tag=hostshare,security_model=none \
  -nographic -serial file:"$DIR/console.log" -monitor none
cat "$DIR/share/out.log"
rc=$(sed -n 's/^rc=//p' "$DIR/share/out.log" | tail -1)
exit "${rc:-1}"
