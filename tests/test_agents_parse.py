"""The agents' parsers (ebpftool.tracers.agents), pure: no BPF, no server.

Most of it replays tests/fixtures/agents/: the plaintext the official clients (openai, anthropic, mcp; a
plain client for Gemini and Ollama) exchanged over TLS with tests/servers/llm_apis.py, and what each
client returned (recorded by `python -m tests.agents_drive`). Every call must read exactly as its client
saw it, however the bytes are cut: as read, one byte at a time, at random points (hypothesis), and with
consecutive reads merged. The rest pins the recognition rules, the HTTP framing, the price table, the
name bounds and the semantic-convention names, and fuzzes the parsers (never raise, never a secret out).
"""
from __future__ import annotations

import gzip
import json
import random
import re
import string
from collections import defaultdict

import pytest
import yaml
from hypothesis import HealthCheck, given, settings, strategies as st

from ebpftool import semconv
from ebpftool.errors import EbpftoolError
from ebpftool.tracers.agents import calls as c
from ebpftool.tracers.agents.answers import OTHER_ERROR, RATE_LIMITED, AnswerReader
from ebpftool.tracers.agents.bounds import OTHER, BoundedNames
from ebpftool.tracers.agents.connection import ClientConnection
from ebpftool.tracers.agents.http1 import ResponseStream
from ebpftool.tracers.agents.jsonscan import scalars
from ebpftool.tracers.agents.prices import DEFAULT_PRICES, load_price_table, parse_price_table
from tests.agents_drive import FIXTURES, SECRETS, expected_view, observed, records_between, replay
from tests.servers.llm_apis import read_log

pytestmark = pytest.mark.timeout(300)

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                         HealthCheck.too_slow])
WIRE = read_log(FIXTURES / "wire.jsonl")
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())
DRIVERS = list(EXPECTED)


def records_of(driver: str) -> list[dict]:
    return records_between(WIRE, *EXPECTED[driver]["conns"])


def as_recorded(driver: str):
    return replay(records_of(driver))


# -- the recorded wire, read as the clients saw it ---------------------------------------------------------

def test_the_recording_holds_every_kind_of_call():
    names = [e["name"] for calls in EXPECTED.values() for e in calls["calls"]]
    assert len(names) == 36
    apis = {e["api"] for calls in EXPECTED.values() for e in calls["calls"]}
    assert apis == set(c.APIS) - {c.GEMINI_EMBED}
    statuses = {e["status"] for calls in EXPECTED.values() for e in calls["calls"]}
    assert statuses == {200, 400, 404, 429, 500, 529}
    wire = b"".join(r["data"] for r in WIRE)
    assert all(s.encode() in wire for s in SECRETS[:3])   # the keys were on the wire, in headers
    assert b"content-encoding: gzip" in wire              # compressed answers the client decoded
    assert b"mcp-session-id" in wire and b"event: message" in wire   # MCP's legacy sessions with SSE answers


@pytest.mark.parametrize("driver", DRIVERS)
def test_each_recorded_call_reads_exactly_as_its_client_saw_it(driver):
    got = as_recorded(driver)
    assert [observed(ex) for ex in got] == [expected_view(e) for e in EXPECTED[driver]["calls"]]


@pytest.mark.parametrize("driver", DRIVERS)
def test_one_byte_at_a_time_reads_the_same_to_the_last_time(driver):
    got = replay(records_of(driver), pieces=lambda rec: [rec["data"][i:i + 1] for i in range(len(rec["data"]))])
    assert got == as_recorded(driver)


@FUZZ
@given(st.randoms(use_true_random=False), st.sampled_from(DRIVERS))
def test_any_split_reads_the_same_to_the_last_time(rnd, driver):
    """Pieces cut anywhere, each with its read's time: every field the same, the chunk times included (a
    chunk's time is that of the piece holding its last byte, which any cut leaves in the same read)."""
    def pieces(rec):
        data = rec["data"]
        cuts = sorted(rnd.sample(range(1, len(data)), min(len(data) - 1, rnd.randint(0, 12)))) if len(data) > 1 else []
        return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)])]
    assert replay(records_of(driver), pieces) == as_recorded(driver)


