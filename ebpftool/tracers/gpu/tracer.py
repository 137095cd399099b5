"""`ebpftool gpu`: CUDA runtime/driver calls through uprobes, NVIDIA device ioctls through tracepoints.

Everything countable is counted in the kernel (bpf/gpu/gpu.bpf.c): calls and their
duration histogram per (process, function, return code, nesting, direction),
bytes copied, kernel launches, live allocations and outstanding bytes, ioctl
latency per device and request. User space reads the maps once per interval,
names what they hold (functions, kernels, processes), looks for CUDA libraries
that appeared since, and turns spans of blocking calls into OpenTelemetry spans.
"""
from __future__ import annotations

import errno
import json
import os
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable

from ebpftool.core import procfs
from ebpftool.core.bpf import BpfProgram, bucket_macro, merge_hist, seconds_to_ns
from ebpftool.core.cstruct import cstring, decode, load_header
from ebpftool.core.elf import ElfError, read_elf
from ebpftool.core.plan import usable
from ebpftool.core.series import Retirement
from ebpftool.core.tracer import TracerOptions
from ebpftool.core.text import printable
from ebpftool.enrich import k8s
from ebpftool.errors import EbpftoolError
from ebpftool import semconv as sc
from ebpftool.export.model import MetricPoint, SpanRecord, counter, seconds_histogram, updown
from ebpftool.tracers.base import BpfTracer
from ebpftool.tracers.gpu import plans
from ebpftool.tracers.gpu.cuda_api import DIRECTIONS, FUNCTIONS, MEMORY_TYPES, CudaFunction, by_id, probe_list, probe_names
from ebpftool.tracers.gpu.cuda_libs import (
    CudaLibrary, SymbolResolver, file_identity, installed_libraries, libraries_in_processes,
)
from ebpftool.tracers.gpu.figures import (GpuHeadline, GpuKernelCounts, GpuSummary, GpuView, ProcessRates, ProcessRow,
                                          ProcessTotals, UnfreedBy)
from ebpftool.tracers.gpu.leaks import Allocation, ProcessLeaks

STRUCTS, H = load_header("gpu/gpu.h")
DEFAULT_SPAN_THRESHOLD_S = 0.001
DEFAULT_IOCTL_PREFIX = "/dev/nvidia"
MAX_PREFIX_LEN = H["IOCTL_PATH_MAX"] - H["IOCTL_DEVICE_LEN"]
BOUNDS = sc.GPU_CALL_DURATION_BUCKETS
VIEW_ROWS, VIEW_LEAKS = 20, 5  # the live view's processes: the busiest, then the exited ones that leaked most
NO_LIBRARY_HINT = (
    "no CUDA library found (looked in the maps of running processes and in /usr/local/cuda*/lib64, "
    "/usr/lib*/libcuda.so*): point at one with --lib PATH; still watching for processes that load one"
)


@dataclass
class GpuOptions(TracerOptions):
    libs: list[str] = field(default_factory=list)
    pid: int | None = None
    span_threshold: float = DEFAULT_SPAN_THRESHOLD_S
    sample_every: int = 0            # also one call in N becomes a span (0: only blocking calls)
    discover: bool = True            # look in /proc/*/maps and install paths, not only --lib
    ioctl_prefix: str = DEFAULT_IOCTL_PREFIX
    leak_report: str | None = None   # JSON file written at exit


def _is_sync(k) -> bool:
    """A call_hist key whose time counts as time in synchronisation: a blocking call, not nested in another."""
    fn = by_id(k.fn)
    return fn is not None and fn.blocking and not k.nested


def errno_name(err: int) -> str:
    return errno.errorcode.get(-err, str(-err))


