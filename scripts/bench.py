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

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
CUDART = "/usr/local/cuda/lib64/libcudart.so.13"

# (tracer, ebpftool args, a load to run while it is attached: argv or None)
TRACER_RUNS = {
    "inference": (["inference", "--port", "18080"], None),
    "net": (["net"], None),
    "gpu": (["gpu"], [PY, "-c", "import ctypes,sys\nlib=ctypes.CDLL(sys.argv[1])\n"
                      "for _ in range(200000): lib.cudaGetLastError()\n", CUDART]),
}


def measure_process(tracer: str, args: list[str], load: list[str] | None, seconds: float) -> dict:
    """Start-up time, peak RSS, CPU and per-program BPF run time of one `ebpftool` run."""
    t0 = time.monotonic()
    proc = subprocess.Popen([PY, "-m", "ebpftool", *args, "--duration", str(seconds), "--no-ui"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    startup = None
    for line in proc.stderr:
        if "probes attached" in line:
            startup = time.monotonic() - t0
            break
    bpf = {}
    if startup is not None and load:
        subprocess.run(load, check=False, capture_output=True)
    if startup is not None:
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
    """Run time per event of the BPF programs owned by pid (needs kernel.bpf_stats_enabled=1)."""
    out = subprocess.run(["bpftool", "prog", "show", "-j"], capture_output=True, text=True).stdout
    run_ns = run_cnt = 0
    for prog in json.loads(out or "[]"):
        if any(p.get("pid") == pid for p in prog.get("pids", [])):
            run_ns += prog.get("run_time_ns", 0)
            run_cnt += prog.get("run_cnt", 0)
    return {"events": run_cnt, "ns_per_event": run_ns / run_cnt if run_cnt else None}


def run_tracer_bench(name: str, quick: bool, outdir: Path) -> dict | None:
    script = ROOT / "scripts" / f"bench_{name}.py"
    if not script.exists():
        return None
    out = outdir / f"bench_{name}.json"
    args = [PY, str(script), "--json", str(out)] + (["--quick"] if quick else [])
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
    subprocess.run(["sysctl", "-q", "kernel.bpf_stats_enabled=1"], check=False)
    try:
        for name in tracers:
            args, load = TRACER_RUNS[name]
            results["process"].append(measure_process(name, args, load, seconds=4 if opts.quick else 8))
    finally:
        subprocess.run(["sysctl", "-q", "kernel.bpf_stats_enabled=0"], check=False)
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
