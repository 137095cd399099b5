"""What the core needs of the export layer: somewhere to send spans and metric points.

The runner and the tracers are written against this Protocol; ebpftool.export.pipeline.Telemetry is
the implementation the commands build (with its sinks, queue and recorder). Records are passed
through untouched, so the core does not depend on their types either.
"""
from __future__ import annotations

from typing import Any, Iterable, Protocol


class Telemetry(Protocol):
    def emit_span(self, span: Any) -> None:
        """Queue one finished span (a SpanRecord); never blocks the tracer."""

    def export_metrics(self, points: Iterable[Any]) -> None:
        """Export one snapshot of cumulative metric points (MetricPoints)."""

    def shutdown(self) -> None:
        """Flush what is queued and close the sinks."""

    def counters(self) -> dict[str, int]:
        """The pipeline's own figures (spans emitted, exported, dropped ...), for the summary."""