@pytest.mark.parametrize("driver", DRIVERS)
def test_reads_merged_into_one_read_count_the_same(driver):
    """A client that reads late gets several writes in one read: the same calls, tokens and chunks (the
    chunk times become the merged read's)."""
    merged, pending = [], {}
    for rec in records_of(driver):
        key = rec["conn"]
        if rec["dir"] == "response":
            p = pending.setdefault(key, {**rec, "data": b""})
            p["data"] += rec["data"]
            p["t"] = rec["t"]
            continue
        if key in pending:
            merged.append(pending.pop(key))
        merged.append(rec)
    merged += pending.values()
    got = replay(merged)
    assert [observed(ex) for ex in got] == [expected_view(e) for e in EXPECTED[driver]["calls"]]


@pytest.mark.parametrize("driver", DRIVERS)
def test_chunk_times_are_the_reads_that_held_them(driver):
    reads = {r["t"] for r in records_of(driver) if r["dir"] == "response"}
    for ex in as_recorded(driver):
        a = ex.answer
        if not a.chunks:
            assert a.first_chunk_time is None and not a.chunk_gaps
            continue
        assert a.first_chunk_time in reads and a.last_chunk_time in reads
        assert ex.start < a.first_chunk_time <= a.last_chunk_time <= ex.end
        assert len(a.chunk_gaps) == a.chunks - 1
        assert sum(a.chunk_gaps) == pytest.approx(a.last_chunk_time - a.first_chunk_time)
        assert ex.time_to_first_chunk == pytest.approx(a.first_chunk_time - ex.start)


def test_streams_of_the_servers_left_in_writes_of_their_own():
    """The servers pause between chunks, so each streamed call's chunks came in several reads: the times
    above are tested on real spacing, not on one read."""
    for driver in DRIVERS:
        for ex in as_recorded(driver):
            if ex.answer.chunks > 2:
                assert ex.answer.last_chunk_time > ex.answer.first_chunk_time


@pytest.mark.parametrize("driver", DRIVERS)
def test_no_secret_in_what_the_parsers_return(driver):
    out = repr(as_recorded(driver))
    assert not [s for s in SECRETS if s in out]


def test_mcp_duration_ends_at_the_json_rpc_answer():
    for ex in as_recorded("mcp"):
        assert ex.answer.result_time is not None and ex.start < ex.answer.result_time <= ex.end
        assert ex.duration == pytest.approx(ex.answer.result_time - ex.start)


# -- recognising requests ------------------------------------------------------------------------------------

def req(line: str, headers: dict | None = None, body: bytes = b"") -> bytes:
    head = line + "\r\n" + "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items()) + "\r\n"
    return head.encode() + body


