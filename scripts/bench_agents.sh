#!/usr/bin/env bash
# What the agents tracer's cleartext hooks cost the rest of the node: ns per 1-byte write() to an AF_UNIX
# stream socket (a child drains it) and to /dev/null, without the tracer and with it idle on each way in
# (--hooks socket, --hooks syscall), alternating rounds (docs/agents.md, "What it costs").
#
#   sudo scripts/bench_agents.sh [ROUNDS] [WRITES]
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROUNDS=${1:-3} WRITES=${2:-2000000}
[[ "$ROUNDS" =~ ^[0-9]+$ && "$WRITES" =~ ^[0-9]+$ ]] || { echo "bench_agents: ROUNDS and WRITES are numbers" >&2; exit 2; }
VENV=${EBPFTOOL_VENV:-/opt/ebpftool/venv}
DIR=$(mktemp -d)
tracer=""
cleanup() { [ -n "$tracer" ] && kill -INT "$tracer" 2>/dev/null && wait "$tracer" 2>/dev/null; rm -rf "$DIR"; }
trap cleanup EXIT
cat > "$DIR/writes.c" <<'EOF'
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec * 1e9 + t.tv_nsec; }
int main(int argc, char **argv) {
    long n = atol(argv[1]);
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) return 1;
    pid_t child = fork();
    if (child == 0) { close(sv[0]); char buf[65536]; while (read(sv[1], buf, sizeof buf) > 0) {} _exit(0); }
    close(sv[1]);
    char c = 'x';
    double t0 = now();
    for (long i = 0; i < n; i++) if (write(sv[0], &c, 1) != 1) return 1;
    double t1 = now();
    close(sv[0]);
    waitpid(child, 0, 0);
    int fd = open("/dev/null", O_WRONLY);
    double t2 = now();
    for (long i = 0; i < n; i++) if (write(fd, &c, 1) != 1) return 1;
    double t3 = now();
    printf("socket %.0f ns/write, /dev/null %.0f ns/write\n", (t1 - t0) / n, (t3 - t2) / n);
    return 0;
}
EOF
cc -O2 -o "$DIR/writes" "$DIR/writes.c"
for round in $(seq "$ROUNDS"); do
  for mode in none socket syscall; do
    if [ "$mode" != none ]; then
      (cd "$ROOT" && exec "$VENV/bin/python" -m ebpftool agents --hooks "$mode" --no-ui) > "$DIR/agents.log" 2>&1 &
      tracer=$!
      for _ in $(seq 300); do grep -q "probes attached" "$DIR/agents.log" && break; sleep 0.2; done
      grep -q "probes attached" "$DIR/agents.log" || { echo "bench_agents: the tracer did not start" >&2; cat "$DIR/agents.log" >&2; exit 1; }
    fi
    echo "round $round, $mode: $("$DIR/writes" "$WRITES")"
    if [ "$mode" != none ]; then kill -INT "$tracer"; wait "$tracer" || true; tracer=""; fi
  done
done
