"""The loop every command runs: start tracers, poll ring buffers, export each interval, stop cleanly.

SIGINT and SIGTERM end the loop the same way the end of --duration does: a last
drain of the ring buffers, a last metric snapshot, every probe detached, every
queued span flushed.
"""
from __future__ import annotations

import contextlib
import functools
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from ebpftool.core.bpf import (CompiledAhead, compiles_pending, compiling_ahead, end_compiles_ahead,
                              in_threads)
from ebpftool.core.bpf_cache import BpfCache
from ebpftool.core.btf import Btf
from ebpftool.core.cpu_budget import CpuBudget
from ebpftool.core.series import DEFAULT_MAX_SERIES
from ebpftool.core.telemetry import SeriesLimit, Telemetry
from ebpftool.core.tracer import Tracer
from ebpftool.errors import EbpftoolError

POLL_MS = 100  # how long one pass waits for ring-buffer records, split over tracers
COMPILE_POLL_S = 0.02  # how often start-up looks whether a compile ahead has ended, when every tracer waits


@dataclass
class RunResult:
    started: dict[str, float] = field(default_factory=dict)   # tracer -> seconds to compile and attach
    skipped: dict[str, str] = field(default_factory=dict)     # tracer -> why it could not start
    probes: dict[str, list[str]] = field(default_factory=dict)
    drops: dict[str, dict[str, int]] = field(default_factory=dict)
    summaries: dict[str, Any] = field(default_factory=dict)   # tracer -> its summary() (typed figures)
    pipeline: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    interrupted_by: str | None = None
    not_started: list[str] = field(default_factory=list)   # tracers a stop request kept from starting
    series_folded: dict[str, int] = field(default_factory=dict)  # tracer -> series folded into overflow series
    span_shift_max: int = 0   # spans were thinned to 1/2**this of the span rate at most (--max-cpu)
    traced_seconds: float = 0.0   # from every probe attached to the stop
    cpu_seconds: float = 0.0      # this process's CPU time (every thread) meanwhile: what the tool cost


