"""Kernel timestamps (bpf_ktime_get_ns: CLOCK_MONOTONIC) to wall-clock time."""
from __future__ import annotations

import time


class KernelClock:
    """Converts CLOCK_MONOTONIC ns to Unix-epoch ns with one offset read at start.

    The offset is the median of a few paired reads so one preemption between
    the two reads does not skew every span.
    """

    def __init__(self) -> None:
        samples = []
        for _ in range(5):
            a = time.monotonic_ns()
            w = time.time_ns()
            b = time.monotonic_ns()
            samples.append(w - (a + b) // 2)
        samples.sort()
        self.offset_ns = samples[len(samples) // 2]

    def to_wall_ns(self, monotonic_ns: int) -> int:
        return monotonic_ns + self.offset_ns
