"""Where telemetry goes: OTLP (gRPC or HTTP), a JSON-lines file, a Prometheus endpoint.

The terminal is not a sink here: the CLI draws the tracers' live views itself.
"""
from __future__ import annotations

import json
import math
import os
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Mapping, Sequence
from urllib.parse import urlparse

from opentelemetry.sdk.metrics.export import Gauge, Histogram, MetricExportResult, MetricsData, Sum
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult

from ebpftool.errors import EbpftoolError
from ebpftool.export.pipeline import Sink

OTLP_TIMEOUT_SECONDS = 5  # per export call: a dead collector must not stall shutdown for long
PROTOCOLS = ("grpc", "http/protobuf")


def resolve_otlp(endpoint: str | None, protocol: str | None, environ: Mapping[str, str] | None = None) -> tuple[str, str] | None:
    """(endpoint, protocol) from flags, then OTEL_EXPORTER_OTLP_*; None when no collector is configured.

    The protocol defaults as the OpenTelemetry spec says (http/protobuf),
    except that an endpoint on port 4317, the gRPC port, means gRPC.
    """
    env = os.environ if environ is None else environ
    endpoint = endpoint or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if not endpoint:
        return None
    if "://" not in endpoint:
        endpoint = "http://" + endpoint
    parsed = urlparse(endpoint)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise EbpftoolError(f"OTLP endpoint '{endpoint}' is not a URL like http://collector:4317")
    try:
        port = parsed.port
    except ValueError as exc:
        raise EbpftoolError(f"OTLP endpoint '{endpoint}' has an invalid port") from exc
    protocol = protocol or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or ("grpc" if port == 4317 else "http/protobuf")
    if protocol not in PROTOCOLS:
        raise EbpftoolError(f"OTLP protocol '{protocol}' is not one of: {', '.join(PROTOCOLS)}")
    return endpoint.rstrip("/"), protocol


def otlp_sink(endpoint: str, protocol: str) -> Sink:
    """OTLP exporters from the OpenTelemetry SDK; headers come from OTEL_EXPORTER_OTLP_HEADERS."""
    from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        insecure = endpoint.startswith("http://")
        spans = OTLPSpanExporter(endpoint=endpoint, insecure=insecure, timeout=OTLP_TIMEOUT_SECONDS)
        metrics = OTLPMetricExporter(endpoint=endpoint, insecure=insecure, timeout=OTLP_TIMEOUT_SECONDS)
    else:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        spans = OTLPSpanExporter(endpoint=endpoint + "/v1/traces", timeout=OTLP_TIMEOUT_SECONDS)
        metrics = OTLPMetricExporter(endpoint=endpoint + "/v1/metrics", timeout=OTLP_TIMEOUT_SECONDS)
    return Sink(
        name=f"otlp-{'grpc' if protocol == 'grpc' else 'http'}",
        spans=spans,
        metrics=metrics,
        span_bytes=lambda batch: encode_spans(batch).ByteSize(),
        metric_bytes=lambda data: encode_metrics(data).ByteSize(),
    )


