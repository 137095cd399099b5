#!/usr/bin/env python3
"""Where the inference tracer's overhead goes: control variants against the full tracer, in one run.

    sudo /opt/ebpftool/venv/bin/python scripts/bench_inference_breakdown.py [--seconds 60] [--cycles 1]
        [--variants full,floor,...] [--base COMMIT]

Same load and protocol as scripts/bench_inference.py: nginx (one worker, small file) under `wrk -t1 -c32`,
each variant loaded in this process while wrk runs, its per-request hooks detached and attached again every
half second, nginx's own count giving each slice's requests/s (benchlib.alternating_slices). Variants:
  full         the tracer as shipped (its send side on the tcp_sendmsg_locked BTF tracepoint where allowed)
  full_raw     the tracer with --hooks socket-raw: its send side on sock_send_length
  after_lookup the raw socket hooks return right after finding the connection (dispatch + filter + lookup)
  return_now   the raw socket hooks return at once (the raw tracepoint dispatch alone)
  floor        not the tracer: scripts/inference_floor.bpf.c, the least any socket-hook tracer must do per
               request for exact method/status/duration metrics (syscall registers, two clock reads, the
               request's and the response's first bytes, one histogram slot)
  floor_btf    the same, its send side on the tcp_sendmsg_locked BTF tracepoint (the struct msghdr's buffer
               loaded directly: no registers, no iovec read), the cheapest hook this kernel allows there
  empty_btf    the tracer as shipped but its three per-request BTF hooks (read, send, arrival) return at once:
               the tp_btf dispatch alone, what no tracer on these hooks can go below
  arrival_off  the tracer loaded as on a kernel without sk_data_ready: no arrivals (requests start at their read)
  arrival_clock the same, with a request's arrival read off TCP's clock of the socket at the read (a hook on
               tcp_rcv_space_adjust, before the read refreshes that clock; see CLOCK_NOTE): what the arrival
               would cost that way (exact only while nothing else moved the socket's clock since the bytes came)
  arrival_skb  the same hook, the arrival the time the kernel stamped on the skb the read began with (the
               kernel's receive timestamps switched on with the hooks: every packet of the node is then stamped)
  arrival_inert the tracer as shipped but its arrival hook (sk_data_ready) returns at once: what noting
               arrivals costs beyond the hook's dispatch
  read_lookup  the tracer as shipped but its read hook returns once it found the connection (no request
               begins: the writes find none to end either)
  read_arrival the same, returning just after the read took the arrival the hook noted (its line, written
               on the CPU that queued the bytes): what that line's trip between CPUs costs
  skip_metrics the tracer as shipped but a finished request goes into no histogram, no count, no span (its
               state is reset as usual): what the metrics cost
  skip_line    the same but the request's first bytes are not copied (a fixed `GET /` line stands for them):
               what that copy costs
  skip_write   the same but a response write is not parsed (it begins the response, status 200; the next
               read ends it): what reading the status line, the head's length and the events costs
  base         (with --base COMMIT) the tracer as shipped with bpf/ as it was at COMMIT: a change's effect,
               side by side in one run
Tracer variants load a patched copy of bpf/; the tree is never modified. Then one more loaded run of the full
tracer and of each floor with kernel.bpf_stats_enabled gives each program's runs per request and ns per run
(bpf_stats adds its own ~60 ns per run). Not part of the test suite.
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import ebpftool.core.bpf  # noqa: E402
from bench_inference import InProcessTracer, start_wrk, wrk  # noqa: E402
from benchlib import (alternating_slices, bpf_time_during, nginx_requests, switch_hooks,  # noqa: E402
                      without_arrival_hook)
from tests.servers.nginx import nginx_server  # noqa: E402
from ebpftool.core.bpf import BpfProgram  # noqa: E402
from ebpftool.core.btf import Btf  # noqa: E402
from ebpftool.tracers.inference import SEND_BTF_TRACEPOINT, SOCKET_RAW_TRACEPOINTS, send_hook_btf_defines  # noqa: E402

HOOK_LOOKUP = "struct conn_state *c = sock_conn(sk);\n    if (!c)\n        return 0;\n"
ARRIVAL_TOP = "static __always_inline int bytes_arrived(u64 sk)\n{\n"
READ_TAKE = "    arrival_take(c);\n"  # in socket_read, once the connection is found
RAW_HOOKS = len(SOCKET_RAW_TRACEPOINTS)  # a patch to the raw socket hooks must hit each of them
# the skip_ variants: c->port is never 0 on a watched connection, so each condition is true, but not to clang
FINISH_UNPARSED = "        return;  /* counted when it began; not a request we can name */\n"
LINE_COPY = "        if (read_user(c->line, n, (void *)ptr) == 0)\n            c->line_len = n;\n"
WRITE_NOW = "    u64 now = bpf_ktime_get_ns();  /* the write's bytes are being queued: start and end are one time */\n"
# arrival_clock: a request's arrival read off TCP's clock of the socket as the read finds it, before the read
# refreshes it (the tcp_rcv_space_adjust tracepoint fires just before tcp_mstamp_refresh): the last time the
# socket's clock moved, which is its bytes' arrival when nothing else moved it since (no later segment, ACK,
# send or timer: a delayed ACK's timer fires 40 ms or more after the bytes came, and refreshes it)
READ_PROLOGUE = "/* A read of socket sk returned ret (bytes, or an error) with these recv() flags. */\n"
CLOCK_NOTE = """struct read_clock_note {
    u64 sk;
    u64 t;
};
BPF_PERCPU_ARRAY(read_clock, struct read_clock_note, 1);

