"""Where telemetry goes: OTLP (gRPC or HTTP), a JSON-lines file, a Prometheus endpoint.

The terminal is not a sink here: the CLI draws the tracers' live views itself.
"""
from __future__ import annotations

import json
import math
import os
import contextlib
import io
import re
import socket
import stat
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Mapping, Sequence
from urllib.parse import urlparse

from opentelemetry.sdk.metrics.export import Gauge, Histogram, MetricExportResult, MetricsData, Sum
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult

from ebpftool.errors import EbpftoolError
from ebpftool.export.pipeline import Sink

DEFAULT_PROMETHEUS_ADDRESS = "127.0.0.1"  # not every interface: the metrics name processes, pids and addresses
PROMETHEUS_MAX_CONNECTIONS = 8           # served at once; more are closed at once (503) and counted
PROMETHEUS_CONNECTION_SECONDS = 5.0      # the most one connection may take, request read to answer written
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
    """OTLP exporters from the OpenTelemetry SDK; headers come from OTEL_EXPORTER_OTLP_HEADERS. The span
    exporters write their requests with ebpftool.export.otlp_spans (the SDK's encoding step, faster)."""
    from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics

    from ebpftool.export.otlp_spans import grpc_span_exporter, http_span_exporter

    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

        insecure = endpoint.startswith("http://")
        spans = grpc_span_exporter(endpoint=endpoint, insecure=insecure, timeout=OTLP_TIMEOUT_SECONDS)
        metrics = OTLPMetricExporter(endpoint=endpoint, insecure=insecure, timeout=OTLP_TIMEOUT_SECONDS)
    else:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

        spans = http_span_exporter(endpoint=endpoint + "/v1/traces", timeout=OTLP_TIMEOUT_SECONDS)
        metrics = OTLPMetricExporter(endpoint=endpoint + "/v1/metrics", timeout=OTLP_TIMEOUT_SECONDS)
    return Sink(
        name=f"otlp-{'grpc' if protocol == 'grpc' else 'http'}",
        spans=spans,
        metrics=metrics,
        span_bytes=lambda batch: spans.last_size,  # the request just sent (one export thread)
        metric_bytes=lambda data: encode_metrics(data).ByteSize(),
    )


# --- JSON lines ---------------------------------------------------------------------------
def create_private(path: str, overwrite: bool = False):
    """Create a new file readable by its owner only (it may hold addresses and paths), safely as root.

    Never follows a symlink at the path and never appends: an existing path is refused unless
    `overwrite`, and then only a regular file or a symlink is replaced (unlinked, the link itself and
    not its target, then created afresh with O_EXCL, so whatever is put back in between is refused too).
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        try:
            fd = os.open(path, flags, 0o600)
        except FileExistsError:
            st = os.lstat(path)
            if stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3):
                # the null device (e.g. --jsonl /dev/null, to measure what the export costs): written, never replaced
                return os.fdopen(os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC), "w", buffering=1)
            if not overwrite:
                raise EbpftoolError(f"{path} already exists: give another path, or --overwrite to replace it") from None
            if not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
                raise EbpftoolError(f"{path} exists and is not a regular file: --overwrite replaces only regular files") from None
            os.unlink(path)
            fd = os.open(path, flags, 0o600)
        os.fchmod(fd, 0o600)  # whatever the umask
    except FileExistsError:
        raise EbpftoolError(f"{path} was created again by someone else while being replaced: not written") from None
    except OSError as exc:
        raise EbpftoolError(f"cannot write {path}: {exc.strerror}") from exc
    return os.fdopen(fd, "w", buffering=1)


def write_failure(path: str, exc: OSError) -> str:
    return f"cannot write {path}: {exc.strerror or exc}; what could not be written is counted as failed"


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


_JSON_LINE = json.JSONEncoder(default=str)  # one encoder for every line (json.dumps builds one per call)


class JsonlExporter:
    """Writes spans and metric points as JSON objects, one per line, to a new 0600 file.

    A write that fails (a full disk) is said once (`write_error`); from then on every export
    fails and is counted, since the file may end in a partial line.
    """

    def __init__(self, path: str, resource_attributes: Mapping[str, object], overwrite: bool = False) -> None:
        self.path = path
        self.write_error: str | None = None
        self._file = create_private(path, overwrite)
        self._lock = threading.Lock()
        if not self._write([{"type": "resource", "attributes": dict(resource_attributes)}]):
            self.shutdown()
            with contextlib.suppress(OSError):
                os.unlink(path)  # ours (just created): nothing of it is left behind
            raise EbpftoolError(self.write_error)

    def _write(self, rows) -> bool:
        with self._lock:
            if self.write_error is not None or self._file.closed:
                return False
            try:
                # a batch's lines in one write: the file is line-buffered, so each write is a syscall
                self._file.write("".join(_JSON_LINE.encode(obj) + "\n" for obj in rows))
            except OSError as exc:
                self.write_error = write_failure(self.path, exc)
                return False
            return True

    def export(self, batch, timeout_millis: float = 0, **_kw):
        if isinstance(batch, MetricsData):
            ok = self._write(metrics_to_dicts(batch))
            return MetricExportResult.SUCCESS if ok else MetricExportResult.FAILURE
        ok = self._write(span_to_dict(span) for span in batch)
        return SpanExportResult.SUCCESS if ok else SpanExportResult.FAILURE

    def shutdown(self, timeout_millis: float = 0, **_kw) -> None:
        with self._lock:
            if not self._file.closed:
                try:
                    self._file.close()
                except OSError as exc:  # the last buffered bytes did not fit
                    self.write_error = self.write_error or write_failure(self.path, exc)


def jsonl_sink(path: str, resource_attributes: Mapping[str, object], overwrite: bool = False) -> Sink:
    exporter = JsonlExporter(path, resource_attributes, overwrite)
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


class _DeadlineReader(io.RawIOBase):
    """Reads from a socket until a deadline for the whole request, however slowly the bytes come."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self._sock, self._deadline = sock, deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("request took too long")
        self._sock.settimeout(remaining)
        return self._sock.recv_into(buf)