@pytest.mark.parametrize("data, want", [
    (req("POST /v1/chat/completions HTTP/1.1", {"Host": "api.openai.com"}, b'{"model":"gpt-4o","stream":true}'),
     dict(api=c.OPENAI_CHAT, provider="openai", operation="chat", request_model="gpt-4o", stream=True, sse=True,
          host="api.openai.com")),
    (req("POST /openai/deployments/gpt4/chat/completions?api-version=2024-10-21 HTTP/1.1",
         {"Host": "myco.openai.azure.com:443"}, b'{"messages":[]}'),
     dict(api=c.OPENAI_CHAT, provider="azure.ai.openai", request_model=None, host="myco.openai.azure.com",
          path="/openai/deployments/gpt4/chat/completions")),
    (req("POST /v1beta/openai/chat/completions HTTP/1.1", {"Host": "generativelanguage.googleapis.com"}),
     dict(api=c.OPENAI_CHAT, provider="gcp.gemini")),
    (req("POST /v1/chat/completions HTTP/1.1", {"Host": "vllm.internal:8000"}, b'{"model":"meta/llama"}'),
     dict(api=c.OPENAI_CHAT, provider="openai", request_model="meta/llama", host="vllm.internal")),
    (req("POST /openai/v1/chat/completions HTTP/1.1", {"Host": "api.groq.com"}), dict(provider="groq")),
    (req("POST /v1/completions HTTP/1.1", {}, b'{"prompt":"x","model":"m","stream":false}'),
     dict(api=c.OPENAI_COMPLETIONS, operation="text_completion", request_model="m", stream=False)),
    (req("POST /v1/responses HTTP/1.1", {}, b'{"model":"gpt-5","input":"hi","stream":true}'),
     dict(api=c.OPENAI_RESPONSES, operation="chat", stream=True, request_model="gpt-5")),
    (req("POST /v1/embeddings HTTP/1.1", {}, b'{"model":"e","input":["a"],"stream":true}'),
     dict(api=c.OPENAI_EMBEDDINGS, operation="embeddings", stream=False)),
    (req("POST /v1/messages HTTP/1.1", {"Host": "api.anthropic.com", "x-api-key": "sk-ant-x"},
         b'{"model":"claude-opus-4-5","max_tokens":5,"stream":true}'),
     dict(api=c.ANTHROPIC_MESSAGES, provider="anthropic", operation="chat", request_model="claude-opus-4-5",
          stream=True)),
    (req("POST /anthropic/messages HTTP/1.1", {"anthropic-version": "2023-06-01"}, b'{"model":"c"}'),
     dict(api=c.ANTHROPIC_MESSAGES, provider="anthropic")),
    (req("POST /anthropic/messages HTTP/1.1", {}, b'{"model":"c"}'), None),
    (req("POST /v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse&key=AIzaSECRET HTTP/1.1",
         {"Host": "generativelanguage.googleapis.com"}, b'{"contents":[]}'),
     dict(api=c.GEMINI_GENERATE, provider="gcp.gemini", operation="generate_content",
          request_model="gemini-2.5-flash", stream=True, sse=True,
          path="/v1beta/models/gemini-2.5-flash:streamGenerateContent")),
    (req("POST /v1beta/models/gemini-2.5-pro:streamGenerateContent HTTP/1.1", {}, b'{}'),
     dict(api=c.GEMINI_GENERATE, provider="gcp.gen_ai", stream=True, sse=False)),
    (req("POST /v1/projects/p/locations/us-central1/publishers/google/models/gemini-2.5-pro:generateContent "
         "HTTP/1.1", {"Host": "us-central1-aiplatform.googleapis.com"}),
     dict(api=c.GEMINI_GENERATE, provider="gcp.vertex_ai", request_model="gemini-2.5-pro", stream=False)),
    (req("POST /v1beta/models/text-embedding-004:embedContent HTTP/1.1", {}, b'{}'),
     dict(api=c.GEMINI_EMBED, operation="embeddings")),
    (req("POST /api/chat HTTP/1.1", {"Host": "localhost:11434"}, b'{"model":"llama3.2","messages":[]}'),
     dict(api=c.OLLAMA_CHAT, provider="ollama", operation="chat", request_model="llama3.2", stream=True,
          sse=False)),
    (req("POST /api/generate HTTP/1.1", {}, b'{"model":"q","prompt":"x","stream":false}'),
     dict(api=c.OLLAMA_GENERATE, operation="text_completion", stream=False)),
    (req("POST /api/embed HTTP/1.1", {}, b'{"model":"n","input":"x"}'),
     dict(api=c.OLLAMA_EMBED, operation="embeddings", stream=False)),
    (req("POST /mcp HTTP/1.1", {"Host": "tools.local"},
         b'{"jsonrpc":"2.0","id":"7","method":"tools/call","params":{"name":"search","arguments":{"name":"x"}}}'),
     dict(api=c.MCP, provider=None, operation="execute_tool", mcp_method="tools/call", tool_name="search",
          jsonrpc_id="7")),
    (req("POST /anything HTTP/1.1", {}, b'{"jsonrpc":"2.0","method":"notifications/initialized"}'),
     dict(api=c.MCP, operation=None, mcp_method="notifications/initialized", tool_name=None, jsonrpc_id=None)),
    (req("POST /mcp HTTP/1.1", {}, b'{"jsonrpc":"1.0","method":"tools/call"}'), None),
    (req("GET /v1/chat/completions HTTP/1.1"), None),
    (req("POST /v1/chat/completions HTTP/1.1", {}, b"model=gpt-4o"), None),      # not JSON
    (req("POST /upload HTTP/1.1", {}, b'{"model":"gpt-4o"}'), None),
    (b"HTTP/1.1 200 OK\r\n\r\n", None),
    (b"", None),
])
def test_recognising_calls(data, want):
    call = c.recognise(data)
    if want is None:
        assert call is None
        return
    assert call is not None
    for k, v in want.items():
        assert getattr(call, k) == v, (k, call)


