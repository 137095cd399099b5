#!/usr/bin/env python3
"""ebpftool's benchmark suite: cost and accuracy, each measured side by side in one run.

    sudo /opt/ebpftool/venv/bin/python scripts/bench.py [--quick] [--json bench-results/bench.json]

Runs the per-tracer benchmarks (scripts/bench_inference.py, bench_net.py, bench_gpu.py: throughput with
and without the tracer, alternating, several rounds, medians and spread; accuracy against known truth),
then measures here what is common to all tracers: start-up time (command start to probes attached),
peak RSS and CPU of the tracer process, and the BPF programs' own run time per event from the kernel's
BPF statistics (kernel.bpf_stats_enabled). Prints one table and writes everything as JSON.
Not part of the test suite: it takes minutes and its numbers depend on the machine.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from benchlib import ROOT, bpf_stats_enabled, program_stats, programs_attached_by, start_ebpftool

PY = sys.executable
CUDART = "/usr/local/cuda/lib64/libcudart.so.13"

# 1.3 GB over one loopback TCP connection in 64 KiB writes.
LOOPBACK_TRANSFER = """
import socket, threading
server = socket.create_server(("127.0.0.1", 0))
client = socket.create_connection(server.getsockname())
peer, _ = server.accept()
def drain():
    while peer.recv(1 << 16):
        pass
threading.Thread(target=drain, daemon=True).start()
chunk = b"x" * 65536
for _ in range(20000):
    client.sendall(chunk)
client.close()
"""

# (tracer, ebpftool args, a load to run while it is attached: argv or None)
TRACER_RUNS = {
    "inference": (["inference", "--port", "18080"], None),
    "net": (["net"], [PY, "-c", LOOPBACK_TRANSFER]),
    "gpu": (["gpu"], [PY, "-c", "import ctypes,sys\nlib=ctypes.CDLL(sys.argv[1])\n"
                      "for _ in range(200000): lib.cudaStreamSynchronize(None)\n", CUDART]),
}


def measure_process(tracer: str, args: list[str], load: list[str] | None, seconds: float) -> dict:
    """Start-up time, peak RSS, CPU and per-program BPF run time of one `ebpftool` run."""
    t0 = time.monotonic()
    proc = start_ebpftool([*args, "--duration", str(seconds), "--no-ui"], stdout=subprocess.DEVNULL)
    startup = time.monotonic() - t0
    bpf = {}
    if load:
        subprocess.run(load, check=False, capture_output=True)
    bpf = bpf_stats(proc.pid)
    proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {
        "tracer": tracer,
        "startup_s": startup,
        "peak_rss_mb": usage.ru_maxrss / 1024,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "bpf_ns_per_event": bpf.get("ns_per_event"),
        "bpf_events": bpf.get("events"),
        "exit_code": proc.returncode,
    }


def bpf_stats(pid: int) -> dict:
    """Run time per event of the BPF programs pid attached (needs kernel.bpf_stats_enabled=1)."""
    ids = programs_attached_by(pid)
    progs = program_stats()
    run_ns = sum(p.get("run_time_ns", 0) for i, p in progs.items() if i in ids)
    run_cnt = sum(p.get("run_cnt", 0) for i, p in progs.items() if i in ids)
    return {"events": run_cnt, "ns_per_event": run_ns / run_cnt if run_cnt else None}


def run_tracer_bench(name: str, quick: bool, outdir: Path) -> dict | None:
    script = ROOT / "scripts" / f"bench_{name}.py"
    if not script.exists():
        return None
    out = outdir / f"bench_{name}.json"
    supports_quick = "--quick" in script.read_text()
    args = [PY, str(script), "--json", str(out)] + (["--quick"] if quick and supports_quick else [])
    r = subprocess.run(args, cwd=ROOT)
    if r.returncode != 0 or not out.exists():
        return {"error": f"{script.name} exited {r.returncode}"}
    return json.loads(out.read_text())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", default=str(ROOT / "bench-results" / "bench.json"))
    ap.add_argument("--quick", action="store_true", help="fewer rounds (a smoke run, not for the README)")
    ap.add_argument("--only", choices=sorted(TRACER_RUNS), action="append", help="limit to these tracers")
    opts = ap.parse_args()
    if os.geteuid() != 0:
        print("bench.py loads BPF programs: run it as root", file=sys.stderr)
        return 1
    outdir = Path(opts.json).parent
    outdir.mkdir(parents=True, exist_ok=True)
    tracers = opts.only or sorted(TRACER_RUNS)
    results: dict = {"date": time.strftime("%Y-%m-%d"), "machine": f"{os.cpu_count()} cores, {os.uname().release}",
                     "tracers": {}, "process": []}
    with bpf_stats_enabled():
        for name in tracers:
            args, load = TRACER_RUNS[name]
            results["process"].append(measure_process(name, args, load, seconds=4 if opts.quick else 8))
    for name in tracers:
        results["tracers"][name] = run_tracer_bench(name, opts.quick, outdir)
    Path(opts.json).write_text(json.dumps(results, indent=2))
    print_table(results)
    print(f"\nwritten: {opts.json}")
    return 0


def print_table(results: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"ebpftool process cost ({results['date']}, {results['machine']})")
    for col in ("tracer", "start-up s", "peak RSS MB", "CPU s", "BPF ns/event", "BPF events"):
        t.add_column(col, justify="right")
    for p in results["process"]:
        fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
        t.add_row(p["tracer"], fmt(p["startup_s"], ".2f"), fmt(p["peak_rss_mb"], ".0f"), fmt(p["cpu_s"], ".2f"),
                  fmt(p["bpf_ns_per_event"], ".0f"), fmt(p["bpf_events"], "d"))
    Console().print(t)
    for name, r in results["tracers"].items():
        if r is None:
            continue
        Console().print(f"[bold]{name}[/]")
        Console().print_json(json.dumps(r.get("summary", r)))


if __name__ == "__main__":
    sys.exit(main())
