"""What the benchmark scripts share: ebpftool started as a user starts it, ready once attached."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
READY_MARKER = "probes attached"


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
