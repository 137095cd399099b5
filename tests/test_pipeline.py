"""The export layer against a real OTLP receiver: what arrives, and what happens when the collector fails."""
from __future__ import annotations

import socket
import threading
import time

import pytest

from ebpftool import semconv as sc
from ebpftool.export.model import SpanEvent, SpanKind, SpanRecord, counter, histogram
from ebpftool.export.otel import build_resource
from ebpftool.export.pipeline import Sink, Telemetry
from ebpftool.export.sinks import jsonl_sink, otlp_sink
from tests.otlp_receiver import GrpcReceiver


def _span(i: int) -> SpanRecord:
    now = time.time_ns()
    return SpanRecord(
        name=f"GET /item/{i}", start_ns=now - 2_000_000, end_ns=now, kind=SpanKind.SERVER,
        attributes={sc.HTTP_REQUEST_METHOD: "GET", sc.HTTP_RESPONSE_STATUS_CODE: 500 if i == 0 else 200},
        events=[SpanEvent("first_token", now - 1_000_000, {"n": i})], error=i == 0,
    )


def _points(n: int):
    return [
        counter("ebpftool.test.calls", "{call}", "calls", n, {"fn": "a"}),
        histogram("ebpftool.test.duration", "s", "d", {"fn": "a"}, count=3, total=0.6, minimum=0.1, maximum=0.3,
                  bucket_counts=[1, 2, 0], bounds=[0.1, 0.5]),
    ]


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_spans_and_metrics_reach_the_receiver(protocol, grpc_receiver, http_receiver):
    receiver = grpc_receiver if protocol == "grpc" else http_receiver
    resource = build_resource("svc-under-test", zone="zone-a", region="r1", environ={})
    telemetry = Telemetry(resource, [otlp_sink(receiver.endpoint, protocol)])
    for i in range(25):
        telemetry.emit_span(_span(i))
    telemetry.export_metrics(_points(7))
    telemetry.shutdown()

    spans = receiver.spans("GET /item/")
    assert len(spans) == 25
    by_name = {s.name: s for s in spans}
    assert by_name["GET /item/0"].status_code == 2 and by_name["GET /item/1"].status_code == 0
    assert by_name["GET /item/3"].kind == "SERVER"
    assert by_name["GET /item/3"].end_ns - by_name["GET /item/3"].start_ns == 2_000_000
    assert by_name["GET /item/3"].events[0][0] == "first_token"
    assert spans[0].resource[sc.SERVICE_NAME] == "svc-under-test"
    assert spans[0].resource[sc.CLOUD_AVAILABILITY_ZONE] == "zone-a"

    (calls,) = receiver.latest("ebpftool.test.calls")
    assert calls.value == 7 and calls.is_monotonic and calls.attributes == {"fn": "a"}
    (dur,) = receiver.latest("ebpftool.test.duration")
    assert (dur.count, dur.bucket_counts, dur.bounds) == (3, [1, 2, 0], [0.1, 0.5])
    assert (dur.min, dur.max) == (0.1, 0.3)
    # The pipeline reports its own volume and failures.
    sent = {p.attributes[sc.EBPFTOOL_SIGNAL]: p.value for p in receiver.latest(sc.EBPFTOOL_EXPORT_BYTES)}
    assert sent["traces"] == receiver.span_request_bytes > 0
    assert telemetry.counters()["spans_exported"] == 25


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_dead_collector_is_counted_not_fatal():
    port = _free_port()  # nothing listens there
    telemetry = Telemetry(build_resource(environ={}), [otlp_sink(f"http://127.0.0.1:{port}", "grpc")])
    for i in range(10):
        telemetry.emit_span(_span(i))
    telemetry.export_metrics(_points(1))
    t0 = time.monotonic()
    telemetry.shutdown(timeout=30)
    assert time.monotonic() - t0 < 30
    c = telemetry.counters()
    assert c["spans_exported"] == 0
    assert c["spans_failed"] == 10
    assert c["metric_exports_failed"] >= 1


