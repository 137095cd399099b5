"""OTLP span requests written straight to protobuf bytes, for the SDK's OTLP exporters.

The SDK's encoder (opentelemetry.exporter.otlp.proto.common's encode_spans) builds a protobuf object for
every attribute, key and value of every span and then serializes the tree; for the spans this tool sends
that is most of what a span costs its process. Here the same ExportTraceServiceRequest is written as
bytes, the key-value pairs that repeat from span to span (method, scheme, process, path, model) taken from
a memo. What it produces decodes to a message equal to the SDK's (tests/test_otlp_spans.py); a batch with
what these spans never carry (links, a parent, a trace state, values of other types) goes to the SDK's
encoder instead. The exporters below are the SDK's, with only their encoding step replaced; each keeps
the size of what it last sent, for the exported-bytes counter.
"""
from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence

_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
_MEMO_MAX = 8192  # key-value pairs remembered (cleared when full: ports and pids come and go)
_SMALL = [bytes((n,)) for n in range(128)]
_pack_q = struct.Struct("<Q").pack
_pack_d = struct.Struct("<d").pack
_kv_memo: dict[tuple, bytes] = {}


class Unsupported(Exception):
    """Something in the batch this encoder does not write: the SDK's encoder takes the batch."""


def _varint(n: int) -> bytes:
    if n < 0x80:
        return _SMALL[n]
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: its tag, the payload's length, the payload."""
    n = len(payload)
    return tag + (_SMALL[n] if n < 0x80 else _varint(n)) + payload


def _any_value(value) -> bytes:
    """An AnyValue message's bytes, as the SDK's _encode_value chooses the field."""
    if value is None:
        return b""
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, str):
        return _field(b"\x0a", value.encode())
    if isinstance(value, int):
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise Unsupported("an integer outside int64")
        return b"\x18" + _varint(value & 0xFFFFFFFFFFFFFFFF)
    if isinstance(value, float):
        return b"\x21" + _pack_d(value)
    if isinstance(value, bytes):
        return _field(b"\x3a", value)
    if isinstance(value, Sequence):
        return _field(b"\x2a", b"".join(_field(b"\x0a", _any_value(v)) for v in value))
    if isinstance(value, Mapping):
        return _field(b"\x32", b"".join(_field(b"\x0a", _key_value(str(k), v)) for k, v in value.items()))
    raise Unsupported(f"a value of type {type(value).__name__}")


def _key_value(key: str, value) -> bytes:
    """A KeyValue message's bytes."""
    return _field(b"\x0a", key.encode()) + _field(b"\x12", _any_value(value))


def _attributes(tag: bytes, attributes) -> bytes:
    """Repeated KeyValue fields; the pairs of plain values from the memo."""
    if not attributes:
        return b""
    parts = []
    memo = _kv_memo
    for key, value in attributes.items():
        cls = value.__class__
        if cls is str or cls is int or cls is bool:  # not floats: 0.0 == -0.0, and they seldom repeat
            mk = (tag, key, cls, value)  # the class too: True == 1 as a dict key
            kv = memo.get(mk)
            if kv is None:
                kv = _field(tag, _key_value(key, value))
                if len(memo) >= _MEMO_MAX:
                    memo.clear()
                memo[mk] = kv
            parts.append(kv)
        else:
            parts.append(_field(tag, _key_value(key, value)))
    return b"".join(parts)


def _resource(resource) -> bytes:
    return _attributes(b"\x0a", resource.attributes)


def _scope(scope) -> bytes:
    if scope is None:
        return b""
    out = b""
    if scope.name:
        out += _field(b"\x0a", scope.name.encode())
    if scope.version:
        out += _field(b"\x12", scope.version.encode())
    return out + _attributes(b"\x1a", scope.attributes)


