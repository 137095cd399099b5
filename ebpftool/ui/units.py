"""Figures as people read them. Bytes: decimal SI (1 kB = 1000 B), as network rates and the cloud's per-GB
prices are counted; durations in s, ms or µs."""
from __future__ import annotations


def human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def human_seconds(s: float | None, compact: bool = False) -> str:
    """A duration as people read it: µs, ms or s, three significant digits ('12.3 ms'; compact: '12.3ms' for
    narrow tables); '-' for none."""
    if s is None:
        return "-"
    space = "" if compact else " "
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if abs(s) >= scale or unit == "µs":
            return f"{s / scale:.3g}{space}{unit}"
    return "-"
