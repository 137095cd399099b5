"""A real OTLP receiver for tests: gRPC and HTTP, decoding with opentelemetry-proto.

It stands in for an OpenTelemetry Collector (none is installable here). Tests
assert on what it decoded, so what they check is what went over the wire.
"""
from __future__ import annotations

import socket
import threading
import time
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

SPAN_KINDS = {0: "UNSPECIFIED", 1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}


def any_value(v: AnyValue):
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [any_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, kind) if kind else None


def attrs(kvs) -> dict:
    return {kv.key: any_value(kv.value) for kv in kvs}


@dataclass
class Span:
    name: str
    kind: str
    start_ns: int
    end_ns: int
    attributes: dict
    status_code: int  # 0 unset, 1 ok, 2 error
    events: list
    resource: dict


@dataclass
class Point:
    metric: str
    kind: str
    unit: str
    attributes: dict
    value: float = 0
    count: int = 0
    sum: float = 0
    bucket_counts: list = field(default_factory=list)
    bounds: list = field(default_factory=list)
    min: float = 0
    max: float = 0
    is_monotonic: bool = False
    time_ns: int = 0
    resource: dict = field(default_factory=dict)


class Receiver:
    """Collects decoded spans and metric points; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.span_requests = 0
        self.span_request_bytes = 0
        self.metric_requests = 0
        self._spans: list[Span] = []
        self._points: list[Point] = []
        self.fail = False  # answer UNAVAILABLE / 503, as a collector that refuses
        self.delay = 0.0   # seconds each Export takes before it is answered, as an overloaded collector

    def add_traces(self, req: trace_service_pb2.ExportTraceServiceRequest) -> None:
        out = []
        for rs in req.resource_spans:
            res = attrs(rs.resource.attributes)
            for ss in rs.scope_spans:
                for s in ss.spans:
                    out.append(Span(
                        s.name, SPAN_KINDS.get(s.kind, str(s.kind)), s.start_time_unix_nano, s.end_time_unix_nano,
                        attrs(s.attributes), s.status.code,
                        [(e.name, e.time_unix_nano, attrs(e.attributes)) for e in s.events], res,
                    ))
        with self._lock:
            self.span_requests += 1
            self.span_request_bytes += req.ByteSize()  # what came over the wire (uncompressed)
            self._spans.extend(out)

    def add_metrics(self, req: metrics_service_pb2.ExportMetricsServiceRequest) -> None:
        out = []
        for rm in req.resource_metrics:
            res = attrs(rm.resource.attributes)
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    kind = m.WhichOneof("data")
                    data = getattr(m, kind)
                    for p in data.data_points:
                        pt = Point(m.name, kind, m.unit, attrs(p.attributes), time_ns=p.time_unix_nano, resource=res)
                        if kind == "histogram":
                            pt.count, pt.sum = p.count, p.sum
                            pt.bucket_counts, pt.bounds = list(p.bucket_counts), list(p.explicit_bounds)
                            pt.min, pt.max = p.min, p.max
                        else:
                            pt.value = p.as_double if p.WhichOneof("value") == "as_double" else p.as_int
                            pt.is_monotonic = kind == "sum" and data.is_monotonic
                        out.append(pt)
        with self._lock:
            self.metric_requests += 1
            self._points.extend(out)

    # -- queries ---------------------------------------------------------------------------
    def spans(self, name_prefix: str = "") -> list[Span]:
        with self._lock:
            return [s for s in self._spans if s.name.startswith(name_prefix)]

    def latest(self, metric: str) -> list[Point]:
        """Points of the newest export that carried `metric` (exports are cumulative)."""
        with self._lock:
            pts = [p for p in self._points if p.metric == metric]
        if not pts:
            return []
        newest = max(p.time_ns for p in pts)
        return [p for p in pts if p.time_ns == newest]

    def metric_names(self) -> set[str]:
        with self._lock:
            return {p.metric for p in self._points}

    def wait_for_exports_from_now(self, metric: str, exports: int = 2, timeout: float = 20.0) -> bool:
        """Wait until `exports` exports of metric stamped after this call have arrived. Exports are cumulative and
        stamped when shipped, a little after their collection: the second holds everything counted before the call
        (what "one more export" meant as a sleep), whatever the machine's load."""
        since = time.time_ns()

        def newer() -> int:
            with self._lock:
                return len({p.time_ns for p in self._points if p.metric == metric and p.time_ns > since})

        return self.wait_for(lambda: newer() >= exports, timeout)

    def wait_for(self, predicate, timeout: float = 20.0, interval: float = 0.2) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(interval)
        return predicate()


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, receiver: Receiver) -> None:
        self.r = receiver

    def Export(self, request, context):  # noqa: N802
        if self.r.delay:
            time.sleep(self.r.delay)  # a slow collector: the delay is what is under test, not a wait for a condition
        if self.r.fail:
            context.abort(grpc.StatusCode.UNAVAILABLE, "test receiver refuses")
        self.r.add_traces(request)
        return trace_service_pb2.ExportTraceServiceResponse()


class _MetricsService(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, receiver: Receiver) -> None:
        self.r = receiver

    def Export(self, request, context):  # noqa: N802
        if self.r.delay:
            time.sleep(self.r.delay)
        if self.r.fail:
            context.abort(grpc.StatusCode.UNAVAILABLE, "test receiver refuses")
        self.r.add_metrics(request)
        return metrics_service_pb2.ExportMetricsServiceResponse()


class GrpcReceiver(Receiver):
    def __init__(self, port: int = 0, delay: float = 0.0) -> None:
        super().__init__()
        self.delay = delay
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceService(self), self.server)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(_MetricsService(self), self.server)
        self.port = self.server.add_insecure_port(f"127.0.0.1:{port}")
        self.server.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.stop(0)


class HttpReceiver(Receiver):
    def __init__(self, port: int = 0) -> None:
        super().__init__()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # connections kept open between exports, as a collector keeps them

            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if outer.fail:
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if self.path == "/v1/traces":
                    req = trace_service_pb2.ExportTraceServiceRequest()
                    req.ParseFromString(body)
                    outer.add_traces(req)
                    resp = trace_service_pb2.ExportTraceServiceResponse()
                elif self.path == "/v1/metrics":
                    req = metrics_service_pb2.ExportMetricsServiceRequest()
                    req.ParseFromString(body)
                    outer.add_metrics(req)
                    resp = metrics_service_pb2.ExportMetricsServiceResponse()
                else:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                payload = resp.SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *_a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class BlackHole:
    """A collector that accepts TCP connections and never answers a byte (a hung or firewalled-late peer)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)  # kept open, never read from or written to

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self._stop = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        except OSError:
            pass
        self.sock.close()
        for c in self.accepted:
            c.close()
