"""HTTP/2 and gRPC streams: the kernel's records of each HTTP/2 connection (bpf/inference/http2.bpf.h: the
connection's name, then each direction's bytes in order, DATA past its first bytes left out) fed to an
http2.Connection per connection. Each stream that ends is measured here, every one of them (HPACK can only be
decoded in user space, so these metrics cannot come from kernel maps), and becomes a span within the span
budget (a token bucket at --span-rate, as the kernel's is for HTTP/1)."""
from __future__ import annotations

import ctypes
import struct
from bisect import bisect_left
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from ebpftool.core.bpf import HistSum
from ebpftool.core.cstruct import cstring, decode
from ebpftool.core.netaddr import format_address
from ebpftool.core.tracer import SpanAllowance
from ebpftool import semconv as sc
from ebpftool.export.model import MetricPoint, SpanEvent, SpanKind, SpanRecord, counter, histogram, seconds_histogram
from ebpftool.tracers.inference import h2_genai, http2, parsers
from ebpftool.tracers.inference.records import H, STRUCTS

H2_CONNECTIONS_MAX = 4096   # HTTP/2 connections followed at once in user space (each holds two HPACK tables)

# gRPC status codes (grpc/doc/statuscodes.md) and those that are errors on the server's side (the semantic
# conventions' gRPC page: a server span's error.type and status ERROR)
GRPC_STATUS = ("OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
               "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
               "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED")