int clock_tcp_rcv_space_adjust(u64 *ctx)
{
    u64 sk = address_of(ctx[0]);
    if (!maybe_watched(sk))
        return 0;
    u32 zero = 0;
    struct read_clock_note *n = read_clock.lookup(&zero);
    if (!n || n->sk == sk)
        return 0;  /* a later skb of the same read: the clock is the read's own by now */
    n->sk = sk;
    n->t = ARRIVAL_TIME;
    return 0;
}

static __always_inline void clock_take(u64 sk, struct conn_state *c)
{
    u32 zero = 0;
    struct read_clock_note *n = read_clock.lookup(&zero);
    if (!n || n->sk != sk)
        return;
    n->sk = 0;
    if ((c->req_start == 0 || c->resp_start != 0) && c->arrival == 0)
        c->arrival = n->t;
    if (c->seq == 0 || c->proto == PROTO_H2)
        c->arrival_last = n->t;
}

"""
# arrival_skb: the same hook, the time the kernel stamped on the skb the read copied from as it came in (still at
# the receive queue's head then), with the kernel's receive timestamps switched on with the hooks (a socket that
# asks for them: every packet of the node is then stamped with the real-time clock), converted to the monotonic
# clock with the offset the benchmark writes once. Exact for the segment the read began with, whatever moved the
# socket's clock since.
SKB_STAMP = """({ void *skb = *(void **)((void *)ctx[0] + SK_RECEIVE_QUEUE_OFF);  /* struct sk_buff_head's next */
       u64 stamp = *(u64 *)(skb + SKB_TSTAMP_OFF);
       u32 z = 0;
       u64 *offset = realtime_offset.lookup(&z);
       stamp && offset ? stamp - *offset : read_time(sk); })"""
CLOCK_HOOK = ("tcp_rcv_space_adjust", "clock_tcp_rcv_space_adjust")
NO_ARRIVAL_HOOK = ("arrival_clock", "arrival_skb", "arrival_off")  # loaded as on a kernel without sk_data_ready
SO_TIMESTAMPNS = 35  # <asm-generic/socket.h>; Python's socket module does not name it
# variant: [(text in bpf/inference/hooks_socket.bpf.h, its replacement, times it must occur)], or
# [(file in bpf/inference/, text, replacement, times)]
PATCHES = {
    "full": [],
    "full_raw": [],
    # c->port is never 0 on a watched connection: the condition keeps the lookup in the program.
    "after_lookup": [(HOOK_LOOKUP, HOOK_LOOKUP + "    if (c->port != 0)\n        return 0;  /* bench variant */\n",
                      RAW_HOOKS)],
    "return_now": [("_length)\n{\n", "_length)\n{\n    return 0;  /* bench variant */\n", RAW_HOOKS)],  # both tops
    "empty_btf": [("int recv_sock_recv_length(u64 *ctx)\n{\n", "int recv_sock_recv_length(u64 *ctx)\n{\n"
                   "    return 0;  /* bench variant */\n", 1),
                  ("int send_tcp_sendmsg(u64 *ctx)\n{\n", "int send_tcp_sendmsg(u64 *ctx)\n{\n"
                   "    return 0;  /* bench variant */\n", 1),
                  (ARRIVAL_TOP, ARRIVAL_TOP + "    return 0;  /* bench variant */\n", 1)],
    "arrival_inert": [(ARRIVAL_TOP, ARRIVAL_TOP + "    return 0;  /* bench variant */\n", 1)],
    "read_lookup": [(READ_TAKE, "    if (c->port != 0)\n        return 0;  /* bench variant */\n" + READ_TAKE, 1)],
    "read_arrival": [(READ_TAKE, READ_TAKE + "    if (c->port != 0)\n        return 0;  /* bench variant */\n", 1)],
    "skip_metrics": [("requests.bpf.h", FINISH_UNPARSED, FINISH_UNPARSED + (
        "    if (c->port != 0) {  /* bench variant */\n        c->first_token = 0; c->last_token = 0; c->req_bytes = 0;"
        " c->resp_bytes = 0; c->tokens = 0;\n        c->status = 0; c->flags = 0; c->reads = 0; c->writes = 0;\n"
        "        return;\n    }\n"), 1)],
    "skip_line": [("http1.bpf.h", LINE_COPY, (
        "        if (c->port == 0 && read_user(c->line, n, (void *)ptr) == 0)  /* bench variant */\n"
        "            c->line_len = n;\n        else {\n            *(u64 *)c->line = 0x2f20544547ULL;  /* GET / */\n"
        "            c->line_len = 14;\n        }\n"), 1)],
    "skip_write": [(WRITE_NOW, WRITE_NOW + (
        "    if (c->port != 0) {  /* bench variant */\n        if (c->resp_start == 0)\n"
        "            c->resp_start = now;\n        c->resp_end = now;\n        c->status = 200;\n"
        "        return 0;\n    }\n"), 1)],
    "arrival_clock": [(READ_PROLOGUE, CLOCK_NOTE.replace("ARRIVAL_TIME", "read_time(sk)") + READ_PROLOGUE, 1),
                      (READ_TAKE, "    clock_take(sk, c);\n", 1)],
    "arrival_skb": [(READ_PROLOGUE, "BPF_ARRAY(realtime_offset, u64, 1);\n" +
                     CLOCK_NOTE.replace("ARRIVAL_TIME", SKB_STAMP) + READ_PROLOGUE, 1),
                    (READ_TAKE, "    clock_take(sk, c);\n", 1)],
    "arrival_off": [],
    "floor": [],
    "floor_btf": [],
    "base": [],
}
FLOORS = ("floor", "floor_btf")  # not patches: scripts/inference_floor.bpf.c, without and with the BTF send hook
# loaded with the tracer's own choice of hooks (BTF where allowed)
SHIPPED_HOOKS = ("full", "arrival_clock", "arrival_skb", "arrival_off", "empty_btf", "arrival_inert", "base",
                 "read_lookup", "read_arrival", "skip_metrics", "skip_line", "skip_write")
SLICE_S = 0.5


def btf_offsets(src: str) -> str:
    """src with the struct offsets the arrival_skb patch names filled in from the running kernel's BTF."""
    if "SKB_TSTAMP_OFF" not in src:
        return src
    btf = Btf.vmlinux()
    return (src.replace("SK_RECEIVE_QUEUE_OFF", str(btf.member("sock", "sk_receive_queue").offset))
            .replace("SKB_TSTAMP_OFF", str(btf.member("sk_buff", "tstamp").offset)))