def _span(span) -> bytes:
    """A Span message's bytes; Unsupported for what the SDK's encoder must write."""
    if span.links or span.parent is not None:
        raise Unsupported("links or a parent")
    ctx = span.context
    if ctx.trace_state:
        raise Unsupported("a trace state")
    out = [
        b"\x0a\x10", ctx.trace_id.to_bytes(16, "big"),
        b"\x12\x08", ctx.span_id.to_bytes(8, "big"),
        _field(b"\x2a", span.name.encode()),
        b"\x30", _SMALL[span.kind.value + 1],  # the SDK's kinds count from INTERNAL = 0, OTLP's from 1
        b"\x39", _pack_q(span.start_time),
        b"\x41", _pack_q(span.end_time),
        _attributes(b"\x4a", span.attributes),
    ]
    if span.dropped_attributes:
        out += [b"\x50", _varint(span.dropped_attributes)]
    for event in span.events:
        body = b"\x09" + _pack_q(event.timestamp) + _field(b"\x12", event.name.encode())
        body += _attributes(b"\x1a", event.attributes)
        if event.dropped_attributes:
            body += b"\x20" + _varint(event.dropped_attributes)
        out.append(_field(b"\x5a", body))
    if span.dropped_events:
        out += [b"\x60", _varint(span.dropped_events)]
    status = span.status
    body = b""
    if status.description:
        body += _field(b"\x12", status.description.encode())
    if status.status_code.value:
        body += b"\x18" + _SMALL[status.status_code.value]
    out.append(_field(b"\x7a", body))
    out.append(b"\x85\x01\x00\x01\x00\x00")  # flags (fixed32): the parent's remoteness is known (no parent)
    return b"".join(out)


def encode_span_request(spans) -> bytes:
    """An ExportTraceServiceRequest's bytes for these SDK spans, grouped by resource and scope as the
    SDK's encoder groups them; Unsupported where that encoder must take them."""
    by_object: dict[tuple[int, int], tuple] = {}  # an SDK resource hashes its attributes as JSON each time
    for span in spans:
        resource, scope = span.resource, span.instrumentation_scope or None
        group = by_object.get((id(resource), id(scope)))
        if group is None:
            group = by_object[(id(resource), id(scope))] = (resource, scope, [])
        group[2].append(_span(span))
    groups: dict = {}  # equal resources (and scopes) together, as the SDK's encoder groups them
    for resource, scope, encoded in by_object.values():
        groups.setdefault(resource, {}).setdefault(scope, []).extend(encoded)
    request = []
    for resource, scopes in groups.items():
        body = _field(b"\x0a", _resource(resource))
        for scope, encoded in scopes.items():
            scope_body = _field(b"\x0a", _scope(scope)) + b"".join(_field(b"\x12", s) for s in encoded)
            if scope is not None and scope.schema_url:
                scope_body += _field(b"\x1a", scope.schema_url.encode())
            body += _field(b"\x12", scope_body)
        if resource.schema_url:
            body += _field(b"\x1a", resource.schema_url.encode())
        request.append(_field(b"\x0a", body))
    return b"".join(request)


def serialized_spans(spans) -> bytes:
    """The request's bytes: this module's encoding, or the SDK's where this one does not apply."""
    try:
        return encode_span_request(spans)
    except Unsupported:
        from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

        return encode_spans(spans).SerializePartialToString()


def grpc_span_exporter(**kwargs):
    """The SDK's gRPC span exporter, its request parsed from this module's bytes (a C parse, cheap)."""
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    class GrpcSpanExporter(OTLPSpanExporter):
        last_size = 0

        def _translate_data(self, data):
            payload = serialized_spans(data)
            self.last_size = len(payload)
            return ExportTraceServiceRequest.FromString(payload)

    return GrpcSpanExporter(**kwargs)


def http_span_exporter(**kwargs):
    """The SDK's HTTP span exporter, sending this module's bytes through its own client (retries, headers,
    compression, size limit: the SDK's). An SDK whose exporter has no such client encodes as it does."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import SpanExportResult

    class HttpSpanExporter(OTLPSpanExporter):
        last_size = 0

        def export(self, spans):
            if self._shutdown:
                return super().export(spans)  # the SDK's refusal, logged as it does
            client = getattr(self, "_client", None)
            limit = getattr(self, "_max_request_size", None)
            payload = serialized_spans(spans)
            self.last_size = len(payload)  # equal requests: the SDK's encoding has the same size
            if client is None or not hasattr(client, "export") or (limit is not None and len(payload) > limit):
                return super().export(spans)  # the SDK encodes and sends (or refuses, logged as it does)
            return SpanExportResult.SUCCESS if client.export(payload).success else SpanExportResult.FAILURE

    return HttpSpanExporter(**kwargs)
