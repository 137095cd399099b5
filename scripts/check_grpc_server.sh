#!/usr/bin/env bash
# Triton's gRPC frontend (scripts/real_servers.py's triton: HTTP on PORT, gRPC on PORT+1) traced by
# `ebpftool inference --port PORT+1` while NVIDIA's tritonclient.grpc drives it (scripts/drive_triton_grpc.py),
# with a packet capture of the gRPC port as the truth; then scripts/compare_grpc_wire.py.
#
#   sudo scripts/check_grpc_server.sh PORT OUTDIR
#
# Needs `scripts/real_servers.py setup triton` first (outside CI: a GB of packages). OUTDIR gets server.log,
# ebpftool.log, spans.jsonl, wire.pcap, grpc_client.jsonl, compare.json. EBPFTOOL_HOOKS=syscall (or socket,
# auto) passes `--hooks $EBPFTOOL_HOOKS` to the tracer; EBPFTOOL_VENV picks the interpreter that runs
# `-m ebpftool` (from this checkout: the tracer that runs is this tree's code).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
usage="usage: check_grpc_server.sh PORT OUTDIR (PORT: Triton's HTTP port; gRPC is PORT+1, metrics PORT+2)"
[ $# -eq 2 ] || { echo "check_grpc_server: $usage" >&2; exit 2; }
PORT=$1 OUT=$2
[[ "$PORT" =~ ^[0-9]+$ ]] && [ "$PORT" -ge 1 ] && [ "$PORT" -le 65533 ] \
  || { echo "check_grpc_server: PORT must be a number from 1 to 65533, not '$PORT'" >&2; exit 2; }
GRPC=$((PORT + 1))
VENV=${EBPFTOOL_VENV:-/opt/ebpftool/venv}
TRITON_PY=${REAL_SERVERS_DIR:-/opt/rw}/triton/bin/python
"$TRITON_PY" -c "import tritonclient.grpc, pytriton" 2>/dev/null \
  || { echo "check_grpc_server: $TRITON_PY cannot import tritonclient.grpc and pytriton: run scripts/real_servers.py setup triton" >&2; exit 2; }
hooks=()
[ -n "${EBPFTOOL_HOOKS:-}" ] && hooks=(--hooks "$EBPFTOOL_HOOKS")
mkdir -p "$OUT"; rm -f "$OUT"/{spans.jsonl,wire.pcap,compare.json,grpc_client.jsonl}
pids=()
cleanup() { for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
wait_for() {  # FILE TEXT SECONDS
  for _ in $(seq $(( $3 * 5 ))); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.2; done
  echo "check_grpc_server: no '$2' in $1 after $3 s" >&2; tail -20 "$1" >&2; exit 1
}
python3 "$ROOT/scripts/real_servers.py" serve triton --port "$PORT" > "$OUT/server.log" 2>&1 &
server=$!; pids+=("$server")
wait_for "$OUT/server.log" "ready on port" 400
(cd "$ROOT" && exec "$VENV/bin/python" -m ebpftool inference --port "$GRPC" --jsonl "$OUT/spans.jsonl" --no-ui \
  --interval 1 ${hooks[@]+"${hooks[@]}"}) > "$OUT/ebpftool.log" 2>&1 &
tracer=$!; pids+=("$tracer")
wait_for "$OUT/ebpftool.log" "probes attached" 120
tcpdump -i lo -U -n -s 0 -B 262144 --immediate-mode --time-stamp-precision=nano -w "$OUT/wire.pcap" \
  "tcp port $GRPC" 2> "$OUT/tcpdump.log" &
capture=$!; pids+=("$capture")
wait_for "$OUT/tcpdump.log" "listening on" 30
"$TRITON_PY" "$ROOT/scripts/drive_triton_grpc.py" --port "$GRPC" --out "$OUT"
kill -INT "$capture"; wait "$capture" || true
kill -TERM "$tracer"; wait "$tracer" || true
kill -TERM "$server"; wait "$server" || true
pids=()
grep -E "packets (captured|dropped)" "$OUT/tcpdump.log" || true
dropped=$(sed -n 's/^\([0-9]*\) packets dropped by kernel.*/\1/p' "$OUT/tcpdump.log")
"$VENV/bin/python" "$ROOT/scripts/compare_grpc_wire.py" --port "$GRPC" "$OUT/wire.pcap" "$OUT/spans.jsonl" \
  --client "$OUT/grpc_client.jsonl" --json "$OUT/compare.json" --dropped "${dropped:-0}"