def variant_dir(name: str, into: Path, base: str | None = None) -> Path:
    """A copy of bpf/ with the variant's patches applied (to bpf/inference/hooks_socket.bpf.h unless a patch
    names its file); for "base", bpf/ as it was at commit base."""
    d = into / name
    if name == "base":
        if not base:
            raise SystemExit("the base variant needs --base COMMIT")
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", base, "bpf"], capture_output=True)
        if archive.returncode:
            raise SystemExit(f"--base {base}: {archive.stderr.decode().strip()}")
        (into / "base-tree").mkdir()
        subprocess.run(["tar", "-x", "-C", str(into / "base-tree")], input=archive.stdout, check=True)
        return (into / "base-tree" / "bpf").rename(d)
    shutil.copytree(ROOT / "bpf", d)
    for patch in PATCHES[name]:
        file, old, new, times = patch if len(patch) == 4 else ("hooks_socket.bpf.h", *patch)
        path = d / "inference" / file
        src = path.read_text()
        if src.count(old) < times:
            raise SystemExit(f"variant {name}: the patch no longer matches bpf/inference/{file}; update {__file__}")
        path.write_text(btf_offsets(src.replace(old, new)))
    return d


class FloorProgram:
    """scripts/inference_floor.bpf.c, loaded in this process (see there); stop() detaches it. Its BTF send
    hook is loaded like the tracer's (ebpftool.core.bpf: BCC 0.26 cannot), with the tracer's offsets."""

    def __init__(self, port: int, send_hook_btf: bool) -> None:
        defines = {"PORT": port, "SEND_HOOK_BTF": int(send_hook_btf), **send_hook_btf_defines()}
        self.prog = BpfProgram(str(ROOT / "scripts" / "inference_floor.bpf.c"), defines).load()
        self.bpf = self.prog.bpf
        self.send_hook_btf = send_hook_btf
        self._attached = True  # BCC attached the raw hooks at load
        if send_hook_btf:
            self.prog.attach_btf_tracepoint(SEND_BTF_TRACEPOINT, "tcp_sendmsg_locked")

    def attach(self, on: bool) -> None:
        """The per-request hooks in place (on) or not."""
        if on == self._attached:
            return
        self._attached = on
        raw = SOCKET_RAW_TRACEPOINTS[:1] if self.send_hook_btf else SOCKET_RAW_TRACEPOINTS
        switch_hooks(self.prog, raw, [(SEND_BTF_TRACEPOINT, "tcp_sendmsg_locked")] if self.send_hook_btf else [], on)

    def stop(self) -> None:
        self.prog.close()


