"""Loading ebpftool's C programs from bpf/ with BCC, and reading what they share.

Every program gets bpf/common.bpf.h in front of its text (BCC only rewrites map
calls in the main text), its parts (`#include "x.bpf.h"` of its own folder)
joined in place with #line markers, compile-time parameters as #defines (so
filters are compiled into the program and the kernel drops unwatched events),
and the tracer's own layout header through -I.
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import logging
import os
import platform
import re
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from ebpftool.core import bcc_lib, bpf_cache, bpf_compile
from ebpftool.core.bpf_cache import load_program
from ebpftool.core.cstruct import BPF_DIR, load_header
from ebpftool.core.ringbuf import RingBufferReader, RingBufferSet
from ebpftool.errors import EbpftoolError

log = logging.getLogger(__name__)

COMMON_HEADER = "common.bpf.h"
_COMMON_STRUCTS, _COMMON = load_header(COMMON_HEADER)

# Slots of the shared per-CPU `stats` array, and the histogram value every tracer's maps hold.
STAT_RINGBUF_FULL = _COMMON["STAT_RINGBUF_FULL"]
STAT_SPAN_BUDGET = _COMMON["STAT_SPAN_BUDGET"]
STAT_TRACER_BASE = _COMMON["STAT_TRACER_BASE"]
STAT_SLOTS = _COMMON["STAT_SLOTS"]
HIST_MAX_BUCKETS = _COMMON["HIST_MAX_BUCKETS"]
HistValue = _COMMON_STRUCTS["hist_value"]


TRACEFS_PATHS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")

# bpf(2): BPF_PROG_TEST_RUN runs a loaded program once, from user space, with a given context.
SYS_BPF = {"x86_64": 321, "aarch64": 280}.get(platform.machine(), 321)
BPF_PROG_TEST_RUN = 10
BPF_RAW_TRACEPOINT_OPEN = 17
BPF_PROG_TYPE_TRACING = 26
BPF_TRACE_RAW_TP = 23
BPF_CALL_OPCODE = 0x85        # BPF_JMP | BPF_CALL
BPF_PSEUDO_KFUNC_CALL = 2     # src_reg of a call to a kernel function (imm: its BTF id)
# Kernel functions (kfuncs) a program may call in a tp_btf program: BCC 0.26 cannot emit such a call, so
# the C calls the placeholder helper number (a -D define of the program) and the loader rewrites it.
KFUNC_PLACEHOLDERS = {"KFUNC_RDONLY_CAST": (0x7FFF0001, "bpf_rdonly_cast")}


def kfunc_defines() -> dict[str, int]:
    """-D defines of the kfunc placeholders, for programs that call them (see KFUNC_PLACEHOLDERS)."""
    return {name: number for name, (number, _func) in KFUNC_PLACEHOLDERS.items()}


def with_kfunc_calls(insns: bytes, btf) -> bytes:
    """The program's instructions with each call to a KFUNC_PLACEHOLDERS number made a call to that
    kernel function (src_reg BPF_PSEUDO_KFUNC_CALL, imm its id in the kernel's BTF)."""
    from ebpftool.core.btf import KIND_FUNC

    out = bytearray(insns)
    ids: dict[int, int] = {}
    by_number = {number: func for number, func in KFUNC_PLACEHOLDERS.values()}
    for at in range(0, len(out) - 7, 8):
        code, regs, _off, imm = struct.unpack_from("<BBhi", out, at)
        if code == BPF_CALL_OPCODE and regs == 0 and imm in by_number:
            if imm not in ids:
                ids[imm] = btf.type_id(KIND_FUNC, by_number[imm])  # BtfError when the kernel lacks it
            struct.pack_into("<BBhi", out, at, code, BPF_PSEUDO_KFUNC_CALL << 4, 0, ids[imm])
    return bytes(out)


class _TestRunAttr(ctypes.Structure):
    """The BPF_PROG_TEST_RUN member of union bpf_attr (include/uapi/linux/bpf.h)."""
    _fields_ = [("prog_fd", ctypes.c_uint32), ("retval", ctypes.c_uint32),
                ("data_size_in", ctypes.c_uint32), ("data_size_out", ctypes.c_uint32),
                ("data_in", ctypes.c_uint64), ("data_out", ctypes.c_uint64),
                ("repeat", ctypes.c_uint32), ("duration", ctypes.c_uint32),
                ("ctx_size_in", ctypes.c_uint32), ("ctx_size_out", ctypes.c_uint32),
                ("ctx_in", ctypes.c_uint64), ("ctx_out", ctypes.c_uint64),
                ("flags", ctypes.c_uint32), ("cpu", ctypes.c_uint32), ("batch_size", ctypes.c_uint32)]


_libc = ctypes.CDLL(None, use_errno=True)


def run_raw_tracepoint_program(prog_fd: int, args: Sequence[int]) -> int:
    """Run a loaded raw-tracepoint program once with ctx->args = args; its return value."""
    ctx = (ctypes.c_uint64 * len(args))(*args)
    attr = _TestRunAttr(prog_fd=prog_fd, ctx_size_in=ctypes.sizeof(ctx), ctx_in=ctypes.addressof(ctx))
    if _libc.syscall(SYS_BPF, BPF_PROG_TEST_RUN, ctypes.byref(attr), ctypes.sizeof(attr)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return attr.retval


def load_btf_raw_tracepoint_program(bpf, fn_name: str, tracepoint: str) -> int:
    """Load function fn_name of a BCC module as a BTF raw tracepoint (tp_btf) program for `tracepoint`; its fd.

    BCC 0.26 compiles such a program (its map references already resolved) but cannot load it with the
    type and BTF id the kernel wants, so its instructions go to bpf(BPF_PROG_LOAD) here: type TRACING,
    expected attach type BPF_TRACE_RAW_TP, and the id of the kernel's `btf_trace_<tracepoint>` typedef.
    Its arguments are then typed pointers whose fields the program loads directly (the verifier checks
    each load against the kernel's BTF). Not attached: see attach_raw_tracepoint_program()."""
    from ebpftool.core.btf import KIND_TYPEDEF, Btf

    btf = Btf.vmlinux()
    btf_id = btf.type_id(KIND_TYPEDEF, f"btf_trace_{tracepoint}")
    try:
        insns = bpf.dump_func(fn_name)
    except Exception as exc:  # BCC raises bare Exception for an unknown function
        raise EbpftoolError(f"the program has no function {fn_name}") from exc
    try:
        return load_program(BPF_PROG_TYPE_TRACING, with_kfunc_calls(insns, btf), fn_name,
                            attach_type=BPF_TRACE_RAW_TP, attach_btf_id=btf_id)
    except OSError as exc:
        raise EbpftoolError(f"the kernel refused {fn_name} on the BTF tracepoint {tracepoint} "
                            f"({exc.strerror})") from None


BPF_PROG_TYPE_RAW_TRACEPOINT = 17
_INSN = struct.Struct("<BBhi")
_RETURN_0 = _INSN.pack(0xB7, 0, 0, 0) + _INSN.pack(0x95, 0, 0, 0)   # r0 = 0; exit


def _load_insns(prog_type: int, insns: bytes, attach_type: int = 0, attach_btf_id: int = 0) -> int:
    """bpf(BPF_PROG_LOAD) of raw instructions: the fd, or -errno."""
    try:
        return load_program(prog_type, insns, "ebpftool_probe", attach_type=attach_type, attach_btf_id=attach_btf_id)
    except OSError as exc:
        return -exc.errno


def _loads(prog_type: int, insns: bytes, attach_type: int = 0, attach_btf_id: int = 0) -> bool:
    fd = _load_insns(prog_type, insns, attach_type, attach_btf_id)
    if fd >= 0:
        os.close(fd)
    return fd >= 0


def kernel_allows_raw_tracepoints() -> bool:
    """Whether a raw tracepoint program loads here (a two-instruction one, no compiler: cheap)."""
    return _loads(BPF_PROG_TYPE_RAW_TRACEPOINT, _RETURN_0)


def kernel_allows_btf_tracepoint(tracepoint: str, btf=None) -> bool:
    """Whether a tp_btf program for tracepoint loads here (lockdown or an old kernel may refuse it)."""
    from ebpftool.core.btf import KIND_TYPEDEF, Btf, BtfError

    try:
        btf_id = (btf or Btf.vmlinux()).type_id(KIND_TYPEDEF, f"btf_trace_{tracepoint}")
    except BtfError:
        return False
    return _loads(BPF_PROG_TYPE_TRACING, _RETURN_0, BPF_TRACE_RAW_TP, btf_id)


def kernel_allows_rdonly_cast(tracepoint: str, btf=None) -> bool:
    """Whether a tp_btf program for tracepoint may call the bpf_rdonly_cast kfunc (Linux 6.2+)."""
    from ebpftool.core.btf import KIND_FUNC, KIND_TYPEDEF, Btf, BtfError

    btf = btf or Btf.vmlinux()
    try:
        btf_id = btf.type_id(KIND_TYPEDEF, f"btf_trace_{tracepoint}")
        kfunc = btf.type_id(KIND_FUNC, "bpf_rdonly_cast")
        target = btf.struct_id("tcp_sock")
    except BtfError:
        return False
    insns = (_INSN.pack(0xB7, 1, 0, 0) + _INSN.pack(0xB7, 2, 0, target)                  # r1 = 0; r2 = id
             + _INSN.pack(BPF_CALL_OPCODE, BPF_PSEUDO_KFUNC_CALL << 4, 0, kfunc) + _RETURN_0)
    return _loads(BPF_PROG_TYPE_TRACING, insns, BPF_TRACE_RAW_TP, btf_id)


def attach_raw_tracepoint_program(prog_fd: int) -> int:
    """Attach a loaded tp_btf program (its tracepoint is in its BTF id); the link's fd, closed to detach."""
    attr = struct.pack("<QI", 0, prog_fd)
    fd = _libc.syscall(SYS_BPF, BPF_RAW_TRACEPOINT_OPEN, ctypes.create_string_buffer(attr, 256), 256)
    if fd < 0:
        raise EbpftoolError(f"attaching a BTF tracepoint program failed: {os.strerror(ctypes.get_errno())}")
    return fd


BPF_LINK_CREATE = 28
BPF_PROG_TYPE_KPROBE = 2
BPF_TRACE_UPROBE_MULTI = 48       # enum bpf_attach_type, Linux 6.6+
BPF_F_UPROBE_MULTI_RETURN = 1


def attach_uprobe_multi(prog_fd: int, path: str, offsets: Sequence[int], *, ret: bool = False, pid: int = -1) -> int:
    """One BPF_TRACE_UPROBE_MULTI link of a program (loaded with that expected attach type) at these file
    offsets of path; its fd, closed to detach. OSError when the kernel refuses (before Linux 6.6: EINVAL)."""
    c_path = ctypes.create_string_buffer(path.encode())
    c_offsets = (ctypes.c_uint64 * len(offsets))(*offsets)
    # union bpf_attr, BPF_LINK_CREATE: prog_fd, target_fd, attach_type, flags, then uprobe_multi's
    # path, offsets, ref_ctr_offsets, cookies, cnt, flags, pid (include/uapi/linux/bpf.h)
    attr = struct.pack("<IIIIQQQQIII", prog_fd, 0, BPF_TRACE_UPROBE_MULTI, 0, ctypes.addressof(c_path),
                       ctypes.addressof(c_offsets), 0, 0, len(offsets), BPF_F_UPROBE_MULTI_RETURN if ret else 0,
                       max(pid, 0))
    fd = _libc.syscall(SYS_BPF, BPF_LINK_CREATE, ctypes.create_string_buffer(attr, 256), 256)
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return fd


@functools.lru_cache(maxsize=1)
def kernel_allows_uprobe_multi() -> bool:
    """Whether this kernel has uprobe_multi links (Linux 6.6+), asked once per process without attaching
    anything: a link on a file that does not exist is refused for the missing file (ENOENT) where the kernel
    knows the link type, and for the type itself (EINVAL) where it does not."""
    try:
        fd = load_program(BPF_PROG_TYPE_KPROBE, _RETURN_0, "ebpftool_probe", attach_type=BPF_TRACE_UPROBE_MULTI)
    except OSError:
        return False
    try:
        os.close(attach_uprobe_multi(fd, "/nonexistent/ebpftool-uprobe-multi-probe", [0]))
        return True   # not expected
    except OSError as exc:
        return exc.errno == errno.ENOENT
    finally:
        os.close(fd)


POOL_THREADS = 32   # the tracers' detaches run beside each other, each up to DETACH_THREADS wide
DETACH_THREADS = 16
_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def in_threads(calls: Sequence[Callable[[], Any]], width: int) -> list[Any]:
    """Run calls on up to `width` threads at once, the calling thread one of them; their results in order.
    Every call runs; then the first failure (in the calls' order) is raised. The threads are the process's one
    pool (made at the first use): loads at start, detaches at stop, the tracers' detaches beside each other.
    The calling thread takes calls too, so a call that itself runs calls in threads always progresses."""
    global _POOL
    calls = list(calls)
    width = max(1, min(width, len(calls)))
    pool = None
    if width > 1:
        with _POOL_LOCK:
            if _POOL is None:
                _POOL = ThreadPoolExecutor(max_workers=POOL_THREADS, thread_name_prefix="ebpftool")
            pool = _POOL
    results: list[Any] = [None] * len(calls)
    failures: dict[int, BaseException] = {}
    todo = iter(enumerate(calls))
    lock = threading.Lock()

    def work() -> None:
        while True:
            with lock:
                nxt = next(todo, None)
            if nxt is None:
                return
            i, call = nxt
            try:
                results[i] = call()
            except BaseException as exc:  # noqa: BLE001  (raised below, after the rest ran)
                failures[i] = exc

    helpers = [pool.submit(work) for _ in range(width - 1)] if pool is not None else []
    work()
    for helper in helpers:
        helper.result()
    if failures:
        raise failures[min(failures)]
    return results


def in_background(call: Callable[[], Any]) -> Future:
    """Run call on a thread of the process's pool (in_threads'), returning at once."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=POOL_THREADS, thread_name_prefix="ebpftool")
        return _POOL.submit(call)


def side_by_side(calls: Sequence[tuple[Callable[[int], Any], int]]) -> list[Any]:
    """Run close-like calls (function, fd) in threads; their results in order. Detaching waits in the kernel
    (an RCU grace period per perf event or uprobe link, ~0.07-0.13 s here) and a C call lets go of the GIL,
    so the waits overlap: 7 tracepoints detached in 0.25-0.31 s where one after another took 0.55 s."""
    return in_threads([functools.partial(fn, fd) for fn, fd in calls], DETACH_THREADS if len(calls) >= 3 else 1)


def import_bcc(compiler: bool = False):
    """Return the bcc module, or explain in one sentence why it cannot be had. Without compiler, on BCC's
    runtime library where it can (ebpftool.core.bcc_lib: LLVM stays out of this process until it compiles)."""
    try:
        bcc = bcc_lib.import_bcc_module(compiler)
    except ImportError as exc:
        raise EbpftoolError(
            "BCC is not importable from this Python "
            f"({os.sys.executable}): install Debian's python3-bpfcc and run ebpftool "
            "from the venv scripts/install.sh makes (PyPI's 'bcc' is an unrelated package)"
        ) from exc
    if not hasattr(bcc, "BPF"):
        raise EbpftoolError(
            "the 'bcc' module found is not BCC (PyPI's 'bcc' is an unrelated package): "
            "uninstall it and use Debian's python3-bpfcc"
        )
    return bcc


def bucket_macro(name: str, bounds_ns: Sequence[int]) -> str:
    """A C macro `NAME(v)` that returns the explicit-bucket index of v.

    Generated as a binary search of nested comparisons (4 for 15 bounds, where a chain took up to 15: every
    finished request runs it): no loop and no read-only data for the verifier to reason about, and the
    same upper-inclusive rule as OpenTelemetry.
    """
    if len(bounds_ns) + 1 > HIST_MAX_BUCKETS:
        raise ValueError(f"{name}: {len(bounds_ns)} bounds do not fit in {HIST_MAX_BUCKETS} buckets")
    bounds = [int(b) for b in bounds_ns]

    def first_at_least(lo: int, hi: int) -> str:
        """The least i in [lo, hi) with v <= bounds[i], else hi."""
        if lo == hi:
            return str(hi)
        mid = (lo + hi) // 2
        return f"((v) <= {bounds[mid]}ULL ? {first_at_least(lo, mid)} : {first_at_least(mid + 1, hi)})"
    return f"#define {name}(v) {first_at_least(0, len(bounds))}"


def seconds_to_ns(bounds: Iterable[float]) -> list[int]:
    return [round(b * 1e9) for b in bounds]


@dataclass
class HistSum:
    """A kernel histogram series summed over CPUs (and over series merged into one), in the kernel's unit."""

    count: int = 0
    total: int = 0
    minimum: int = 0
    maximum: int = 0
    buckets: list[int] = field(default_factory=list)

    def add(self, other: "HistSum") -> None:
        if not other.count:
            return
        self.minimum = other.minimum if not self.count else min(self.minimum, other.minimum)
        self.maximum = max(self.maximum, other.maximum)
        self.count += other.count
        self.total += other.total
        self.buckets = [a + b for a, b in zip(self.buckets, other.buckets)] if self.buckets else list(other.buckets)


def merge_hist(per_cpu: Iterable[Any], nbuckets: int) -> HistSum:
    """Sum a per-CPU histogram (struct hist_value per CPU) over its first nbuckets buckets."""
    out = HistSum(buckets=[0] * nbuckets)
    lo = None
    for v in per_cpu:
        if not v.count:
            continue
        out.count += v.count
        out.total += v.sum
        lo = v.min if lo is None else min(lo, v.min)
        out.maximum = max(out.maximum, v.max)
        for i in range(nbuckets):
            out.buckets[i] += v.buckets[i]
    out.minimum = lo or 0
    return out


# A part of a program: a file of the program's folder named *.bpf.h, included with quotes. Its text is
# joined in place (BCC rewrites map calls in its main text only); other headers stay real #includes.
PART_INCLUDE = re.compile(r'#include "([A-Za-z0-9_.-]+\.bpf\.h)"')


def joined_parts(path: Path, seen: set[Path] | None = None) -> str:
    """The text of a program (or part) at path with each part it includes joined in place, once, and
    #line markers so that the compiler's messages name each part's own file and line."""
    seen = set() if seen is None else seen
    seen.add(path)
    name = path.relative_to(BPF_DIR) if path.is_relative_to(BPF_DIR) else path.name
    out = [f'#line 1 "{name}"']
    for number, line in enumerate(path.read_text().splitlines(), 1):
        match = PART_INCLUDE.fullmatch(line.strip())
        part = path.parent / match.group(1) if match else None
        if part is None or not part.is_file():
            out.append(line)
            continue
        if part not in seen:
            out.append(joined_parts(part, seen))
        out.append(f'#line {number + 1} "{name}"')
    return "\n".join(out)


_CACHE_NOTES_SHOWN: set[str] = set()
_BCC_PROBE_COUNT = threading.Lock()
_COMPILING: dict[str, subprocess.Popen] = {}   # cache key -> the child compiling it (BpfProgram.compile_ahead)
_QUEUED: dict[str, tuple[str, list[str]]] = {}  # cache key -> (text, cflags) of a compile ahead waiting for a CPU
# Compiles ahead at once: one per CPU (at least two), the rest queued in the order asked. On these 2 CPUs (a busy
# host, 2026-12-06), inference.bpf.c compiled beside the net and gpu programs at once took 5.45-7.76 s (median
# 7.24, 4 runs), beside net then gpu one after the other 5.35-5.98 s (median 5.65), alternating.
MAX_COMPILES = max(2, os.cpu_count() or 1)
_AHEAD = threading.local()


class CompiledAhead(Exception):
    """Raised by BpfProgram.load() inside compiling_ahead(), once its compile has started in a child (a program
    the compile cache holds loads there as anywhere)."""


@contextlib.contextmanager
def compiling_ahead() -> Iterator[list[str]]:
    """Within: BpfProgram.load() of a program the compile cache lacks starts its compile in a child process
    (compile_ahead) and raises CompiledAhead instead of loading; the list given holds the cache keys of the
    compiles under way. The runner starts every tracer this way first, so that their programs compile side by
    side, then starts again those that raised, each once its compile has ended (core.runner.start_tracers)."""
    _AHEAD.on = True
    _AHEAD.keys = []
    try:
        yield _AHEAD.keys
    finally:
        _AHEAD.on = False


def _start_queued() -> None:
    """Start the compiles ahead that wait for a CPU, in the order they were asked for, as children end."""
    running = sum(1 for child in _COMPILING.values() if child.poll() is None)
    while _QUEUED and running < MAX_COMPILES:
        key = next(iter(_QUEUED))
        text, cflags = _QUEUED.pop(key)
        _COMPILING[key] = bpf_compile.start_child(text, cflags, key)
        running += 1


def compiles_pending(keys: Iterable[str]) -> bool:
    """Whether a compile compile_ahead() started (or queued) for one of these keys is still to end."""
    _start_queued()
    return any(key in _QUEUED or (key in _COMPILING and _COMPILING[key].poll() is None) for key in keys)


def end_compiles_ahead() -> None:
    """Stop and reap every child compile_ahead() started that no load() took (its tracer did not start, or
    a stop request ended the start-up): none is left running or unreaped."""
    _QUEUED.clear()
    while _COMPILING:
        _key, child = _COMPILING.popitem()
        if child.poll() is None:
            child.kill()
        with contextlib.suppress(Exception):
            child.communicate(timeout=10)


def _report_cache_notes(cache: "bpf_cache.BpfCache") -> None:
    """What went wrong with the compile cache, once per process each, on stderr (the program was compiled)."""
    for note in cache.notes:
        if note not in _CACHE_NOTES_SHOWN:
            _CACHE_NOTES_SHOWN.add(note)
            print(f"ebpftool: {note}", file=sys.stderr, flush=True)
    cache.notes.clear()


class BpfProgram:
    """One BCC module built from bpf/<source>, with its probes and ring buffers.

    parts: where the compile cache is on, the text is compiled once per part (each with the part's extra
    defines, in a child process of its own, side by side) and the parts are loaded as one module: the first
    part's maps, every part's functions (bpf_cache.merged). Each part must define other functions and declare
    its maps as the first does (the same text: a part's defines choose which functions it defines). Without
    the cache, or where the parts do not merge, the whole text (no part's defines) is compiled here."""

    def __init__(
        self,
        source: str,
        defines: Mapping[str, object] | None = None,
        macros: Sequence[str] = (),
        parts: Sequence[Mapping[str, object]] = (),
    ) -> None:
        self.source = source
        self.defines = dict(defines or {})
        self.macros = list(macros)
        self.parts = [dict(part) for part in parts]
        self.bpf = None
        self._ring_buffers: list[str] = []  # read through BCC's callbacks
        self._mapped_ring_buffers: RingBufferSet | None = None  # read from their memory
        self._failed_records_before_close = 0
        self.probes: list[str] = []  # what was attached, for the start-up report
        self.btf_programs: dict[str, int] = {}  # function -> fd of its tp_btf program
        self.btf_links: dict[str, int] = {}     # function -> fd of its attachment
        self.uprobe_links: list[int] = []        # fds of BPF_TRACE_UPROBE_MULTI links
        self.multi_programs: dict[str, int] = {}  # function -> fd of it loaded for uprobe_multi links
        self.uprobe_multi_refused = 0             # uprobes that went the per-probe way where links exist
        self.multi_refusals: dict[str, OSError] = {}  # function -> why the kernel refused it for uprobe_multi links
        self.cache_state = ""   # "hit", "stored" (compiled, then cached), "off", or why it is not cacheable
        self.compiled_in_child = False   # this start compiled it, in a child process, into the cache

    @property
    def path(self) -> Path:
        """bpf/<source>, or an absolute path (test fixtures keep their programs beside the tests)."""
        return Path(self.source) if os.path.isabs(self.source) else BPF_DIR / self.source

    def text(self, part: Mapping[str, object] | None = None) -> str:
        """The whole text, or one part's (the part's defines after the program's)."""
        path = self.path
        try:
            body = joined_parts(path)
            common = (BPF_DIR / COMMON_HEADER).read_text()
        except OSError as exc:
            raise EbpftoolError(f"cannot read the BPF program {path}: {exc.strerror}") from exc
        lines = [f"#define {k} {v}" for k, v in {**self.defines, **(part or {})}.items()]
        return "\n".join([*lines, *self.macros, common, body])

    def _cflags(self) -> list[str]:
        return [f"-I{self.path.parent}", f"-I{BPF_DIR}", "-Wno-macro-redefined"]

    def _units(self) -> list[tuple[str, str]]:
        """(text, cache key) of what the compile cache holds for this program: one per part, or the whole."""
        cflags = self._cflags()
        texts = [self.text(part) for part in self.parts] or [self.text()]
        return [(text, bpf_cache.cache_key(text, cflags)) for text in texts]

    def compile_ahead(self) -> bool:
        """Start compiling this program (each part) into the compile cache in child processes (bpf_compile),
        unless the cache holds it or is off; load() then waits for those children. Several programs compile
        side by side. Whether a child compiles some of it (started now or before)."""
        cache = bpf_cache.BpfCache.from_env()
        if cache is None:
            return False
        compiling = False
        for text, key in self._units():
            if key not in _COMPILING and key not in _QUEUED and not cache.path(key).exists():
                _QUEUED[key] = (text, self._cflags())   # started at once where a CPU is free (MAX_COMPILES)
                _start_queued()
            if key in _COMPILING or key in _QUEUED:
                compiling = True
                if getattr(_AHEAD, "on", False):
                    _AHEAD.keys.append(key)
        return compiling

    def _from_cache(self, cache: "bpf_cache.BpfCache", units: list[tuple[str, str]]) -> "bpf_cache.Compiled | None":
        """Every unit's entry, those the cache lacks compiled first in children (all started before any is
        waited for); None when one could not be compiled there."""
        children = {key: _COMPILING.pop(key, None) for _text, key in units}   # compiled ahead for this start
        entries: dict[str, bpf_cache.Compiled] = {}
        for text, key in units:
            if children[key] is None:
                entry = cache.fetch(key)
                if entry is not None:
                    entries[key] = entry
                    continue
                _QUEUED.pop(key, None)   # still waiting for a CPU: this load waits for it, so it starts now
                children[key] = bpf_compile.start_child(text, self._cflags(), key)
        for _text, key in units:
            if key in entries:
                continue
            why = bpf_compile.finished(children[key])   # and reaped
            entry = cache.fetch(key) if why is None else None
            if entry is None:
                for _t, other in units:   # the others are reaped too
                    if other not in entries and other != key:
                        bpf_compile.finished(children[other])
                return None
            entries[key] = entry
            self.compiled_in_child = True
        try:
            return bpf_cache.merged([entries[key] for _text, key in units])
        except bpf_cache.CacheError as exc:
            for _text, key in units:
                cache.discard(key, str(exc))
            return None

    def load(self) -> "BpfProgram":
        """Take what an earlier start compiled from the compile cache (bpf_cache); else compile it there in a
        child process (bpf_compile: clang's memory is never this process's), a child per part, and load it
        from there; where that fails or the cache is off, compile the whole text with BCC in this process."""
        if getattr(_AHEAD, "on", False) and self.compile_ahead():
            raise CompiledAhead(self.source)   # compiling now: the caller starts again once it is done
        bcc = import_bcc()
        cache = bpf_cache.BpfCache.from_env()
        units = self._units() if cache else []
        compiled = self._from_cache(cache, units) if cache else None
        if compiled is not None:
            keys = [key for _text, key in units]

            def refused(why: str) -> None:
                for key in keys:
                    cache.discard(key, why)
            try:
                self.bpf = bpf_cache.cached_bpf_class(bcc)(compiled, refused)
                self.cache_state = "stored" if self.compiled_in_child else "hit"
                return self
            except Exception as exc:  # a map or an autoloaded program refused: compile instead
                refused(str(exc))
        text, cflags = self.text(), self._cflags()
        try:
            bcc_lib.use_compiler(bcc)
        except OSError as exc:
            raise EbpftoolError(f"{self.source} must be compiled here, and BCC's compiler cannot be loaded: {exc}") from exc
        try:
            self.bpf = bcc.BPF(text=text, cflags=cflags)
        except Exception as exc:  # BCC raises bare Exception on compile errors
            raise EbpftoolError(f"the kernel or BCC refused {self.source}: {exc}") from exc
        self.cache_state = "off"
        if cache and self.parts:
            self.cache_state = "compiled whole here: its parts did not compile or merge"
            _report_cache_notes(cache)
        elif cache:
            try:
                cache.store(units[0][1], bpf_cache.capture(self.bpf, bcc.lib))
                self.cache_state = "stored"
            except bpf_cache.CacheError as exc:
                self.cache_state = f"not cacheable: {exc}"
            _report_cache_notes(cache)
        return self

    # -- attaching -------------------------------------------------------------
    def attach_tracepoint(self, tp: str, fn_name: str) -> None:
        self.bpf.attach_tracepoint(tp=tp, fn_name=fn_name)
        self.probes.append(f"tracepoint:{tp}")

    def attach_uprobe(self, lib: str, sym: str, fn_name: str, *, ret: bool = False, pid: int = -1,
                      multi: bool = True) -> None:
        """fn_name on the entry (or return) of sym in lib: as a BPF_TRACE_UPROBE_MULTI link (Linux 6.6+; no
        tracefs event to create, and close() detaches every link side by side, where a perf-event uprobe takes
        ~0.1 s each), the per-probe perf-event way where the kernel refuses it or multi is False."""
        self._attach_uprobe(lib, fn_name, sym, {"sym": sym}, None, ret=ret, pid=pid, multi=multi)

    def attach_uprobe_at(self, lib: str, vaddr: int, file_offset: int, fn_name: str, label: str, *,
                         ret: bool = False, pid: int = -1) -> None:
        """fn_name at an instruction of lib given by its link-time address and file offset (a point inside a
        function, or a function without a symbol: ebpftool.core.uprobe_points); as attach_uprobe otherwise."""
        self._attach_uprobe(lib, fn_name, label, {"addr": vaddr}, file_offset, ret=ret, pid=pid, multi=True)

    def _attach_uprobe(self, lib: str, fn_name: str, label: str, bcc_where: dict, file_offset: int | None, *,
                       ret: bool, pid: int, multi: bool) -> None:
        """A link where the kernel has them, else BCC's perf-event uprobe at bcc_where (sym= or addr=)."""
        if not (multi and kernel_allows_uprobe_multi()
                and self._attach_uprobe_multi(lib, bcc_where.get("sym"), fn_name, ret, pid, file_offset)):
            attach = self.bpf.attach_uretprobe if ret else self.bpf.attach_uprobe
            attach(name=lib, fn_name=fn_name, pid=pid, **bcc_where)
        self.probes.append(f"{'uretprobe' if ret else 'uprobe'}:{lib}:{label}")

    def _attach_uprobe_multi(self, lib: str, sym: str | None, fn_name: str, ret: bool, pid: int,
                             file_offset: int | None = None) -> bool:
        """Whether fn_name could be attached as a uprobe_multi link (an unknown symbol raises, as BCC does).
        A refusal sends this probe alone the per-probe way: e.g. the kernel refuses a second uprobe at an
        address whose first one (another tracer's) was registered with another reference counter offset
        (BCC 0.26's perf-event uprobes pass an arbitrary one), EINVAL and "ref_ctr_offset mismatch"."""
        if file_offset is None:
            path, offset = import_bcc().BPF._check_path_symbol(lib, sym, None, pid)
        else:
            path, offset = lib.encode(), file_offset
        try:
            self.uprobe_links.append(attach_uprobe_multi(self.load_uprobe_multi_program(fn_name), path.decode(),
                                                         [offset], ret=ret, pid=pid))
        except OSError:
            self.uprobe_multi_refused += 1
            return False
        return True

    def attach_kprobe(self, function: str, fn_name: str, *, ret: bool = False) -> None:
        if ret:
            self.bpf.attach_kretprobe(event=function, fn_name=fn_name)
        else:
            self.bpf.attach_kprobe(event=function, fn_name=fn_name)
        self.probes.append(f"{'kretprobe' if ret else 'kprobe'}:{function}")

    def load_btf_tracepoint(self, tracepoint: str, fn_name: str) -> int:
        """Load fn_name as a tp_btf program for tracepoint (see load_btf_raw_tracepoint_program); its fd."""
        if fn_name not in self.btf_programs:
            self.btf_programs[fn_name] = load_btf_raw_tracepoint_program(self.bpf, fn_name, tracepoint)
        return self.btf_programs[fn_name]

    def load_side_by_side(self, loads: Sequence[Callable[[], Any]]) -> list[Any]:
        """Run these loads of this program's functions (each a bpf(BPF_PROG_LOAD): the verifier's work, done
        in the calling thread with the GIL released) in threads, one per CPU, when the program came from the
        compile cache (our own loader: no shared state but dicts); one after another otherwise (BCC's own
        loader is not known to be safe in parallel). Their results in order; the first failure is raised."""
        if self.cache_state not in ("hit", "stored"):
            return [load() for load in loads]
        return in_threads(loads, os.cpu_count() or 1)

    def load_uprobe_multi_program(self, fn_name: str) -> int:
        """fn_name loaded for uprobe_multi links (once); its fd. A refusal (OSError) is remembered and raised
        again without asking the verifier twice: each attach falls back to a perf-event uprobe, and a refused
        5,000-instruction program costs the verifier ~0.1-0.2 s per try here."""
        if fn_name not in self.multi_programs:
            if fn_name in self.multi_refusals:
                raise self.multi_refusals[fn_name]
            try:
                self.multi_programs[fn_name] = load_program(BPF_PROG_TYPE_KPROBE, self.bpf.dump_func(fn_name),
                                                            fn_name, attach_type=BPF_TRACE_UPROBE_MULTI,
                                                            explain=False)
            except OSError as exc:
                self.multi_refusals[fn_name] = exc
                raise
        return self.multi_programs[fn_name]

    def load_uprobe_program(self, fn_name: str) -> int:
        """fn_name loaded for the uprobes it will be attached as: a uprobe_multi program where the kernel has
        such links and takes it, else the perf-event program BCC attaches (loaded once each); its fd."""
        if kernel_allows_uprobe_multi():
            try:
                return self.load_uprobe_multi_program(fn_name)
            except OSError:
                pass
        return self.bpf.load_func(fn_name, self.bpf.KPROBE).fd

    def attach_btf_tracepoint(self, tracepoint: str, fn_name: str) -> None:
        """fn_name on the BTF raw tracepoint `tracepoint` (loaded first if need be)."""
        fd = self.load_btf_tracepoint(tracepoint, fn_name)
        if fn_name not in self.btf_links:
            self.btf_links[fn_name] = attach_raw_tracepoint_program(fd)
        if f"tp_btf:{tracepoint}" not in self.probes:
            self.probes.append(f"tp_btf:{tracepoint}")

    def detach_btf_tracepoint(self, fn_name: str) -> None:
        """Detach fn_name's tp_btf program (it stays loaded: attach_btf_tracepoint() attaches it again)."""
        fd = self.btf_links.pop(fn_name, None)
        if fd is not None:
            os.close(fd)

    @staticmethod
    def kprobes_available() -> bool:
        """Whether the kernel was built with kprobes (tracefs lists kprobe_events then)."""
        return any(os.path.exists(f"{d}/kprobe_events") for d in TRACEFS_PATHS)

    @staticmethod
    def tracepoint_exists(tp: str) -> bool:
        category, event = tp.split(":", 1)
        return bool(import_bcc().BPF.tracepoint_exists(category, event))

    @staticmethod
    def tracepoint_has_field(tp: str, field: str) -> bool:
        """Whether tracepoint tp's record has this field (its tracefs format lists it): fields come and go
        between kernels, and a TRACEPOINT_PROBE naming a missing one does not compile."""
        category, event = tp.split(":", 1)
        for d in TRACEFS_PATHS:
            try:
                text = Path(f"{d}/events/{category}/{event}/format").read_text()
            except OSError:
                continue
            return re.search(rf"field:[^;]*\b{re.escape(field)}(\[\d+\])?;", text) is not None
        return False

    # -- ring buffers ------------------------------------------------------------
    def open_ring_buffer(self, map_name: str, on_event: Callable[[bytes], None]) -> None:
        """Deliver each record of ring buffer `map_name` to on_event(bytes): read from the map's memory
        (ebpftool.core.ringbuf), or through BCC's callback where the map cannot be mapped."""
        table = self.bpf[map_name]
        try:
            reader = RingBufferReader(table.map_fd, int(table.max_entries), on_event)
        except (OSError, ValueError, AttributeError) as exc:
            log.debug("ring buffer %s read through BCC: %s", map_name, exc)

            def _callback(_ctx, data, size):
                on_event(ctypes.string_at(data, size))
                return 0

            table.open_ring_buffer(_callback)
            self._ring_buffers.append(map_name)
            return
        if self._mapped_ring_buffers is None:
            self._mapped_ring_buffers = RingBufferSet()
        self._mapped_ring_buffers.add(reader)

    def poll(self, timeout_ms: int) -> None:
        """Drain all ring buffers of this program, waiting up to timeout_ms.

        A program without ring buffers (metrics only) waits the same time, so
        the runner's loop never spins a CPU.
        """
        if self._mapped_ring_buffers is not None:
            # Records submitted without a wakeup (bpf/common.bpf.h) do not end the wait; they are read after it.
            self._mapped_ring_buffers.poll(0 if self._ring_buffers else timeout_ms)
        if self._ring_buffers:
            self.bpf.ring_buffer_poll(timeout_ms)
            self.bpf.ring_buffer_consume()
        elif self._mapped_ring_buffers is None and timeout_ms > 0:
            time.sleep(timeout_ms / 1000)

    def consume(self) -> None:
        if self._mapped_ring_buffers is not None:
            self._mapped_ring_buffers.consume()
        if self._ring_buffers:
            self.bpf.ring_buffer_consume()

    @property
    def failed_records(self) -> int:
        """Ring-buffer records whose handler raised (skipped, the rest delivered)."""
        live = self._mapped_ring_buffers.failed_records if self._mapped_ring_buffers is not None else 0
        return self._failed_records_before_close + live

    # -- maps --------------------------------------------------------------------
    def __getitem__(self, name: str):
        return self.bpf[name]

    def batch_items(self, name: str) -> list[tuple[int, Any]]:
        """(key, value) of every entry of a map with integer keys, read in batches where the kernel can."""
        table = self.bpf[name]
        try:
            items = list(table.items_lookup_batch())
        except Exception:  # kernels or maps without batch lookups
            items = list(table.items())
        return [(k if isinstance(k, int) else k.value, v) for k, v in items]  # batch lookups give ints

    def used_slots(self, bitmap: str) -> list[int]:
        """The slots a table's occupancy bitmap marks (an array of u64 words, a bit per slot, as the socket
        tables of bpf/inference/conn_table.bpf.h and bpf/net/flow_table.bpf.h keep them)."""
        slots = []
        for word, bits in self.batch_items(bitmap):
            bits = int(getattr(bits, "value", bits))  # batch lookups give ints, the fallback ctypes values
            while bits:
                low = bits & -bits
                slots.append(word * 64 + low.bit_length() - 1)
                bits ^= low
        return slots

    def delete_keys(self, name: str, where: Callable[[Any], bool]) -> None:
        """Delete the entries of a map whose key `where` accepts (keys listed first: a map is not walked
        while it changes; an entry the kernel deleted meanwhile is no error)."""
        table = self.bpf[name]
        for k in [k for k in table.keys() if where(k)]:
            try:
                del table[k]  # not pop(): that reads the value first
            except KeyError:
                pass

    def stats(self) -> list[int]:
        """The shared per-CPU `stats` counters, summed over CPUs."""
        table = self.bpf["stats"]
        return [int(sum(table[ctypes.c_int(i)])) for i in range(STAT_SLOTS)]

    def set_config(self, map_name: str, values: Iterable[int]) -> None:
        """Make a BPF hash set (key -> u8 1) used as an in-kernel filter hold exactly `values`,
        touching only what changed (filters refreshed each interval stay valid while updated)."""
        table = self.bpf[map_name]
        wanted = set(values)
        present = {int(k.value) for k in table.keys()}
        for v in present - wanted:
            table.pop(table.Key(v), None)
        for v in wanted - present:
            table[table.Key(v)] = table.Leaf(1)

    def detach(self) -> None:
        """Detach every probe, the programs staying loaded (idempotent; safe beside other programs' detach()
        in other threads). Every attachment is closed side by side (links, BCC's perf events and raw
        tracepoints), then BCC forgets what was closed."""
        b = self.bpf
        calls: list[tuple[Callable[[int], Any], int]] = [(os.close, fd) for fd in [*self.uprobe_links, *self.btf_links.values()]]
        perf_fds: list[int] = []
        if b is not None:
            lib = import_bcc().lib
            perf_fds = [*b.tracepoint_fds.values(), *b.uprobe_fds.values()]
            calls += [(lib.bpf_close_perf_event_fd, fd) for fd in perf_fds]
            calls += [(os.close, fd) for fd in b.raw_tracepoint_fds.values()]
        results = side_by_side(calls)
        failed = sum(1 for (fn, _fd), r in zip(calls, results) if fn is not os.close and r is not None and r < 0)
        self.uprobe_links.clear()
        self.btf_links.clear()
        if b is not None:
            b.tracepoint_fds.clear()       # closed above (BCC's bpf_detach_tracepoint does nothing more)
            b.raw_tracepoint_fds.clear()
            with _BCC_PROBE_COUNT:         # BCC counts open probes in a module global
                for ev_name in list(b.uprobe_fds):
                    lib.bpf_detach_uprobe(ev_name)   # the uprobe_events entry, where BCC made one
                    b._del_uprobe_fd(ev_name)
        if failed:
            raise EbpftoolError(f"{failed} of {len(perf_fds)} perf-event probes could not be detached")

    def close(self) -> None:
        """Detach every probe and free the programs (idempotent). Not beside another program's close() in
        another thread: BCC frees a compiled module's LLVM state, which is not safe to do concurrently."""
        try:
            self.detach()
        finally:
            for fd in [*self.multi_programs.values(), *self.btf_programs.values()]:
                os.close(fd)
            self.multi_programs.clear()
            self.btf_programs.clear()
            if self._mapped_ring_buffers is not None:
                self._failed_records_before_close = self._mapped_ring_buffers.failed_records  # the summary's, after
                self._mapped_ring_buffers.close()
                self._mapped_ring_buffers = None
            if self.bpf is not None:
                try:
                    self.bpf.cleanup()
                finally:
                    self.bpf = None
