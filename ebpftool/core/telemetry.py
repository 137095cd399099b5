"""What the core needs of the export layer: somewhere to send spans and metric points.

The runner and the tracers are written against this Protocol; ebpftool.export.pipeline.Telemetry is
the implementation the commands build (with its sinks, queue and recorder). Records are passed
through untouched, so the core does not depend on their types either.
"""
from __future__ import annotations

from typing import Any, Iterable, Protocol


class SeriesLimit(Protocol):
    """A bound on one tracer's series per metric (ebpftool.export.series.SeriesLimiter)."""

    def apply(self, points: Iterable[Any]) -> list[Any]:
        """The points, with the series over the bound folded into an overflow series."""

    def folded(self) -> int:
        """Distinct series folded since the start."""

    def folded_points(self) -> list[Any]:
        """The folded counts as metric points of their own."""


class Telemetry(Protocol):
    def emit_span(self, span: Any) -> None:
        """Queue one finished span (a SpanRecord); never blocks the tracer."""

    def export_metrics(self, points: Iterable[Any]) -> None:
        """Export one snapshot of cumulative metric points (MetricPoints)."""

    def shutdown(self) -> None:
        """Flush what is queued and close the sinks."""

    def series_limiter(self, tracer: str, limit: int) -> SeriesLimit:
        """A fresh bound of `limit` series per metric for one tracer's points."""

    def counters(self) -> dict[str, int]:
        """The pipeline's own figures (spans emitted, exported, dropped ...), for the summary."""
