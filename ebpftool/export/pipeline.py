"""The telemetry pipeline: spans and metric snapshots to every configured sink.

Tracers call `emit_span()` from their ring-buffer callbacks and hand metric
points to `export_metrics()` once per interval. Neither call blocks on the
network: spans go to a bounded queue drained by a worker thread, metric
snapshots to a one-slot mailbox drained by another (each snapshot is cumulative,
so a newer one replaces an unsent older one without losing counts; that is
counted as superseded). A slow collector cannot starve metrics behind spans. A
collector that is down makes exports fail; that is counted, never raised into
the tracing loop. Shutdown is bounded: what is not sent in time is counted.
"""
from __future__ import annotations

import collections
import logging
import math
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

from ebpftool import semconv as sc
from ebpftool.export.model import MetricPoint, SpanKind, SpanRecord, counter
from ebpftool.export.otel import SCOPE, to_metrics_data
from ebpftool.export.series import SeriesLimiter

log = logging.getLogger(__name__)

SPAN_QUEUE_SIZE = 8192        # spans waiting for export; beyond this they are dropped and counted
SPAN_BATCH_SIZE = 512
SPAN_FLUSH_SECONDS = 1.0
SHUTDOWN_TIMEOUT_SECONDS = 10.0  # flush time at shutdown unless the caller sets one (replay: it has nothing else to do)
EXIT_FLUSH_SECONDS = 1.0         # tracing commands' default --flush-timeout: a dead collector must not hold the exit

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
    """Owns the sinks and the two worker threads; safe to call from the tracing loop.

    Spans and metric snapshots have a thread each, so a collector that is slow with
    spans still receives every metric snapshot it can take (metrics are the exact part).
    Every span is, per span sink, exported, failed, dropped from the full queue or left
    unsent at exit: spans_emitted == exported + failed + dropped_queue + unsent_at_exit.
    Every metric snapshot not delivered is counted (failed, or superseded by a newer one).
    `shutdown()` returns within `flush_timeout` seconds whatever the collector does.
    """

    def __init__(self, resource: Resource, sinks: Iterable[Sink] = (), recorder=None, *,
                 flush_timeout: float = SHUTDOWN_TIMEOUT_SECONDS, report: Callable[[str], None] | None = None) -> None:
        self.resource = resource
        self.recorder = recorder  # ebpftool.record.Recorder: a copy of every input, for replay
        self.sinks = list(sinks)
        self.flush_timeout = flush_timeout
        self.report = report or (lambda msg: log.warning("%s", msg))  # one sentence per problem, for the user
        self.start_ns = time.time_ns()
        self.spans_emitted = 0
        self.spans_dropped_queue = 0
        self.spans_unsent_at_exit = 0       # still queued when the flush time at exit ran out
        self.metric_snapshots = 0
        self.metric_snapshots_superseded = 0  # replaced by a newer one before it could be sent (it carries their counts)
        self._span_queue: collections.deque[SpanRecord] = collections.deque()
        self._metric_slot: list[MetricPoint] | None = None
        self._lock = threading.Lock()
        self._span_wake = threading.Event()
        self._metric_wake = threading.Event()
        self._spans_flushed = threading.Event()
        self._stopping = False
        self._abandoned = False  # set at the end of the flush time: what is in flight then is counted as failed
        self._deadline = math.inf
        self._span_sinks = [s for s in self.sinks if s.spans is not None]
        self._metric_sinks = [s for s in self.sinks if s.metrics is not None]
        # The batch and the snapshot in flight: the sinks that have not answered for them yet.
        self._span_pending: list[Sink] = []
        self._span_pending_n = 0
        self._metric_pending: list[Sink] = []
        self._latest_metrics: MetricsData | None = None
        self._said: set[str] = set()  # sinks whose write error was said
        self._said_lock = threading.Lock()
        self._span_thread = threading.Thread(target=self._span_loop, name="ebpftool-export", daemon=True)
        self._metric_thread = threading.Thread(target=self._metric_loop, name="ebpftool-export-metrics", daemon=True)
        self._span_thread.start()
        self._metric_thread.start()

    # -- called from the tracing loop ---------------------------------------------
    def emit_span(self, rec: SpanRecord) -> None:
        self.spans_emitted += 1
        if self.recorder is not None:
            self.recorder.on_span(rec)
        if not self._span_sinks:
            return
        with self._lock:
            if len(self._span_queue) >= SPAN_QUEUE_SIZE or self._abandoned:
                self.spans_dropped_queue += 1
                return
            self._span_queue.append(rec)
            if len(self._span_queue) >= SPAN_BATCH_SIZE:
                self._span_wake.set()

    def export_metrics(self, points: list[MetricPoint], *, after_stop_snapshot: bool = False) -> None:
        """One snapshot. after_stop_snapshot: the run's last, taken right after the one at its stop once the
        tracers handed over what was pending: it takes that one's place if it is still waiting, which loses
        nothing (it holds all that one's counts, and more) and is neither a snapshot more nor a superseded one."""
        if self.recorder is not None:
            self.recorder.on_metrics(points)
        with self._lock:
            if not (after_stop_snapshot and self._metric_slot is not None):
                self.metric_snapshots += 1
                if self._metric_slot is not None and self._metric_sinks:
                    self.metric_snapshots_superseded += 1
            self._metric_slot = points
        self._metric_wake.set()

    @property
    def latest_metrics(self) -> MetricsData | None:
        return self._latest_metrics

    def self_metrics(self) -> list[MetricPoint]:
        """The pipeline's own health: what it failed to send and how much it sent."""
        pts = [counter(sc.EBPFTOOL_SPANS_DROPPED, "{span}", "Spans dropped before export (queue full or export failed)",
                       self.spans_dropped_queue + self.spans_unsent_at_exit + sum(s.span_stats.failed for s in self._span_sinks))]
        for s in self.sinks:
            for signal, st in (("traces", s.span_stats), ("metrics", s.metric_stats)):
                if (signal == "traces" and s.spans is None) or (signal == "metrics" and s.metrics is None):
                    continue
                attrs = {"ebpftool.sink": s.name, sc.EBPFTOOL_SIGNAL: signal}
                pts.append(counter(sc.EBPFTOOL_EXPORT_FAILURES, "{batch}", "Export batches that failed", st.failed_batches, attrs))
                if (s.span_bytes if signal == "traces" else s.metric_bytes) is not None:
                    pts.append(counter(sc.EBPFTOOL_EXPORT_BYTES, "By", "Bytes of telemetry this tool exported", st.bytes, attrs))
        return pts

    def series_limiter(self, tracer: str, limit: int) -> SeriesLimiter:
        """One tracer's bound on series per metric (the runner applies it to each snapshot)."""
        return SeriesLimiter(limit, tracer)

    def counters(self) -> dict[str, int]:
        """Totals; spans_exported/spans_failed add up every span sink (see sink_counters() for each)."""
        return {
            "spans_emitted": self.spans_emitted,
            "spans_dropped_queue": self.spans_dropped_queue,
            "spans_unsent_at_exit": self.spans_unsent_at_exit,
            "spans_exported": sum(s.span_stats.exported for s in self._span_sinks),
            "spans_failed": sum(s.span_stats.failed for s in self._span_sinks),
            "metric_snapshots": self.metric_snapshots,
            "metric_snapshots_superseded": self.metric_snapshots_superseded,
            "metric_exports_failed": sum(s.metric_stats.failed_batches for s in self._metric_sinks),
            "export_bytes": sum(s.span_stats.bytes + s.metric_stats.bytes for s in self.sinks),
            **({"record_writes_failed": self.recorder.writes_failed} if self.recorder is not None else {}),
        }

    def sink_counters(self) -> dict[str, dict[str, int]]:
        """Per sink: spans exported and failed, metric snapshots exported and failed, bytes (OTLP only)."""
        out: dict[str, dict[str, int]] = {}
        for s in self.sinks:
            row: dict[str, int] = {}
            if s.spans is not None:
                row.update(spans_exported=s.span_stats.exported, spans_failed=s.span_stats.failed)
            if s.metrics is not None:
                row.update(metric_snapshots_exported=s.metric_stats.exported, metric_exports_failed=s.metric_stats.failed_batches)
            if s.span_bytes is not None or s.metric_bytes is not None:
                row["bytes"] = s.span_stats.bytes + s.metric_stats.bytes
            out[s.name] = row
        return out

    # -- workers -------------------------------------------------------------------
    def _span_loop(self) -> None:
        while True:
            if not self._stopping:
                self._span_wake.wait(SPAN_FLUSH_SECONDS)
                self._span_wake.clear()
            while True:
                with self._lock:
                    if self._abandoned or (self._stopping and time.monotonic() >= self._deadline):
                        break  # what is left is counted by shutdown()
                    batch = [self._span_queue.popleft() for _ in range(min(SPAN_BATCH_SIZE, len(self._span_queue)))]
                    if not batch:
                        break
                    self._span_pending, self._span_pending_n = list(self._span_sinks), len(batch)
                self._ship_spans(batch)
                self._say_write_errors()
            if self._stopping:
                self._spans_flushed.set()
                return

    def _metric_loop(self) -> None:
        while True:
            self._metric_wake.wait()
            self._metric_wake.clear()
            if self._stopping:
                # The final snapshot counts the spans sent at exit, if they go in the first half of the flush time.
                self._spans_flushed.wait(max(0.0, (self._deadline - time.monotonic()) / 2))
            with self._lock:
                if self._abandoned:
                    return
                points, self._metric_slot = self._metric_slot, None
                if points is not None:
                    self._metric_pending = list(self._metric_sinks)
            if points is not None:
                self._ship_metrics(points + self.self_metrics())
                self._say_write_errors()
            if self._stopping and self._metric_slot is None:
                return

    def _ship_spans(self, batch: list[SpanRecord]) -> None:
        spans, bad = [], 0
        for r in batch:  # a span that cannot be converted (wrong types) fails alone and never kills this thread
            try:
                spans.append(to_readable_span(r, self.resource))
            except Exception as exc:
                bad += 1
                self._say_once("bad span", f"a span could not be exported ({type(exc).__name__}: {exc}); "
                                           f"such spans are counted as failed")
        for sink in self._span_sinks:
            ok = bool(spans) and _safe_export(lambda: sink.spans.export(spans), SpanExportResult.SUCCESS, sink)
            n_bytes = _safe_size(sink.span_bytes, spans) if ok and sink.span_bytes else 0
            with self._lock:
                if self._abandoned:
                    return  # shutdown() counted this batch as failed already
                self._span_pending.remove(sink)
                st = sink.span_stats
                if bad:
                    st.failed += bad
                    st.failed_batches += not spans
                if not spans:
                    continue
                if ok:
                    st.exported += len(spans)
                    st.bytes += n_bytes
                else:
                    st.failed += len(spans)
                    st.failed_batches += 1

    def _ship_metrics(self, points: list[MetricPoint]) -> None:
        try:
            data = to_metrics_data(points, self.resource, self.start_ns, time.time_ns())
        except Exception as exc:  # wrong types (a bad recording): this snapshot fails, the thread goes on
            data = None
            self._say_once("bad snapshot", f"a metric snapshot could not be exported ({type(exc).__name__}: {exc}); "
                                           f"such snapshots are counted as failed")
        else:
            self._latest_metrics = data
        for sink in self._metric_sinks:
            ok = data is not None and _safe_export(lambda: sink.metrics.export(data), MetricExportResult.SUCCESS, sink)
            n_bytes = _safe_size(sink.metric_bytes, data) if ok and sink.metric_bytes else 0
            with self._lock:
                if self._abandoned:
                    return
                self._metric_pending.remove(sink)
                st = sink.metric_stats
                if ok:
                    st.exported += 1
                    st.bytes += n_bytes
                else:
                    st.failed += 1
                    st.failed_batches += 1

    def shutdown(self, timeout: float | None = None) -> None:
        """Flush queued spans and the last metric snapshot for at most `timeout` seconds (default: the
        flush_timeout given at construction), count what did not go, then close the sinks."""
        timeout = self.flush_timeout if timeout is None else timeout
        with self._lock:
            self._deadline = time.monotonic() + timeout
            self._stopping = True
        self._span_wake.set()
        self._metric_wake.set()
        for thread in (self._span_thread, self._metric_thread):
            thread.join(max(0.0, self._deadline - time.monotonic()))
        with self._lock:
            self._abandoned = True
            # In flight when the time ran out: not delivered, so failed, for each sink that had not answered.
            for sink in self._span_pending:
                sink.span_stats.failed += self._span_pending_n
                sink.span_stats.failed_batches += 1
            for sink in self._metric_pending:
                sink.metric_stats.failed += 1
                sink.metric_stats.failed_batches += 1
            late_spans, late_metrics = self._span_pending_n if self._span_pending else 0, bool(self._metric_pending)
            self._span_pending, self._metric_pending = [], []
            if self._metric_slot is not None and self._metric_sinks:  # never taken by the metrics thread
                for sink in self._metric_sinks:
                    sink.metric_stats.failed += 1
                    sink.metric_stats.failed_batches += 1
                late_metrics = True
            self._metric_slot = None
            unsent = len(self._span_queue)
            self.spans_unsent_at_exit += unsent
            self._span_queue.clear()
        if late_spans or late_metrics or unsent:
            what = []
            if late_spans or unsent:
                what.append(f"{late_spans + unsent} spans")
            if late_metrics:
                what.append("the last metric snapshot")
            self.report(f"export did not finish within the flush time of {timeout:g}s: "
                        f"{' and '.join(what)} not sent (counted as failed or unsent)")
        if self.recorder is not None:
            self.recorder.close()
        for sink in self.sinks:
            for part in {id(p): p for p in (sink.spans, sink.metrics) if p is not None}.values():
                try:
                    part.shutdown()
                except Exception:  # a sink that fails to close must not hide the summary
                    log.debug("closing %s failed", sink.name, exc_info=True)
        self._say_write_errors()

    def _say_write_errors(self) -> None:
        """A file that could not be written (a full disk) is said once, when first seen."""
        found = [("record", getattr(self.recorder, "write_error", None))]
        found += [(s.name, getattr(s.spans, "write_error", None) or getattr(s.metrics, "write_error", None))
                  for s in self.sinks]
        for name, error in found:
            if error:
                self._say_once(name, f"{name}: {error}")

    def _say_once(self, key: str, message: str) -> None:
        with self._said_lock:
            if key in self._said:
                return
            self._said.add(key)
        self.report(message)


def _safe_size(size, data) -> int:
    try:
        return size(data)
    except Exception:  # the figure of bytes sent must not undo a delivery
        return 0


def _safe_export(call, success, sink: Sink) -> bool:
    try:
        return call() == success
    except Exception as exc:  # exporters may raise on connection errors
        log.debug("export to %s failed: %s", sink.name, exc)
        return False
