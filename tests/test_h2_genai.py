"""The HTTP/2 generative-AI reader (ebpftool/tracers/inference/h2_genai.py), pure Python fed bytes.

Answers as real servers write them (the OpenAI-compatible apps' own chunk makers in tests/servers/openai_apps.py,
Ollama's and TGI's from tests/test_stream_formats.py), fed whole, split at every offset and byte by byte: the
same figures each way, times those of the piece holding each token line's first byte. Against the kernel's
rule for HTTP/1 (tests/test_sse_tokens.py's reference, on the random writes it was checked with): the same
tokens on every write the kernel reads whole. Garbage never raises. Expected values come from the answers'
makers (how many tokens they wrote, the usage they stated), never from the reader.
"""
from __future__ import annotations

import json
import random

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from ebpftool.tracers.inference import h2_genai
from ebpftool.tracers.inference.h2_genai import GenAiReader
from tests.servers.openai_apps import Plan
from tests.test_sse_tokens import RARE_WORDS, SSE_SCAN_MAX, _triggers, _writes, reference_tokens
from tests.test_stream_formats import ollama_chat, ollama_generate, tgi_generate_stream, vllm_messages, vllm_responses


def openai_events(path: str, n: int, include_usage: bool, sep: bytes = b"\r\n", model: str = "m-1") -> list[bytes]:
    """The events the OpenAI-compatible apps write (sse-starlette's `data: ...\\r\\n\\r\\n`), one per write."""
    body = {"model": model, "max_tokens": n, "stream": True}
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    plan = Plan(path, body)
    chunks = [plan.first()] + [plan.content(i) for i in range(n)] + [plan.finish()]
    if include_usage:
        chunks.append(plan.usage_chunk())
    chunks.append("[DONE]")
    return [b"data: " + c.encode() + sep + sep for c in chunks]


def feed(pieces: list[tuple[bytes, int]], ndjson: bool = False, op: str = "chat") -> GenAiReader:
    r = GenAiReader(op, ndjson)
    for data, ts in pieces:
        r.response(data, ts)
    r.finish()
    return r


def token_line_times(writes: list[bytes], cuts: list[int], times: list[int], is_token) -> list[int]:
    """The time of the piece holding each token line's first byte, the answer being `writes` joined and cut at
    `cuts` (piece i sent at times[i]); is_token(write) tells a token write (one event per write)."""
    starts, at = [], 0
    for w in writes:
        if is_token(w):
            starts.append(at)
        at += len(w)
    bounds = cuts + [at]
    return [times[next(i for i, b in enumerate(bounds) if s < b)] for s in starts]


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
@pytest.mark.parametrize("include_usage", [False, True])
def test_openai_stream_split_at_every_offset(path, include_usage):
    n = 5
    writes = openai_events(path, n, include_usage)
    whole = b"".join(writes)
    one_per_write = feed([(w, 1000 + i) for i, w in enumerate(writes)])
    assert (one_per_write.events, one_per_write.tokens) == (n + 2 + include_usage, n)   # role/empty, finish, usage
    assert one_per_write.stated_output_tokens == (n if include_usage else None)
    assert one_per_write.output_tokens == n
    assert one_per_write.response_model == "m-1"
    # token i is write i + 1 (after the role-only or empty-text chunk)
    assert (one_per_write.first_token_ns, one_per_write.last_token_ns) == (1001, 1000 + n)
    is_token = lambda w: b'"content":"tok' in w or b'"text":"tok' in w  # noqa: E731
    for cut in range(len(whole) + 1):
        r = feed([(whole[:cut], 1), (whole[cut:], 2)])
        first, *_, last = token_line_times(writes, [cut], [1, 2], is_token)
        assert (r.events, r.tokens, r.stated_output_tokens, r.response_model, r.first_token_ns, r.last_token_ns) == (
            one_per_write.events, n, one_per_write.stated_output_tokens, "m-1", first, last), cut
    by_byte = feed([(whole[i:i + 1], i) for i in range(len(whole))])
    assert (by_byte.tokens, by_byte.stated_output_tokens, by_byte.response_model) == (
        n, one_per_write.stated_output_tokens, "m-1")
    starts = [sum(map(len, writes[:i])) for i, w in enumerate(writes) if is_token(w)]
    assert (by_byte.first_token_ns, by_byte.last_token_ns) == (starts[0], starts[-1])