class GpuTracer(BpfTracer):
    name = "gpu"

    def __init__(self, telemetry, options: GpuOptions | None = None,
                 notify: Callable[[str], None] | None = None) -> None:
        super().__init__(telemetry, options or GpuOptions())
        self.opts: GpuOptions = self.options
        self.notify = notify or (lambda msg: print(f"gpu: {printable(msg)}", file=sys.stderr, flush=True))
        self.prog: BpfProgram | None = None
        self.libraries: dict[tuple[int, int], CudaLibrary] = {}
        self.probed_functions = 0
        self.resolver = SymbolResolver()
        self.leaks: dict[int, ProcessLeaks] = {}
        self._exe: dict[int, str] = {}
        self._workloads: dict[int, dict[str, str]] = {}  # pid -> its k8s.pod.uid / container.id, read once
        self._dead_since: dict[int, int] = {}     # pid -> intervals seen dead (its series then retire)
        self.retirement = Retirement()             # when a dead pid's series end
        self._retired = defaultdict(int)          # summary totals of series removed from the maps
        self._totals: dict[int, dict[str, float]] = {}
        self._totals_at = 0.0
        self.rates: dict[int, ProcessRates] = {}
        self._started_at = time.monotonic()       # the headline's rates: over the time traced
        self._event_t = STRUCTS["gpu_call_event"]
        self._installed_checked = False

    # -- start ---------------------------------------------------------------------------------
    def validate(self) -> None:
        o = self.opts
        prefix = o.ioctl_prefix
        if not prefix.startswith("/") or len(prefix) > MAX_PREFIX_LEN or any(c in prefix for c in '"\\\n'):
            raise EbpftoolError(f"--ioctl-path-prefix must be an absolute path of at most {MAX_PREFIX_LEN} "
                                f"characters without quotes or backslashes (got {prefix!r})")
        if o.span_threshold < 0:
            raise EbpftoolError("--span-threshold must be zero or more seconds")
        if o.sample_every < 0:
            raise EbpftoolError("--sample-calls must be zero (off) or a positive N")
        if o.pid is not None and not os.path.exists(f"/proc/{o.pid}"):
            raise EbpftoolError(f"--pid {o.pid}: no such process")

    def start(self) -> None:
        o = self.opts
        self._started_at = time.monotonic()
        _ok, why_not = usable(plans.PLANS, {}, BpfProgram.tracepoint_exists, unknown_ok=True)
        if why_not:  # the one plan: uprobes are found out at the first attach
            raise EbpftoolError(f"this kernel cannot run the gpu tracer: {why_not[0]}")
        defines = {
            "GPU_FUNCTIONS": probe_list(),
            "FILTER_PIDS": int(o.pid is not None),
            "SPAN_THRESHOLD_NS": round(o.span_threshold * 1e9),
            "SAMPLE_EVERY": o.sample_every,
            "IOCTL_PREFIX": f'"{o.ioctl_prefix}"',
            "IOCTL_PREFIX_LEN": len(o.ioctl_prefix),
            "RINGBUF_PAGES": o.ringbuf_pages,
            **o.budget_defines(),
        }
        self.prog = BpfProgram("gpu/gpu.bpf.c", defines,
                               macros=[bucket_macro("GPU_CALL_BUCKET", seconds_to_ns(BOUNDS))]).load()
        self.programs.append(self.prog)
        self.prog.probes.extend(f"tracepoint:{tp}" for tp in plans.UPROBES.tracepoints)
        if o.pid is not None:
            self.prog.set_config("watched_pids", procfs.descendants([o.pid]))
            self.prog.probes.append(f"tracepoint:{plans.FORK_TRACEPOINT}")
        self.prog.open_ring_buffer("gpu_events", self._on_event)
        for path in o.libs:
            if not os.path.exists(path):
                self.notify(f"--lib {path}: no such file; tracing the other libraries")
                continue
            self._attach_library(path, "--lib")
        self._discover()
        if not any(lib.functions for lib in self.libraries.values()):
            self.notify(NO_LIBRARY_HINT)
        self._watch_open_device_fds()

    def _attach_library(self, path: str, source: str) -> int:
        """Probe every traced function path exports; returns how many (0 if already probed)."""
        identity = file_identity(path)
        if identity is None or identity in self.libraries:
            return 0
        lib = CudaLibrary(path, source, identity)
        self.libraries[identity] = lib  # remembered even when useless, so it is not read again
        try:
            exported = read_elf(path).function_names()
        except (OSError, ElfError) as exc:
            self.notify(f"{path}: cannot read its symbols ({exc}); not traced")
            return 0
        wanted = [f for f in FUNCTIONS if f.symbol in exported]
        if not wanted:
            if source == "--lib":
                self.notify(f"--lib {path}: exports none of the traced CUDA functions; not traced")
            return 0
        for fn in wanted:
            enter, leave = probe_names(fn)
            try:
                # The return first: a call that began before its return probe existed would leave a frame
                # no return pops, and every later call on that thread would look nested.
                self.prog.attach_uprobe(path, fn.symbol, leave, ret=True)
                self.prog.attach_uprobe(path, fn.symbol, enter)
            except Exception as exc:  # BCC raises bare Exception; keep the other functions
                self.notify(f"{path}: cannot probe {fn.symbol} ({str(exc).strip()[:100]})")
                continue
            lib.functions.append(fn.symbol)
        self.probed_functions += len(lib.functions)
        if lib.functions:
            self.notify(f"probing {len(lib.functions)} functions of {path} ({source})")
        return len(lib.functions)

    def _watched_pids(self) -> set[int] | None:
        return None if self.opts.pid is None else {int(k.value) for k in self.prog["watched_pids"].keys()}

    def _discover(self) -> None:
        """Attach to CUDA libraries not probed yet: install paths (once), then processes' maps."""
        if not self.opts.discover:
            return
        if not self._installed_checked:
            self._installed_checked = True
            for path in installed_libraries():
                self._attach_library(path, "install path")
        for pid, (paths, maps) in libraries_in_processes(self._watched_pids()).items():
            self.resolver.remember(pid, maps)
            for path in paths:
                self._attach_library(path, f"mapped by pid {pid}")

    def _watch_open_device_fds(self) -> None:
        """fds opened on the devices before the tracer started (later ones are seen at openat)."""
        prefix = self.opts.ioctl_prefix
        table = self.prog["device_fds"]
        watched = self._watched_pids()
        for pid in procfs.pids():
            if watched is not None and pid not in watched:
                continue
            for fd, target in procfs.fd_targets(pid).items():
                if target.startswith(prefix):
                    key = table.Key(pid, fd)
                    leaf = table.Leaf()
                    leaf.device = target[len(prefix):].encode()[: H["IOCTL_DEVICE_LEN"] - 1]
                    table[key] = leaf

    # -- naming ----------------------------------------------------------------------------------
    def exe(self, pid: int) -> str:
        """process.executable.name (procfs.executable_name); the command name the kernel saw at the process's
        first traced call stands in once it is gone."""
        if pid not in self._exe:
            table = self.prog["process_names"] if self.prog is not None and self.prog.bpf is not None else None
            try:
                recorded = cstring(table[table.Key(pid)].comm) if table is not None else ""
            except KeyError:  # only seen at ioctls
                recorded = ""
            name = procfs.executable_name(pid, recorded)
            if not name:
                return ""
            self._exe[pid] = name
        return self._exe[pid]

    def kernel_name(self, pid: int, fn: CudaFunction, addr: int) -> str:
        """cudaLaunchKernel's host stub resolved to its symbol; CUfunction handles stay addresses."""
        name = self.resolver.resolve(pid, addr) if fn.library == "cudart" else None
        return name or hex(addr)

    def _process_attrs(self, pid: int) -> dict[str, Any]:
        if pid not in self._workloads:
            self._workloads[pid] = k8s.workload_attributes_of_process(pid)
        return {sc.PROCESS_PID: pid, sc.PROCESS_EXECUTABLE_NAME: self.exe(pid), **self._workloads[pid]}

    def _fn_attrs(self, pid: int, fn: CudaFunction, rc: int) -> dict[str, Any]:
        attrs = {**self._process_attrs(pid), sc.EBPFTOOL_GPU_FUNCTION: fn.symbol, sc.EBPFTOOL_GPU_LIBRARY: fn.library}
        if rc != 0:
            attrs[sc.ERROR_TYPE] = str(rc)
        return attrs

    # -- spans -----------------------------------------------------------------------------------
    def _on_event(self, data: bytes) -> None:
        e = decode(self._event_t, data)
        fn = by_id(e.fn)
        if fn is None:
            return
        comm = cstring(e.comm)
        self._exe.setdefault(e.pid, comm)
        attrs = {**self._fn_attrs(e.pid, fn, e.rc), sc.THREAD_ID: e.tid, sc.EBPFTOOL_GPU_NESTED: bool(e.nested)}
        if e.dir:
            attrs[sc.EBPFTOOL_GPU_MEMCPY_DIRECTION] = DIRECTIONS.get(e.dir, "unknown")
        if e.bytes:
            attrs[sc.EBPFTOOL_GPU_BYTES] = e.bytes
        if fn.stream_arg is not None:
            attrs[sc.EBPFTOOL_GPU_STREAM] = hex(e.stream)
        if fn.kind in (H["ARG_ALLOC"], H["ARG_FREE"]) and e.ptr:
            attrs[sc.EBPFTOOL_GPU_POINTER] = hex(e.ptr)
        if fn.kind == H["ARG_LAUNCH"]:
            attrs[sc.EBPFTOOL_GPU_KERNEL_NAME] = self.kernel_name(e.pid, fn, e.ptr)
        self.telemetry.emit_span(SpanRecord(
            fn.symbol, self.clock.to_wall_ns(e.start_ns), self.clock.to_wall_ns(e.end_ns), attributes=attrs,
            error=e.rc != 0, status_message=f"{fn.symbol} returned {e.rc}" if e.rc else "",
        ))

    # -- metrics ---------------------------------------------------------------------------------
    def collect(self) -> list[MetricPoint]:
        if self.prog is None or self.prog.bpf is None:
            return []
        points: list[MetricPoint] = []
        totals: dict[int, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        nb = len(BOUNDS) + 1
        for k, per_cpu in self.prog["call_hist"].items():
            fn = by_id(k.fn)
            if fn is None:
                continue
            hist = merge_hist(per_cpu, nb)
            attrs = {**self._fn_attrs(k.pid, fn, k.rc), sc.EBPFTOOL_GPU_NESTED: bool(k.nested)}
            if k.dir:
                attrs[sc.EBPFTOOL_GPU_MEMCPY_DIRECTION] = DIRECTIONS.get(k.dir, "unknown")
            points.append(seconds_histogram(sc.EBPFTOOL_GPU_CALL_DURATION, "Duration of CUDA runtime and driver calls",
                                            attrs, hist, BOUNDS))
            points.append(counter(sc.EBPFTOOL_GPU_CALLS, "{call}", "CUDA runtime and driver calls", hist.count, attrs))
            totals[k.pid]["calls"] += hist.count
            if k.rc:
                totals[k.pid]["errors"] += hist.count
            if _is_sync(k):
                totals[k.pid]["sync_ns"] += hist.total
        for k, per_cpu in self.prog["call_bytes"].items():
            fn = by_id(k.fn)
            if fn is None:
                continue
            n = sum(per_cpu)
            attrs = self._fn_attrs(k.pid, fn, k.rc)
            if fn.kind == H["ARG_ALLOC"]:
                attrs[sc.EBPFTOOL_GPU_MEMORY_TYPE] = MEMORY_TYPES.get(fn.memory, "unknown")
                points.append(counter(sc.EBPFTOOL_GPU_MEMORY_REQUESTED, "By",
                                      "Bytes asked for by CUDA allocation calls (failed ones carry error.type)",
                                      n, attrs))
            else:
                direction = DIRECTIONS.get(k.dir, "unknown")
                attrs[sc.EBPFTOOL_GPU_MEMCPY_DIRECTION] = direction
                points.append(counter(sc.EBPFTOOL_GPU_MEMCPY_BYTES, "By",
                                      "Bytes CUDA copy calls were asked to move (failed ones carry error.type)",
                                      n, attrs))
                if k.rc == 0:
                    totals[k.pid][direction] += n
        for k, per_cpu in self.prog["launches"].items():
            fn = by_id(k.fn)
            if fn is None:
                continue
            attrs = {**self._fn_attrs(k.pid, fn, k.rc), sc.EBPFTOOL_GPU_KERNEL_NAME: self.kernel_name(k.pid, fn, k.func)}
            points.append(counter(sc.EBPFTOOL_GPU_KERNEL_LAUNCHES, "{launch}", "CUDA kernel launches",
                                  sum(per_cpu), attrs))
        for k, per_cpu in self.prog["outstanding"].items():
            n = sum(per_cpu)
            attrs = {**self._process_attrs(k.pid), sc.EBPFTOOL_GPU_MEMORY_TYPE: MEMORY_TYPES.get(k.mem, "unknown")}
            points.append(updown(sc.EBPFTOOL_GPU_MEMORY_OUTSTANDING, "By",
                                 "Bytes allocated through traced CUDA calls and not freed yet", n, attrs))
            totals[k.pid]["outstanding"] += n
        for k, per_cpu in self.prog["ioctl_hist"].items():
            hist = merge_hist(per_cpu, nb)
            device = os.path.basename(self.opts.ioctl_prefix) + cstring(k.device)
            attrs = {**self._process_attrs(k.pid), sc.EBPFTOOL_GPU_DEVICE: device,
                     sc.EBPFTOOL_GPU_IOCTL_REQUEST: hex(k.request)}
            if k.err:
                attrs[sc.ERROR_TYPE] = errno_name(k.err)
            points.append(seconds_histogram(sc.EBPFTOOL_GPU_IOCTL_DURATION, "Duration of ioctl calls on NVIDIA devices",
                                            attrs, hist, BOUNDS))
            points.append(counter(sc.EBPFTOOL_GPU_IOCTLS, "{call}", "ioctl calls on NVIDIA devices", hist.count, attrs))
        self._update_rates(totals)
        return points

    def _update_rates(self, totals: dict[int, dict[str, float]]) -> None:
        now = time.monotonic()
        dt = now - self._totals_at if self._totals_at else 0.0
        rates = {}
        for pid, t in totals.items():
            prev = self._totals.get(pid, {})
            r = ProcessRates(outstanding=int(t.get("outstanding", 0)))
            if dt > 0:
                r.calls = (t.get("calls", 0) - prev.get("calls", 0)) / dt
                r.errors = (t.get("errors", 0) - prev.get("errors", 0)) / dt
                r.sync_seconds = (t.get("sync_ns", 0) - prev.get("sync_ns", 0)) / 1e9 / dt
                r.h2d = (t.get("host_to_device", 0) - prev.get("host_to_device", 0)) / dt
                r.d2h = (t.get("device_to_host", 0) - prev.get("device_to_host", 0)) / dt
            rates[pid] = r
        self._totals, self._totals_at, self.rates = {p: dict(t) for p, t in totals.items()}, now, rates

    # -- housekeeping ------------------------------------------------------------------------------
    def tick(self) -> None:
        if self.prog is None or self.prog.bpf is None:
            return
        self._discover()
        self._retire_exited()

    def _retire_exited(self) -> None:
        """Processes that exited: their live allocations become leaks; their series leave the maps.

        Series are removed one interval after the exit, so their last values were exported.
        """
        seen = {k.pid for k in self.prog["call_hist"].keys()} | {k.pid for k in self.prog["outstanding"].keys()} \
            | {k.pid for k in self.prog["ioctl_hist"].keys()} | {k.pid for k in self.prog["device_fds"].keys()}
        dead = {p for p in seen if not os.path.exists(f"/proc/{p}")}
        for pid in dead:
            self._dead_since[pid] = self._dead_since.get(pid, 0) + 1
        for pid in [p for p in self._dead_since if p not in dead]:
            del self._dead_since[pid]
        newly_dead = {p for p in dead if self._dead_since[p] == 1}
        if newly_dead:
            for a in self._live_allocations(newly_dead, delete=True):
                self._leaks_of(a.pid, exited=True).add(a)
            for name in ("outstanding", "device_fds"):
                self.prog.delete_keys(name, lambda k: k.pid in newly_dead)
        # Gone at two ticks in a row (and, with a Prometheus endpoint, scraped since: core/series.Retirement).
        retire = self.retirement.update(dead)
        if retire:
            for k, per_cpu in self.prog["call_hist"].items():
                if k.pid in retire:
                    self._retired["calls"] += sum(v.count for v in per_cpu)
                    self._retired["errors"] += sum(v.count for v in per_cpu) if k.rc else 0
                    if _is_sync(k):
                        self._retired["sync_ns"] += sum(v.sum for v in per_cpu)
            for k, per_cpu in self.prog["call_bytes"].items():
                fn = by_id(k.fn)
                if k.pid in retire and fn is not None and fn.kind != H["ARG_ALLOC"] and k.rc == 0:
                    self._retired[DIRECTIONS.get(k.dir, "unknown")] += sum(per_cpu)
            for name in ("call_hist", "call_bytes", "launches", "ioctl_hist"):
                self.prog.delete_keys(name, lambda k: k.pid in retire)
            names = self.prog["process_names"]
            for pid in retire:
                names.pop(names.Key(pid), None)
            for pid in retire:
                del self._dead_since[pid]
                self._exe.pop(pid, None)
                self._workloads.pop(pid, None)
                self.resolver.forget(pid)

    def _leaks_of(self, pid: int, exited: bool) -> ProcessLeaks:
        if pid not in self.leaks:
            self.leaks[pid] = ProcessLeaks(pid, self.exe(pid), exited)
        return self.leaks[pid]

    def _live_allocations(self, only: set[int] | None = None, delete: bool = False) -> list[Allocation]:
        table = self.prog["allocations"]
        now = time.monotonic_ns()
        out = []
        for k, v in list(table.items()):
            if only is not None and k.pid not in only:
                continue
            fn = by_id(v.fn)
            out.append(Allocation(k.pid, k.ptr, v.size, fn.symbol if fn else "?", MEMORY_TYPES.get(v.mem, "unknown"),
                                  v.tid, (now - v.ts_ns) / 1e9))
            if delete:
                try:
                    del table[k]
                except KeyError:
                    pass
        return out

    def leak_report(self) -> list[ProcessLeaks]:
        """Exited processes' unfreed allocations, and what running ones still hold now."""
        report = {pid: pl for pid, pl in self.leaks.items()}
        if self.prog is not None and self.prog.bpf is not None:
            for a in self._live_allocations():
                if a.pid not in report:
                    report[a.pid] = ProcessLeaks(a.pid, self.exe(a.pid), not os.path.exists(f"/proc/{a.pid}"))
                report[a.pid].add(a)
        return sorted(report.values(), key=lambda pl: pl.pid)

    # -- figures and summary -------------------------------------------------------------------------
    def figures(self) -> GpuView:
        """Running processes by calls over the last interval, then exited ones that left memory unfreed."""
        leaked = [ProcessRow(pid, pl.executable, self.rates.get(pid, ProcessRates()), pl.count, pl.bytes, pl.exited)
                  for pid, pl in sorted(self.leaks.items(), key=lambda kv: -kv[1].bytes)[:VIEW_LEAKS]]
        busiest = [ProcessRow(pid, self.exe(pid), r)
                   for pid, r in sorted(self.rates.items(), key=lambda kv: -kv[1].calls) if pid not in self.leaks]
        return GpuView(busiest[:VIEW_ROWS - len(leaked)] + leaked)

    def headline(self, calls: int, sync_ns: int, moved: dict[str, int], leaked: list[ProcessLeaks]) -> GpuHeadline:
        """The run's figures: calls and sync time as summary() read them from the maps (once: the processes
        traced may still be calling, and the headline must agree with the kernel's counts beside it), with
        the processes retired from them."""
        seconds = time.monotonic() - self._started_at
        calls += self._retired["calls"]
        sync = (sync_ns + self._retired["sync_ns"]) / 1e9
        exited = [pl for pl in leaked if pl.exited]
        processes = [ProcessTotals(pid, self.exe(pid), int(t.get("calls", 0)), t.get("sync_ns", 0) / 1e9,
                                   int(t.get("host_to_device", 0)), int(t.get("device_to_host", 0)),
                                   int(t.get("outstanding", 0)))
                     for pid, t in sorted(self._totals.items(), key=lambda kv: -kv[1].get("calls", 0))[:10]]
        return GpuHeadline(
            seconds=seconds, calls=calls, calls_per_second=calls / seconds if seconds > 0 else 0.0,
            sync_seconds=sync, sync_share=sync / seconds if seconds > 0 else 0.0,
            bytes_host_to_device=moved["host_to_device"], bytes_device_to_host=moved["device_to_host"],
            outstanding_bytes=sum(sum(per_cpu) for k, per_cpu in self.prog["outstanding"].items()
                                  if os.path.exists(f"/proc/{k.pid}")),  # an exited one's: leaked
            leaked_allocations=sum(pl.count for pl in exited), leaked_bytes=sum(pl.bytes for pl in exited),
            processes=processes)

    def summary(self) -> GpuSummary:
        """The exit summary (and the leak report written, with --leak-report)."""
        out = GpuSummary(sum(1 for lib in self.libraries.values() if lib.functions), self.probed_functions)
        if self.prog is None or self.prog.bpf is None:
            return out
        calls = errors = sync_ns = 0
        for k, per_cpu in self.prog["call_hist"].items():
            n = sum(v.count for v in per_cpu)
            calls += n
            errors += n if k.rc else 0
            sync_ns += sum(v.sum for v in per_cpu) if _is_sync(k) else 0
        moved = defaultdict(int, {d: self._retired[d] for d in ("host_to_device", "device_to_host")})
        for k, per_cpu in self.prog["call_bytes"].items():
            fn = by_id(k.fn)
            if fn is not None and fn.kind != H["ARG_ALLOC"] and k.rc == 0:
                moved[DIRECTIONS.get(k.dir, "unknown")] += sum(per_cpu)
        report = self.leak_report()
        out.headline = self.headline(calls, sync_ns, moved, report)
        stats = self.prog.stats()
        out.kernel = GpuKernelCounts(
            calls=calls + self._retired["calls"],
            calls_with_error=errors + self._retired["errors"],
            bytes_host_to_device=moved["host_to_device"],
            bytes_device_to_host=moved["device_to_host"],
            unfreed_allocations=sum(pl.count for pl in report),
            unfreed_bytes=sum(pl.bytes for pl in report),
            unfreed_by=[UnfreedBy(pl.pid, pl.executable, pl.exited, pl.count, pl.bytes) for pl in report],
            unmatched_returns=stats[H["STAT_GPU_UNMATCHED_RETURN"]],
            calls_too_deep=stats[H["STAT_GPU_TOO_DEEP"]],
            allocations_not_remembered=stats[H["STAT_GPU_ALLOC_MAP_FULL"]],
            calls_not_in_histograms=stats[H["STAT_GPU_HIST_MAP_FULL"]],
            allocations_at_remembered_address=stats[H["STAT_GPU_ADDRESS_REUSED"]],
        )
        if self.opts.leak_report:
            self._write_leak_report(report)
        return out

    def _write_leak_report(self, report: list[ProcessLeaks]) -> None:
        path = self.opts.leak_report
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump({"processes": [pl.to_dict() for pl in report]}, f, indent=2)
        except OSError as exc:
            self.notify(f"cannot write the leak report to {path}: {exc.strerror}")

