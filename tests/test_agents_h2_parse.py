"""ebpftool.tracers.agents.http2.ClientH2Connection, pure: HTTP/2 frames built here byte by byte (RFC 9113
framing, RFC 7541 literals and the dynamic table) in, calls out, as the HTTP/1 reader gives them."""
from __future__ import annotations

import base64
import json
import struct

from ebpftool.tracers.agents.connection import ClientConnection
from ebpftool.tracers.agents.http2 import ClientH2Connection, is_preface
from ebpftool.tracers.inference.http2 import PREFACE

DATA, HEADERS, RST_STREAM, SETTINGS, CONTINUATION = 0, 1, 3, 4, 9
END_STREAM, END_HEADERS, PADDED = 0x1, 0x4, 0x8


def frame(ftype: int, flags: int, sid: int, payload: bytes) -> bytes:
    return struct.pack("!I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack("!I", sid) + payload


def literal(name: bytes, value: bytes, index: bool = False) -> bytes:
    """A literal field with a new name: incremental indexing (0x40) or without indexing (0x00)."""
    return bytes([0x40 if index else 0x00, len(name)]) + name + bytes([len(value)]) + value


def request_block(path: bytes, authority: bytes = b"api.example.com:8443", first: bool = True) -> bytes:
    """:method POST (static 3), :scheme https (static 7), :path, :authority; the authority enters the dynamic
    table the first time and is indexed after (62: the newest entry)."""
    fields = bytes([0x83, 0x87]) + literal(b":path", path)
    fields += literal(b":authority", authority, index=True) if first else bytes([0x80 | 62])
    return fields + literal(b"content-type", b"application/json") + literal(b"authorization", b"Bearer sk-secret")


def chat(model: str, stream: bool) -> bytes:
    return json.dumps({"model": model, "messages": [{"role": "user", "content": "hi there"}], "stream": stream,
                       "stream_options": {"include_usage": True}}).encode()


def sse(model: str, tokens: list[str], usage: tuple[int, int]) -> list[bytes]:
    events = [{"model": model, "choices": [{"delta": {"role": "assistant", "content": ""}}]}]
    events += [{"model": model, "choices": [{"delta": {"content": t}}]} for t in tokens]
    events.append({"model": model, "choices": [{"delta": {}, "finish_reason": "stop"}]})
    events.append({"model": model, "choices": [], "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1]}})
    return [b"data: " + json.dumps(e).encode() + b"\n\n" for e in events] + [b"data: [DONE]\n\n"]


def response_head(sid: int, content_type: bytes, end: bool = False) -> bytes:
    return frame(HEADERS, END_HEADERS | (END_STREAM if end else 0), sid,
                 bytes([0x88]) + literal(b"content-type", content_type))   # :status 200 (static 8)


def test_interleaved_streams_are_calls_of_their_own_with_the_reads_times():
    h2 = ClientH2Connection()
    h2.request(PREFACE + frame(SETTINGS, 0, 0, b""), 1.0)
    # stream 1: a streamed chat, its HEADERS and DATA in two writes; stream 3: not streamed
    h2.request(frame(HEADERS, END_HEADERS, 1, request_block(b"/v1/chat/completions")), 2.0)
    h2.request(frame(DATA, END_STREAM, 1, chat("gpt-4o-mini", True)), 2.1)
    h2.request(frame(HEADERS, END_HEADERS, 3, request_block(b"/v1/chat/completions", first=False))
               + frame(DATA, END_STREAM, 3, chat("gpt-4.1", False)), 3.0)
    assert h2.port == 8443
    done = h2.response(frame(SETTINGS, 0, 0, b"") + response_head(1, b"text/event-stream"), 4.0)
    events = sse("gpt-4o-mini-2026", ["a ", "b ", "c "], (7, 3))
    t = 5.0
    for e in events[:3]:          # the role chunk and two tokens, a read each
        done += h2.response(frame(DATA, 0, 1, e), t)
        t += 1
    answer = json.dumps({"model": "gpt-4.1-x", "choices": [{"message": {"content": "ok"}, "finish_reason": "stop"}],
                         "usage": {"prompt_tokens": 5, "completion_tokens": 1}}).encode()
    done += h2.response(response_head(3, b"application/json") + frame(DATA, END_STREAM, 3, answer), 9.0)
    done += h2.response(b"".join(frame(DATA, 0, 1, e) for e in events[3:]) + frame(DATA, END_STREAM, 1, b""), 10.0)
    assert [ex.call.request_model for ex in done] == ["gpt-4.1", "gpt-4o-mini"]
    plain, streamed = done
    assert (plain.start, plain.end, plain.answer.status, plain.answer.response_model) == (3.0, 9.0, 200, "gpt-4.1-x")
    assert (plain.answer.input_tokens, plain.answer.output_tokens) == (5, 1)
    a = streamed.answer
    assert (streamed.start, streamed.end, a.status, a.response_model) == (2.0, 10.0, 200, "gpt-4o-mini-2026")
    assert (a.input_tokens, a.output_tokens, a.chunks) == (7, 3, 3)
    assert (a.first_chunk_time, a.last_chunk_time) == (6.0, 10.0)   # the reads that held them
    assert streamed.call.host == "api.example.com" and streamed.call.stream
    assert not h2.streams


def test_a_reset_ends_its_call_and_the_others_go_on():
    h2 = ClientH2Connection()
    h2.request(PREFACE + frame(SETTINGS, 0, 0, b"")
               + frame(HEADERS, END_HEADERS, 1, request_block(b"/v1/chat/completions"))
               + frame(DATA, END_STREAM, 1, chat("gpt-4o-mini", True))
               + frame(HEADERS, END_HEADERS, 3, request_block(b"/v1/chat/completions", first=False))
               + frame(DATA, END_STREAM, 3, chat("gpt-4o-mini", False)), 1.0)
    done = h2.response(response_head(1, b"text/event-stream") + frame(DATA, 0, 1, sse("m", ["x "], (1, 1))[1]), 2.0)
    h2.request(frame(RST_STREAM, 0, 1, struct.pack("!I", 8)), 3.0)     # the client cancels stream 1
    done += h2.response(b"", 3.5)
    assert len(done) == 1 and done[0].end == 3.0 and done[0].answer.chunks == 1 and not done[0].answer.complete
    done = h2.close(4.0)     # stream 3 never answered
    assert len(done) == 1 and done[0].answer is None and done[0].call.request_model == "gpt-4o-mini"


def test_continuation_padding_and_an_answer_without_a_body():
    h2 = ClientH2Connection()
    block = request_block(b"/v1/embeddings")
    padded = bytes([3]) + block[:10] + b"\0\0\0"
    h2.request(PREFACE + frame(HEADERS, PADDED, 1, padded) + frame(CONTINUATION, END_HEADERS, 1, block[10:])
               + frame(DATA, END_STREAM, 1, json.dumps({"model": "text-embedding-3-small", "input": "x"}).encode()),
               1.0)
    head = bytes([0x80 | 13])   # :status 404 (static 13)
    done = h2.response(frame(HEADERS, END_HEADERS | END_STREAM, 1, head), 2.0)
    assert len(done) == 1
    ex = done[0]
    assert ex.call.request_model == "text-embedding-3-small" and ex.answer.status == 404 and ex.end == 2.0


def test_bytes_that_are_not_http2_give_the_connection_up():
    h2 = ClientH2Connection()
    h2.request(PREFACE + frame(HEADERS, END_HEADERS | END_STREAM, 1, request_block(b"/v1/chat/completions")), 1.0)
    done = h2.response(b"\0" * 9 + b"garbage", 2.0)    # a DATA frame on stream 0
    assert h2.failed and len(done) == 1 and done[0].answer is None
    assert h2.response(response_head(1, b"application/json"), 3.0) == []


def test_the_preface_is_told_from_http1():
    assert is_preface(PREFACE) and is_preface(PREFACE + b"\0\0") and is_preface(PREFACE[:10])
    assert not is_preface(b"POST /v1/chat/completions HTTP/1.1\r\n") and not is_preface(b"")


def test_no_header_value_is_kept_past_the_call():
    h2 = ClientH2Connection()
    h2.request(PREFACE + frame(HEADERS, END_HEADERS | END_STREAM, 1, request_block(b"/v1/models")), 1.0)
    done = h2.response(response_head(1, b"application/json", end=True), 2.0)
    assert "sk-secret" not in repr(done)


def upgrade_request(body: bytes, settings: bytes) -> bytes:
    """curl --http2's POST over http://: an HTTP/1.1 request asking for the h2c Upgrade (RFC 7540 3.2)."""
    token = base64.urlsafe_b64encode(settings).rstrip(b"=")
    return (b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nConnection: Upgrade, HTTP2-Settings\r\n"
            b"Upgrade: h2c\r\nHTTP2-Settings: " + token + b"\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body) + body)


SWITCHING = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"


def test_an_h2c_upgrade_request_is_answered_on_stream_1_and_the_connection_goes_on_as_http2():
    """The request's answer comes as HTTP/2 after the 101 (here in the same read); a later stream is a call of its
    own, and the connection is never let go."""
    c = ClientConnection()
    settings = struct.pack("!HI", 3, 100) + struct.pack("!HI", 4, 1 << 20)   # what curl sends
    c.request(upgrade_request(chat("gpt-4o-mini", True), settings), 1.0)
    events = sse("gpt-4o-mini-2026", ["a ", "b "], (7, 2))
    done = c.response(SWITCHING + frame(SETTINGS, 0, 0, b"") + response_head(1, b"text/event-stream")
                      + frame(DATA, 0, 1, events[0]), 2.0)
    assert done == [] and not c.can_let_go and c.waiting_calls() == []
    c.request(PREFACE + frame(SETTINGS, 0, 0, b"") + frame(SETTINGS, 1, 0, b""), 2.1)
    t = 3.0
    for e in events[1:]:
        done += c.response(frame(DATA, 0, 1, e), t)
        t += 1
    done += c.response(frame(DATA, END_STREAM, 1, b""), t)
    (up,) = done
    a = up.answer
    assert (up.call.request_model, up.start, up.end, a.status, a.response_model) == \
        ("gpt-4o-mini", 1.0, t, 200, "gpt-4o-mini-2026")
    assert (a.input_tokens, a.output_tokens, a.chunks, a.first_chunk_time) == (7, 2, 2, 3.0)
    c.request(frame(HEADERS, END_HEADERS, 3, request_block(b"/v1/chat/completions"))
              + frame(DATA, END_STREAM, 3, chat("gpt-4.1", False)), 10.0)
    answer = json.dumps({"model": "gpt-4.1-x", "choices": [{"message": {"content": "ok"}, "finish_reason": "stop"}],
                         "usage": {"prompt_tokens": 5, "completion_tokens": 1}}).encode()
    (second,) = c.response(response_head(3, b"application/json") + frame(DATA, END_STREAM, 3, answer), 11.0)
    assert (second.call.request_model, second.start, second.answer.status) == ("gpt-4.1", 10.0, 200)
    assert c.finished == [up, second]


def test_a_101_to_another_upgrade_ends_its_call_at_the_head():
    """A WebSocket (or any other) Upgrade taken: the call is its 101; what follows is no HTTP."""
    c = ClientConnection()
    c.request(b"GET /v1/realtime HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", 1.0)
    (ex,) = c.response(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x05hello", 2.0)
    assert (ex.answer.status, ex.end) == (101, 2.0) and c.h2 is None and c.can_let_go
    assert c.response(b"\x81\x05again", 3.0) == []


def test_an_h2c_upgrade_the_server_declines_stays_http1():
    c = ClientConnection()
    c.request(upgrade_request(chat("gpt-4.1", False), b""), 1.0)
    answer = b'{"model":"m","usage":{"prompt_tokens":2,"completion_tokens":1}}'
    (ex,) = c.response(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                       % len(answer) + answer, 2.0)
    assert (ex.answer.status, ex.answer.output_tokens, c.h2) == (200, 1, None)
