#!/usr/bin/env python3
"""What the inference tracer's TLS way in costs a TLS server, measured as a user runs it.

    sudo /opt/ebpftool/venv/bin/python scripts/bench_tls.py [--rounds 6] [--seconds 5] [--json out.json]

nginx (one worker) serving a small file over TLS (OpenSSL, keep-alive connections) under `wrk -t1 -c32` over
https, in alternating rounds: without ebpftool, then with `ebpftool inference --port P` running as its own
process with its defaults (uprobes on libssl's SSL_read / SSL_write and the handshake calls, the socket
hooks; spans at the default rate, no exporter). Ratio: requests/s with/without per pair, median. In the last
round kernel.bpf_stats_enabled times every program: ns per request of the TLS uprobes (tls_*) and of the
socket hooks. wrk is linked with the same libssl, so its own SSL calls fire the uprobes too (a client on
another machine would not): the ratio is a bound on the server's cost. Not part of the test suite.
"""
from __future__ import annotations

import argparse
import json
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
from tests.servers.nginx import nginx_server  # noqa: E402


def https_wrk(port: int, seconds: float) -> tuple[float, int]:
    out = subprocess.run(["wrk", "-t1", "-c32", f"-d{seconds:g}s", f"https://127.0.0.1:{port}/index.html"],
                         capture_output=True, text=True, check=True).stdout
    return (float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            int(re.search(r"(\d+) requests in", out).group(1)))


def program_time(names: dict[int, str], before: dict, after: dict) -> dict[str, tuple[int, int]]:
    """(runs, ns) per program name over the interval."""
    out: dict[str, tuple[int, int]] = {}
    for pid, name in names.items():
        if pid in before and pid in after:
            runs = after[pid].get("run_cnt", 0) - before[pid].get("run_cnt", 0)
            ns = after[pid].get("run_time_ns", 0) - before[pid].get("run_time_ns", 0)
            r, n = out.get(name, (0, 0))
            out[name] = (r + runs, n + ns)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        cert, key = f"{d}/cert.pem", f"{d}/key.pem"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
                        "-days", "1", "-keyout", key, "-out", cert], check=True, capture_output=True)
        with nginx_server(tls=(cert, key)) as port:
            https_wrk(port, 2)  # warm-up
            pairs, costs = [], {}
            for i in range(args.rounds):
                without, _ = https_wrk(port, args.seconds)
                tracer = start_ebpftool(["inference", "--port", str(port), "--no-ui", "--interval", "1"])
                try:
                    if i == args.rounds - 1:
                        before_ids = {p: v["name"] for p, v in program_stats().items()}
                        with bpf_stats_enabled():
                            before = program_stats()
                            with_rps, requests = https_wrk(port, args.seconds)
                            after = program_stats()
                        ours = {p: n for p, n in before_ids.items() if n.startswith(("tls_", "recv_", "send_",
                                                                                      "arrival_", "raw_tracepoint"))}
                        costs = {name: {"runs_per_request": runs / requests, "ns_per_request": ns / requests}
                                 for name, (runs, ns) in program_time(ours, before, after).items() if runs}
                    else:
                        with_rps, _ = https_wrk(port, args.seconds)
                finally:
                    tracer.terminate()
                    tracer.communicate(timeout=60)
                pairs.append((without, with_rps))
                print(f"round {i + 1}: without {without:,.0f} req/s, with {with_rps:,.0f} req/s, "
                      f"ratio {with_rps / without:.3f}", flush=True)
    ratios = [w / wo for wo, w in pairs]
    tls_ns = sum(c["ns_per_request"] for n, c in costs.items() if n.startswith("tls_"))
    all_ns = sum(c["ns_per_request"] for c in costs.values())
    result = {"rounds": len(pairs), "seconds": args.seconds, "median_ratio": statistics.median(ratios),
              "ratios": ratios, "without_rps_median": statistics.median(p[0] for p in pairs),
              "with_rps_median": statistics.median(p[1] for p in pairs), "bpf_ns_per_request": all_ns,
              "tls_uprobes_ns_per_request": tls_ns, "programs": costs}
    print(f"\nmedian ratio with/without over {len(pairs)} pairs: {result['median_ratio']:.3f}; BPF time per "
          f"request {all_ns:,.0f} ns, of which the TLS uprobes {tls_ns:,.0f} ns")
    for name, c in sorted(costs.items(), key=lambda kv: -kv[1]["ns_per_request"]):
        print(f"  {name}: {c['runs_per_request']:.2f} runs, {c['ns_per_request']:,.0f} ns per request")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
