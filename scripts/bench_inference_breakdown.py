#!/usr/bin/env python3
"""Where the inference tracer's overhead goes: control variants against the full tracer, in one run.

    sudo /opt/ebpftool/venv/bin/python scripts/bench_inference_breakdown.py [--rounds 8] [--seconds 2]

Same load as scripts/bench_inference.py (nginx, one worker, small file, `wrk -t1 -c32` on loopback). Each
round runs every variant, each as a without/with pair, so the variants interleave:
  full         the tracer as shipped
  after_lookup the socket hooks return right after finding the connection (dispatch + filter + lookup)
  return_now   the socket hooks return at once (the raw tracepoint dispatch alone)
  stopped      the full programs, with the tracer process SIGSTOPped (kernel side only)
Variants load a patched copy of bpf/ (EBPFTOOL_BPF_DIR); the tree is never modified. Then one more full
run with kernel.bpf_stats_enabled gives each program's runs per request and ns per run under this load
(bpf_stats adds its own ~60 ns per run). Not part of the test suite.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_inference import Tracer, wrk  # noqa: E402
from benchlib import bpf_time_during  # noqa: E402
from tests.servers.nginx import nginx_server  # noqa: E402

HOOK_LOOKUP = "struct conn_state *c = sock_conn(sk);\n    if (!c)\n        return 0;\n"
PATCHES = {
    "full": [],
    # c->port is never 0 on a watched connection: the condition keeps the lookup in the program.
    "after_lookup": [(HOOK_LOOKUP, HOOK_LOOKUP + "    if (c->port != 0)\n        return 0;  /* bench variant */\n")],
    "return_now": [("    u64 sk = ctx->args[0];\n    struct conn_state *c = sock_conn(sk);",
                    "    return 0;  /* bench variant */\n    u64 sk = ctx->args[0];\n    struct conn_state *c = sock_conn(sk);")],
    "stopped": [],
}
SOCKET_HOOKS = 2  # sock_recv_length and sock_send_length: every patch must hit both


def variant_dir(name: str, into: Path) -> Path:
    """A copy of bpf/ with the variant's patches applied to inference.bpf.c."""
    d = into / name
    shutil.copytree(ROOT / "bpf", d)
    src = (d / "inference.bpf.c").read_text()
    for old, new in PATCHES[name]:
        if src.count(old) != SOCKET_HOOKS:
            raise SystemExit(f"variant {name}: the patch no longer matches bpf/inference.bpf.c; update {__file__}")
        src = src.replace(old, new)
    (d / "inference.bpf.c").write_text(src)
    return d


def start_variant(name: str, bpf_dir: Path, port: int) -> Tracer:
    os.environ["EBPFTOOL_BPF_DIR"] = str(bpf_dir)
    try:
        tracer = Tracer(["--port", str(port)])
    finally:
        del os.environ["EBPFTOOL_BPF_DIR"]
    time.sleep(0.5)
    if name == "stopped":
        os.kill(tracer.proc.pid, signal.SIGSTOP)
    return tracer


def stop_variant(name: str, tracer: Tracer) -> None:
    if name == "stopped":
        os.kill(tracer.proc.pid, signal.SIGCONT)
    tracer.stop()


def program_costs(port: int, bpf_dir: Path, seconds: float) -> dict[str, dict]:
    """Runs per request and ns per run of each program the tracer attached, during one loaded run."""
    tracer = start_variant("full", bpf_dir, port)
    try:
        return bpf_time_during(tracer.proc.pid, lambda: wrk(port, seconds)["requests"])
    finally:
        stop_variant("full", tracer)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    ratios: dict[str, list[float]] = {name: [] for name in PATCHES}
    with tempfile.TemporaryDirectory() as tmp, nginx_server(workers=1) as port:
        dirs = {name: variant_dir(name, Path(tmp)) for name in PATCHES}
        wrk(port, 1)  # warm-up
        for r in range(args.rounds):
            for name in PATCHES:
                base = wrk(port, args.seconds)["rps"]
                tracer = start_variant(name, dirs[name], port)
                try:
                    traced = wrk(port, args.seconds)["rps"]
                finally:
                    stop_variant(name, tracer)  # never leave a stopped tracer attached
                ratios[name].append(traced / base)
                print(f"  round {r} {name:12s} {base:,.0f} -> {traced:,.0f} req/s ({traced / base:.3f})", flush=True)
        costs = program_costs(port, dirs["full"], args.seconds)
    result = {"ratio_median": {n: statistics.median(v) for n, v in ratios.items()},
              "ratios": ratios, "programs": costs}
    for name, v in ratios.items():
        print(f"{name:12s} median {statistics.median(v):.3f}  ({min(v):.3f}-{max(v):.3f})")
    for name, c in costs.items():
        print(f"{name:32s} {c['runs_per_request']:.2f} runs/request  {c['ns_per_run']:.0f} ns/run")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
