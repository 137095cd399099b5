"""What the kernel's verifier spent on each of a tracer's programs: instructions, instructions processed
(the limit is 1,000,000 per program), states. A program near the limit on this kernel may pass it on
another kernel's verifier, which prunes differently: watch the margin when a loop grows.

    sudo /opt/ebpftool/venv/bin/python scripts/verifier_stats.py [inference|net|gpu|agents] [--match scan_]

Runs `ebpftool TRACER` for a second in this process with every program load the project makes itself (those
from the compile cache: all of them once the cache holds the tracer) asking the verifier for its statistics
(BPF_LOG_STATS); programs BCC loads itself are not listed.
"""
from __future__ import annotations

import argparse
import ctypes
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ebpftool.core import bpf as bpf_module  # noqa: E402
from ebpftool.core import bpf_cache  # noqa: E402

BPF_LOG_STATS = 4
LOG_BYTES = 1 << 16


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("tracer", nargs="?", default="inference", choices=("inference", "net", "gpu", "agents"))
    ap.add_argument("--match", default="", help="only programs whose name contains this")
    args = ap.parse_args()
    rows: dict[str, str] = {}
    plain_load = bpf_cache.load_program

    def load_program(prog_type, insns, name, *, license_="GPL", kern_version=0, attach_type=0, attach_btf_id=0,
                     explain=True):
        log = ctypes.create_string_buffer(LOG_BYTES)
        fd = bpf_cache.prog_load(prog_type, insns, name, license_=license_, kern_version=kern_version,
                                 attach_type=attach_type, attach_btf_id=attach_btf_id, log=log, log_level=BPF_LOG_STATS)
        lines = [line for line in log.value.decode(errors="replace").splitlines() if line.startswith("processed")]
        if args.match in name and name != "ebpftool_probe":
            rows[name] = f"{len(insns) // 8:>6} insns  {lines[-1] if lines else '(no statistics)'}"
        if fd >= 0:
            return fd
        return plain_load(prog_type, insns, name, license_=license_, kern_version=kern_version,
                          attach_type=attach_type, attach_btf_id=attach_btf_id, explain=explain)

    bpf_cache.load_program = load_program
    bpf_module.load_program = load_program
    from ebpftool.cli import app
    try:
        app([args.tracer, "--duration", "1", "--no-ui"] + (["--port", "1"] if args.tracer == "inference" else []),
            prog_name="ebpftool", standalone_mode=False)
    finally:
        for name, row in sorted(rows.items()):
            print(f"{name:<28} {row}")


if __name__ == "__main__":
    main()
