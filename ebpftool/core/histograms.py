"""Quantiles of the exported histograms (explicit bounds, cumulative counts per bucket), for the terminal's
figures: the same estimate as Prometheus' `histogram_quantile`, so the terminal and a dashboard agree."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence


@dataclass
class Histogram:
    """Bucket counts over explicit bounds (len(counts) == len(bounds) + 1: the last bucket is above them all),
    with the smallest and largest value seen."""

    bounds: Sequence[float]
    counts: list[int] = field(default_factory=list)
    minimum: float = 0.0
    maximum: float = 0.0

    @property
    def count(self) -> int:
        return sum(self.counts)


def merged(points: Iterable) -> Histogram | None:
    """One histogram of several histogram points (MetricPoint) with the same bounds; None without any count."""
    out: Histogram | None = None
    for p in points:
        if not p.count:
            continue
        if out is None:
            out = Histogram(tuple(p.bounds), [0] * (len(p.bounds) + 1), p.min, p.max)
        elif tuple(p.bounds) != tuple(out.bounds):
            raise ValueError("histograms with other bounds cannot be merged")
        for i, n in enumerate(p.bucket_counts):
            out.counts[i] += n
        out.minimum, out.maximum = min(out.minimum, p.min), max(out.maximum, p.max)
    return out


def quantile(q: float, h: Histogram | None) -> float | None:
    """The q-quantile (0 < q < 1), linear within its bucket (as histogram_quantile), the buckets' edges
    narrowed to the smallest and largest value seen; None for an empty histogram."""
    if h is None or not h.count:
        return None
    rank = q * h.count
    seen = 0
    for i, n in enumerate(h.counts):
        if n and seen + n >= rank:
            lower = h.bounds[i - 1] if i > 0 else h.minimum
            upper = h.bounds[i] if i < len(h.bounds) else h.maximum
            lower, upper = max(lower, h.minimum), min(upper, h.maximum)
            if upper <= lower:
                return lower
            return lower + (upper - lower) * (rank - seen) / n
        seen += n
    return h.maximum
