#!/usr/bin/env bash
# Make the running kernel traceable by BCC: kernel headers where BCC looks, and
# tracefs mounted. Idempotent and quick; run by install.sh on a node and by the
# container entrypoint at every start (the node's kernel is only known then).
set -euo pipefail
KVER=$(uname -r)
say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

# The running kernel has no headers of its own here: link the nearest Debian
# headers where BCC looks. Types then come from another version, which is why
# the BPF programs never read kernel structs by offset (see docs/architecture.md, "How it works").
if [ ! -e "/lib/modules/$KVER/build/include" ] && [ ! -e /sys/kernel/kheaders.tar.xz ]; then
  hdr=$(ls -d /usr/src/linux-headers-*-cloud-amd64 2>/dev/null | sort -V | tail -n1 || true)
  [ -n "$hdr" ] || hdr=$(ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | sort -V | tail -n1 || true)
  if [ -z "$hdr" ]; then
    echo "prepare-node.sh: no kernel headers under /usr/src or /lib/modules/$KVER (mount the host's, or install linux-headers); BCC cannot compile programs" >&2
    exit 1
  fi
  common=${hdr%-cloud-amd64}; common=${common%-amd64}-common
  mkdir -p "/lib/modules/$KVER"
  ln -sfn "$hdr" "/lib/modules/$KVER/build"
  [ -d "$common" ] && ln -sfn "$common" "/lib/modules/$KVER/source"
  say "linked kernel headers $hdr -> /lib/modules/$KVER/build"
fi

# tracefs: tracepoints and uprobes are attached through it.
if [ ! -e /sys/kernel/tracing/events ]; then
  mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null || true
fi
if [ ! -e /sys/kernel/tracing/events ] && [ ! -e /sys/kernel/debug/tracing/events ]; then
  mount -t debugfs nodev /sys/kernel/debug 2>/dev/null || true
fi

exit 0
