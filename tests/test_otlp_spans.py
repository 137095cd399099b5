"""ebpftool.export.otlp_spans against the SDK's own encoder: the same request, decoded by opentelemetry-proto."""
from __future__ import annotations

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

from ebpftool import semconv as sc
from ebpftool.export import otlp_spans
from ebpftool.export.model import SpanEvent, SpanRecord
from ebpftool.export.model import SpanKind as RecordKind
from ebpftool.export.otel import build_resource
from ebpftool.export.pipeline import to_readable_span

RESOURCE = Resource({"service.name": "ebpftool", "host.name": "node-1", "cloud.availability_zone": "z1"})
SCOPE = InstrumentationScope("ebpftool", "1.0")


def sdk_span(i: int = 1, *, kind=SpanKind.SERVER, status=Status(StatusCode.UNSET), attributes=None, events=(),
             resource=RESOURCE, scope=SCOPE, parent=None, links=(), trace_state=None) -> ReadableSpan:
    ctx = SpanContext(trace_id=(0x1234 << 100) + i, span_id=(0xABC << 50) + i, is_remote=False,
                      trace_flags=TraceFlags(TraceFlags.SAMPLED), trace_state=trace_state)
    return ReadableSpan(name=f"POST /v1/chat/completions {i}", context=ctx, parent=parent, resource=resource,
                        attributes=attributes if attributes is not None else {"http.request.method": "POST"},
                        events=list(events), links=list(links), kind=kind, status=status,
                        start_time=1_796_000_000_000_000_000 + i, end_time=1_796_000_000_123_456_789 + i,
                        instrumentation_scope=scope)


def same_as_sdk(spans) -> bytes:
    ours = otlp_spans.serialized_spans(spans)
    assert ExportTraceServiceRequest.FromString(ours) == encode_spans(spans)
    return ours


VALUES = {
    "a.string": "GET", "an.empty.string": "", "unicode": "zone-é-✓", "a.long.string": "x" * 300,
    "true": True, "false": False, "zero": 0, "an.int": 60413, "negative": -5, "int64.max": (1 << 63) - 1,
    "int64.min": -(1 << 63), "a.float": 0.25, "negative.zero": -0.0, "float.zero": 0.0, "a.big.float": 1e300,
    "strings": ["a", "b"], "ints": (1, 2, 3), "bools": [True, False], "floats": [0.5], "empty.list": [],
    "bytes": b"\x00\xff", "none": None, "a.mapping": {"k": "v", "n": 1},
}


@pytest.mark.parametrize("name", sorted(VALUES))
def test_each_attribute_value_as_the_sdk_writes_it(name):
    same_as_sdk([sdk_span(attributes={name: VALUES[name]})])


def test_every_kind_status_and_event_as_the_sdk_writes_them():
    spans = [sdk_span(i, kind=kind) for i, kind in enumerate(SpanKind)]
    spans += [sdk_span(10, status=Status(StatusCode.ERROR, "500")), sdk_span(11, status=Status(StatusCode.OK)),
              sdk_span(12, status=Status(StatusCode.ERROR))]
    spans.append(sdk_span(13, attributes=VALUES, events=[
        Event("gen_ai.first_token", {"gen_ai.token.index": 1}, timestamp=1_796_000_000_000_500_000),
        Event("empty", timestamp=1_796_000_000_000_600_000),
        Event("many", {k: v for k, v in VALUES.items() if v is not None}, timestamp=5)]))
    same_as_sdk(spans)


def test_spans_grouped_by_resource_and_scope_as_the_sdk_groups_them():
    other = Resource({"service.name": "other"}, schema_url="https://opentelemetry.io/schemas/1.26.0")
    scoped = InstrumentationScope("x", None, "https://opentelemetry.io/schemas/1.27.0", {"scope.attr": 1})
    spans = [sdk_span(1), sdk_span(2, resource=other), sdk_span(3, scope=scoped), sdk_span(4), sdk_span(5, scope=None),
             sdk_span(6, resource=Resource({}))]
    same_as_sdk(spans)
    same_as_sdk([])


def test_what_this_encoder_does_not_write_goes_to_the_sdk_encoder():
    parent = SpanContext(trace_id=7, span_id=8, is_remote=True)
    for span in (sdk_span(1, parent=parent), sdk_span(2, links=[Link(parent, {"a": 1})]),
                 sdk_span(3, trace_state=TraceState([("k", "v")])), sdk_span(4, attributes={"huge": 1 << 70}),
                 sdk_span(5, attributes={"odd": object()})):
        with pytest.raises(otlp_spans.Unsupported):
            otlp_spans.encode_span_request([span])
        if "odd" not in (span.attributes or {}):
            same_as_sdk([sdk_span(0), span])


def test_the_pipeline_spans_alike_the_first_time_and_from_the_memo():
    resource = build_resource("svc", zone="z1", region="r1", environ={})
    records = [SpanRecord(name="POST /v1/chat/completions", start_ns=1_000 + i, end_ns=5_000_000 + i, kind=RecordKind.SERVER,
                          attributes={sc.HTTP_REQUEST_METHOD: "POST", sc.SERVER_PORT: 8000, sc.CLIENT_PORT: 40000 + i,
                                      sc.HTTP_RESPONSE_STATUS_CODE: 200 if i % 3 else 500, sc.URL_PATH: "/v1/chat/completions",
                                      sc.GEN_AI_USAGE_OUTPUT_TOKENS: i, "ebpftool.http.pipelined": bool(i % 2)},
                          events=[SpanEvent("gen_ai.first_token", 2_000 + i, {})], error=i % 3 == 0)
               for i in range(50)]
    spans = [to_readable_span(r, resource) for r in records]
    otlp_spans._kv_memo.clear()
    first = same_as_sdk(spans)
    assert otlp_spans._kv_memo  # the repeated pairs were kept
    assert same_as_sdk(spans) == first
