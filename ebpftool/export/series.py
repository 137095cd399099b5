"""A bound on the number of series per metric, as the OpenTelemetry SDK's cardinality limit does.

Each tracer's points pass through one SeriesLimiter per interval. A metric's
first `limit - 1` attribute sets keep their own series, for as long as the
tracer exports them; any further attribute set is folded into one overflow
series with the attribute set {"otel.metric.overflow": true}, and counted.
A series the tracer stops exporting (it retired it: its process is gone) frees
its place. Folding keeps cumulative counters exact: the overflow series of a
counter or histogram is the sum of the series folded into it, including the
last values of those that have since retired, so it never goes back.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from ebpftool.core.series import DEFAULT_MAX_SERIES
from ebpftool.export.model import Kind, MetricPoint, counter

OVERFLOW_ATTRIBUTE = "otel.metric.overflow"
OVERFLOW_ATTRIBUTES = {OVERFLOW_ATTRIBUTE: True}
FOLDED_METRIC = "ebpftool.metric.series.overflowed"
METRIC_ATTRIBUTE = "ebpftool.metric.name"
TRACER_ATTRIBUTE = "ebpftool.tracer"


def series_key(attributes) -> tuple:
    return tuple(sorted((k, repr(v)) for k, v in attributes.items()))


@dataclass
class _Metric:
    admitted: set[tuple] = field(default_factory=set)
    folded: dict[tuple, MetricPoint] = field(default_factory=dict)   # series in the overflow -> last point
    base: MetricPoint | None = None   # the sum of the retired folded series (counters, histograms)
    folded_ever: int = 0              # distinct series folded into the overflow since the start


def _monotonic(p: MetricPoint) -> bool:
    return p.kind in (Kind.COUNTER, Kind.HISTOGRAM)


def _add(a: MetricPoint | None, b: MetricPoint) -> MetricPoint:
    """a + b of one metric (b's name, kind, unit), with the overflow attribute set."""
    if a is None or (b.kind is Kind.HISTOGRAM and not a.count):
        return MetricPoint(b.name, b.kind, b.unit, b.description, dict(OVERFLOW_ATTRIBUTES), b.value, b.count, b.sum,
                           b.min, b.max, tuple(b.bucket_counts), tuple(b.bounds))
    if b.kind is not Kind.HISTOGRAM:
        return MetricPoint(a.name, a.kind, a.unit, a.description, a.attributes, a.value + b.value)
    if not b.count or tuple(a.bounds) != tuple(b.bounds):  # one metric's bounds never differ
        return a
    return MetricPoint(a.name, a.kind, a.unit, a.description, a.attributes, 0, a.count + b.count, a.sum + b.sum,
                       min(a.min, b.min), max(a.max, b.max),
                       tuple(x + y for x, y in zip(a.bucket_counts, b.bucket_counts)), a.bounds)


class SeriesLimiter:
    def __init__(self, limit: int = DEFAULT_MAX_SERIES, tracer: str = "") -> None:
        if limit < 2:
            raise ValueError("the series limit must be at least 2 (one series and the overflow series)")
        self.limit = limit
        self.tracer = tracer
        self._metrics: dict[str, _Metric] = {}

    def apply(self, points: Iterable[MetricPoint]) -> list[MetricPoint]:
        """The points with at most `limit` series per metric (the overflow series included)."""
        out: list[MetricPoint] = []
        now: dict[str, dict[tuple, MetricPoint]] = {}
        order: list[str] = []
        for p in points:
            if p.name not in now:
                now[p.name] = {}
                order.append(p.name)
            now[p.name][series_key(p.attributes)] = p
        for name in set(self._metrics) - set(now):
            now[name] = {}
            order.append(name)
        for name in order:
            m = self._metrics.setdefault(name, _Metric())
            current = now[name]
            # Series no longer exported were retired by their tracer: their places are free, and the last
            # values of folded ones stay in the overflow series.
            m.admitted &= current.keys()
            for key in [k for k in m.folded if k not in current]:
                last = m.folded.pop(key)
                if _monotonic(last):
                    m.base = _add(m.base, last)
            overflow = m.base
            for key, p in current.items():
                if key in m.admitted:
                    out.append(p)
                elif key not in m.folded and len(m.admitted) < self.limit - 1:
                    m.admitted.add(key)
                    out.append(p)
                else:
                    if key not in m.folded:
                        m.folded_ever += 1
                    m.folded[key] = p
                    overflow = _add(overflow, p)
            if overflow is not None:
                out.append(overflow)
            if not current and not m.folded and m.base is None and not m.folded_ever:
                del self._metrics[name]
        return out

    def folded(self) -> int:
        """Distinct series folded into an overflow series since the start, over all metrics."""
        return sum(m.folded_ever for m in self._metrics.values())

    def folded_points(self) -> list[MetricPoint]:
        """The count of folded series per metric, as a metric of its own."""
        return [counter(FOLDED_METRIC, "{series}",
                        "Series folded into the metric's overflow series (otel.metric.overflow) because the "
                        "metric had as many series as --max-series allows",
                        m.folded_ever, {TRACER_ATTRIBUTE: self.tracer, METRIC_ATTRIBUTE: name})
                for name, m in sorted(self._metrics.items()) if m.folded_ever]