def test_three_cuts_anywhere_in_a_usage_chunk_keep_the_count():
    """A stated count whose digits are cut between pieces is read whole (never a prefix of it)."""
    plan = Plan("/v1/chat/completions", {"model": "m", "max_tokens": 1234567, "stream": True,
                                          "stream_options": {"include_usage": True}})
    chunk = b"data: " + plan.usage_chunk().encode() + b"\n\n"
    rng = random.Random(5)
    for _ in range(300):
        cuts = sorted(rng.sample(range(1, len(chunk)), 3))
        parts = [chunk[a:b] for a, b in zip([0] + cuts, cuts + [len(chunk)])]
        r = feed([(p, i) for i, p in enumerate(parts)])
        assert (r.events, r.tokens, r.stated_output_tokens, r.stated_input_tokens) == (
            1, 0, 1234567, plan.prompt_tokens), cuts


def test_non_streamed_answer_states_its_usage_and_model():
    plan = Plan("/v1/chat/completions", {"model": "big/model-7b", "max_tokens": 6})
    body = json.dumps(plan.whole()).encode()
    assert len(body) < 512
    for cut in range(len(body) + 1):
        r = feed([(body[:cut], 1), (body[cut:], 2)])
        assert (r.events, r.tokens, r.stated_output_tokens, r.stated_input_tokens, r.output_tokens,
                r.response_model, r.first_token_ns, r.unseen_bytes) == (
            0, 0, 6, plan.prompt_tokens, 6, "big/model-7b", None, 0), cut


def test_a_long_answer_cut_at_512_bytes_says_so():
    """As the kernel sends it: a DATA frame's first 512 bytes, the rest a count. The usage at the end of a long
    JSON answer is not seen: no count is made up, and the bytes not seen are said."""
    plan = Plan("/v1/completions", {"model": "m", "max_tokens": 300})
    body = json.dumps(plan.whole()).encode()
    assert len(body) > 1500
    r = GenAiReader("text_completion")
    r.response(body[:512], 7, skipped=len(body) - 512)
    r.finish()
    assert (r.response_model, r.stated_output_tokens, r.output_tokens, r.unseen_bytes) == ("m", None, 0, len(body) - 512)


def test_events_after_a_gap_are_read_from_the_next_frame():
    """Frames of a stream cut by the kernel: each frame's bytes after a gap begin a line, as writes do; the event
    the gap cut is not counted (whether it carried text is not known)."""
    events = openai_events("/v1/chat/completions", 3, False, sep=b"\n")
    r = GenAiReader("chat")
    long_token = b'data: {"choices":[{"delta":{"content":"' + b"z" * 600 + b'"}}]}\n\n'
    r.response(events[0], 1)
    r.response(long_token[:512], 2, skipped=len(long_token) - 512)
    for i, e in enumerate(events[1:], 3):
        r.response(e, i)
    r.finish()
    assert (r.tokens, r.first_token_ns, r.last_token_ns, r.unseen_bytes, r.cut_events) == (
        3, 3, 5, len(long_token) - 512, 1)


