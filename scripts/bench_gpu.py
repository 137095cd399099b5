#!/opt/ebpftool/venv/bin/python
"""Cost of `ebpftool gpu` per traced call, next to the cost of the kernel's bare uprobes.

A C loop calls cudaStreamSynchronize(NULL) of NVIDIA's real libcudart (without a driver it
returns 35 after ~8 ns of work, so the probes dominate) through four copies of the library,
in alternating rounds within one run:

  untraced     a copy nothing is attached to
  uprobe       a copy with one empty BCC uprobe on the function (the kernel's entry cost)
  pair         a copy with an empty uprobe + uretprobe (the kernel's entry + return cost)
  ebpftool     a copy traced by `ebpftool gpu --no-discover --lib COPY` (its real programs)

Each figure is the median over rounds of ns per call; "added" subtracts the untraced median.
Run as root: sudo scripts/bench_gpu.py --json out.json
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ebpftool.core.bpf import import_bcc  # noqa: E402
from benchlib import start_ebpftool  # noqa: E402  (scripts/ is on sys.path)

CUDART = "/usr/local/cuda/lib64/libcudart.so.13"
SYMBOL = "cudaStreamSynchronize"
LOOP_C = r"""
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
int main(int argc, char **argv) {
    void *h = dlopen(argv[1], RTLD_NOW);
    if (!h) { fprintf(stderr, "%s\n", dlerror()); return 2; }
    int (*f)(void *) = (int (*)(void *))dlsym(h, argv[2]);
    if (!f) return 3;
    long n = atol(argv[3]);
    f(NULL);  /* first call: lazy initialisation, outside the timing */
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (long i = 0; i < n; i++)
        f(NULL);
    clock_gettime(CLOCK_MONOTONIC, &b);
    printf("%.2f\n", ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / n);
    return 0;
}
"""
NOOP_C = "int noop(struct pt_regs *ctx) { return 0; }"
VARIANTS = ("untraced", "uprobe", "pair", "ebpftool")


def ns_per_call(loop: str, lib: str, calls: int) -> float:
    out = subprocess.run([loop, lib, SYMBOL, str(calls)], capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


def start_tracer(lib: str) -> subprocess.Popen:
    return start_ebpftool(["gpu", "--no-discover", "--lib", lib, "--interval", "1", "--no-ui"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--calls", type=int, default=300_000, help="calls per measurement")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-gpu-"))
    tracer = None
    bpf = None
    try:
        loop = work / "loop"
        (work / "loop.c").write_text(LOOP_C)
        subprocess.run(["gcc", "-O2", "-o", loop, work / "loop.c", "-ldl"], check=True)
        libs = {}
        for v in VARIANTS:
            (work / v).mkdir()
            libs[v] = str(work / v / "libcudart.so.13")
            shutil.copy(CUDART, libs[v])
        bcc = import_bcc(compiler=True)
        bpf = bcc.BPF(text=NOOP_C)
        bpf.attach_uprobe(name=libs["uprobe"], sym=SYMBOL, fn_name="noop")
        bpf.attach_uprobe(name=libs["pair"], sym=SYMBOL, fn_name="noop")
        bpf.attach_uretprobe(name=libs["pair"], sym=SYMBOL, fn_name="noop")
        tracer = start_tracer(libs["ebpftool"])

        samples: dict[str, list[float]] = {v: [] for v in VARIANTS}
        for r in range(args.rounds):
            order = VARIANTS[r % len(VARIANTS):] + VARIANTS[:r % len(VARIANTS)]  # rotate: no fixed position
            for v in order:
                samples[v].append(ns_per_call(str(loop), libs[v], args.calls))
        tracer.send_signal(signal.SIGINT)
        summary, _ = tracer.communicate(timeout=60)
        tracer = None
        m = re.search(r"│ gpu\s+│ calls\s+│\s+(\d+)", summary)
        counted = int(m.group(1)) if m else None
    finally:
        if tracer is not None:
            tracer.kill()
        if bpf is not None:
            bpf.cleanup()
        shutil.rmtree(work, ignore_errors=True)

    med = {v: statistics.median(s) for v, s in samples.items()}
    expected = args.rounds * (args.calls + 1)
    result = {
        "function": f"{SYMBOL} (libcudart.so.13, returns 35 without a driver)",
        "rounds": args.rounds, "calls_per_round": args.calls, "cpus": os.cpu_count(),
        "ns_per_call_median": med,
        "ns_added_median": {v: med[v] - med["untraced"] for v in VARIANTS if v != "untraced"},
        "samples_ns": samples,
        "calls_counted_by_ebpftool": counted, "calls_made_on_traced_copy": expected,
    }
    print(f"{'variant':<10} {'ns/call (median)':>18} {'added ns/call':>14}   samples")
    for v in VARIANTS:
        added = "" if v == "untraced" else f"{med[v] - med['untraced']:.0f}"
        print(f"{v:<10} {med[v]:>18.1f} {added:>14}   {', '.join(f'{x:.0f}' for x in samples[v])}")
    print(f"ebpftool counted {counted} calls of {expected} made on its copy")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
