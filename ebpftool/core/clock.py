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


KNOWN_HZ = (100, 250, 300, 1000)
FALLBACK_HZ = 1000  # the largest: a jiffies-based rate limit is then never looser than asked


def kernel_hz() -> int:
    """The kernel's tick rate (CONFIG_HZ), for rate limits kept in jiffies (bpf_jiffies64() is inlined by
    the verifier; bpf_ktime_get_ns() is a helper call that reads the clock source).

    From /proc/config.gz where the kernel has it; else measured from /proc/timer_list; else FALLBACK_HZ."""
    return hz_from_config() or hz_from_timer_list() or FALLBACK_HZ


def hz_from_config(path: str = "/proc/config.gz") -> int | None:
    import gzip

    try:
        with gzip.open(path, "rt") as f:
            for line in f:
                if line.startswith("CONFIG_HZ="):
                    return int(line.split("=", 1)[1])
    except (OSError, ValueError, EOFError):
        pass
    return None


def hz_from_timer_list(path: str = "/proc/timer_list", wait: float = 0.05) -> int | None:
    """jiffies against the ns clock printed beside them, read twice, rounded to the nearest usual HZ."""
    import re

    def reading() -> tuple[int, int] | None:
        try:
            with open(path) as f:
                text = f.read(8192)
        except OSError:
            return None
        now, jiffies = re.search(r"now at (\d+) nsecs", text), re.search(r"jiffies: (\d+)", text)
        return (int(now.group(1)), int(jiffies.group(1))) if now and jiffies else None

    first = reading()
    time.sleep(wait)
    second = reading()
    if not first or not second or second[0] <= first[0]:
        return None
    measured = (second[1] - first[1]) * 1e9 / (second[0] - first[0])
    return min(KNOWN_HZ, key=lambda hz: abs(hz - measured))
