#!/bin/sh
# Container entrypoint: the node's kernel is only known at start, so prepare it
# (headers link, tracefs), then run ebpftool with the given arguments.
set -e
/opt/ebpftool/src/scripts/prepare-node.sh
# The cgroup v2 hierarchy, which names the container of each traced request (container.id, from the
# cgroup id the BPF programs read): a runtime on a cgroup v1 or hybrid node (runc: v1 controllers only)
# mounts none in the container. Mount it where it is missing and this container may (privileged, or
# CAP_SYS_ADMIN); a hostPID agent reads the node's through /proc/1/root anyway.
if ! grep -q ' cgroup2 ' /proc/self/mounts 2>/dev/null && [ -d /sys/fs/cgroup ]; then
  { mkdir -p /sys/fs/cgroup/unified && mount -t cgroup2 none /sys/fs/cgroup/unified; } 2>/dev/null || true
fi
exec /usr/local/bin/ebpftool "$@"
