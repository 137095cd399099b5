#!/usr/bin/env python3
"""What each piece of a socket hook costs on this machine, from the kernel's own program statistics.

    sudo /opt/ebpftool/venv/bin/python scripts/bench_bpf_helpers.py [--ops 200000] [--repeat 5]

One raw-tracepoint program on `sock_send_length` at a time, each doing one more kind of work than the
empty one, while a loop sends on a Unix socket pair. `kernel.bpf_stats_enabled` gives ns per run (its
own overhead, ~60 ns here, is in every figure and cancels in the differences). The figures are what the
inference socket hooks pay per call; see docs/performance.md, "Where the inference overhead goes". Not part of the
test suite.
"""
from __future__ import annotations

import argparse
import socket
import statistics
import sys
from pathlib import Path

from bcc import BPF

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import bpf_stats_enabled  # noqa: E402

PRELUDE = """
#include <uapi/linux/ptrace.h>
BPF_HASH(conns, u64, u64, 1024);
BPF_ARRAY(sink, u64, 1);
static __always_inline void keep(u64 v) { u32 z = 0; u64 *s = sink.lookup(&z); if (s) *s += v; }
"""
REGS = "struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());"
# name -> (program body, the variant its cost is counted from); ctx is struct bpf_raw_tracepoint_args *.
# Every variant keeps its result alive.
VARIANTS = {
    "empty": ("return 0;", None),
    "array lookup (inlined)": ("keep(1); return 0;", "empty"),
    "syscall registers": (f"{REGS} keep(regs->si); return 0;", "empty"),
    "bpf_ktime_get_ns": ("keep(bpf_ktime_get_ns()); return 0;", "empty"),
    "hash lookup": ("u64 sk = ctx->args[0]; keep(conns.lookup(&sk) != 0); return 0;", "empty"),
    "8-byte user read": (f"{REGS} u64 v = 0; bpf_probe_read_user(&v, 8, (void *)regs->si); keep(v); return 0;",
                         "syscall registers"),  # the buffer's address comes from the registers
}


def run_stats(fd: int) -> tuple[int, int]:
    """(runs, ns) of a loaded program so far: the kernel's statistics, in its fd's fdinfo."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/self/fdinfo/{fd}").read_text().splitlines())
    return int(fields["run_cnt"]), int(fields["run_time_ns"])


def measure(body: str, ops: int) -> float:
    """ns per run of a sock_send_length program with this body, over OPS sends."""
    bpf = BPF(text=PRELUDE + f"RAW_TRACEPOINT_PROBE(sock_send_length) {{ {body} }}\n")
    a, b = socket.socketpair()
    try:
        fd = bpf.funcs[b"raw_tracepoint__sock_send_length"].fd
        data = b"x" * 64
        runs0, ns0 = run_stats(fd)
        for _ in range(ops):
            a.send(data)
            b.recv(64)
        runs1, ns1 = run_stats(fd)
        return (ns1 - ns0) / max(1, runs1 - runs0)
    finally:
        a.close()
        b.close()
        bpf.cleanup()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ops", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=5, help="rounds over all variants (medians reported)")
    args = ap.parse_args()
    got: dict[str, list[float]] = {name: [] for name in VARIANTS}
    with bpf_stats_enabled():
        for _ in range(args.repeat):
            for name, (body, _base) in VARIANTS.items():
                got[name].append(measure(body, args.ops))
    median = {name: statistics.median(values) for name, values in got.items()}
    for name, (_body, base) in VARIANTS.items():
        extra = f"  (+{median[name] - median[base]:.0f} over {base})" if base else ""
        print(f"{name:32s} {median[name]:6.0f} ns/run{extra}")


if __name__ == "__main__":
    main()
