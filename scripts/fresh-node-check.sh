#!/usr/bin/env bash
# The README's install command on a fresh Debian 12, as a new user runs it: a minimal Debian root file
# system (mmdebstrap, from Debian's packages) in a privileged container sharing the host's kernel, this
# checkout copied in, then `scripts/install.sh && ebpftool trace --duration 5`, and `ebpftool doctor`.
# It proves the install script does everything on a machine where nothing was installed by hand.
#
#   sudo scripts/fresh-node-check.sh [LOGDIR]      # ~5 min; needs podman, runc, mmdebstrap (installs them)
#
# Facts of these machines (../shared/notes/real-world.md): podman's default runtime crun refuses here
# (cgroups in hybrid mode), so runc; rlimits are given, not raised; pip reaches PyPI through a TLS proxy
# whose CA and pip.conf are mounted read-only where the host has them. Not part of the test suite.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LOG=${1:-/tmp/ebpftool-fresh-node}
BASE=localhost/ebpftool-fresh-base:bookworm
mkdir -p "$LOG"

missing=()
for tool in podman runc mmdebstrap; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get install -y -qq --no-install-recommends podman runc mmdebstrap uidmap
fi
PODMAN=(podman --runtime runc)

if ! "${PODMAN[@]}" image exists "$BASE"; then
  echo "==> making the base: Debian 12 minbase (mmdebstrap)"
  mmdebstrap --variant=minbase bookworm "$LOG/rootfs.tar" > "$LOG/mmdebstrap.log" 2>&1
  "${PODMAN[@]}" import "$LOG/rootfs.tar" "$BASE" > /dev/null
  rm -f "$LOG/rootfs.tar"
fi

mounts=(-v "$ROOT:/src:ro")
for f in /etc/ssl/certs/ca-certificates.crt /etc/pip.conf; do
  [ -e "$f" ] && mounts+=(-v "$f:/host$f:ro")
done

echo "==> install and run inside a fresh container (log: $LOG/run.log)"
set +e
"${PODMAN[@]}" run --rm --privileged --pid=host --net=host --ulimit nofile=1024:1024 --ulimit nproc=1000:1000 \
  "${mounts[@]}" "$BASE" bash -c '
    set -euo pipefail
    # only what a user brings: the checkout (git would clone it), and this site'"'"'s proxy settings for pip
    mkdir -p /etc/ssl/certs && [ -e /host/etc/pip.conf ] && cp /host/etc/pip.conf /etc/pip.conf
    if [ -e /host/etc/ssl/certs/ca-certificates.crt ]; then
      mkdir -p /usr/local/share/ca-certificates && cp /host/etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/site-ca.pem
      export PIP_CERT=/etc/ssl/certs/site-ca.pem
    fi
    cp -r /src /ebpftool && cd /ebpftool && rm -rf .git
    time scripts/install.sh
    ebpftool doctor
    time ebpftool trace --duration 5 --no-ui
  ' > "$LOG/run.log" 2>&1
rc=$?
set -e
tail -30 "$LOG/run.log"
if [ $rc -ne 0 ]; then
  echo "fresh-node-check: FAILED (exit $rc); see $LOG/run.log" >&2
  exit 1
fi
echo "fresh-node-check: the README's install and main job ran on a fresh Debian 12 (log: $LOG/run.log)"
