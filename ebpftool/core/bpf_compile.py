"""Compile a BPF program with BCC in a process of its own, into the compile cache (ebpftool.core.bpf_cache).

clang and LLVM take ~100 MB while they compile and never give it back to the system: compiled in a child,
the tracer's own process stays at what a warm start holds, and it loads the program from the cache as a
warm start does. Children of several tracers compile side by side (ebpftool.core.runner).

    python -m ebpftool.core.bpf_compile < {"text": ..., "cflags": [...], "key": ...}

Exit 0 once the cache holds the entry; otherwise 1, with the reason on stderr (the caller then compiles in
its own process, which reports a compile error as it always did).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Sequence

from ebpftool import IMPORT_ROOT
from ebpftool.core import bpf_cache

COMPILE_TIMEOUT_S = 300.0
# glibc's malloc gives freed memory at the top of the heap back at once (by default it keeps 128 KiB or more,
# growing with the largest block freed): LLVM frees as it goes, so the child's peak RSS is lower
# (docs/performance.md, start-up).
CHILD_ENV = {"PYTHONDONTWRITEBYTECODE": "1", "MALLOC_TRIM_THRESHOLD_": "0"}


def start_child(text: str, cflags: Sequence[str], key: str) -> subprocess.Popen:
    """The child compiling text into the cache under key (stdin written and closed)."""
    child = subprocess.Popen([sys.executable, "-m", "ebpftool.core.bpf_compile"], stdin=subprocess.PIPE,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, **CHILD_ENV}, cwd=IMPORT_ROOT)
    assert child.stdin is not None
    child.stdin.write(json.dumps({"text": text, "cflags": list(cflags), "key": key}))
    child.stdin.close()
    child.stdin = None  # communicate() then only reads stderr
    return child


def finished(child: subprocess.Popen) -> str | None:
    """Wait for a child; None when it stored the entry, else why not."""
    try:
        _, err = child.communicate(timeout=COMPILE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
        return f"the compile did not end in {COMPILE_TIMEOUT_S:.0f} s"
    if child.returncode != 0:
        lines = (err or "").strip().splitlines()
        return lines[-1] if lines else f"exit {child.returncode}"
    return None


def main() -> int:
    from ebpftool.core.bpf import import_bcc  # noqa: PLC0415  (only the child needs BCC's compiler)

    request = json.load(sys.stdin)
    cache = bpf_cache.BpfCache.from_env()
    if cache is None:
        print("the compile cache is off", file=sys.stderr)
        return 1
    bcc = import_bcc(compiler=True)

    class CompileOnly(bcc.BPF):
        """BCC's module, compiled, with its maps, and nothing attached: the tracer's process loads and attaches
        the functions BCC would attach as it builds the module (tracepoint__*, see bpf_cache.CachedBPF)."""

        def _trace_autoload(self) -> None:
            pass

    try:
        compiled = CompileOnly(text=request["text"], cflags=request["cflags"])
        entry = bpf_cache.capture(compiled, bcc.lib)
    except Exception as exc:  # BCC raises bare Exception; the parent compiles again and reports it
        print(f"compile failed: {str(exc).strip()[-300:]}", file=sys.stderr)
        return 1
    cache.store(request["key"], entry)
    if cache.notes:
        print(cache.notes[-1], file=sys.stderr)
        return 1
    # The parent waits for this exit: skip BCC's cleanup of the module (LLVM's memory freed piece by piece) and
    # Python's own; the kernel closes the maps' fds. The net program's child ended 0.3 s sooner so (0.6 s in all).
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