def test_a_model_past_the_captured_bytes_is_unknown_not_guessed():
    body = b'{"messages":[{"role":"user","content":"' + b"x" * 5000 + b'"}],"model":"gpt-4o","stream":true}'
    data = req("POST /v1/chat/completions HTTP/1.1", {}, body)
    assert c.recognise(data).request_model == "gpt-4o"
    cut = c.recognise(data[:4096])
    assert cut.api == c.OPENAI_CHAT and cut.request_model is None and cut.stream is False


def test_the_model_is_the_top_level_key_not_one_inside_a_prompt():
    body = b'{"messages":[{"role":"user","content":"{\\"model\\":\\"evil\\"}","model":"nested"}],"model":"real"}'
    assert c.recognise(req("POST /v1/chat/completions HTTP/1.1", {}, body)).request_model == "real"


def test_names_are_bounded_and_printable():
    body = b'{"model":"' + b"m \xc3\xa9" * 200 + b'"}'
    model = c.recognise(req("POST /v1/chat/completions HTTP/1.1", {"Host": "h" * 300}, body)).request_model
    assert len(model) <= c.MAX_NAME and re.fullmatch(r"[\x21-\x7e]+", model)


# -- JSON scanning -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("data, want", [
    (b'{"a":1,"b":{"c":"x","d":[{"e":2}]},"f":true}', {("a",): 1, ("b", "c"): "x", ("f",): True}),
    (b'{"a":"cut off', {}),
    (b'{"q":"}{\\"a\\":9","a":3}', {("a",): 3}),
    (b'[{"a":1}]', {}),                        # inside an array: not the top-level key
    (b'{"x":[1,2,{"a":5}],"a":"top"}', {("a",): "top"}),
    (b'not json', {}),
])
def test_scalars_at_paths(data, want):
    assert scalars(data, {("a",), ("b", "c"), ("f",)}) == want


# -- the HTTP framing of answers ------------------------------------------------------------------------------

OPENAI_CALL = c.recognise(req("POST /v1/chat/completions HTTP/1.1", {}, b'{"model":"m","stream":true}'))
PLAIN_CALL = c.recognise(req("POST /v1/chat/completions HTTP/1.1", {}, b'{"model":"m"}'))


def read(call, pieces, closed=False):
    r = AnswerReader(call)
    for i, p in enumerate(pieces):
        r.feed(p, float(i))
    return r.finish(closed=closed)


