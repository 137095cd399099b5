#!/usr/bin/env python3
"""Where the inference tracer's programs spend the server's CPU: a sampling profile of their machine code.

    sudo /opt/ebpftool/venv/bin/python scripts/profile_inference_hooks.py [--seconds 8] [--top 8] [--no-arrival]

nginx (1 worker, pinned to CPU 1) under `wrk -t1 -c32` (pinned to CPU 0), the tracer as shipped loaded in this
process with its hooks attached; `perf record -a -e cpu-clock` samples both CPUs; the programs' JIT images
(BPF_OBJ_GET_INFO_BY_FD) are disassembled with objdump. Prints each program's and each BPF helper's share of the
server CPU's samples and, per program, the instructions most samples fell on. A sample lands on the
instruction after one that waited (a load that missed the cache shows as its successor): the instruction
before is printed with it. Needs perf and objdump (binutils). Not part of the test suite.
"""
from __future__ import annotations

import argparse
import collections
import ctypes
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import bench_inference  # noqa: E402
from benchlib import without_arrival_hook  # noqa: E402
from ebpftool.core.bpf_cache import _bpf, _obj_info  # noqa: E402  (the bpf() calls of the compile cache)
from tests.servers.nginx import nginx_server  # noqa: E402

SERVER_CPU, CLIENT_CPU = 1, 0
PROGRAMS = ("recv_sock_recv", "send_tcp_sendms", "arrival_sk_data")  # the per-request hooks (names cut at 15)
DISPATCH = re.compile(r"bpf|trace_run|rcu_read|ktime|nofault|migrate")  # kernel symbols the hooks' runs pay
BPF_PROG_GET_FD_BY_ID = 13
INFO_SIZE, INFO_JITED_LEN, INFO_JITED_INSNS = 256, 16, 24  # struct bpf_prog_info: size used, field offsets


def jited_image(prog_id: int) -> bytes:
    """The machine code the kernel's JIT made of program prog_id."""
    fd, _ = _bpf(BPF_PROG_GET_FD_BY_ID, struct.pack("<I", prog_id))
    if fd < 0:
        raise SystemExit(f"program {prog_id}: {os.strerror(-fd)}")
    try:
        length = struct.unpack_from("<I", _obj_info(fd, INFO_SIZE), INFO_JITED_LEN)[0]
        image = ctypes.create_string_buffer(length)
        ask = bytearray(INFO_SIZE)
        struct.pack_into("<I", ask, INFO_JITED_LEN, length)
        struct.pack_into("<Q", ask, INFO_JITED_INSNS, ctypes.addressof(image))
        _obj_info(fd, INFO_SIZE, bytes(ask))
        return image.raw
    finally:
        os.close(fd)


def loaded_programs() -> dict[str, tuple[int, int]]:
    """name -> (id, kernel address of its code) of the per-request programs loaded now."""
    symbols = {}
    for line in Path("/proc/kallsyms").read_text().splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[2].startswith("bpf_prog_"):
            symbols[fields[2]] = int(fields[0], 16)
    shown = json.loads(subprocess.run(["bpftool", "prog", "show", "-j"], capture_output=True, text=True).stdout)
    return {p["name"]: (p["id"], symbols[f"bpf_prog_{p['tag']}_{p['name']}"]) for p in shown
            if p.get("name", "").startswith(PROGRAMS) and f"bpf_prog_{p['tag']}_{p['name']}" in symbols}


def disassembly(image: bytes, address: int, into: Path) -> dict[int, str]:
    """address -> instruction text of a JIT image."""
    raw = into / f"{address:x}.bin"
    raw.write_bytes(image)
    text = subprocess.run(["objdump", "-D", "-b", "binary", "-mi386:x86-64", f"--adjust-vma={address:#x}", str(raw)],
                          capture_output=True, text=True, check=True).stdout
    out = {}
    for line in text.splitlines():
        m = re.match(r"\s*([0-9a-f]+):\t(?:[0-9a-f]{2} )+\s*\t(.*)", line)
        if m:
            out[int(m.group(1), 16)] = m.group(2).strip()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=8.0, help="sampled time")
    ap.add_argument("--top", type=int, default=8, help="instructions shown per program")
    ap.add_argument("--no-arrival", action="store_true",
                    help="the tracer loaded as on a kernel without sk_data_ready (no arrival hook)")
    args = ap.parse_args()
    for tool in ("perf", "objdump", "bpftool", "taskset"):
        if not shutil.which(tool):
            raise SystemExit(f"profile_inference_hooks needs {tool} (perf: apt install linux-perf)")
    command = bench_inference.wrk_command
    bench_inference.wrk_command = lambda *a, **k: ["taskset", "-c", str(CLIENT_CPU), *command(*a, **k)]
    with tempfile.TemporaryDirectory() as tmp, nginx_server(workers=1) as port:
        for pid in subprocess.run(["pgrep", "-f", "nginx: worker"], capture_output=True, text=True).stdout.split():
            os.sched_setaffinity(int(pid), {SERVER_CPU})
        bench_inference.wrk(port, 1)
        with without_arrival_hook(args.no_arrival):
            tracer = bench_inference.InProcessTracer(port, hooks="auto")
        try:
            tracer.attach(True)
            load = bench_inference.start_wrk(port, args.seconds + 4)
            time.sleep(2)
            data = Path(tmp) / "perf.data"
            subprocess.run(["perf", "record", "-a", "-F", "9999", "-e", "cpu-clock", "-o", str(data), "--",
                            "sleep", str(args.seconds)], capture_output=True, check=True)
            load.wait()
            programs = {name: (addr, disassembly(jited_image(pid), addr, Path(tmp)))
                        for name, (pid, addr) in loaded_programs().items()}
        finally:
            tracer.stop()
        samples = subprocess.run(["perf", "script", "-i", str(data), "-C", str(SERVER_CPU), "-F", "ip,sym"],
                                 capture_output=True, text=True, check=True).stdout.splitlines()
    total = len(samples)
    by_symbol = collections.Counter(line.split(maxsplit=1)[1].strip() if " " in line.strip() else "?"
                                    for line in samples)
    print(f"server CPU {SERVER_CPU}: {total} samples in {args.seconds:g} s; nginx {port} under wrk on CPU {CLIENT_CPU}")
    print("programs and helpers on the server's CPU (share of its samples):")
    for symbol, n in by_symbol.most_common():
        if DISPATCH.search(symbol):
            if n / total < 0.0005:
                break
            print(f"  {100 * n / total:5.2f}%  {symbol}")
    for name, (addr, code) in programs.items():
        ips = collections.Counter(int(line.split()[0], 16) for line in samples if name in line)
        if not ips:
            continue
        n = sum(ips.values())
        print(f"{name}: {100 * n / total:.2f}% of the server CPU; where its samples fell:")
        addresses = sorted(code)
        for ip, k in ips.most_common(args.top):
            i = addresses.index(ip) if ip in code else None
            before = code[addresses[i - 1]] if i else "(entry)"
            print(f"  {100 * k / n:5.1f}%  +{ip - addr:#06x}  after `{before}`")


if __name__ == "__main__":
    main()
