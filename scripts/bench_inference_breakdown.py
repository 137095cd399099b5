#!/usr/bin/env python3
"""Where the inference tracer's overhead goes: control variants against the full tracer, in one run.

    sudo /opt/ebpftool/venv/bin/python scripts/bench_inference_breakdown.py [--rounds 8] [--seconds 2]

Same load as scripts/bench_inference.py (nginx, one worker, small file, `wrk -t1 -c32` on loopback). Each
round runs every variant, each as a without/with pair, so the variants interleave:
  full         the tracer as shipped
  after_lookup the socket hooks return right after finding the connection (dispatch + filter + lookup)
  return_now   the socket hooks return at once (the raw tracepoint dispatch alone)
  stopped      the full programs, with the tracer process SIGSTOPped (kernel side only)
  floor        not the tracer: scripts/inference_floor.bpf.c, the least any socket-hook tracer must do per
               request for exact method/status/duration metrics (syscall registers, two clock reads, the
               request's and the response's first bytes, one histogram slot)
  floor_btf    the same, its send side on the tcp_sendmsg_locked BTF tracepoint (the struct msghdr's buffer
               loaded directly: no registers, no iovec read), the cheapest hook this kernel allows there
Variants load a patched copy of bpf/ (EBPFTOOL_BPF_DIR); the tree is never modified. Then one more run of
the full tracer and of each floor with kernel.bpf_stats_enabled gives each program's runs per request and
ns per run under this load (bpf_stats adds its own ~60 ns per run). Not part of the test suite.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import shutil
import signal
import statistics
import struct
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
from ebpftool.core.bpf import SYS_BPF, BpfProgram  # noqa: E402
from ebpftool.core.btf import KIND_TYPEDEF, Btf  # noqa: E402

HOOK_LOOKUP = "struct conn_state *c = sock_conn(sk);\n    if (!c)\n        return 0;\n"
PATCHES = {
    "full": [],
    # c->port is never 0 on a watched connection: the condition keeps the lookup in the program.
    "after_lookup": [(HOOK_LOOKUP, HOOK_LOOKUP + "    if (c->port != 0)\n        return 0;  /* bench variant */\n")],
    "return_now": [("    u64 sk = ctx->args[0];\n    struct conn_state *c = sock_conn(sk);",
                    "    return 0;  /* bench variant */\n    u64 sk = ctx->args[0];\n    struct conn_state *c = sock_conn(sk);")],
    "stopped": [],
    "floor": [],
    "floor_btf": [],
}
FLOORS = ("floor", "floor_btf")  # not patches: scripts/inference_floor.bpf.c, without and with the BTF send hook
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


class FloorProgram:
    """scripts/inference_floor.bpf.c, loaded in this process (see there); stop() detaches it."""

    BPF_PROG_LOAD, BPF_RAW_TRACEPOINT_OPEN = 5, 17
    PROG_TYPE_TRACING, ATTACH_TRACE_RAW_TP = 26, 23

    def __init__(self, port: int, send_hook_btf: bool) -> None:
        btf = Btf.vmlinux()
        defines = {"PORT": port, "SEND_HOOK_BTF": int(send_hook_btf),
                   "MSG_ITER_TYPE_OFF": btf.member("msghdr", "msg_iter.iter_type").offset,
                   "MSG_ITER_OFFSET_OFF": btf.member("msghdr", "msg_iter.iov_offset").offset,
                   "MSG_ITER_UBUF_OFF": btf.member("msghdr", "msg_iter.ubuf").offset,
                   "ITER_UBUF_TYPE": btf.enum_value("iter_type", "ITER_UBUF"),
                   "ITER_IOVEC_TYPE": btf.enum_value("iter_type", "ITER_IOVEC")}
        self.bpf = BpfProgram(str(ROOT / "scripts" / "inference_floor.bpf.c"), defines).load().bpf
        self.fds: list[int] = []
        if send_hook_btf:
            self._attach_tp_btf("tcp_sendmsg_locked", btf.type_id(KIND_TYPEDEF, "btf_trace_tcp_sendmsg_locked"))

    def _attach_tp_btf(self, name: str, btf_id: int) -> None:
        """BCC 0.26 cannot load a BTF raw tracepoint: its compiled code goes to bpf() here."""
        from bcc import lib

        libc = ctypes.CDLL(None, use_errno=True)
        log, license_ = ctypes.create_string_buffer(1 << 20), ctypes.create_string_buffer(b"GPL")
        insns = lib.bpf_function_start(self.bpf.module, name.encode())
        size = lib.bpf_function_size(self.bpf.module, name.encode())
        # union bpf_attr, BPF_PROG_LOAD: up to attach_btf_id (include/uapi/linux/bpf.h)
        attr = struct.pack("<IIQQIIQII16sIIIIQIIQII", self.PROG_TYPE_TRACING, size // 8, insns,
                           ctypes.addressof(license_), 1, len(log), ctypes.addressof(log), 0, 0,
                           name.encode()[:15], 0, self.ATTACH_TRACE_RAW_TP, 0, 0, 0, 0, 0, 0, 0, btf_id)
        prog = libc.syscall(SYS_BPF, self.BPF_PROG_LOAD, ctypes.create_string_buffer(attr, 256), 256)
        if prog < 0:
            raise SystemExit(f"floor_btf: the kernel refused the BTF tracepoint program: {log.value.decode()[-500:]}")
        self.fds.append(prog)
        link = libc.syscall(SYS_BPF, self.BPF_RAW_TRACEPOINT_OPEN,
                            ctypes.create_string_buffer(struct.pack("<QI", 0, prog), 256), 256)
        if link < 0:
            raise SystemExit(f"floor_btf: attaching to {name} failed: {os.strerror(ctypes.get_errno())}")
        self.fds.append(link)

    def stop(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.bpf.cleanup()


def start_variant(name: str, bpf_dir: Path, port: int) -> Tracer | FloorProgram:
    if name in FLOORS:
        return FloorProgram(port, send_hook_btf=name == "floor_btf")
    os.environ["EBPFTOOL_BPF_DIR"] = str(bpf_dir)
    try:
        tracer = Tracer(["--port", str(port)])
    finally:
        del os.environ["EBPFTOOL_BPF_DIR"]
    time.sleep(0.5)
    if name == "stopped":
        os.kill(tracer.proc.pid, signal.SIGSTOP)
    return tracer


def stop_variant(name: str, tracer: Tracer | FloorProgram) -> None:
    if name == "stopped":
        os.kill(tracer.proc.pid, signal.SIGCONT)
    tracer.stop()


def program_costs(name: str, port: int, bpf_dir: Path, seconds: float) -> dict[str, dict]:
    """Runs per request and ns per run of each program a variant attached, during one loaded run."""
    tracer = start_variant(name, bpf_dir, port)
    pid = os.getpid() if name in FLOORS else tracer.proc.pid
    try:
        return bpf_time_during(pid, lambda: wrk(port, seconds)["requests"])
    finally:
        stop_variant(name, tracer)


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
        costs = {name: program_costs(name, port, dirs[name], args.seconds) for name in ("full", *FLOORS)}
    result = {"ratio_median": {n: statistics.median(v) for n, v in ratios.items()},
              "ratios": ratios, "programs": costs}
    for name, v in ratios.items():
        print(f"{name:12s} median {statistics.median(v):.3f}  ({min(v):.3f}-{max(v):.3f})")
    for variant, programs in costs.items():
        total = sum(c["ns_per_request"] for c in programs.values())
        print(f"{variant}: {total:.0f} ns of BPF time per request (bpf_stats)")
        for name, c in programs.items():
            print(f"  {name:32s} {c['runs_per_request']:.2f} runs/request  {c['ns_per_run']:.0f} ns/run")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