def chunked(*parts: bytes) -> bytes:
    return b"".join(b"%x;ext=1\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\nx-trailer: 1\r\n\r\n"


def test_gzip_json_answer_with_100_continue_first():
    body = gzip.compress(json.dumps({"model": "m-1", "choices": [{"finish_reason": "stop"}],
                                     "usage": {"prompt_tokens": 11, "completion_tokens": 22}}).encode())
    data = (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)) + body
    a = read(PLAIN_CALL, [data[i:i + 7] for i in range(0, len(data), 7)])
    assert (a.status, a.response_model, a.input_tokens, a.output_tokens, a.finish_reason, a.complete) == \
        (200, "m-1", 11, 22, "stop", True)


def test_chunked_sse_with_crlf_lines_extensions_and_trailers():
    events = [b'data: {"model":"m","choices":[{"delta":{"role":"assistant","content":""}}]}\r\n\r\n',
              b'data: {"choices":[{"delta":{"content":"a"}}]}\r\n\r\ndata: {"choices":[{"delta":{"content":"b"}}]}\r\n\r\n',
              b'data: {"choices":[{"delta":{},"finish_reason":"length"}],"usage":{"prompt_tokens":3,"completion_tokens":2}}\r\n\r\n',
              b"data: [DONE]\r\n\r\n"]
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\nTransfer-Encoding: chunked\r\n\r\n"
    a = read(OPENAI_CALL, [head, *[chunked(e)[:-len(b"0\r\nx-trailer: 1\r\n\r\n")] for e in events],
                           b"0\r\nx-trailer: 1\r\n\r\n"])
    assert (a.chunks, a.first_chunk_time, a.last_chunk_time, a.chunk_gaps) == (2, 2.0, 2.0, [0.0])
    assert (a.input_tokens, a.output_tokens, a.finish_reason, a.response_model, a.complete) == (3, 2, "length", "m", True)


def test_a_stream_cut_off_is_incomplete_with_what_it_had():
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n"
    a = read(OPENAI_CALL, [head, b'data: {"choices":[{"delta":{"content":"a"}}]}\n\n', b'data: {"choi'], closed=True)
    assert (a.chunks, a.complete, a.error_type, a.output_tokens_or_chunks) == (1, False, None, 1)


