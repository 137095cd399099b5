"""The inference tracer's spans: a request event from the kernel and the captures of its bytes become one
SERVER span (path, model and usage parsed from the captures by ebpftool.tracers.inference.parsers)."""
from __future__ import annotations

from collections import OrderedDict
from typing import Any

from ebpftool.core.cstruct import cstring, decode
from ebpftool.core.netaddr import format_address
from ebpftool.core import procfs
from ebpftool import semconv as sc
from ebpftool.export.model import SpanEvent, SpanKind, SpanRecord
from ebpftool.tracers.inference import parsers
from ebpftool.tracers.inference.records import H, METHOD_NAMES, NO_RESPONSE, OPERATIONS

PENDING_CAPTURES_MAX = 20000  # sampled requests whose captures wait for their end event
EXE_CACHE_MAX = 4096  # processes whose executable name is remembered (pids come and go)


class InferenceSpans:
    """Mixed into InferenceTracer: its ring buffer's records to spans (state: _pending, _exe, spans_sent,
    unparsable_captures, _capture_t, _request_t, clock, cgroups, telemetry, _server_rates: the live view learns
    each server's model and process from its spans)."""

    _pending: OrderedDict[tuple[int, int], list[tuple[int, bytes]]]
    _exe: dict[int, str]

    def _on_event(self, data: bytes) -> None:
        kind = int.from_bytes(data[:4], "little")
        if kind == H["EVENT_CAPTURE"]:
            conn, seq, part, length = self._capture_fields(data)  # no copy of the whole record's struct
            key = (conn, seq)
            parts = self._pending.get(key)
            if parts is None:
                parts = self._pending[key] = []
                if len(self._pending) > PENDING_CAPTURES_MAX:
                    self._pending.popitem(last=False)
            start = self._capture_data_at
            parts.append((part, bytes(data[start:start + min(length, H["CAPTURE_MAX"])])))
        elif kind == H["EVENT_REQUEST"]:
            e = decode(self._request_t, data)
            parts = self._pending.pop((e.conn, e.seq), [])
            span = self.span_of(e, parts)
            self._server_rates.saw_span(span.attributes)
            self.telemetry.emit_span(span)
            self.spans_sent += 1
        elif kind in (H["EVENT_H2_OPEN"], H["EVENT_H2_BYTES"], H["EVENT_H2_CLOSE"]):
            self._on_h2_record(kind, data)   # HTTP/2 (h2_streams.py)

    def exe(self, pid: int, comm: str = "") -> str:
        """process.executable.name: the base name of /proc/PID/exe (a thread's comm, such as Ray's
        `ray::IDLE`, names a thread, not the program); the comm only when the process is gone."""
        if pid not in self._exe:
            self._exe[pid] = procfs.executable_name(pid, comm)
            if len(self._exe) > EXE_CACHE_MAX:
                self._exe.pop(next(iter(self._exe)))
        return self._exe[pid]

    def span_of(self, e, parts: list[tuple[int, bytes]]) -> SpanRecord:
        """One SERVER span from a request event and the captures of its bytes."""
        request_heads = [d for p, d in parts if p == H["PART_REQUEST_HEAD"]]
        request_tails = [d for p, d in parts if p == H["PART_REQUEST_TAIL"]]
        response_heads = [d for p, d in parts if p == H["PART_RESPONSE_HEAD"]]
        last = [d for p, d in parts if p == H["PART_RESPONSE_LAST"]]
        pipelined = bool(e.flags & H["REQ_PIPELINED"])
        # Heads are captured while the request is shorter than the capture: together, its first bytes.
        head = b"".join(request_heads)
        req = parsers.parse_request(head) if request_heads and not pipelined else None
        if req is not None:
            for chunk in request_tails:
                parsers.fill_body_fields(req, chunk)
        elif request_heads and not pipelined:
            self.unparsable_captures += 1
        method = METHOD_NAMES.get(e.method & ~H["METHOD_TLS"], parsers.OTHER_METHOD)
        streamed = bool(e.flags & H["REQ_SSE"])
        path = req.path if req else None
        attrs: dict[str, Any] = {
            sc.HTTP_REQUEST_METHOD: method,
            sc.SERVER_PORT: e.port,
            sc.NETWORK_PROTOCOL_VERSION: req.version if req else "1.1",
            sc.URL_SCHEME: "https" if e.method & H["METHOD_TLS"] else "http",
            sc.PROCESS_PID: e.pid,
            sc.PROCESS_EXECUTABLE_NAME: self.exe(e.pid, cstring(e.comm)),
            **self.cgroups.workload_attributes(e.cgroup),
        }
        if path:
            attrs[sc.URL_PATH] = path
        client = format_address(bytes(e.client_addr), e.family)
        if client:
            attrs[sc.CLIENT_ADDRESS] = client
            attrs[sc.CLIENT_PORT] = e.client_port
        if pipelined:
            attrs[sc.EBPFTOOL_HTTP_PIPELINED] = True
        if e.status:
            attrs[sc.HTTP_RESPONSE_STATUS_CODE] = e.status
        error = e.status >= 500 or e.status == 0
        if error:
            attrs[sc.ERROR_TYPE] = str(e.status) if e.status else NO_RESPONSE
        if e.flags & H["REQ_ARRIVAL"] and e.read_start >= e.req_start:
            attrs[sc.EBPFTOOL_HTTP_QUEUE_TIME] = (e.read_start - e.req_start) / 1e9
        operation = OPERATIONS.get(e.op)
        if operation and path:  # the path the kernel may have seen only in part
            operation = parsers.operation_name(path, streamed) or operation
        events = []
        if operation:
            attrs[sc.GEN_AI_OPERATION_NAME] = operation
            if req and req.model:
                attrs[sc.GEN_AI_REQUEST_MODEL] = req.model
            # The model near the start of an answer, the usage at its end: the first writes' captures
            # (after the response head) and the tail of the last write carrying data.
            body_heads = [parsers.after_head(d) if i == 0 else d for i, d in enumerate(response_heads[:2])]
            usage = parsers.parse_usage(b"".join(last[-1:]))
            head_usage = parsers.parse_usage(b"".join(body_heads))
            model = head_usage.model or usage.model
            if model:
                attrs[sc.GEN_AI_RESPONSE_MODEL] = model
            input_tokens = usage.input_tokens if usage.input_tokens is not None else head_usage.input_tokens
            if input_tokens is not None:
                attrs[sc.GEN_AI_USAGE_INPUT_TOKENS] = input_tokens
            if e.flags & H["REQ_USAGE"] or e.tokens or streamed:
                # as the kernel counted it for the metric; a stream with no content event answered 0 tokens
                attrs[sc.GEN_AI_USAGE_OUTPUT_TOKENS] = e.output_tokens
            if e.tokens:
                attrs[sc.EBPFTOOL_GEN_AI_TIME_TO_FIRST_TOKEN] = (e.first_token - e.req_start) / 1e9
                events.append(SpanEvent(sc.EBPFTOOL_GEN_AI_FIRST_TOKEN_EVENT, self.clock.to_wall_ns(e.first_token)))
            if e.tokens > 1:
                attrs[sc.EBPFTOOL_GEN_AI_TIME_PER_OUTPUT_TOKEN] = (e.last_token - e.first_token) / (e.tokens - 1) / 1e9
        name = f"{method} {parsers.path_template(path)}" if path else method
        return SpanRecord(
            name, self.clock.to_wall_ns(e.req_start), self.clock.to_wall_ns(max(e.end, e.req_start)),
            kind=SpanKind.SERVER, attributes=attrs, events=events, error=error,
            status_message=(f"HTTP {e.status}" if e.status else "closed without a response") if error else "",
        )

