#!/usr/bin/env bash
# One heavy real server (scripts/real_servers.py: vllm, llama, triton) traced by `ebpftool inference`
# while its workload runs, with a packet capture as the truth; then scripts/compare_wire.py.
#
#   sudo scripts/check_real_servers.sh NAME PORT OUTDIR [-- SERVER ARGS]
#
# Needs `scripts/real_servers.py setup NAME` first (outside CI: minutes to build, GBs of packages).
# OUTDIR gets server.log, ebpftool.log, spans.jsonl, wire.pcap, client.jsonl, metrics_*.txt, compare.json.
# EBPFTOOL_HOOKS=syscall (or socket-raw, auto) passes `--hooks $EBPFTOOL_HOOKS` to the tracer (default: not
# passed, the tracer's own default); EBPFTOOL_VENV picks the interpreter that runs `-m ebpftool`.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
NAME=$1 PORT=$2 OUT=$3; shift 3
[ "${1:-}" = "--" ] && shift
VENV=${EBPFTOOL_VENV:-/opt/ebpftool/venv}
hooks=()
[ -n "${EBPFTOOL_HOOKS:-}" ] && hooks=(--hooks "$EBPFTOOL_HOOKS")
mkdir -p "$OUT"; rm -f "$OUT"/{spans.jsonl,wire.pcap,compare.json}
pids=()
cleanup() { for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
wait_for() {  # FILE TEXT SECONDS
  for _ in $(seq $(( $3 * 5 ))); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.2; done
  echo "check_real_servers: no '$2' in $1 after $3 s" >&2; tail -20 "$1" >&2; exit 1
}
python3 "$ROOT/scripts/real_servers.py" serve "$NAME" --port "$PORT" ${1:+-- "$@"} > "$OUT/server.log" 2>&1 &
server=$!; pids+=("$server")
wait_for "$OUT/server.log" "ready on port" 400
"$VENV/bin/python" -m ebpftool inference --port "$PORT" --jsonl "$OUT/spans.jsonl" --no-ui --interval 1 \
  ${hooks[@]+"${hooks[@]}"} > "$OUT/ebpftool.log" 2>&1 &
tracer=$!; pids+=("$tracer")
wait_for "$OUT/ebpftool.log" "probes attached" 120
# A 256 MiB buffer: on lo (MTU 64 KiB) each ring slot is ~64 KiB, and 16 MiB (~250 slots) dropped packets
# (218 of ~1,500 on vLLM, 2026-12-06) while the server kept both cores busy.
tcpdump -i lo -U -n -s 0 -B 262144 --immediate-mode --time-stamp-precision=nano -w "$OUT/wire.pcap" \
  "tcp port $PORT" 2> "$OUT/tcpdump.log" &
capture=$!; pids+=("$capture")
wait_for "$OUT/tcpdump.log" "listening on" 30
python3 "$ROOT/scripts/real_servers.py" drive "$NAME" --port "$PORT" --out "$OUT"
kill -INT "$capture"; wait "$capture" || true
kill -TERM "$tracer"; wait "$tracer" || true
kill -TERM "$server"; wait "$server" || true
pids=()
grep -E "packets (captured|dropped)" "$OUT/tcpdump.log" || true
dropped=$(sed -n 's/^\([0-9]*\) packets dropped by kernel.*/\1/p' "$OUT/tcpdump.log")
"$VENV/bin/python" "$ROOT/scripts/compare_wire.py" --port "$PORT" "$OUT/wire.pcap" "$OUT/spans.jsonl" \
  --json "$OUT/compare.json" --dropped "${dropped:-0}" --server-metrics "$OUT"
