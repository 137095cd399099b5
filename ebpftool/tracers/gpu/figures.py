"""The gpu tracer's figures for people: per-process rates for the live view, and the exit summary
(ebpftool.ui draws them)."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ProcessRates:
    """One process over the last interval."""

    calls: float = 0.0
    sync_seconds: float = 0.0     # time spent in blocking calls per second: the share of time in synchronisation
    h2d: float = 0.0              # bytes per second
    d2h: float = 0.0
    outstanding: int = 0
    errors: float = 0.0           # calls per second that returned an error


@dataclass(frozen=True)
class ProcessRow:
    pid: int
    executable: str
    rates: ProcessRates
    leaked_allocations: int = 0   # what it did not free before it exited (0 while it runs)
    leaked_bytes: int = 0
    exited: bool = False


@dataclass
class GpuView:
    rows: list[ProcessRow] = field(default_factory=list)   # most calls first


@dataclass(frozen=True)
class UnfreedBy:
    """What one process did not free: at its exit, or still held when tracing stopped."""

    pid: int
    executable: str
    exited: bool
    allocations: int
    bytes: int


@dataclass
class GpuKernelCounts:
    """The kernel program's figures (absent when it was not loaded)."""

    calls: int
    calls_with_error: int
    bytes_host_to_device: int
    bytes_device_to_host: int
    unfreed_allocations: int
    unfreed_bytes: int
    unfreed_by: list[UnfreedBy]
    unmatched_returns: int
    calls_too_deep: int               # nested too deep to be measured
    allocations_not_remembered: int   # allocation map full
    calls_not_in_histograms: int      # histogram map full
    allocations_at_remembered_address: int


@dataclass(frozen=True)
class ProcessTotals:
    """One process over the run (those the kernel's maps still hold at the end: running, or gone recently)."""

    pid: int
    executable: str
    calls: int
    sync_seconds: float
    bytes_host_to_device: int
    bytes_device_to_host: int
    outstanding_bytes: int


@dataclass
class GpuHeadline:
    """What a person asks first, over the whole run: the live view's figures summed over processes."""

    seconds: float
    calls: int = 0
    calls_per_second: float = 0.0
    sync_seconds: float = 0.0          # time the host threads spent in blocking calls (synchronise, blocking copies)
    sync_share: float = 0.0            # of the run's time (summed over threads: can pass 1)
    bytes_host_to_device: int = 0
    bytes_device_to_host: int = 0
    outstanding_bytes: int = 0         # allocated by running processes and not freed at the end
    leaked_allocations: int = 0        # not freed by processes that exited
    leaked_bytes: int = 0
    processes: list[ProcessTotals] = field(default_factory=list)   # most calls first, at most ten


@dataclass
class GpuSummary:
    libraries_traced: int
    functions_probed: int
    kernel: GpuKernelCounts | None = None
    headline: GpuHeadline | None = None   # None when no program was loaded
