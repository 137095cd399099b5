"""What every tracer is to the runner: start, poll, collect, stop; plus its drop accounting."""
from __future__ import annotations

import ctypes
import os
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

from ebpftool.core.bpf import STAT_RINGBUF_FULL, STAT_SPAN_BUDGET, BpfProgram
from ebpftool.core.clock import KernelClock
from ebpftool.core.telemetry import Telemetry

# Spans per second a tracer may send to user space, and the bursts allowed above it. A span costs the tracer's
# process ~40 us (docs/performance.md): at a node's sustained request rates the default keeps that under half
# a percent of a core, while a burst (a test, a quiet server's busy minute) is seen whole.
DEFAULT_SPAN_RATE = 100
SPAN_BURST_SECONDS = 5
DEFAULT_RINGBUF_PAGES = 256   # 1 MiB per ring buffer


class SpanAllowance:
    """A span budget kept in user space, for records the kernel sends whatever the budget (every HTTP/2
    stream's bytes, every agent call's: their metrics need them all): --span-rate spans a second with bursts
    of SPAN_BURST_SECONDS' worth, thinned to 1/2**shift as the kernel's is while over --max-cpu
    (core.cpu_budget)."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._tokens = float(rate * SPAN_BURST_SECONDS)
        self._at = time.monotonic()

    def take(self, shift: int = 0) -> bool:
        """Whether one more span may go now."""
        rate = self.rate / (1 << shift)
        if rate <= 0:
            return False
        now = time.monotonic()
        self._tokens = min(rate * SPAN_BURST_SECONDS, self._tokens + (now - self._at) * rate)
        self._at = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True


@dataclass
class TracerOptions:
    """Options shared by all tracers (each tracer adds its own)."""

    span_rate: int = DEFAULT_SPAN_RATE
    ringbuf_pages: int = DEFAULT_RINGBUF_PAGES

    def budget_defines(self) -> dict[str, int]:
        """SPAN_RATE_PER_CPU / SPAN_BURST for bpf/common.bpf.h: the budget is split over CPUs."""
        ncpu = os.cpu_count() or 1
        per_cpu = max(1, self.span_rate // ncpu) if self.span_rate > 0 else 0
        return {"SPAN_RATE_PER_CPU": per_cpu, "SPAN_BURST": max(1, per_cpu * SPAN_BURST_SECONDS)}


class Tracer(ABC):
    """Base of the inference, net and gpu tracers.

    Subclasses load their BpfProgram(s) in start() and append them to
    self.programs; the base class polls them, reads the shared drop counters
    and detaches them.
    """

    name: ClassVar[str]

    def __init__(self, telemetry: Telemetry, options: TracerOptions | None = None) -> None:
        self.telemetry = telemetry
        self.options = options or TracerOptions()
        self.clock = KernelClock()
        self.programs: list[BpfProgram] = []
        self.compile_seconds = 0.0
        self.span_shift = 0   # spans thinned to 1/2**span_shift of the span rate (ebpftool.core.cpu_budget)

    def validate(self) -> None:
        """Check the options given by the user: raise EbpftoolError with one sentence when one is wrong.
        The runner calls it for every tracer before any starts (start() may take the options as checked);
        a wrong option stops the command even where a tracer the kernel cannot run is skipped
        (`ebpftool trace`)."""

    @abstractmethod
    def start(self) -> None:
        """Compile, load and attach. Raise EbpftoolError with one sentence on failure."""

    @abstractmethod
    def collect(self) -> list[Any]:
        """Read the kernel maps once: cumulative metric points (MetricPoints; cost independent of event rate)."""

    def poll(self, timeout_ms: int) -> None:
        """Deliver pending ring-buffer records to the tracer's callbacks."""
        for p in self.programs:
            p.poll(timeout_ms)

    def tick(self) -> None:
        """Called once per interval after collect(): housekeeping (e.g. expiring state)."""

    def finish_pending(self) -> None:
        """Called once when tracing ends, before the last poll and collect: finish in the kernel what is
        complete but would only have been finished later (e.g. an answered request on a quiet connection)."""

    def set_span_shift(self, shift: int) -> None:
        """Thin spans to 1/2**shift of the span rate: the kernel's budget (common.bpf.h's span_shift) in every
        program, and user-space budgets that read self.span_shift."""
        self.span_shift = shift
        for p in self.programs:
            if p.bpf is not None:
                p["span_shift"][ctypes.c_int(0)] = ctypes.c_uint(shift)

    def drops(self) -> dict[str, int]:
        """Events lost in the kernel: ring buffer full, and spans refused by the budget."""
        lost = unsampled = 0
        for p in self.programs:
            if p.bpf is None:
                continue
            st = p.stats()
            lost += st[STAT_RINGBUF_FULL]
            unsampled += st[STAT_SPAN_BUDGET]
        return {"events_lost": lost, "spans_unsampled": unsampled, **self.unreadable_events()}

    def unreadable_events(self) -> dict[str, int]:
        """Ring-buffer records this tracer's handler could not take (ebpftool.core.ringbuf): a row of the
        summary where there were any."""
        n = sum(p.failed_records for p in self.programs)
        return {"events_unreadable": n} if n else {}

    def drop_metrics(self) -> list[Any]:
        """drops() as metric points (ebpftool.tracers.base names them); none by default."""
        return []

    def figures(self) -> Any:
        """The tracer's figures now, as a typed record (a dataclass) that ebpftool.ui renders as the
        live view; None when it has none."""
        return None

    def summary(self) -> Any:
        """The exit summary's figures, as a typed record (a dataclass) that ebpftool.ui renders."""
        return None

    def detach(self) -> None:
        """Detach every probe, the programs staying loaded (idempotent; may run beside other tracers' detach()
        in other threads: the runner detaches all tracers side by side, then stops them one by one)."""
        self._each_program(lambda p: p.detach())

    def stop(self) -> None:
        """Detach every probe and free every program (idempotent)."""
        try:
            self._each_program(lambda p: p.close())
        finally:
            self.programs.clear()

    def _each_program(self, action) -> None:
        """action(program) for every program, the rest done when one fails; the first failure is raised."""
        errors = []
        for p in self.programs:
            try:
                action(p)
            except Exception as exc:  # keep detaching the rest
                errors.append(exc)
        if errors:
            raise errors[0]