def test_an_error_page_from_a_proxy_is_its_status():
    a = read(PLAIN_CALL, [b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/html\r\nContent-Length: 9\r\n\r\n<h1>x</h1>"])
    assert (a.status, a.error_type) == (502, "502")
    a = read(PLAIN_CALL, [b"HTTP/1.1 429 Too Many Requests\r\nContent-Length: 0\r\n\r\n"])
    assert (a.status, a.error_type, a.complete) == (429, RATE_LIMITED, True)


def test_an_error_type_that_is_not_a_word_is_other():
    body = json.dumps({"error": {"type": "sk-secret key=abc; drop table", "message": "m"}}).encode()
    a = read(PLAIN_CALL, [b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n" + body], closed=True)
    assert a.error_type == OTHER_ERROR


def test_a_json_answer_too_long_to_parse_gives_its_usage_by_pattern(monkeypatch):
    from ebpftool.tracers.agents import answers
    monkeypatch.setattr(answers, "MAX_JSON_BODY", 1000)
    body = json.dumps({"model": "m", "data": ["x" * 5000],
                       "usage": {"prompt_tokens": 7, "completion_tokens": 8}}).encode()
    a = read(PLAIN_CALL, [b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body), body])
    assert (a.input_tokens, a.output_tokens, a.complete) == (7, 8, True)


def test_answers_on_one_connection_pair_with_their_requests_in_order():
    cc = ClientConnection()
    r1 = req("POST /v1/chat/completions HTTP/1.1", {"Content-Length": "13"}, b'{"model":"a"}')
    r2 = req("GET /health HTTP/1.1")
    r3 = req("POST /v1/chat/completions HTTP/1.1", {"Content-Length": "13"}, b'{"model":"b"}')
    cc.request(r1 + r2 + r3, 1.0)
    body = b'{"model":"a-1","usage":{"prompt_tokens":1,"completion_tokens":2}}'
    ans = (b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body)) + body
    got = cc.response(ans + b"HTTP/1.1 204 No Content\r\n\r\n" + ans.replace(b"a-1", b"b-1"), 2.0)
    assert [(ex.call and ex.call.request_model, ex.answer.status, ex.answer.response_model) for ex in got] == \
        [("a", 200, "a-1"), (None, 204, None), ("b", 200, "b-1")]


def test_response_stream_keeps_what_follows_the_answer():
    s = ResponseStream()
    assert s.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1") == b"ok"
    assert s.done and s.leftover == b"HTTP/1.1"


# -- fuzzing: never raise, never a secret, bounded names ------------------------------------------------------

TOKENS = [b"POST ", b"GET ", b" HTTP/1.1\r\n", b"HTTP/1.1 200 OK\r\n", b"HTTP/1.1 429 x\r\n", b"\r\n", b"\r\n\r\n",
          b"/v1/chat/completions", b"/v1/messages", b":streamGenerateContent", b"/api/chat", b"?alt=sse",
          b"Host: api.openai.com\r\n", b"Content-Type: text/event-stream\r\n", b"Transfer-Encoding: chunked\r\n",
          b"Content-Length: 5\r\n", b"Content-Encoding: gzip\r\n", b"data: ", b"event: ", b"[DONE]", b"\n\n",
          b'{"model":"', b'"usage":{', b'"prompt_tokens":', b'"input_tokens":', b"12", b"}", b"{", b"[", b"]",
          b'"jsonrpc":"2.0"', b'"method":"tools/call"', b'"error":', b'"type":"error"', b'"done":true', b"\\",
          b'"', b"\x00", b"\xff", b"5\r\n", b"0\r\n\r\n"]
wire = st.one_of(st.binary(max_size=400), st.lists(st.sampled_from(TOKENS) | st.binary(max_size=6), max_size=60)
                 .map(b"".join))


@FUZZ
@given(wire, wire, st.sampled_from(c.APIS))
def test_parsers_never_raise_and_return_bounded_values(request_bytes, answer_bytes, api):
    call = c.recognise(request_bytes)
    if call is not None:
        for name in (call.request_model, call.host, call.tool_name, call.mcp_method):
            assert name is None or (len(name) <= c.MAX_NAME and re.fullmatch(r"[\x21-\x7e]+", name))
    reader = AnswerReader(c.Call(api, None, None, "/", stream=True))
    for i in range(0, len(answer_bytes), 17):
        reader.feed(answer_bytes[i:i + 17], float(i))
    a = reader.finish(closed=True)
    for n in (a.input_tokens, a.output_tokens, a.cache_read_tokens):
        assert n is None or (isinstance(n, int) and n >= 0)
    assert a.error_type is None or re.fullmatch(r"[A-Za-z0-9_.\-]{1,64}", a.error_type)
    assert a.response_model is None or len(a.response_model) <= c.MAX_NAME


secret = st.text(string.ascii_letters + string.digits, min_size=12, max_size=30).map(lambda s: "sk-" + s)


@FUZZ
@given(secret, secret, secret, st.integers(0, 500), st.sampled_from(
    ["/v1/chat/completions", "/v1/messages", "/v1beta/models/g:streamGenerateContent", "/api/chat", "/mcp"]))
def test_secrets_in_headers_query_and_body_never_come_out(key, prompt, query, cut, path):
    body = json.dumps({"model": "m-1", "messages": [{"role": "user", "content": prompt}], "api_key": key,
                       "jsonrpc": "2.0", "method": "tools/call", "params": {"name": "t", "arguments": {"q": prompt}},
                       "stream": True}).encode()
    data = req(f"POST {path}?key={query} HTTP/1.1", {"Host": "h", "Authorization": f"Bearer {key}",
                                                       "x-api-key": key}, body)
    for chunk in (data, data[:cut]):
        out = repr(c.recognise(chunk))
        assert key not in out and prompt not in out and query not in out


# -- the price table -----------------------------------------------------------------------------------------

def test_the_default_price_table_loads_dated_and_told_to_be_edited():
    table = load_price_table()
    text = DEFAULT_PRICES.read_text()
    assert re.fullmatch(r"\d{4}-\d{2}(-\d{2})?", table.taken) and "EDIT THIS FILE" in text
    assert len(table.prices) >= 10
    assert {p.provider for p in table.prices} >= {"openai", "anthropic", "gcp.*"}


def test_cost_of_a_call():
    table = load_price_table()
    # gpt-4o-mini: 0.15 in, 0.60 out, 0.075 cached, per million
    assert table.cost("openai", "gpt-4o-mini-2024-07-18", 1_000_000, 1_000_000) == pytest.approx(0.75)
    assert table.cost("openai", "gpt-4o-mini", 1_000_000, 0, cache_read_tokens=400_000) == pytest.approx(0.12)
    # first match wins: gpt-4o-mini is not priced as gpt-4o
    assert table.cost("openai", "GPT-4O-2024-08-06", 1_000_000, 0) == pytest.approx(2.5)
    assert table.cost("gcp.vertex_ai", "gemini-2.5-flash-001", 0, 1_000_000) == pytest.approx(2.5)
    assert table.cost("ollama", "llama3.2", 10**6, 10**6) == 0
    assert table.cost("openai", "unknown-model", 1, 1) is None
    assert table.cost(None, "gpt-4o", 1, 1) is None


def test_the_recorded_calls_have_a_cost_where_the_table_prices_them():
    table = load_price_table()
    costs = {ex.call.request_model: table.cost(ex.call.provider, ex.answer.response_model or ex.call.request_model,
                                               ex.answer.input_tokens, ex.answer.output_tokens,
                                               ex.answer.cache_read_tokens)
             for d in ("openai", "anthropic") for ex in as_recorded(d) if ex.answer.error_type is None}
    chat = next(e for e in EXPECTED["openai"]["calls"] if e["name"] == "chat")     # gpt-4o: 2.50 in, 10.00 out
    assert costs["gpt-4o"] == pytest.approx((chat["input_tokens"] * 2.5 + chat["output_tokens"] * 10.0) / 1e6)
    assert costs["claude-sonnet-4-5"] > 0 and costs["gpt-3.5-turbo-instruct"] is None


@pytest.mark.parametrize("doc, phrase", [
    ([], "must be a mapping"),
    ({"taken": "2025-11", "prices": []}, "non-empty list `prices`"),
    ({"prices": [{"provider": "openai", "model": "*", "input": 1, "output": 1}]}, "when its prices were taken"),
    ({"taken": "yesterday", "prices": [{}]}, "when its prices were taken"),
    ({"taken": "2025-11", "currency": "EUR", "prices": [{}]}, "only knows USD"),
    ({"taken": "2025-11", "prices": [{}], "extra": 1}, "unknown keys: extra"),
    ({"taken": "2025-11", "prices": ["gpt-4o"]}, "entry 1 must be a mapping"),
    ({"taken": "2025-11", "prices": [{"provider": "openai", "model": "*", "input": -1, "output": 1}]},
     "entry 1: `input` must be a number of USD per million tokens, 0 or more, not -1"),
    ({"taken": "2025-11", "prices": [{"provider": "openai", "model": "*", "input": 1, "output": "cheap"}]},
     "`output` must be a number"),
    ({"taken": "2025-11", "prices": [{"provider": "openai", "model": "*", "input": 1, "output": 1},
                                     {"provider": "", "model": "x", "input": 1, "output": 1}]},
     "entry 2: `provider` must be a name or pattern"),
    ({"taken": "2025-11", "prices": [{"provider": "o", "model": "*", "input": 1, "output": 1, "cost": 2}]},
     "entry 1 has unknown keys: cost"),
    ({"taken": "2025-11", "prices": [{"provider": "o", "model": "*", "input": float("nan"), "output": 1}]},
     "`input` must be a number"),
])
def test_a_bad_price_table_is_one_sentence_naming_the_file(tmp_path, doc, phrase):
    path = tmp_path / "prices.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(EbpftoolError) as exc:
        load_price_table(path)
    message = str(exc.value)
    assert message.startswith(f"price table {path}") and phrase in message and "\n" not in message


@pytest.mark.parametrize("content, phrase", [
    (b"taken: [1, 2\n", "is not valid YAML at line"),
    (b"\xff\xfe", "is not UTF-8"),
    (None, "cannot read price table"),
])
def test_an_unreadable_price_table_is_one_sentence(tmp_path, content, phrase):
    path = tmp_path / "prices.yaml"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(EbpftoolError, match=re.escape(phrase)):
        load_price_table(path)


yaml_like = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
                         | st.sampled_from(["taken", "prices", "provider", "model", "input", "output", "2025-11"]),
                         lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
                             st.sampled_from(["taken", "currency", "prices", "provider", "model", "input", "output",
                                              "cached_input", "x"]), inner, max_size=5), max_leaves=20)