def test_export_resumes_when_the_collector_comes_back():
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    telemetry = Telemetry(build_resource(environ={}), [otlp_sink(endpoint, "grpc")])
    telemetry.emit_span(_span(1))
    telemetry.export_metrics(_points(1))
    deadline = time.monotonic() + 60  # the first batch fails (nobody listens), retries included
    while telemetry.counters()["spans_failed"] < 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert telemetry.counters()["spans_failed"] == 1
    receiver = GrpcReceiver(port)
    try:
        for i in range(5):
            telemetry.emit_span(_span(100 + i))
        telemetry.export_metrics(_points(2))
        # The client reconnects on its own backoff schedule: wait for delivery rather than race shutdown.
        assert receiver.wait_for(lambda: len(receiver.spans("GET /item/10")) == 5, timeout=60)
        telemetry.shutdown()
        assert len(receiver.spans("GET /item/10")) == 5
        (calls,) = receiver.latest("ebpftool.test.calls")
        assert calls.value == 2  # cumulative: the failed snapshot's counts are carried
        (dropped,) = receiver.latest(sc.EBPFTOOL_SPANS_DROPPED)
        assert dropped.value >= 1  # the span of the failed batch is reported as dropped
    finally:
        receiver.stop()


def test_jsonl_file_is_private_and_complete(tmp_path):
    path = tmp_path / "out.jsonl"
    resource = build_resource(environ={})
    telemetry = Telemetry(resource, [jsonl_sink(str(path), resource.attributes)])
    for i in range(3):
        telemetry.emit_span(_span(i))
    telemetry.export_metrics(_points(4))
    telemetry.shutdown()
    import json
    import stat

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert rows[0]["type"] == "resource"
    assert sum(r["type"] == "span" for r in rows) == 3
    calls = [r for r in rows if r.get("name") == "ebpftool.test.calls"]
    assert calls and calls[-1]["value"] == 4


class _HeldMetricSink:
    """A metric sink that takes each snapshot and holds the first until released (a busy collector)."""

    def __init__(self) -> None:
        self.taken = threading.Event()
        self.release = threading.Event()
        self.snapshots = []

    def export(self, metrics_data, timeout_millis: float = 0, **kwargs):
        from opentelemetry.sdk.metrics.export import MetricExportResult
        self.snapshots.append(metrics_data)
        self.taken.set()
        self.release.wait(20)
        return MetricExportResult.SUCCESS

    def shutdown(self, timeout_millis: float = 0, **kwargs) -> None:
        pass


def _values(data) -> list[float]:
    return [p.value for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
            for p in m.data.data_points if m.name == "test.requests"]


def test_the_last_snapshot_takes_the_place_of_the_stop_snapshot_without_a_loss():
    """A run's stop takes a snapshot, then its last once the tracers handed over what was pending: while the
    collector is busy, the last replaces the one from the stop (it holds all its counts) and nothing is counted
    superseded; an ordinary snapshot replaced while waiting is."""
    held = _HeldMetricSink()
    telemetry = Telemetry(build_resource(environ={}), [Sink("held", metrics=held)])
    telemetry.export_metrics([counter("test.requests", "{request}", "", 1)])
    assert held.taken.wait(20)                                               # the collector is busy with it
    telemetry.export_metrics([counter("test.requests", "{request}", "", 2)])   # an interval's: waits
    telemetry.export_metrics([counter("test.requests", "{request}", "", 3)])   # the stop's: the one before is lost
    telemetry.export_metrics([counter("test.requests", "{request}", "", 4)], after_stop_snapshot=True)
    held.release.set()
    telemetry.shutdown(timeout=20)
    c = telemetry.counters()
    assert [_values(d) for d in held.snapshots] == [[1], [4]]
    assert (c["metric_snapshots"], c["metric_snapshots_superseded"]) == (3, 1), c
