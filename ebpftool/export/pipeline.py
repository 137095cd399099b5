"""The telemetry pipeline: spans and metric snapshots to every configured sink.

Tracers call `emit_span()` from their ring-buffer callbacks and hand metric
points to `export_metrics()` once per interval. Neither call blocks on the
network: spans go to a bounded queue drained by a worker thread, metric
snapshots to a one-slot mailbox (each snapshot is cumulative, so a newer one
replaces an unsent older one without losing counts). A collector that is down
makes exports fail; that is counted, never raised into the tracing loop.
"""
from __future__ import annotations

import collections
import logging
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Protocol, Sequence

from opentelemetry.sdk.metrics.export import MetricExportResult, MetricsData
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.trace import SpanContext, SpanKind as OtelSpanKind, Status, StatusCode, TraceFlags

from ebpftool.export import semconv as sc
from ebpftool.export.model import MetricPoint, SpanKind, SpanRecord, counter
from ebpftool.export.otel import SCOPE, to_metrics_data

log = logging.getLogger(__name__)

SPAN_QUEUE_SIZE = 8192        # spans waiting for export; beyond this they are dropped and counted
SPAN_BATCH_SIZE = 512
SPAN_FLUSH_SECONDS = 1.0
SHUTDOWN_TIMEOUT_SECONDS = 10.0

_KINDS = {SpanKind.INTERNAL: OtelSpanKind.INTERNAL, SpanKind.SERVER: OtelSpanKind.SERVER, SpanKind.CLIENT: OtelSpanKind.CLIENT}


class SpanSink(Protocol):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult: ...
    def shutdown(self) -> None: ...


class MetricSink(Protocol):
    def export(self, metrics_data: MetricsData, timeout_millis: float = ..., **kwargs) -> MetricExportResult: ...
    def shutdown(self, timeout_millis: float = ..., **kwargs) -> None: ...


@dataclass
class SinkStats:
    """Per sink and signal: what went out, what failed, how many bytes (OTLP only)."""

    exported: int = 0
    failed: int = 0
    failed_batches: int = 0
    bytes: int = 0


@dataclass
class Sink:
    name: str
    spans: SpanSink | None = None
    metrics: MetricSink | None = None
    # Size of the wire encoding of a batch, to report the tool's own telemetry volume.
    span_bytes: Callable[[Sequence[ReadableSpan]], int] | None = None
    metric_bytes: Callable[[MetricsData], int] | None = None
    span_stats: SinkStats = field(default_factory=SinkStats)
    metric_stats: SinkStats = field(default_factory=SinkStats)


def to_readable_span(rec: SpanRecord, resource: Resource) -> ReadableSpan:
    ctx = SpanContext(
        trace_id=random.getrandbits(128) or 1,
        span_id=random.getrandbits(64) or 1,
        is_remote=False,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
    )
    status = Status(StatusCode.ERROR, rec.status_message or None) if rec.error else Status(StatusCode.UNSET)
    return ReadableSpan(
        name=rec.name,
        context=ctx,
        parent=None,
        resource=resource,
        attributes=dict(rec.attributes),
        events=[Event(e.name, dict(e.attributes), timestamp=e.time_ns) for e in rec.events],
        kind=_KINDS[rec.kind],
        status=status,
        start_time=rec.start_ns,
        end_time=max(rec.end_ns, rec.start_ns),
        instrumentation_scope=SCOPE,
    )


