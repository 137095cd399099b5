"""What tracers hand to the export layer: plain records, no BPF and no OpenTelemetry SDK types.

Metric points are cumulative since the tracer started (the kernel maps hold
running totals), so an export that fails loses nothing: the next carries it.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Mapping, Sequence

Attributes = Mapping[str, object]


class Kind(enum.Enum):
    COUNTER = "counter"          # monotonic sum
    UP_DOWN_COUNTER = "updown"   # non-monotonic sum
    GAUGE = "gauge"
    HISTOGRAM = "histogram"


@dataclass(frozen=True)
class MetricPoint:
    name: str
    kind: Kind
    unit: str
    description: str
    attributes: Attributes = field(default_factory=dict)
    value: float = 0
    # histograms only
    count: int = 0
    sum: float = 0.0
    min: float = 0.0
    max: float = 0.0
    bucket_counts: Sequence[int] = ()
    bounds: Sequence[float] = ()


def counter(name: str, unit: str, description: str, value: float, attributes: Attributes | None = None) -> MetricPoint:
    return MetricPoint(name, Kind.COUNTER, unit, description, dict(attributes or {}), value)


def updown(name: str, unit: str, description: str, value: float, attributes: Attributes | None = None) -> MetricPoint:
    return MetricPoint(name, Kind.UP_DOWN_COUNTER, unit, description, dict(attributes or {}), value)


def gauge(name: str, unit: str, description: str, value: float, attributes: Attributes | None = None) -> MetricPoint:
    return MetricPoint(name, Kind.GAUGE, unit, description, dict(attributes or {}), value)


def histogram(
    name: str,
    unit: str,
    description: str,
    attributes: Attributes | None,
    *,
    count: int,
    total: float,
    minimum: float,
    maximum: float,
    bucket_counts: Sequence[int],
    bounds: Sequence[float],
) -> MetricPoint:
    if len(bucket_counts) != len(bounds) + 1:
        raise ValueError(f"{name}: {len(bucket_counts)} buckets for {len(bounds)} bounds")
    return MetricPoint(
        name, Kind.HISTOGRAM, unit, description, dict(attributes or {}),
        count=count, sum=total, min=minimum, max=maximum,
        bucket_counts=tuple(bucket_counts), bounds=tuple(bounds),
    )


def seconds_histogram(name: str, description: str, attributes: Attributes | None, hist,
                      bounds: Sequence[float]) -> MetricPoint:
    """A histogram in seconds from a kernel histogram in nanoseconds (an ebpftool.core.bpf.HistSum):
    the kernel counted into the exported bounds, so its buckets are the point's."""
    return histogram(name, "s", description, attributes, count=hist.count, total=hist.total / 1e9,
                     minimum=hist.minimum / 1e9, maximum=hist.maximum / 1e9, bucket_counts=hist.buckets,
                     bounds=bounds)


class SpanKind(enum.Enum):
    INTERNAL = "internal"
    SERVER = "server"
    CLIENT = "client"


@dataclass
class SpanEvent:
    name: str
    time_ns: int
    attributes: Attributes = field(default_factory=dict)


@dataclass
class SpanRecord:
    """One finished span, with wall-clock times in ns since the epoch."""

    name: str
    start_ns: int
    end_ns: int
    kind: SpanKind = SpanKind.INTERNAL
    attributes: Attributes = field(default_factory=dict)
    events: list[SpanEvent] = field(default_factory=list)
    error: bool = False
    status_message: str = ""
