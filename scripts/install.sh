#!/usr/bin/env bash
# Set up a node for ebpftool: system packages, BCC, kernel headers (with the
# fallback this kernel needs), tracefs, a virtual environment made from
# Debian's python3 (the only interpreter that can import BCC) and a root-owned
# `ebpftool` launcher on PATH. Safe to run again.
#
#   sudo scripts/install.sh            # node setup
#   sudo scripts/install.sh --dev      # + test tools and the servers the tests run
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${EBPFTOOL_VENV:-/opt/ebpftool/venv}
BIN=${EBPFTOOL_BIN:-/usr/local/bin/ebpftool}
DEV=0
for arg in "$@"; do
  case "$arg" in
    --dev) DEV=1 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option '$arg' (expected --dev)" >&2; exit 2 ;;
  esac
done

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

if [ "$(id -u)" -ne 0 ]; then
  echo "install.sh must run as root (try: sudo $0 $*)" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
# binutils: objdump finds the ret instructions of Go's crypto/tls.(*Conn).Read (the agents tracer's Go TLS)
PKGS=(python3 python3-venv python3-bpfcc bpfcc-tools iproute2 curl ca-certificates sudo binutils)
if [ "$DEV" = 1 ]; then
  PKGS+=(nginx-light wrk iperf3 victoria-metrics gcc libc6-dev bpftool tcpdump nghttp2-client nghttp2-server nghttp2-proxy
        podman runc mmdebstrap uidmap)
  # Node.js's TLS and HTTP/2 servers (tests/test_tls.py): Debian's where the machine has none of its own
  command -v node >/dev/null || PKGS+=(nodejs)
  # a Go client with Go's own TLS (tests/test_agents_go.py): Debian's Go where the machine has none
  command -v go >/dev/null || PKGS+=(golang-go)
fi
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done

# Kernel headers: BCC compiles its C against /lib/modules/$(uname -r)/build.
KVER=$(uname -r)
need_headers=0
[ -e "/lib/modules/$KVER/build/include" ] || [ -e "/sys/kernel/kheaders.tar.xz" ] || need_headers=1
headers_for_this_kernel() {
  # Debian's stock kernels have a headers package of their own; others (this project's 6.18) take the cloud flavour.
  if apt-cache policy "linux-headers-$KVER" 2>/dev/null | grep -q "Candidate: [^(]"; then
    echo "linux-headers-$KVER"
  else
    echo linux-headers-cloud-amd64
  fi
}

if [ ${#missing[@]} -gt 0 ] || [ "$need_headers" = 1 ]; then
  apt-get update -qq || apt-get update
  # (decided after the update: a fresh node or image may have no package lists, and then no candidate at all)
  if [ "$need_headers" = 1 ]; then missing+=("$(headers_for_this_kernel)"); fi
  say "installing ${missing[*]}"
  # A headers package for the exact kernel may not exist: fall back to the cloud flavour.
  if ! apt-get install -y -qq --no-install-recommends "${missing[@]}"; then
    fallback=()
    for p in "${missing[@]}"; do
      [[ "$p" == linux-headers-"$KVER" ]] && p=linux-headers-cloud-amd64
      fallback+=("$p")
    done
    apt-get install -y -qq --no-install-recommends "${fallback[@]}"
  fi
fi

# Headers link and tracefs: also what a container does at start (scripts/prepare-node.sh).
"$ROOT/scripts/prepare-node.sh"

# Python: a venv from Debian's interpreter, which sees the python3-bpfcc module.
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import bcc" 2>/dev/null; then
  say "creating virtual environment $VENV"
  rm -rf "$VENV"
  mkdir -p "$(dirname "$VENV")"
  /usr/bin/python3 -m venv --system-site-packages "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
fi
extra=""
[ "$DEV" = 1 ] && extra="[test]"
# A copy, not an editable install: root runs this code, which must not stay writable by whoever owns the
# checkout, nor break when the checkout moves. Built from a clean copy of the sources (pip's in-tree build
# would leave root-owned files in the checkout, and setuptools' build/ keeps files the sources no longer
# have); the wheel puts bpf/ in $VENV/share/ebpftool/bpf (pyproject.toml). Run this again after an update.
say "installing ebpftool$extra into $VENV"
src=$(mktemp -d)
trap 'rm -rf "$src"' EXIT
cp -a "$ROOT/pyproject.toml" "$ROOT/README.md" "$ROOT/ebpftool" "$ROOT/bpf" "$src"/
find "$src" -name __pycache__ -prune -exec rm -rf {} +
"$VENV/bin/python" -m pip install -q "$src$extra"

# A launcher on root's PATH (sudo's secure_path includes /usr/local/bin). It runs the environment's own
# console script, not `python -m ebpftool`, which looks in the current directory first: an `ebpftool`
# package there (a checkout, or one planted in /tmp) would run as root.
cat > "$BIN.tmp" <<LAUNCH
#!/bin/sh
exec "$VENV/bin/ebpftool" "\$@"
LAUNCH
chmod 0755 "$BIN.tmp"
mv "$BIN.tmp" "$BIN"

# From outside the checkout, so that the installed copy is the one imported.
(cd / && "$VENV/bin/python" -c "import bcc, ebpftool") || { echo "install.sh: ebpftool does not import" >&2; exit 1; }
say "ready: sudo ebpftool doctor"