def receive_timestamps_with(switch: Callable[[bool], None]) -> Callable[[bool], None]:
    """switch, the kernel's receive timestamps on and off with it (on now, as the hooks are)."""
    holder: list[socket.socket] = []

    def both(on: bool) -> None:
        switch(on)
        if on and not holder:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)  # the kernel's count of those asking goes up
            holder.append(s)
        elif not on and holder:
            holder.pop().close()  # ... and down when the socket goes
    both(True)
    return both


@contextlib.contextmanager
def variant(name: str, bpf_dir: Path | None, port: int) -> Iterator[InProcessTracer | FloorProgram]:
    """The variant loaded in this process, its hooks attached; unloaded on exit."""
    if name in FLOORS:
        loaded = FloorProgram(port, send_hook_btf=name == "floor_btf")
    else:
        default_dir, ebpftool.core.bpf.BPF_DIR = ebpftool.core.bpf.BPF_DIR, bpf_dir
        try:
            # the patches are to the raw socket hooks; "full" is the tracer as shipped (BTF send hook here)
            with without_arrival_hook(name in NO_ARRIVAL_HOOK):
                loaded = InProcessTracer(port, hooks="auto" if name in SHIPPED_HOOKS else "socket-raw")
            if name in ("arrival_clock", "arrival_skb"):
                # its hook, switched with the others
                loaded.tracer.btf_hooks.append(CLOCK_HOOK)
                loaded.tracer.prog.attach_btf_tracepoint(*CLOCK_HOOK)
            if name == "arrival_skb":
                offset = time.clock_gettime_ns(time.CLOCK_REALTIME) - time.clock_gettime_ns(time.CLOCK_MONOTONIC)
                loaded.tracer.prog.bpf["realtime_offset"][ctypes.c_int(0)] = ctypes.c_uint64(offset)
                loaded.switch = receive_timestamps_with(loaded.switch)
        finally:
            ebpftool.core.bpf.BPF_DIR = default_dir
    try:
        yield loaded
    finally:
        if name == "arrival_skb":
            loaded.switch(False)  # the receive timestamps off with the hooks, not when the socket is collected
        loaded.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="alternating run per variant and cycle")
    ap.add_argument("--cycles", type=int, default=1, help="times every variant runs, interleaved")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--variants", help="comma-separated, in this order (default: all but base; base with --base)")
    ap.add_argument("--base", metavar="COMMIT", help="add the variant base: bpf/ as it was at COMMIT")
    args = ap.parse_args()
    names = args.variants.split(",") if args.variants else [n for n in PATCHES if n != "base" or args.base]
    unknown = [n for n in names if n not in PATCHES]
    if unknown:
        raise SystemExit(f"unknown variant(s) {', '.join(unknown)}; known: {', '.join(PATCHES)}")
    pairs: dict[str, list[float]] = {name: [] for name in names}
    costs = {}
    with tempfile.TemporaryDirectory() as tmp, nginx_server(workers=1) as port:
        dirs = {name: variant_dir(name, Path(tmp), args.base) for name in names if name not in FLOORS}
        wrk(port, 1)  # warm-up
        for cycle in range(args.cycles):
            for name in names:
                with variant(name, dirs.get(name), port) as loaded:
                    load = start_wrk(port, args.seconds + 3)
                    time.sleep(1.5)  # wrk connected (while the hooks were attached) and running
                    run = alternating_slices(loaded.attach, lambda: nginx_requests(port), args.seconds, SLICE_S)
                    load.wait()
                    if cycle == 0 and name in ("full", "full_raw", *SHIPPED_HOOKS, *FLOORS):
                        costs[name] = bpf_time_during(os.getpid(), lambda: wrk(port, 2.0)["requests"])
                pairs[name] += [p["ratio"] for p in run["pairs"]]
                print(f"  cycle {cycle} {name:12s} {run['ratio_median']:.3f} (mean {run['ratio_mean']:.3f} ± "
                      f"{run['ratio_sem']:.3f}, {len(run['pairs'])} pairs)", flush=True)
    result = {"ratio_median": {n: statistics.median(v) for n, v in pairs.items()}, "pairs": pairs, "programs": costs}
    for name, v in pairs.items():
        sem = statistics.stdev(v) / len(v) ** 0.5
        print(f"{name:12s} median {statistics.median(v):.3f}  mean {statistics.mean(v):.3f} ± {sem:.3f}  "
              f"({len(v)} pairs)")
    for name, programs in costs.items():
        total = sum(c["ns_per_request"] for c in programs.values())
        print(f"{name}: {total:.0f} ns of BPF time per request (bpf_stats)")
        for prog, c in programs.items():
            print(f"  {prog:32s} {c['runs_per_request']:.2f} runs/request  {c['ns_per_run']:.0f} ns/run")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
