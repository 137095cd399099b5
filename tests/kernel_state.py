"""What the kernel holds, read with bpftool and tracefs: for the tests that prove a tracer leaves nothing."""
from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path


def kernel_ids(kind: str) -> set[int]:
    """Ids of every BPF object of a kind ("prog" or "map") the kernel lists."""
    out = subprocess.run(["bpftool", kind, "show", "-j"], capture_output=True, text=True, check=True).stdout
    return {o["id"] for o in json.loads(out or "[]")}


def still_loaded(ids: set[int], kind: str, within: float = 5.0) -> set[int]:
    """Which of ids the kernel still lists after `within` seconds: it frees a dead process's programs
    and maps in deferred work (a prog_array holding a tail-call program is released after its owner)."""
    deadline = time.monotonic() + within
    left = ids & kernel_ids(kind)
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = ids & kernel_ids(kind)
    return left


def perf_attachments() -> list[dict]:
    """Programs attached through perf events (tracepoints, uprobes): pid, fd, prog_id, fd_type."""
    out = subprocess.run(["bpftool", "perf", "show", "-j"], capture_output=True, text=True, check=True).stdout
    return json.loads(out or "[]")


def uprobe_events() -> str:
    for path in ("/sys/kernel/tracing/uprobe_events", "/sys/kernel/debug/tracing/uprobe_events"):
        if os.path.exists(path):
            return Path(path).read_text()
    return ""