@pytest.mark.parametrize("include_usage", [False, True])
def test_a_proxy_writing_the_last_chunks_in_one_frame_is_never_overcounted(include_usage):
    """nghttpx in front of sse-starlette writes the last token, the finish-only chunk, the usage-only one and
    [DONE] in one DATA frame when they reach it together: past its first 512 bytes the kernel sends nothing.
    The tokens counted are those whose lines lie whole in the bytes seen (the client's reading of them, JSON
    decoded), never the cut usage-only chunk; the stated usage past 512 bytes is not read."""
    n = 6
    events = openai_events("/v1/chat/completions", n, include_usage, model="a-longer-model-name")
    head, burst = events[:-4], b"".join(events[-4:])   # the last token(s), finish, usage (or not), [DONE]
    assert len(burst) > 512
    r = GenAiReader("chat")
    for i, e in enumerate(head):
        r.response(e, i)
    r.response(burst[:512], 99, skipped=len(burst) - 512)
    r.finish()
    def tokens(lines):
        chunks = [json.loads(line[5:]) for line in lines if line.startswith(b"data: {")]
        return sum(1 for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content"))
    seen_whole = burst[:512].split(b"\n")[:-1]
    assert r.tokens == tokens(b"".join(head).split(b"\n")) + tokens(seen_whole) <= n
    assert r.stated_output_tokens is None and r.unseen_bytes == len(burst) - 512
    assert r.output_tokens <= n


@pytest.mark.parametrize("make,path,stated", [(ollama_chat, "/api/chat", lambda n: n + 1),
                                               (ollama_generate, "/api/generate", lambda n: n)])
def test_ollama_json_lines(make, path, stated):
    n = 6
    lines = make(n)
    assert h2_genai.is_ndjson(path) and h2_genai.operation("POST", path)
    whole = b"".join(lines)
    for cut in range(len(whole) + 1):
        r = feed([(whole[:cut], 1), (whole[cut:], 2)], ndjson=True)
        assert (r.events, r.tokens, r.stated_output_tokens, r.response_model) == (n + 1, n, stated(n), "llama3"), cut
    # the same lines are not events on a path that is not Ollama's
    r = feed([(whole, 1)], ndjson=False)
    assert (r.events, r.tokens) == (0, 0)


def test_tgi_special_token_and_generated_tokens():
    n = 4
    events = tgi_generate_stream(n)
    whole = b"".join(events)
    for cut in range(0, len(whole) + 1, 3):
        r = feed([(whole[:cut], 1), (whole[cut:], 2)], op="text_completion")
        assert (r.events, r.tokens, r.stated_output_tokens) == (n + 1, n, n + 1), cut


@pytest.mark.parametrize("make,path,before,stated", [(vllm_responses, "/v1/responses", 4, 6),
                                                     (vllm_messages, "/v1/messages", 2, 5)])
def test_named_events_of_the_responses_and_messages_apis(make, path, before, stated):
    """Only their delta events are tokens, whatever the others show, split anywhere; CRLF lines alike."""
    n = 5
    writes = make(n)
    assert h2_genai.operation("POST", path) == "chat" and h2_genai.operation("GET", path + "/resp_1") is None
    for crlf in (False, True):
        pieces = [w.replace(b"\n", b"\r\n") for w in writes] if crlf else writes
        whole = b"".join(pieces)
        is_token = lambda w: w.split(b"\n")[0].rstrip(b"\r").endswith((b".delta", b"content_block_delta"))  # noqa: E731
        # a token's time is its data line's (the name before it may have come earlier)
        starts = [sum(map(len, pieces[:i])) + w.index(b"data:") for i, w in enumerate(pieces) if is_token(w)]
        for cut in range(len(whole) + 1):
            r = feed([(whole[:cut], 1), (whole[cut:], 2)])
            first, last = (1 if starts[0] < cut else 2), (1 if starts[-1] < cut else 2)
            assert (r.events, r.tokens, r.stated_output_tokens, r.response_model, r.first_token_ns, r.last_token_ns) == (
                len(writes), n, stated, "vllm-model", first, last), (crlf, cut)
        r = feed([(w, i) for i, w in enumerate(pieces)])
        assert (r.first_token_ns, r.last_token_ns) == (before, before + n - 1)
    # another API's name changes nothing: its events are tokens unless a mark says otherwise
    r = feed([(b'event: message\ndata: {"text":"a"}\n\nevent: token_delta\ndata: {"choices":[]}\n\n', 1)])
    assert (r.events, r.tokens) == (2, 1)


def test_last_line_without_newline_and_done_forms():
    r = feed([(b'data: {"choices":[{"text":"a"}]}\n\ndata: [DONE]\n\ndata:[DONE]\n\ndata: {"choices":[{"text":"b"}]}', 3)])
    assert (r.events, r.tokens, r.last_token_ns) == (2, 2, 3)


def test_marks_in_lines_after_an_event_belong_to_it():
    """sse.bpf.h: a mark belongs to the last event begun before it."""
    r = feed([(b'data: {"id":1,\n"choices":[],"usage":{"completion_tokens": 9}}\n\n', 1)])
    assert (r.events, r.tokens, r.stated_output_tokens) == (1, 0, 9)
    r = feed([(b': comment "choices":[]\ndata: {"choices":[{"text":"x"}]}\n\n', 1)])
    assert (r.events, r.tokens) == (1, 1)


def test_model_rules_of_the_kernel():
    def model(body: bytes, cut: int | None = None) -> str | None:
        r = GenAiReader("chat")
        if cut is None:
            r.response(body, 1)
        else:
            r.response(body[:cut], 1)
            r.response(body[cut:], 2)
        r.finish()
        return r.response_model
    assert model(b'{"id":"x","model": "a-b"}') == "a-b"
    assert model(b'{"model_name":"triton-m","x":1}') == "triton-m"
    assert model(b'{"model":null,"x":"model"}') is None             # the first "model": decides
    assert model(b'{"model":"a\\"b"}') is None                        # escaped: not taken (as the kernel)
    assert model(b'{"model":"' + b"n" * 64 + b'"}') is None          # longer than the kernel keeps
    assert model(b'{"model":"' + b"n" * 63 + b'"}') == "n" * 63
    assert model(b" " * 500 + b'{"model":"late"}') is None            # past the first 512 bytes
    body = b'data: {"id":"c","model":"split-model","choices":[]}\n\n'
    assert all(model(body, cut) == "split-model" for cut in range(len(body) + 1))


def test_request_model_and_stream_split_anywhere():
    body = json.dumps({"messages": [{"role": "user", "content": "hi " * 20}], "model": "gpt-x",
                       "stream": True, "stream_options": {"include_usage": True}}).encode()
    for cut in range(len(body) + 1):
        r = GenAiReader("chat")
        r.request(body[:cut])
        r.request(body[cut:])
        assert (r.request_model, r.stream) == ("gpt-x", True), cut


def test_the_same_tokens_as_the_kernels_rule_on_random_writes():
    """tests/test_sse_tokens.py's reference (the kernel's rule for one HTTP/1 write) on its random writes: the
    reader counts the same on each write the kernel reads whole (shorter than its scan, with fewer words to
    look closer at than it keeps); on longer ones the kernel counts what its scan saw, the reader all."""
    rng = random.Random(20261206)
    compared = 0
    for _ in range(400):
        for w in _writes(rng):
            padded = bytes(15) + b"\n" + w + bytes(16)
            rare = [x for x in range(1, (16 + SSE_SCAN_MAX) // 8) if x * 8 < 16 + len(w)
                    and any(_triggers(padded, x * 8 + b) for b in range(8))]
            if len(w) > SSE_SCAN_MAX or len(rare) >= RARE_WORDS:
                continue
            r = feed([(w, 1)])
            assert r.tokens == reference_tokens(w), w
            compared += 1
    assert compared > 500


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.binary(max_size=80) | st.sampled_from(
    [b"data:", b"data: [", b"\n", b"\r\n", b'"choices":[]', b'"completion_tokens":', b"123", b'"model":"',
     b"{", b'"done":true']), st.integers(0, 600)), max_size=30), st.booleans())