class Telemetry:
    """Owns the sinks and the two worker threads; safe to call from the tracing loop."""

    def __init__(self, resource: Resource, sinks: Iterable[Sink] = (), recorder=None) -> None:
        self.resource = resource
        self.recorder = recorder  # ebpftool.record.Recorder: a copy of every input, for replay
        self.sinks = list(sinks)
        self.start_ns = time.time_ns()
        self.spans_emitted = 0
        self.spans_dropped_queue = 0
        self._span_queue: collections.deque[SpanRecord] = collections.deque()
        self._metric_slot: list[MetricPoint] | None = None
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = False
        self._span_sinks = [s for s in self.sinks if s.spans is not None]
        self._metric_sinks = [s for s in self.sinks if s.metrics is not None]
        self._latest_metrics: MetricsData | None = None
        self._thread = threading.Thread(target=self._run, name="ebpftool-export", daemon=True)
        self._thread.start()

    # -- called from the tracing loop ---------------------------------------------
    def emit_span(self, rec: SpanRecord) -> None:
        self.spans_emitted += 1
        if self.recorder is not None:
            self.recorder.on_span(rec)
        if not self._span_sinks:
            return
        with self._lock:
            if len(self._span_queue) >= SPAN_QUEUE_SIZE:
                self.spans_dropped_queue += 1
                return
            self._span_queue.append(rec)
            if len(self._span_queue) >= SPAN_BATCH_SIZE:
                self._wake.set()

    def export_metrics(self, points: list[MetricPoint]) -> None:
        if self.recorder is not None:
            self.recorder.on_metrics(points)
        with self._lock:
            self._metric_slot = points
        self._wake.set()

    @property
    def latest_metrics(self) -> MetricsData | None:
        return self._latest_metrics

    def self_metrics(self) -> list[MetricPoint]:
        """The pipeline's own health: what it failed to send and how much it sent."""
        pts = [counter(sc.EBPFTOOL_SPANS_DROPPED, "{span}", "Spans dropped before export (queue full or export failed)",
                       self.spans_dropped_queue + sum(s.span_stats.failed for s in self._span_sinks))]
        for s in self.sinks:
            for signal, st in (("traces", s.span_stats), ("metrics", s.metric_stats)):
                if (signal == "traces" and s.spans is None) or (signal == "metrics" and s.metrics is None):
                    continue
                attrs = {"ebpftool.sink": s.name, sc.EBPFTOOL_SIGNAL: signal}
                pts.append(counter(sc.EBPFTOOL_EXPORT_FAILURES, "{batch}", "Export batches that failed", st.failed_batches, attrs))
                if (s.span_bytes if signal == "traces" else s.metric_bytes) is not None:
                    pts.append(counter(sc.EBPFTOOL_EXPORT_BYTES, "By", "Bytes of telemetry this tool exported", st.bytes, attrs))
        return pts

    def counters(self) -> dict[str, int]:
        return {
            "spans_emitted": self.spans_emitted,
            "spans_dropped_queue": self.spans_dropped_queue,
            "spans_exported": sum(s.span_stats.exported for s in self._span_sinks),
            "spans_failed": sum(s.span_stats.failed for s in self._span_sinks),
            "metric_exports_failed": sum(s.metric_stats.failed_batches for s in self._metric_sinks),
            "export_bytes": sum(s.span_stats.bytes + s.metric_stats.bytes for s in self.sinks),
        }

    # -- worker --------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            self._wake.wait(SPAN_FLUSH_SECONDS)
            self._wake.clear()
            self._drain()
            if self._stopping:
                return

    def _drain(self) -> None:
        # Spans first, so the metric snapshot that follows counts them as sent.
        while True:
            with self._lock:
                batch = [self._span_queue.popleft() for _ in range(min(SPAN_BATCH_SIZE, len(self._span_queue)))]
            if not batch:
                break
            self._ship_spans(batch)
        with self._lock:
            points, self._metric_slot = self._metric_slot, None
        if points is not None:
            self._ship_metrics(points + self.self_metrics())

    def _ship_spans(self, batch: list[SpanRecord]) -> None:
        spans = [to_readable_span(r, self.resource) for r in batch]
        for sink in self._span_sinks:
            ok = _safe_export(lambda: sink.spans.export(spans), SpanExportResult.SUCCESS, sink.name)
            st = sink.span_stats
            if ok:
                st.exported += len(spans)
                if sink.span_bytes:
                    st.bytes += sink.span_bytes(spans)
            else:
                st.failed += len(spans)
                st.failed_batches += 1

    def _ship_metrics(self, points: list[MetricPoint]) -> None:
        data = to_metrics_data(points, self.resource, self.start_ns, time.time_ns())
        self._latest_metrics = data
        for sink in self._metric_sinks:
            ok = _safe_export(lambda: sink.metrics.export(data), MetricExportResult.SUCCESS, sink.name)
            st = sink.metric_stats
            if ok:
                st.exported += 1
                if sink.metric_bytes:
                    st.bytes += sink.metric_bytes(data)
            else:
                st.failed += 1
                st.failed_batches += 1

    def shutdown(self, timeout: float = SHUTDOWN_TIMEOUT_SECONDS) -> None:
        """Flush every queued span and the last metric snapshot, then close the sinks."""
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("export did not finish within %.0fs", timeout)
        with self._lock:
            self.spans_dropped_queue += len(self._span_queue)
            self._span_queue.clear()
        if self.recorder is not None:
            self.recorder.close()
        for sink in self.sinks:
            for part in (sink.spans, sink.metrics):
                if part is not None:
                    try:
                        part.shutdown()
                    except Exception:  # a sink that fails to close must not hide the summary
                        log.debug("closing %s failed", sink.name, exc_info=True)


def _safe_export(call, success, name: str) -> bool:
    try:
        return call() == success
    except Exception as exc:  # exporters may raise on connection errors
        log.debug("export to %s failed: %s", name, exc)
        return False
