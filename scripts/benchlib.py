"""What the benchmark scripts share: ebpftool started as a user starts it, ready once attached, and the
kernel's run statistics of BPF programs."""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable, Iterator

ROOT = Path(__file__).resolve().parents[1]
READY_MARKER = "probes attached"
BPF_STATS_SYSCTL = Path("/proc/sys/kernel/bpf_stats_enabled")


def start_ebpftool(args: list[str], stdout=subprocess.PIPE) -> subprocess.Popen:
    """`python -m ebpftool ARGS` in the background; returns once its probes are attached.

    Its stderr is left open after the marker (the caller reads or drains it).
    """
    proc = subprocess.Popen([sys.executable, "-m", "ebpftool", *args], cwd=ROOT, stdout=stdout,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "COLUMNS": "200"})
    for line in proc.stderr:
        if READY_MARKER in line:
            return proc
    raise SystemExit(f"ebpftool {' '.join(args)} did not start (exit {proc.wait()})")


@contextlib.contextmanager
def bpf_stats_enabled() -> Iterator[None]:
    """kernel.bpf_stats_enabled on while inside (each program run is timed); its old value after."""
    old = BPF_STATS_SYSCTL.read_text().strip()
    BPF_STATS_SYSCTL.write_text("1")
    try:
        yield
    finally:
        BPF_STATS_SYSCTL.write_text(old)


def program_stats() -> dict[int, dict]:
    """Every loaded BPF program by id, as bpftool shows it (run_cnt / run_time_ns while stats are on)."""
    out = subprocess.run(["bpftool", "prog", "show", "-j"], capture_output=True, text=True).stdout
    return {p["id"]: p for p in json.loads(out or "[]")}


def programs_attached_by(pid: int) -> set[int]:
    """Ids of the programs that process pid attached (tracepoints, raw tracepoints, uprobes)."""
    out = subprocess.run(["bpftool", "perf", "show", "-j"], capture_output=True, text=True).stdout
    return {a["prog_id"] for a in json.loads(out or "[]") if a.get("pid") == pid}


def bpf_time_during(pid: int, load: Callable[[], int]) -> dict[str, dict]:
    """Runs `load` (it returns the requests it made) with kernel.bpf_stats_enabled; for each program that
    process pid attached and that ran: runs per request, ns per run and ns per request (each run also pays
    bpf_stats' own two clock reads, ~60 ns)."""
    ids = programs_attached_by(pid)
    with bpf_stats_enabled():
        before = program_stats()
        requests = load()
        after = program_stats()
    costs = {}
    for prog_id in ids & before.keys() & after.keys():
        runs = after[prog_id].get("run_cnt", 0) - before[prog_id].get("run_cnt", 0)
        if runs > 0:
            ns = after[prog_id].get("run_time_ns", 0) - before[prog_id].get("run_time_ns", 0)
            costs[after[prog_id]["name"]] = {"runs_per_request": runs / requests, "ns_per_run": ns / runs,
                                             "ns_per_request": ns / requests}
    return costs