def test_garbage_never_raises_and_counts_stay_sane(pieces, ndjson):
    r = GenAiReader("chat", ndjson)
    r.request(b"".join(p for p, _ in pieces), 3)
    for i, (data, skipped) in enumerate(pieces):
        r.response(data, i, skipped if i % 3 == 0 else 0)
    r.finish()
    r.finish()
    assert 0 <= r.tokens <= r.events
    assert (r.first_token_ns is None) == (r.tokens == 0)
    assert r.first_token_ns is None or r.first_token_ns <= r.last_token_ns
    assert r.output_tokens >= 0 and (r.stated_output_tokens or 0) <= 0xFFFFFFFF
    assert r.unseen_bytes == sum(s for i, (_, s) in enumerate(pieces) if i % 3 == 0)
    # nothing but counts, times and a model name is kept
    assert len(r._tail) == 0 and len(r._head) == 0 and not r._model_window and not r._request_carry


# -- wired: http2.Connection gives a generative-AI stream's DATA to the reader, h2_streams exports it ---------

def _streams_made(events: list[bytes], path: bytes = b"/v1/chat/completions", ctype: bytes = b"text/event-stream",
                  body: bytes = b'{"model":"req-model","stream":true}', cut: int | None = None):
    """A connection carrying one POST (HEADERS, then its body) answered by `events`, one DATA frame each at
    times 100, 101, ...; cut: each response frame's bytes past `cut` left out, as the kernel does."""
    from ebpftool.tracers.inference import http2 as h2
    from tests.test_http2_parse import _lit, frame
    conn = h2.Connection()
    block = b"\x83\x86" + _lit(b":path", path) + _lit(b"content-type", b"application/json")   # POST, http
    conn.feed(h2.CLIENT, h2.PREFACE + frame(h2.SETTINGS, 0, 0, b"") + frame(h2.HEADERS, 0x4, 1, block), 10)
    conn.feed(h2.CLIENT, frame(h2.DATA, 0x1, 1, body), 11)
    conn.feed(h2.SERVER, frame(h2.SETTINGS, 0, 0, b"") + frame(h2.HEADERS, 0x4, 1, b"\x88" + _lit(b"content-type", ctype)), 50)
    done = []
    for i, e in enumerate(events):
        f = frame(h2.DATA, 0, 1, e)
        if cut is not None and len(e) > cut:
            done += conn.feed(h2.SERVER, f[:9 + cut], 100 + i, skipped=len(e) - cut)
        else:
            done += conn.feed(h2.SERVER, f, 100 + i)
    done += conn.feed(h2.SERVER, frame(h2.DATA, 0x1, 1, b""), 200)
    return done