class _BoundedHTTPServer(ThreadingHTTPServer):
    """At most max_connections served at once, each for at most a time; the excess is closed at once and counted."""

    daemon_threads = True
    block_on_close = False  # close() must not wait for a slow client
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], handler, max_connections: int) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self._slots = threading.BoundedSemaphore(max_connections)
        self.refused = 0    # connections closed at once: every slot taken
        self.timed_out = 0  # connections closed when their time ran out
        super().__init__(address, handler)

    def process_request(self, request, client_address) -> None:
        if not self._slots.acquire(blocking=False):
            self.refused += 1
            try:
                request.setblocking(False)
                request.send(b"HTTP/1.0 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except Exception:
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request, client_address) -> None:
        pass  # a client that went away mid-answer is no error of ours; never a traceback on stderr


class PrometheusEndpoint:
    """Serves /metrics from the pipeline's latest snapshot (no aggregation of its own).

    Listens on loopback unless told otherwise; serves at most PROMETHEUS_MAX_CONNECTIONS
    connections at once (one request each), each for at most PROMETHEUS_CONNECTION_SECONDS.
    """

    def __init__(self, port: int, snapshot, host: str = DEFAULT_PROMETHEUS_ADDRESS,
                 max_connections: int = PROMETHEUS_MAX_CONNECTIONS,
                 connection_seconds: float = PROMETHEUS_CONNECTION_SECONDS) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            timeout = connection_seconds

            def setup(self):
                super().setup()
                self.rfile.close()  # the plain reader: replaced by one with a deadline over the whole request
                self.rfile = io.BufferedReader(_DeadlineReader(self.connection, time.monotonic() + connection_seconds))

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

            def log_error(self, fmt, *args):
                if "timed out" in fmt:
                    outer.server.timed_out += 1

            def log_message(self, *_args):
                pass

        if not host.strip():
            raise EbpftoolError("the Prometheus address is empty: give one such as 127.0.0.1, or 0.0.0.0 for every interface")
        self._snapshot = snapshot
        self.host = host
        self.max_connections, self.connection_seconds = max_connections, connection_seconds
        try:
            self.server = _BoundedHTTPServer((host, port), Handler, max_connections)
        except OSError as exc:
            raise EbpftoolError(f"cannot serve Prometheus metrics on {host} port {port}: {exc.strerror or exc}") from exc
        except (OverflowError, ValueError) as exc:
            raise EbpftoolError(f"cannot serve Prometheus metrics on {host} port {port}: {exc}") from exc
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, name="ebpftool-prometheus", daemon=True)
        self._thread.start()

    @property
    def refused(self) -> int:
        return self.server.refused

    @property
    def timed_out(self) -> int:
        return self.server.timed_out

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
