#!/usr/bin/env python3
"""What following HTTP/2 costs a server, measured as a user runs the tracer.

    sudo /opt/ebpftool/venv/bin/python scripts/bench_http2.py [--rounds 6] [--seconds 5] [--tls | --grpc] [--json out.json]

nginx (one worker) serving a small file over HTTP/2 (h2c with prior knowledge; --tls: h2 over TLS by ALPN)
under nghttp2's `h2load -c 8 -m 10` (eight connections, ten streams at a time on each), in alternating
rounds: without ebpftool, then with `ebpftool inference --port P` as its own process with its defaults
(every stream decoded in user space, spans at the default rate, no exporter). Ratio: requests/s
with/without per pair, median; the tracer's own CPU (user + system, /proc/PID/stat) per 1,000 streams;
in the last round kernel.bpf_stats_enabled times the BPF programs per stream (not the walk: bpf_stats does not
time tail-called programs). --grpc: grpcio's server under grpcio's client instead (unary calls, eight threads
on one channel: an inference-like rate, where the tracer keeps up).
h2load is linked with the same libssl as nginx, so over TLS its own SSL calls fire the uprobes too.
Not part of the test suite.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from benchlib import bpf_stats_enabled, program_stats, start_ebpftool  # noqa: E402
from bench_tls import program_time  # noqa: E402
from tests.servers.nginx import free_port, nginx_server, wait_listening  # noqa: E402

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def h2load(url: str, seconds: float) -> tuple[float, int]:
    """(requests/s, requests done) of one h2load run."""
    out = subprocess.run(["h2load", "-c", "8", "-m", "10", "-D", f"{seconds:g}", url],
                         capture_output=True, text=True, check=True).stdout
    rate = re.search(r"finished in [\d.]+\w*, ([\d.]+) req/s", out)
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done", out)
    if not rate or not done:
        raise SystemExit(f"h2load gave no figures:\n{out}")
    return float(rate.group(1)), int(done.group(1))


GRPC_CLIENT = """
import sys, time, threading, grpc
port, seconds = int(sys.argv[1]), float(sys.argv[2])
channel = grpc.insecure_channel(f"127.0.0.1:{port}")
grpc.channel_ready_future(channel).result(timeout=30)
call = channel.unary_unary("/ebpftool.test.Infer/Unary")
done = [0] * 8
def worker(i):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        call(b"question")
        done[i] += 1
threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
start = time.monotonic()
for t in threads: t.start()
for t in threads: t.join()
print(sum(done), sum(done) / (time.monotonic() - start))
"""


def grpc_calls(port: int, seconds: float) -> tuple[float, int]:
    """(calls/s, calls done) of grpcio's client, eight threads of unary calls on one channel."""
    out = subprocess.run([sys.executable, "-c", GRPC_CLIENT, str(port), str(seconds)], capture_output=True,
                         text=True, check=True).stdout.split()
    return float(out[1]), int(out[0])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS   # utime, stime


@contextlib.contextmanager
def grpc_server(d: str):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tests.servers.grpc_server", str(port), f"{d}/calls.jsonl"],
                            cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        if proc.stdout.readline().strip() != "ready":
            raise SystemExit("the gRPC test server did not start")
        wait_listening(port)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--tls", action="store_true", help="h2 over TLS (ALPN) instead of h2c")
    ap.add_argument("--grpc", action="store_true",
                    help="grpcio's server (tests/servers/grpc_server.py) under grpcio's client (unary calls, eight "
                         "threads on one channel) instead of nginx under h2load")
    ap.add_argument("--json")
    args = ap.parse_args()
    if args.rounds < 1 or args.seconds <= 0:
        raise SystemExit("--rounds must be at least 1 and --seconds above 0")
    with tempfile.TemporaryDirectory() as d:
        tls = None
        if args.tls:
            tls = (f"{d}/cert.pem", f"{d}/key.pem")
            subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
                            "-days", "1", "-keyout", tls[1], "-out", tls[0]], check=True, capture_output=True)
        with (grpc_server(d) if args.grpc else nginx_server(tls=tls, http2=True)) as port:
            url = f"{'https' if tls else 'http'}://127.0.0.1:{port}/index.html"
            load = (lambda seconds: grpc_calls(port, seconds)) if args.grpc else (lambda seconds: h2load(url, seconds))
            load(2)  # warm-up
            pairs, cpu_per_1000, costs, measured = [], [], {}, []
            for i in range(args.rounds):
                without, _ = load(args.seconds)
                summary = Path(d) / f"summary{i}.json"
                tracer = start_ebpftool(["inference", "--port", str(port), "--no-ui", "--interval", "1",
                                         "--summary-json", str(summary)])
                try:
                    cpu0 = cpu_seconds(tracer.pid)
                    if i == args.rounds - 1:
                        names = {p: v["name"] for p, v in program_stats().items()}
                        with bpf_stats_enabled():
                            before = program_stats()
                            with_rps, streams = load(args.seconds)
                            after = program_stats()
                        ours = {p: n for p, n in names.items() if n.startswith(("h2_", "tls_", "recv_", "send_",
                                                                                 "arrival_", "raw_tracepoint"))}
                        costs = {name: {"runs_per_stream": runs / streams, "ns_per_stream": ns / streams}
                                 for name, (runs, ns) in program_time(ours, before, after).items() if runs}
                    else:
                        with_rps, streams = load(args.seconds)
                    cpu_per_1000.append((cpu_seconds(tracer.pid) - cpu0) / streams * 1000)
                finally:
                    tracer.terminate()
                    tracer.communicate(timeout=60)
                figures = json.loads(summary.read_text())["tracers"]["inference"]
                measured.append((figures["h2_streams"], streams, figures["h2_connections_lost"],
                                 figures.get("h2_streams_kernel") or 0, figures.get("h2_streams_lost") or 0))
                pairs.append((without, with_rps))
                print(f"round {i + 1}: without {without:,.0f} req/s, with {with_rps:,.0f} req/s, ratio "
                      f"{with_rps / without:.3f}; tracer CPU {cpu_per_1000[-1] * 1000:.1f} ms per 1,000 streams; "
                      f"of {measured[-1][1]:,} streams {measured[-1][0]:,} measured in user space, "
                      f"{measured[-1][3]:,} in the kernel (connections muted or given up: {measured[-1][2]}), "
                      f"{measured[-1][4]:,} not measured", flush=True)
    ratios = [w / wo for wo, w in pairs]
    bpf_ns = sum(c["ns_per_stream"] for c in costs.values())
    result = {"protocol": "grpc" if args.grpc else "h2" if args.tls else "h2c", "rounds": len(pairs), "seconds": args.seconds,
              "median_ratio": statistics.median(ratios), "ratios": ratios,
              "without_rps_median": statistics.median(p[0] for p in pairs),
              "with_rps_median": statistics.median(p[1] for p in pairs),
              "tracer_cpu_s_per_1000_streams": statistics.median(cpu_per_1000), "bpf_ns_per_stream": bpf_ns,
              "streams_measured_of_done_and_lost": measured,
              "programs": costs}
    print(f"\nmedian ratio with/without over {len(pairs)} pairs: {result['median_ratio']:.3f}; tracer CPU "
          f"{result['tracer_cpu_s_per_1000_streams'] * 1000:.1f} ms per 1,000 streams; BPF {bpf_ns:,.0f} ns per stream")
    for name, c in sorted(costs.items(), key=lambda kv: -kv[1]["ns_per_stream"]):
        print(f"  {name}: {c['runs_per_stream']:.2f} runs, {c['ns_per_stream']:,.0f} ns per stream")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
