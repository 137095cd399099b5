#!/usr/bin/env python3
"""How long a user waits for ebpftool to start and to stop, and its peak memory, measured from outside.

    sudo /opt/ebpftool/venv/bin/python scripts/bench_startup.py [--rounds 3] [--tree DIR] [--json FILE]

Each case runs `python -m ebpftool ARGS --duration 60 --no-ui` as a subprocess, as a user does, and times,
with the wall clock of this script:
- attach: from starting the command to its last "N probes attached" line (one per tracer);
- stop: 1 s later a SIGTERM, then to the process's exit (every span and metric flushed, every probe
  detached: the command's own shutdown);
- peak RSS of the process (wait4's ru_maxrss).
Cold: the BCC output cache (EBPFTOOL_BPF_CACHE) is a new empty directory, so every program is compiled;
warm: the same command again with the cache that run filled (the page cache is warm in both).
Cases: `trace` (all three tracers), and `inference --port 8000`, `net`, `gpu` alone. Each cold+warm pair is
repeated --rounds times; medians are printed (and all runs written as JSON with --json).
--tree DIR runs another checkout's code (its ebpftool/ first on PYTHONPATH), e.g. an export of an older
commit, for before/after figures. Not a test: the numbers depend on the machine and its load.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = {
    "trace": (["trace"], 3),
    "inference": (["inference", "--port", "8000"], 1),
    "net": (["net"], 1),
    "gpu": (["gpu"], 1),
}


def run_once(args: list[str], tracers: int, tree: Path, cache: Path | None, hold: float) -> dict:
    env = {**os.environ, "COLUMNS": "200", "PYTHONPATH": str(tree)}
    env["EBPFTOOL_BPF_CACHE"] = str(cache) if cache is not None else "off"
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "ebpftool", *args, "--duration", "60", "--no-ui"], cwd=tree,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    attached, lines = [], []
    for line in proc.stderr:
        lines.append(line.rstrip())
        if "probes attached" in line:
            attached.append(time.monotonic() - t0)
            if len(attached) == tracers:
                break
    if len(attached) < tracers:
        proc.wait()
        raise SystemExit(f"ebpftool {' '.join(args)}: {len(attached)} of {tracers} tracers started:\n" + "\n".join(lines))
    time.sleep(hold)
    t_term = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.stderr.read()  # drain, so the summary's writes never block
    _pid, status, usage = os.wait4(proc.pid, 0)
    t_exit = time.monotonic()
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {"attach_s": attached[-1], "per_tracer_s": attached, "stop_s": t_exit - t_term,
            "peak_rss_mb": usage.ru_maxrss / 1024, "exit": proc.returncode,
            "lines": [ln for ln in lines if "probes attached" in ln]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tree", type=Path, default=ROOT, help="the checkout whose code runs (default: this one)")
    ap.add_argument("--cases", default=",".join(CASES), help="comma-separated: " + ", ".join(CASES))
    ap.add_argument("--no-cache", action="store_true", help="EBPFTOOL_BPF_CACHE=off (for code without the cache)")
    ap.add_argument("--kinds", default="cold,warm", help="cold, warm or both (code without a cache: cold)")
    ap.add_argument("--hold", type=float, default=1.0, help="seconds traced between attach and SIGTERM")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    results: dict[str, dict[str, list[dict]]] = {}
    for case in a.cases.split(","):
        args, tracers = CASES[case]
        kinds = a.kinds.split(",")
        results[case] = {k: [] for k in kinds}
        for _ in range(a.rounds):
            with tempfile.TemporaryDirectory(prefix="ebpftool-bench-cache-") as d:
                cache = None if a.no_cache else Path(d) / "bpf"
                for kind in kinds:
                    r = run_once(args, tracers, a.tree, cache, a.hold)
                    results[case][kind].append(r)
                    print(f"{case:9} {kind}: attached {r['attach_s']:.2f} s, stop {r['stop_s']:.2f} s, "
                          f"peak RSS {r['peak_rss_mb']:.0f} MB, exit {r['exit']}", file=sys.stderr)
    print(f"\nmedians of {a.rounds} runs (tree {a.tree}{', no cache' if a.no_cache else ''}):")
    print(f"{'case':10} {'kind':5} {'attach s':>9} {'stop s':>7} {'peak RSS MB':>12}")
    for case, kinds in results.items():
        for kind, runs in kinds.items():
            med = {k: statistics.median(r[k] for r in runs) for k in ("attach_s", "stop_s", "peak_rss_mb")}
            print(f"{case:10} {kind:5} {med['attach_s']:9.2f} {med['stop_s']:7.2f} {med['peak_rss_mb']:12.0f}")
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
