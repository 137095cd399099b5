#!/usr/bin/env bash
# `ebpftool gpu` checked on a machine with an NVIDIA GPU and driver and no network (issue 25): a CUDA program
# whose own log gives the truth (calls, failures, bytes each way, kernel launches, a leak, ioctls) and the cost
# of a traced call. Two steps, in scripts/gpu_device_check.py:
#
#   sudo scripts/gpu-device-check.sh prepare      # here (nvcc, apt, pip): writes .gpu-check/ (~15 MB, ignored)
#   scripts/gpu-device-check.sh run OUT           # there, as root, with .gpu-check carried beside the tree:
#                                                 # OUT/report.json; exit 1 if a figure disagrees
#
# With the device tool: run(command="bash scripts/gpu-device-check.sh run $OUT", carry=[".gpu-check"]).
# `run OUT --local` tries it where the bundle was made (no GPU: every call fails, and is counted so).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
case "${1:-}" in
  prepare) exec /opt/ebpftool/venv/bin/python "$ROOT/scripts/gpu_device_check.py" prepare ;;
  run)     shift; exec python3 "$ROOT/scripts/gpu_device_check.py" run "$@" ;;
  *)       echo "usage: $0 prepare | run OUT [--local]" >&2; exit 2 ;;
esac
