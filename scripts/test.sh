#!/usr/bin/env bash
# Run ebpftool's test suite as root: installs what the tests need (idempotent),
# then runs pytest with the venv that sees Debian's BCC. Extra args go to pytest.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ "$(id -u)" -ne 0 ]; then
  echo "the tests load real BPF programs: run as root (sudo $0)" >&2
  exit 1
fi
"$ROOT/scripts/install.sh" --dev
VENV=${EBPFTOOL_VENV:-/opt/ebpftool/venv}
cd "$ROOT"
exec "$VENV/bin/python" -m pytest -p no:cacheprovider "$@"