GRPC_SERVER_ERRORS = {"UNKNOWN", "DEADLINE_EXCEEDED", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS"}
NO_STATUS = "no_status"     # error.type of an RPC that ended without grpc-status (reset, connection closed)


# A call that an RST_STREAM ended before any trailers, read as gRPC reads it (grpc/doc/PROTOCOL-HTTP2.md,
# "Errors"): CANCEL is the call's cancellation (a client's cancel or deadline; CANCELLED when the server sent
# it), REFUSED_STREAM means nothing was processed; STREAM_CLOSED and codes the table lacks have no status.
RST_STREAM_STATUS = {0: "INTERNAL", 1: "INTERNAL", 2: "INTERNAL", 3: "INTERNAL", 4: "INTERNAL", 6: "INTERNAL",
                     7: "UNAVAILABLE", 8: "CANCELLED", 9: "INTERNAL", 10: "INTERNAL", 11: "RESOURCE_EXHAUSTED",
                     12: "PERMISSION_DENIED"}


def grpc_status_name(code: int | None) -> str:
    if code is None:
        return NO_STATUS
    return GRPC_STATUS[code] if 0 <= code < len(GRPC_STATUS) else str(code)


def grpc_call_status(s: http2.H2Stream) -> str:
    """The status of a gRPC call: its trailers' grpc-status; else, for a call ended by RST_STREAM, the status
    gRPC maps its error code to; else `no_status` (the connection closed, a GOAWAY)."""
    if s.grpc_status is None and s.end_reason == "rst_stream" and s.rst_error in RST_STREAM_STATUS:
        return RST_STREAM_STATUS[s.rst_error]
    return grpc_status_name(s.grpc_status)


@dataclass
class H2Peer:
    """What names one HTTP/2 connection (struct h2_open_event)."""
    pid: int
    port: int
    cgroup: int
    tls: bool
    client: str | None
    client_port: int
    comm: str


@dataclass
class _Followed:
    peer: H2Peer
    # the kernel sends a connection's bytes from its first frame on (the client preface it checked is left out)
    conn: http2.Connection = field(default_factory=lambda: http2.Connection(preface_seen=True))
    whole_data: bool = False   # put in the kernel's h2_whole_data: its server DATA frames come whole


# The metrics measured here: (unit, description, bounds, nanoseconds: the values are ns, exported as seconds);
# bounds None: a counter. The generative-AI ones are HTTP/1's (metrics.py, from the kernel's maps): the same
# names, units, descriptions and bounds.
H2_METRICS: dict[str, tuple[str, str, tuple | None, bool]] = {
    sc.HTTP_SERVER_REQUEST_DURATION: ("s", "Duration of HTTP server requests", sc.HTTP_DURATION_BUCKETS, True),
    sc.RPC_SERVER_CALL_DURATION: ("s", "Duration of incoming remote procedure calls (gRPC)",
                                  sc.RPC_SERVER_CALL_DURATION_BUCKETS, True),
    sc.EBPFTOOL_RPC_TIME_TO_FIRST_MESSAGE: ("s", "Time from a gRPC call's request to its first response message",
                                            sc.GEN_AI_TTFT_BUCKETS, True),
    sc.EBPFTOOL_RPC_RESPONSES_PER_RPC: ("{message}", "Messages a gRPC call answered with",
                                        sc.RPC_RESPONSES_PER_RPC_BUCKETS, False),
    sc.GEN_AI_SERVER_REQUEST_DURATION: ("s", "Generative AI server request duration",
                                        sc.GEN_AI_REQUEST_DURATION_BUCKETS, True),
    sc.GEN_AI_SERVER_TIME_TO_FIRST_TOKEN: ("s", "Time to generate the first token (first `data:` event written)",
                                           sc.GEN_AI_TTFT_BUCKETS, True),
    sc.GEN_AI_SERVER_TIME_PER_OUTPUT_TOKEN: ("s", "Time per output token after the first (between `data:` events)",
                                             sc.GEN_AI_TPOT_BUCKETS, True),
    sc.EBPFTOOL_GEN_AI_OUTPUT_TOKENS: ("{token}", "Output tokens streamed (`data:` events other than [DONE])",
                                       None, False),
}


class _Histograms:
    """Cumulative histograms (and counters) of H2_METRICS kept in user space: (metric, attributes) -> counts."""

    def __init__(self) -> None:
        self.series: dict[tuple, tuple[dict[str, Any], HistSum]] = {}
        self.counters: dict[tuple, list] = {}   # (metric, attributes) -> [attributes, total]

    def count(self, metric: str, attrs: dict[str, Any], value: int) -> None:
        key = (metric, tuple(sorted(attrs.items())))
        entry = self.counters.get(key)
        if entry is None:
            entry = self.counters[key] = [attrs, 0]
        entry[1] += value

    def add(self, metric: str, attrs: dict[str, Any], value: int) -> None:
        _unit, _description, bounds, nanoseconds = H2_METRICS[metric]
        key = (metric, tuple(sorted(attrs.items())))
        entry = self.series.get(key)
        if entry is None:
            entry = self.series[key] = (attrs, HistSum(buckets=[0] * (len(bounds) + 1)))
        h = entry[1]
        h.minimum = value if not h.count else min(h.minimum, value)
        h.maximum = max(h.maximum, value)
        h.count += 1
        h.total += value
        h.buckets[bisect_left(bounds, value / 1e9 if nanoseconds else value)] += 1

    def of(self, metric: str) -> list[tuple[dict[str, Any], HistSum]]:
        """The series of one metric: (attributes, histogram)."""
        return [entry for (name, _key), entry in self.series.items() if name == metric]

    def points(self, leave_out: tuple[str, ...] = ()) -> list[MetricPoint]:
        out = []
        for (metric, _key), (attrs, h) in self.series.items():
            if metric in leave_out:
                continue
            unit, description, bounds, nanoseconds = H2_METRICS[metric]
            if nanoseconds:
                out.append(seconds_histogram(metric, description, attrs, h, bounds))
            else:
                out.append(histogram(metric, unit, description, attrs, count=h.count, total=h.total,
                                     minimum=h.minimum, maximum=h.maximum, bucket_counts=h.buckets, bounds=bounds))
        for (metric, _key), (attrs, total) in self.counters.items():
            unit, description, _bounds, _nanoseconds = H2_METRICS[metric]
            out.append(counter(metric, unit, description, total, attrs))
        return out


class InferenceHttp2:
    """Mixed into InferenceTracer: HTTP/2 records to streams, metrics and spans (state: _h2, _h2_hist, h2_*
    counters; uses exe(), clock, cgroups, telemetry, opts.span_rate, _server_rates, and the tracer's
    span_shift and prog, whose defaults below serve a mixin used alone: no kernel, spans not thinned)."""

    span_shift = 0
    prog = None

    def _h2_init(self) -> None:
        self._h2: OrderedDict[int, _Followed] = OrderedDict()
        self._h2_hist = _Histograms()
        self._h2_open_t = STRUCTS["h2_open_event"]
        self._h2_head = STRUCTS["h2_bytes_event"].data.offset
        self.h2_streams = 0               # streams measured
        self.h2_given_up = 0              # connections whose bytes did not parse (H2Error): not measured further
        self.h2_from_headers = 0          # of them, those begun by the client's HEADERS (not an h2c Upgrade)
        self._h2_unseen: set[int] = set()  # followed connections the kernel's table lacked at the last look
        self.h2_spans_over_budget = 0
        self._h2_lost_by_port: dict[int, int] = {}
        self._h2_spans = SpanAllowance(getattr(self.opts, "span_rate", 0))   # the kernel sends every stream

    # -- records in --------------------------------------------------------------------------------------
    def _on_h2_record(self, kind: int, data: bytes) -> None:
        if kind == H["EVENT_H2_BYTES"]:
            conn_id, ts, length, skip, from_server, first_len, arrival, arrival_first = BYTES_HEAD.unpack_from(data)
            f = self._h2.get(conn_id)
            if f is None or f.conn.error is not None:
                return
            sender = http2.SERVER if from_server else http2.CLIENT
            payload = data[self._h2_head:self._h2_head + length]
            # the client's bytes are timed by their arrival where the kernel saw it (a request the server read late
            # began when it arrived), else by the read; the first first_len of them came earlier, at arrival_first
            if sender == http2.CLIENT and 0 < arrival <= ts:
                ts = arrival
            try:
                if sender == http2.CLIENT and first_len and 0 < arrival_first < ts:
                    streams = f.conn.feed(sender, payload[:first_len], arrival_first, 0)
                    streams += f.conn.feed(sender, payload[first_len:], ts, skip)
                else:
                    streams = f.conn.feed(sender, payload, ts, skip)
            except http2.H2Error:
                self.h2_given_up += 1
                self._h2_drop(conn_id, f)
                return
            for s in streams:
                self._h2_stream_done(f.peer, s)
            if f.conn.carries_gen_ai and not f.whole_data:
                self._h2_whole_data(conn_id, f, True)
            return
        e = decode(self._h2_open_t, data)
        if kind == H["EVENT_H2_OPEN"]:
            peer = H2Peer(e.pid, e.port, e.cgroup, bool(e.tls), format_address(bytes(e.client_addr), e.family),
                          e.client_port, cstring(e.comm))
            followed = self._h2[e.conn] = _Followed(peer)
            if e.upgrade_start:
                self._h2_upgraded(followed, e)
                if followed.conn.carries_gen_ai:
                    self._h2_whole_data(e.conn, followed, True)
            if len(self._h2) > H2_CONNECTIONS_MAX:
                conn_id, oldest = self._h2.popitem(last=False)
                self._h2_drop(conn_id, oldest, pop=False)
        elif kind == H["EVENT_H2_CLOSE"]:
            f = self._h2.pop(e.conn, None)
            if f is None:
                return
            self._h2_whole_data(e.conn, f, False)
            if e.lost or f.conn.error is not None:
                self._h2_drop(e.conn, f, pop=False)
                return
            for s in f.conn.close():
                if s.request_start_ns is not None:
                    s.end_ns, s.end_reason = e.ts, "closed"
                    self._h2_stream_done(f.peer, s)

    def _h2_upgraded(self, f: _Followed, e) -> None:
        """An h2c Upgrade: its HTTP/1.1 request (the kernel read it as HTTP/1 and sent its first bytes) is
        stream 1, begun when that request did; the captures of it sent as an HTTP/1 request (when it took a
        span) give a generative-AI request's model from the body's first bytes, and are not a span of their
        own (its answer is HTTP/2's)."""
        captures = self._pending.pop((e.conn, e.upgrade_seq), None) or []
        line = parsers.request_line_start(bytes(e.line[:min(int(e.line_len), len(e.line))]))
        method, target = line if line else (parsers.OTHER_METHOD, "")
        stream = f.conn.upgraded_request(method, target, e.upgrade_start)
        if not target:
            stream.path = None
        head = b"".join(d for part, d in captures if part == H["PART_REQUEST_HEAD"])
        body = head.partition(b"\r\n\r\n")[2]
        if stream.gen_ai is not None and body:
            stream.gen_ai.request(body)

    def _h2_whole_data(self, conn_id: int, f: _Followed, whole: bool) -> None:
        """Ask the kernel for a connection's server DATA frames whole (a generative-AI stream's events may be
        packed into frames longer than the first and last 512 bytes it sends otherwise), or no longer."""
        if f.whole_data == whole or self.prog is None:
            return
        f.whole_data = whole
        table, key = self.prog["h2_whole_data"], ctypes.c_ulonglong(conn_id)
        if whole:
            table[key] = ctypes.c_ubyte(1)
        else:
            table.pop(key, None)

    def _h2_drop(self, conn_id: int, f: _Followed, pop: bool = True) -> None:
        """A connection no longer followed: its open streams are not measured (h2_streams_lost counts them)."""
        self._h2_whole_data(conn_id, f, False)
        if pop:
            self._h2.pop(conn_id, None)
        if f.conn.error is not None or f.conn.streams:
            self._h2_lost_by_port[f.peer.port] = self._h2_lost_by_port.get(f.peer.port, 0) + 1
        f.conn.streams.clear()

    def _h2_forget_gone(self, alive: set[int]) -> None:
        """Connections followed here that the kernel no longer follows, at two looks in a row (their end was
        lost with the ring buffer full, or is still on its way at the first look): given up."""
        gone = {conn_id for conn_id in self._h2 if conn_id not in alive}
        for conn_id in gone & self._h2_unseen:
            self._h2_drop(conn_id, self._h2[conn_id])
        self._h2_unseen = gone - self._h2_unseen

    def h2_streams_lost(self, begun: int) -> int:
        """Streams begun by a client's HEADERS that user space was sent (begun: the kernel's count) and neither
        measured nor holds open now: in records lost, open on connections given up or whose end was lost."""
        open_now = sum(len(f.conn.streams) for f in self._h2.values() if f.conn.error is None)
        return max(0, begun - self.h2_from_headers - open_now)

    # -- a stream ended ------------------------------------------------------------------------------------
    def _h2_stream_done(self, peer: H2Peer, s: http2.H2Stream) -> None:
        if s.request_start_ns is None or s.end_ns is None or s.pushed:
            return  # its request was not seen (a push, or the connection picked up midway)
        self.h2_streams += 1
        if not s.upgraded:
            self.h2_from_headers += 1
        duration = max(0, s.end_ns - s.request_start_ns)
        workload = self.cgroups.workload_attributes(peer.cgroup)
        rpc = s.rpc
        attrs: dict[str, Any] = {sc.SERVER_PORT: peer.port, **workload}
        if s.grpc:
            status = grpc_call_status(s)
            attrs[sc.RPC_SYSTEM_NAME] = "grpc"
            attrs[sc.RPC_METHOD] = f"{rpc[0]}/{rpc[1]}" if rpc else parsers.OTHER_METHOD
            attrs[sc.RPC_RESPONSE_STATUS_CODE] = status
            error = status in GRPC_SERVER_ERRORS or status == NO_STATUS
            if error:
                attrs[sc.ERROR_TYPE] = status
            self._h2_hist.add(sc.RPC_SERVER_CALL_DURATION, attrs, duration)
            if s.response_messages and not s.messages_lost:
                self._h2_hist.add(sc.EBPFTOOL_RPC_RESPONSES_PER_RPC, attrs, s.response_messages)
            if s.first_message_ns is not None:
                self._h2_hist.add(sc.EBPFTOOL_RPC_TIME_TO_FIRST_MESSAGE, attrs, time_to_first_message(s))
        else:
            method = s.method if s.method in parsers.METHODS else parsers.OTHER_METHOD
            attrs[sc.HTTP_REQUEST_METHOD] = method
            attrs[sc.URL_SCHEME] = "https" if peer.tls else "http"
            attrs[sc.NETWORK_PROTOCOL_VERSION] = "2"
            if s.status:
                attrs[sc.HTTP_RESPONSE_STATUS_CODE] = s.status
            error = not s.status or s.status >= 500
            if error:
                attrs[sc.ERROR_TYPE] = str(s.status) if s.status else "no_response"
            self._h2_hist.add(sc.HTTP_SERVER_REQUEST_DURATION, attrs, duration)
            if s.gen_ai is not None:
                self._h2_gen_ai_metrics(s, s.gen_ai, attrs, workload, duration)
        if self._h2_spans.take(self.span_shift):
            self._h2_span(peer, s, attrs, error)
        else:
            self.h2_spans_over_budget += 1

    def _h2_gen_ai_metrics(self, s: http2.H2Stream, g: h2_genai.GenAiReader, http_attrs: dict[str, Any],
                           workload: dict[str, Any], duration: int) -> None:
        """A generative-AI request's histograms and token count, as the kernel's add_gen_ai_metrics() makes
        them for HTTP/1 (requests.bpf.h), with network.protocol.version 2: a port that speaks both has two
        series, not one point twice."""
        g.finish()
        attrs = gen_ai_attributes(g, http_attrs, workload)
        self._h2_hist.add(sc.GEN_AI_SERVER_REQUEST_DURATION, attrs, duration)
        if g.tokens > 0:
            self._h2_hist.add(sc.GEN_AI_SERVER_TIME_TO_FIRST_TOKEN, attrs, time_to_first_token(s, g))
        if g.output_tokens > 0:
            self._h2_hist.count(sc.EBPFTOOL_GEN_AI_OUTPUT_TOKENS, {**attrs, sc.GEN_AI_TOKEN_TYPE: "output"},
                                g.output_tokens)
        if g.tokens > 1:
            self._h2_hist.add(sc.GEN_AI_SERVER_TIME_PER_OUTPUT_TOKEN, attrs, time_per_output_token(g))

    def drops(self) -> dict[str, int]:
        """The kernel's drops, and the HTTP/2 spans the user-space budget refused (ebpftool.spans.unsampled)."""
        out = super().drops()
        out["spans_unsampled"] += self.h2_spans_over_budget
        return out

    def _h2_span(self, peer: H2Peer, s: http2.H2Stream, metric_attrs: dict[str, Any], error: bool) -> None:
        attrs = dict(metric_attrs)
        attrs[sc.PROCESS_PID] = peer.pid
        attrs[sc.PROCESS_EXECUTABLE_NAME] = self.exe(peer.pid, peer.comm)
        attrs[sc.NETWORK_PROTOCOL_VERSION] = "2"
        attrs[sc.URL_SCHEME] = "https" if peer.tls else "http"
        if peer.client:
            attrs[sc.CLIENT_ADDRESS] = peer.client
            attrs[sc.CLIENT_PORT] = peer.client_port
        if s.path:
            attrs[sc.URL_PATH] = s.path
        events = []
        if s.grpc:
            name = attrs[sc.RPC_METHOD]
            attrs[sc.EBPFTOOL_RPC_RESPONSE_MESSAGES] = s.response_messages
            if s.first_message_ns is not None:
                attrs[sc.EBPFTOOL_RPC_TIME_TO_FIRST_MESSAGE] = time_to_first_message(s) / 1e9
                events.append(SpanEvent("ebpftool.rpc.first_message", self.clock.to_wall_ns(s.first_message_ns)))
            message = f"gRPC {attrs[sc.RPC_RESPONSE_STATUS_CODE]}"
        else:
            name = f"{attrs[sc.HTTP_REQUEST_METHOD]} {parsers.path_template(s.path)}" if s.path else \
                attrs[sc.HTTP_REQUEST_METHOD]
            message = f"HTTP {s.status}" if s.status else "closed without a response"
            g = s.gen_ai
            if g is not None:   # as spans.py gives an HTTP/1 generative-AI request
                g.finish()
                attrs[sc.GEN_AI_OPERATION_NAME] = g.operation
                if g.request_model:
                    attrs[sc.GEN_AI_REQUEST_MODEL] = g.request_model
                if g.response_model:
                    attrs[sc.GEN_AI_RESPONSE_MODEL] = g.response_model
                if g.stated_input_tokens is not None:
                    attrs[sc.GEN_AI_USAGE_INPUT_TOKENS] = g.stated_input_tokens
                if g.stated_output_tokens is not None or g.events:  # an event stream of no token: 0
                    attrs[sc.GEN_AI_USAGE_OUTPUT_TOKENS] = g.output_tokens
                if g.tokens:
                    attrs[sc.EBPFTOOL_GEN_AI_TIME_TO_FIRST_TOKEN] = time_to_first_token(s, g) / 1e9
                    events.append(SpanEvent(sc.EBPFTOOL_GEN_AI_FIRST_TOKEN_EVENT, self.clock.to_wall_ns(g.first_token_ns)))
                if g.tokens > 1:
                    attrs[sc.EBPFTOOL_GEN_AI_TIME_PER_OUTPUT_TOKEN] = time_per_output_token(g) / 1e9
                if g.unseen_bytes:
                    attrs[sc.EBPFTOOL_GEN_AI_RESPONSE_UNSEEN_BYTES] = g.unseen_bytes
        span = SpanRecord(name, self.clock.to_wall_ns(s.request_start_ns), self.clock.to_wall_ns(s.end_ns),
                          kind=SpanKind.SERVER, attributes=attrs, events=events, error=error,
                          status_message=message if error else "")
        self._server_rates.saw_span(span.attributes)
        self.telemetry.emit_span(span)
        self.spans_sent += 1

    # -- metrics ---------------------------------------------------------------------------------------------
    def _h2_points(self) -> list[MetricPoint]:
        """The metrics measured here but the request duration, which collect() merges with the kernel's."""
        points = self._h2_hist.points(leave_out=(sc.HTTP_SERVER_REQUEST_DURATION,))
        for port, n in self._h2_lost_by_port.items():
            points.append(counter(sc.EBPFTOOL_HTTP2_LOST_CONNECTIONS, "{connection}",
                                  "HTTP/2 connections given up in user space (records lost, or bytes that did "
                                  "not parse): their open streams not measured; after a loss of records the "
                                  "kernel measures the streams that begin", n, {sc.SERVER_PORT: port}))
        return points


def gen_ai_attributes(g: h2_genai.GenAiReader, http_attrs: dict[str, Any], workload: dict[str, Any]) -> dict[str, Any]:
    """The attributes of a generative-AI request's metrics: HTTP/1's (metrics.py _key_attrs: port, workload,
    operation, the answer's model, error.type) and network.protocol.version."""
    attrs: dict[str, Any] = {sc.SERVER_PORT: http_attrs[sc.SERVER_PORT], **workload,
                             sc.GEN_AI_OPERATION_NAME: g.operation, sc.NETWORK_PROTOCOL_VERSION: "2"}
    if g.response_model:
        attrs[sc.GEN_AI_RESPONSE_MODEL] = g.response_model
    if sc.ERROR_TYPE in http_attrs:
        attrs[sc.ERROR_TYPE] = http_attrs[sc.ERROR_TYPE]
    return attrs


def time_to_first_token(s: http2.H2Stream, g: h2_genai.GenAiReader) -> int:
    """ns from the request's start to the first token event (g.tokens > 0)."""
    return max(0, g.first_token_ns - s.request_start_ns)


def time_per_output_token(g: h2_genai.GenAiReader) -> int:
    """ns between token events after the first, on average (g.tokens > 1)."""
    return (g.last_token_ns - g.first_token_ns) // (g.tokens - 1)


def time_to_first_message(s: http2.H2Stream) -> int:
    """ns from when the call asked (asked_at) to its first response message (first_message_ns set)."""
    return max(0, s.first_message_ns - asked_at(s))


def asked_at(s: http2.H2Stream) -> int:
    """When a call asked for its first answer: its first request message where that came before the first
    response message (a bidirectional stream such as Triton's ModelStreamInfer opens with HEADERS and sends its
    request later: the wait in between is the client's, not the server's), else its HEADERS."""
    asked = s.first_request_message_ns
    if asked is not None and s.request_start_ns <= asked <= (s.first_message_ns or asked):
        return asked
    return s.request_start_ns


def _head_struct(struct_type, fields: tuple[tuple[str, str], ...]) -> struct.Struct:
    """A struct.Struct reading these fields (name, struct code) of a record at the offsets its C header gives
    (one unpack per record, where a ctypes copy of the whole header was made for a few of its fields)."""
    fmt, at = "<", 0
    for name, code in sorted(fields, key=lambda f: getattr(struct_type, f[0]).offset):
        offset = getattr(struct_type, name).offset
        fmt += f"{offset - at}x{code}" if offset > at else code
        at = offset + struct.calcsize("<" + code)
    return struct.Struct(fmt)


# conn, ts, len, skip, from_server, first_len, arrival, arrival_first of an h2_bytes_event
BYTES_HEAD = _head_struct(STRUCTS["h2_bytes_event"], (("conn", "Q"), ("ts", "Q"), ("len", "I"), ("skip", "I"),
                                                       ("from_server", "B"), ("first_len", "I"), ("arrival", "Q"),
                                                       ("arrival_first", "Q")))