class StopFlag:
    """Set by SIGINT/SIGTERM or by the duration; the loop checks it between polls."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.reason: str | None = None
        self._old: dict[int, object] = {}

    def set(self, reason: str) -> None:
        self.reason = self.reason or reason
        self.event.set()

    def install(self) -> None:
        """Catch SIGINT/SIGTERM from now on (once: a second install keeps the first handlers to restore)."""
        if threading.current_thread() is not threading.main_thread() or self._old:
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, lambda s, _f: self.set(signal.Signals(s).name))

    def restore(self) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
        self._old.clear()


def start_tracers(tracers: Sequence[Tracer], result: RunResult, *, skip_failed: bool, on_start=None,
                  stop: StopFlag | None = None, on_starting=None) -> list[Tracer]:
    """Start every tracer (on_starting(tracer) before each try, on_start(tracer, seconds) once it runs).

    Where the compile cache is on, each is first started inside core.bpf.compiling_ahead(): one whose programs
    the cache holds starts there and then, once; one whose program is not cached yet has its compile started
    in a child process and is started again later. So the programs of every tracer compile side by side and
    the tracers waiting for them start in the order their compiles end: one whose program is at hand starts
    while another's still compiles. A stop request (SIGINT/SIGTERM) that arrives meanwhile ends the start: no
    further tracer starts, a compile under way is stopped, and those started are returned, for the caller to
    detach."""
    running: list[Tracer] = []
    stop = stop or StopFlag()
    for t in tracers:
        t.validate()  # bad input stops the command; only what the kernel cannot run is skipped
    ahead = BpfCache.from_env() is not None   # off: BCC compiles in this process, one program after another
    waiting: list[tuple[Tracer, list[str]]] = []   # tracers whose compile runs ahead, with its cache keys
    first_try: dict[str, float] = {}
    announced: list[Tracer] = []   # the tracer on_starting() was last called for

    def announce(t: Tracer) -> None:
        if on_starting:
            on_starting(t)
        announced[:] = [t]

    def attempt(t: Tracer, ahead: bool) -> None:
        announce(t)
        t0 = first_try.setdefault(t.name, time.monotonic())   # its start-up counts its compile too
        try:
            with compiling_ahead() if ahead else contextlib.nullcontext([]) as compiling:
                t.start()
        except CompiledAhead:
            t.stop()   # whatever it had loaded before the program now compiling
            waiting.append((t, list(compiling)))
            return
        except EbpftoolError as exc:
            t.stop()
            if not skip_failed:
                for r in running:
                    r.stop()
                raise
            result.skipped[t.name] = str(exc)
            return
        result.started[t.name] = time.monotonic() - t0
        result.probes[t.name] = [p for prog in t.programs for p in prog.probes]
        if on_start:
            on_start(t, result.started[t.name])
        running.append(t)

    try:
        for t in tracers:
            if stop.event.is_set():
                result.not_started.append(t.name)
            else:
                attempt(t, ahead)
        while waiting:
            if stop.event.is_set():
                result.not_started.extend(t.name for t, _keys in waiting)
                break
            ready = next((w for w in waiting if not compiles_pending(w[1])), None)
            if ready is None:
                if announced != [waiting[0][0]]:
                    announce(waiting[0][0])   # e.g. a terminal's spinner: what start-up waits for now
                stop.event.wait(COMPILE_POLL_S)   # every one waits for its compile: look again soon
                continue
            waiting.remove(ready)
            attempt(ready[0], False)
    finally:
        end_compiles_ahead()   # a compile that no start took (a stop request, an error) ends here
    return running


def stop_tracers(running: Sequence[Tracer]) -> list[str]:
    """Detach every tracer's probes side by side (each detach waits mostly in the kernel, see
    core.bpf.side_by_side), then free their programs one by one (BCC's cleanup of a compiled module is not
    safe beside another's); what failed."""
    def detach(t: Tracer) -> str | None:
        try:
            t.detach()
        except Exception as exc:
            return f"{t.name}: {exc}"
        return None
    outcomes = in_threads([functools.partial(detach, t) for t in running], len(running))
    for t in running:
        try:
            t.stop()
        except Exception as exc:
            outcomes.append(f"{t.name}: {exc}")
    return [o for o in outcomes if o]


def run(
    tracers: Sequence[Tracer],
    telemetry: Telemetry,
    *,
    duration: float | None,
    interval: float,
    skip_failed: bool = False,
    on_start: Callable[[Tracer, float], None] | None = None,
    on_starting: Callable[[Tracer], None] | None = None,
    on_interval: Callable[[Sequence[Tracer]], None] | None = None,
    after_start: Callable[[], None] | None = None,
    stop: StopFlag | None = None,
    max_series: int = DEFAULT_MAX_SERIES,
    max_cpu: float = 0.0,
    on_cpu_budget: Callable[[int, float], None] | None = None,
) -> RunResult:
    """Run tracers until duration elapses or a signal arrives; always detach and flush. max_cpu: the share of
    one core (0.25: 25%) above which the process thins its spans (core.cpu_budget; 0: never)."""
    result = RunResult()
    budget = CpuBudget(max_cpu, on_change=on_cpu_budget)
    stop = stop or StopFlag()
    stop.install()
    running: list[Tracer] = []
    limiters = {t.name: telemetry.series_limiter(t.name, max_series) for t in tracers}
    t_start = time.monotonic()
    traced_from: tuple[float, float] | None = None
    stop_snapshot = False  # the loop took a snapshot at the stop
    try:
        running = start_tracers(tracers, result, skip_failed=skip_failed, on_start=on_start, stop=stop,
                                on_starting=on_starting)
        Btf.forget_vmlinux()  # start-up's plans and loaders are done with the kernel's BTF
        if stop.event.is_set():
            return result  # stopped during start-up: what started is detached below
        if not running:
            reasons = "; ".join(f"{k}: {v}" for k, v in result.skipped.items())
            raise EbpftoolError(f"no tracer could start ({reasons})")
        if after_start:
            after_start()  # e.g. the demo's traffic, once every probe is in place
        deadline = None if duration is None else time.monotonic() + duration
        next_export = time.monotonic() + interval
        traced_from = (time.monotonic(), time.process_time())
        per_tracer_ms = max(1, POLL_MS // len(running))
        while not stop.event.is_set():
            for t in running:
                t.poll(per_tracer_ms)
            budget.check(running)
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                stop.set("duration")
            if now >= next_export or stop.event.is_set():
                next_export = now + interval
                stop_snapshot = stop.event.is_set()
                export_interval(running, telemetry, limiters)
                if on_interval:
                    on_interval(running)
    finally:
        if traced_from is not None:
            result.traced_seconds = time.monotonic() - traced_from[0]
            result.cpu_seconds = time.process_time() - traced_from[1]
        stop.restore()
        result.interrupted_by = stop.reason
        result.span_shift_max = budget.max_shift_seen
        for t in running:
            try:
                t.finish_pending()  # answers already given end now, not at a next interval that never comes
                t.poll(0)  # what is already in the ring buffers is not lost
            except Exception:
                pass
        if running:
            export_interval(running, telemetry, limiters, after_stop_snapshot=stop_snapshot)
        for t in running:
            result.drops[t.name] = t.drops()
            if limiters[t.name].folded():
                result.series_folded[t.name] = limiters[t.name].folded()
            result.summaries[t.name] = t.summary()
        detach_errors = stop_tracers(running)
        telemetry.shutdown()
        result.pipeline = telemetry.counters()
        result.seconds = time.monotonic() - t_start
        if detach_errors:
            raise EbpftoolError("detaching failed: " + "; ".join(detach_errors))
    return result


def export_interval(running: Sequence[Tracer], telemetry: Telemetry,
                    limiters: dict[str, SeriesLimit] | None = None, *, after_stop_snapshot: bool = False) -> None:
    """One snapshot of every tracer's metrics, each metric bounded to its limiter's number of series
    (after_stop_snapshot: see Telemetry.export_metrics)."""
    points = []
    for t in running:
        own = t.collect()
        limiter = limiters.get(t.name) if limiters else None
        if limiter is not None:
            own = limiter.apply(own)
            points.extend(limiter.folded_points())
        points.extend(own)
        points.extend(t.drop_metrics())
        t.tick()
    telemetry.export_metrics(points, after_stop_snapshot=after_stop_snapshot)