def test_a_streamed_chat_over_http2_gives_the_gen_ai_metrics_and_span():
    from tests.test_http2_parse import exporting_tracer
    from ebpftool.tracers.inference.h2_streams import H2Peer
    n = 4
    events = openai_events("/v1/chat/completions", n, True, model="resp-model")
    [s] = _streams_made(events)
    g = s.gen_ai
    assert (g.operation, g.request_model, g.stream, g.tokens, g.stated_output_tokens, g.response_model,
            g.first_token_ns, g.last_token_ns) == ("chat", "req-model", True, n, n, "resp-model", 101, 100 + n)
    spans: list = []
    tracer = exporting_tracer(spans)
    tracer._h2_stream_done(H2Peer(1, 8000, 0, False, "127.0.0.1", 5000, "srv"), s)
    points = {p.name: p for p in tracer._h2_points()}
    attrs = {"server.port": 8000, "gen_ai.operation.name": "chat", "gen_ai.response.model": "resp-model",
             "network.protocol.version": "2"}
    duration = points["gen_ai.server.request.duration"]
    assert (duration.attributes, duration.count, duration.sum) == (attrs, 1, (200 - 10) / 1e9)
    assert (points["gen_ai.server.time_to_first_token"].sum, points["gen_ai.server.time_to_first_token"].bounds) == (
        (101 - 10) / 1e9, (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0))
    assert points["gen_ai.server.time_per_output_token"].sum == (n - 1) / (n - 1) / 1e9
    tokens = points["ebpftool.gen_ai.server.output_tokens"]
    assert (tokens.value, tokens.attributes, tokens.unit) == (n, {**attrs, "gen_ai.token.type": "output"}, "{token}")
    # (the request duration is merged with the kernel's series at collect: see metrics.py)
    [(_attrs, http_duration)] = tracer._h2_hist.of("http.server.request.duration")
    assert http_duration.count == 1
    [span] = spans
    a = span.attributes
    assert (span.name, a["gen_ai.operation.name"], a["gen_ai.request.model"], a["gen_ai.response.model"],
            a["gen_ai.usage.output_tokens"], a["ebpftool.gen_ai.time_to_first_token"],
            a["ebpftool.gen_ai.time_per_output_token"], a["http.response.status_code"]) == (
        "POST /v1/chat/completions", "chat", "req-model", "resp-model", n, 91e-9, 1e-9, 200)
    assert "ebpftool.gen_ai.response.unseen_bytes" not in a
    assert [(e.name, e.time_ns) for e in span.events] == [("ebpftool.gen_ai.first_token", 101)]


def test_frames_cut_by_the_kernel_count_what_was_seen_and_say_what_was_not():
    events = [b'data: {"choices":[{"delta":{"content":"' + b"w" * 700 + b'"}}]}\n\n',
              b'data: {"choices":[{"delta":{"content":"x"}}]}\n\n']
    [s] = _streams_made(events, cut=512)
    assert (s.gen_ai.tokens, s.gen_ai.cut_events, s.gen_ai.unseen_bytes, s.response_bytes) == (
        1, 1, len(events[0]) - 512, sum(map(len, events)))


def test_other_streams_get_no_reader_and_events_on_another_path_are_generate_content():
    [s] = _streams_made([b'{"ok":1}'], path=b"/v1/models", ctype=b"application/json")
    assert s.gen_ai is None
    [s] = _streams_made([b"data: a\n\n", b"data: b\n\n"], path=b"/events", ctype=b"text/event-stream; charset=utf-8")
    assert (s.gen_ai.operation, s.gen_ai.tokens, s.gen_ai.request_model) == ("generate_content", 2, None)
    [s] = _streams_made([b'{"response":"a","done":false}\n{"response":"","done":true,"eval_count":3}\n'],
                        path=b"/api/generate", ctype=b"application/x-ndjson")
    assert (s.gen_ai.operation, s.gen_ai.tokens, s.gen_ai.output_tokens) == ("text_completion", 1, 3)