# --- JSON lines ---------------------------------------------------------------------------
def open_private(path: str):
    """Open a file for appending, created readable by its owner only (it may hold addresses and paths)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    except OSError as exc:
        raise EbpftoolError(f"cannot write {path}: {exc.strerror}") from exc
    return os.fdopen(fd, "a", buffering=1)


def span_to_dict(span: ReadableSpan) -> dict:
    return {
        "type": "span",
        "name": span.name,
        "kind": span.kind.name,
        "trace_id": f"{span.context.trace_id:032x}",
        "span_id": f"{span.context.span_id:016x}",
        "start_time_unix_nano": span.start_time,
        "end_time_unix_nano": span.end_time,
        "status": span.status.status_code.name,
        "attributes": dict(span.attributes or {}),
        "events": [{"name": e.name, "time_unix_nano": e.timestamp, "attributes": dict(e.attributes or {})} for e in span.events],
    }


def metrics_to_dicts(data: MetricsData):
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                for p in m.data.data_points:
                    row = {"type": "metric", "name": m.name, "unit": m.unit, "attributes": dict(p.attributes or {}),
                           "time_unix_nano": p.time_unix_nano}
                    if isinstance(m.data, Histogram):
                        row.update(kind="histogram", count=p.count, sum=p.sum, min=p.min, max=p.max,
                                   bucket_counts=list(p.bucket_counts), explicit_bounds=list(p.explicit_bounds))
                    else:
                        row.update(kind="gauge" if isinstance(m.data, Gauge) else "sum", value=p.value)
                    yield row


class JsonlExporter:
    """Writes spans and metric points as JSON objects, one per line, to a 0600 file."""

    def __init__(self, path: str, resource_attributes: Mapping[str, object]) -> None:
        self._file = open_private(path)
        self._lock = threading.Lock()
        self._write({"type": "resource", "attributes": dict(resource_attributes)})

    def _write(self, obj: dict) -> None:
        with self._lock:
            self._file.write(json.dumps(obj, default=str) + "\n")

    def export(self, batch, timeout_millis: float = 0, **_kw):
        if isinstance(batch, MetricsData):
            for row in metrics_to_dicts(batch):
                self._write(row)
            return MetricExportResult.SUCCESS
        for span in batch:
            self._write(span_to_dict(span))
        return SpanExportResult.SUCCESS

    def shutdown(self, timeout_millis: float = 0, **_kw) -> None:
        with self._lock:
            if not self._file.closed:
                self._file.close()


def jsonl_sink(path: str, resource_attributes: Mapping[str, object]) -> Sink:
    exporter = JsonlExporter(path, resource_attributes)
    return Sink(name="jsonl", spans=exporter, metrics=exporter)


# --- Prometheus ---------------------------------------------------------------------------
_UNIT_SUFFIX = {"s": "seconds", "By": "bytes", "USD": "usd", "1": "ratio"}


def prometheus_name(name: str, unit: str | None, monotonic_sum: bool) -> str:
    """OpenTelemetry name to Prometheus, as the OTel-Prometheus compatibility spec does."""
    base = re.sub(r"[^a-zA-Z0-9_:]", "_", name)
    suffix = _UNIT_SUFFIX.get(unit or "", "") if unit and not unit.startswith("{") else ""
    if suffix and not base.endswith("_" + suffix):
        base += "_" + suffix
    if monotonic_sum and not base.endswith("_total"):
        base += "_total"
    return base


def _labels(attrs: Mapping[str, object], extra: Sequence[tuple[str, str]] = ()) -> str:
    items = [(re.sub(r"[^a-zA-Z0-9_]", "_", k), str(v).lower() if isinstance(v, bool) else str(v)) for k, v in attrs.items()]
    items += list(extra)
    if not items:
        return ""
    esc = lambda v: v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')  # noqa: E731
    return "{" + ",".join(f'{k}="{esc(v)}"' for k, v in items) + "}"


def _num(v: float) -> str:
    if isinstance(v, float) and math.isinf(v):
        return "+Inf"
    return repr(v) if isinstance(v, float) else str(v)


def prometheus_text(data: MetricsData | None) -> str:
    """The Prometheus text exposition of the latest cumulative snapshot."""
    if data is None:
        return ""
    out: list[str] = []
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                d = m.data
                monotonic = isinstance(d, Sum) and d.is_monotonic
                name = prometheus_name(m.name, m.unit, monotonic)
                if isinstance(d, Histogram):
                    out.append(f"# HELP {name} {m.description or m.name}")
                    out.append(f"# TYPE {name} histogram")
                    for p in d.data_points:
                        cum = 0
                        for bound, c in zip(list(p.explicit_bounds) + [math.inf], p.bucket_counts):
                            cum += c
                            out.append(f"{name}_bucket{_labels(p.attributes, [('le', _num(float(bound)))])} {cum}")
                        out.append(f"{name}_sum{_labels(p.attributes)} {_num(p.sum)}")
                        out.append(f"{name}_count{_labels(p.attributes)} {p.count}")
                else:
                    out.append(f"# HELP {name} {m.description or m.name}")
                    out.append(f"# TYPE {name} {'counter' if monotonic else 'gauge'}")
                    for p in d.data_points:
                        out.append(f"{name}{_labels(p.attributes)} {_num(p.value)}")
    return "\n".join(out) + "\n"


class PrometheusEndpoint:
    """Serves /metrics from the pipeline's latest snapshot (no aggregation of its own)."""

    def __init__(self, port: int, snapshot, host: str = "0.0.0.0") -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                if self.path.split("?")[0] not in ("/metrics", "/"):
                    self.send_error(404)
                    return
                body = prometheus_text(outer._snapshot()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args):
                pass

        self._snapshot = snapshot
        try:
            self.server = ThreadingHTTPServer((host, port), Handler)
        except OSError as exc:
            raise EbpftoolError(f"cannot serve Prometheus metrics on port {port}: {exc.strerror}") from exc
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, name="ebpftool-prometheus", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