@FUZZ
@given(yaml_like)
def test_price_table_fuzz_only_domain_errors(doc):
    try:
        table = parse_price_table(doc, "fuzz.yaml")
    except EbpftoolError as exc:
        assert str(exc).startswith("price table fuzz.yaml")
        return
    assert table.prices and all(p.input >= 0 and p.output >= 0 for p in table.prices)


# -- bounds and names -------------------------------------------------------------------------------------------

def test_the_first_n_names_keep_theirs_and_the_rest_are_other():
    bound = BoundedNames(2)
    assert [bound(n) for n in ("a", "b", "a", "c", None, "d", "b")] == ["a", "b", "a", OTHER, None, OTHER, "b"]
    assert bound.folded == 2 and bound.top(3) == [(OTHER, 2), ("a", 2), ("b", 2)]
    with pytest.raises(ValueError):
        BoundedNames(0)


def test_a_flood_of_model_names_stays_bounded():
    bound = BoundedNames(50)
    seen = defaultdict(int)
    for i in range(10_000):
        seen[bound(f"model-{random.Random(i).randint(0, 5000)}")] += 1
    assert len(seen) == 51 and OTHER in seen and sum(seen.values()) == 10_000


def test_semantic_convention_names_and_buckets_as_read():
    assert semconv.GEN_AI_CLIENT_OPERATION_DURATION == "gen_ai.client.operation.duration"
    assert semconv.GEN_AI_CLIENT_TOKEN_USAGE == "gen_ai.client.token.usage"
    assert semconv.GEN_AI_CLIENT_TIME_TO_FIRST_CHUNK == "gen_ai.client.operation.time_to_first_chunk"
    assert semconv.GEN_AI_CLIENT_TIME_PER_OUTPUT_CHUNK == "gen_ai.client.operation.time_per_output_chunk"
    doubling = tuple(round(0.01 * 2 ** i, 2) for i in range(14))
    assert semconv.GEN_AI_CLIENT_DURATION_BUCKETS == doubling == semconv.GEN_AI_CLIENT_CHUNK_BUCKETS
    assert semconv.GEN_AI_TOKEN_USAGE_BUCKETS == tuple(4 ** i for i in range(14))
    assert semconv.MCP_CLIENT_OPERATION_DURATION_BUCKETS[-1] == 300
    providers = {c.OPENAI, c.ANTHROPIC, c.GCP_GEMINI, c.GCP_GEN_AI, c.GCP_VERTEX_AI}
    assert providers <= {p for _, p in c.HOST_PROVIDERS} | set(c.DEFAULT_PROVIDER.values())
