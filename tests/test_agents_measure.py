"""The agents tracer's user-space steps without BPF: the kernel's events put back together (events.py), and
finished calls into metrics and span attributes (measure.py), on the recorded wire of the official clients
(tests/fixtures/agents/) and on events built as the kernel builds them (bpf/agents/agents.h)."""
from __future__ import annotations

import ctypes
import json

from ebpftool import semconv as sc
from ebpftool.tracers.agents.events import EV_CLOSE, EV_READ, EV_WRITE, H, HEADER_BYTES, VIA_TLS, AgentEvent, Reassembler
from ebpftool.tracers.agents.figures import AgentsSummary, AgentsView, CallerRow
from ebpftool.tracers.agents.measure import NO_ANSWER, CallMetrics, Process, span_attributes, span_name
from ebpftool.tracers.agents.prices import DEFAULT_PRICES, load_price_table
from ebpftool.ui.views import summary_rows, table_of
from tests.agents_drive import FIXTURES, SECRETS, records_between, replay
from tests.servers.llm_apis import read_log

WIRE = read_log(FIXTURES / "wire.jsonl")
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())
CHUNK = H["AGENTS_CHUNK"]


def event(kind: int, seq: int, data: bytes = b"", *, length: int | None = None, offset: int = 0, last: bool = True,
          call: int = 1, starts: bool = False, ident: int = 0x5000, t_ns: int = 1_000_000_000) -> bytes:
    """One record as the kernel writes it: the header, then `data` (no padding after it)."""
    e = AgentEvent()
    e.ts, e.id, e.tgid, e.tid, e.call, e.seq = t_ns, ident, 42, 43, call, seq
    e.len = len(data) if length is None else length
    e.offset, e.size, e.kind, e.via, e.starts, e.last, e.port = offset, len(data), kind, VIA_TLS, starts, last, 0
    ctypes.memmove(e.comm, b"agent", 5)
    ctypes.memmove(e.data, data, len(data))
    return bytes(e)[:HEADER_BYTES + len(data)]


def test_a_read_in_several_events_comes_back_whole_with_its_time():
    w = Reassembler()
    data = bytes(range(256)) * (CHUNK * 2 // 256) + b"tail"
    pieces = [data[:CHUNK], data[CHUNK:2 * CHUNK], data[2 * CHUNK:]]
    out = [w.feed(event(EV_READ, i, p, length=len(data), offset=i * CHUNK, last=i == 2)) for i, p in enumerate(pieces)]
    assert [io for _k, io, _lost in out[:2]] == [None, None]
    key, io, lost = out[2]
    assert key == (42, VIA_TLS, 0x5000) and not lost
    assert io.data == data and io.not_copied == 0 and io.t == 1.0 and io.kind == EV_READ and io.comm == "agent"


def test_bytes_the_kernel_did_not_copy_stand_as_filler_of_their_length():
    w = Reassembler()
    _k, io, _lost = w.feed(event(EV_WRITE, 0, b"POST /v1/x HTTP/1.1\r\n", length=100_000, starts=True))
    assert len(io.data) == 100_000 and io.not_copied == 100_000 - 21 and io.starts


def test_a_lost_event_is_a_gap_in_the_sequence_and_a_close_ends_it():
    w = Reassembler()
    assert w.feed(event(EV_WRITE, 0, b"POST / HTTP/1.1\r\n\r\n", starts=True))[2] is False
    _k, io, lost = w.feed(event(EV_READ, 2, b"HTTP/1.1 200 OK\r\n"))   # seq 1 never came
    assert lost and io is not None and w.gaps == 1
    _k, io, lost = w.feed(event(EV_CLOSE, 3))
    assert io.kind == EV_CLOSE and not lost
    assert w.feed(event(EV_WRITE, 0, b"POST / HTTP/1.1\r\n\r\n", starts=True, call=2))[2] is False  # a new start


def test_metrics_of_the_recorded_calls_are_exact():
    """Every recorded LLM call of the official clients: one duration observation by model and error, its
    tokens, its chunks' times; cost for the priced models; nothing secret in any point or span."""
    metrics = CallMetrics(load_price_table(DEFAULT_PRICES))
    spans = []
    want_calls, want_input, want_chunks = 0, 0, 0
    for driver in ("openai", "anthropic", "gemini", "ollama", "mcp"):
        first, last = EXPECTED[driver]["conns"]
        for ex in replay(records_between(WIRE, first, last)):
            m = metrics.record(ex, Process(1234, "agent"), 443)
            assert m is not None
            spans.append((span_name(m), span_attributes(m)))
        for e in EXPECTED[driver]["calls"]:
            if e["api"] == "mcp":
                continue
            want_calls += 1
            want_input += e["input_tokens"] or 0
            want_chunks += max(0, e["chunks"] - 1) if e["stream"] and e["status"] < 400 and e["chunks"] else 0
    points = {p.name: [] for p in metrics.points()}
    for p in metrics.points():
        points[p.name].append(p)
    assert sum(p.count for p in points[sc.GEN_AI_CLIENT_OPERATION_DURATION]) == want_calls == metrics.calls
    assert sum(p.sum for p in points[sc.GEN_AI_CLIENT_TOKEN_USAGE]
               if p.attributes[sc.GEN_AI_TOKEN_TYPE] == "input") == want_input
    assert sum(p.count for p in points[sc.GEN_AI_CLIENT_TIME_PER_OUTPUT_CHUNK]) == want_chunks
    tools = [p for p in points[sc.MCP_CLIENT_OPERATION_DURATION] if p.attributes[sc.MCP_METHOD_NAME] == "tools/call"]
    assert sum(p.count for p in tools) == sum(1 for e in EXPECTED["mcp"]["calls"])
    assert {p.attributes.get(sc.ERROR_TYPE) for p in tools} == {None, "tool_error"}
    assert sum(p.value for p in points[sc.EBPFTOOL_GEN_AI_CLIENT_COST]) > 0
    for p in metrics.points():
        assert p.attributes[sc.PROCESS_PID] == 1234 and p.attributes[sc.PROCESS_EXECUTABLE_NAME] == "agent"
        if p.bucket_counts:
            assert sum(p.bucket_counts) == p.count
    out = repr(metrics.points()) + repr(spans)
    assert not [s for s in SECRETS if s in out]


def test_a_call_with_no_answer_is_an_error_of_its_own():
    from ebpftool.tracers.agents.connection import ClientConnection

    cc = ClientConnection()
    cc.request(b'POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\nContent-Length: 18\r\n\r\n'
               b'{"model":"gpt-4o"}', 1.0)
    (ex,) = cc.close(2.0)
    m = CallMetrics(None).record(ex, Process(1, "a"), 443)
    assert m.error_type == NO_ANSWER and m.attributes[sc.ERROR_TYPE] == NO_ANSWER
    assert span_name(m) == "chat gpt-4o" and m.attributes[sc.SERVER_ADDRESS] == "api.openai.com"


def test_the_view_and_summary_render():
    row = CallerRow("agent (12)", 2.5, 0.4, 1.2, 0.05, 80.0, 0.12, 1)
    table = table_of(AgentsView(2.5, [row]), 100)
    assert table.row_count == 1
    rows = dict(summary_rows(AgentsSummary(calls=3, calls_failed=1, cost_usd=0.5)))
    assert rows["LLM calls"] == 3 and rows["LLM calls with an error"] == 1
