"""tests/wire.py, the wire truth of the real-server tests, on handmade captures (pure Python)."""
from __future__ import annotations

import http.client
import json
import shutil
import struct
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests import wire
from tests.wire import (LINKTYPE_EN10MB, LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2, TCP_ACK, TCP_FIN, TCP_SYN,
                        classify, exchanges, read_pcap, sse_events, tcp_frame, write_pcap)

MS = 1_000_000
T0 = 1_700_000_000 * 1_000_000_000


class Conn:
    """A handmade TCP connection: frames with their times, each direction's sequence numbers kept."""

    def __init__(self, client=("127.0.0.1", 40000), server=("127.0.0.1", 8000), isn_c=1000, isn_s=5000,
                 linktype=LINKTYPE_EN10MB) -> None:
        self.client, self.server, self.linktype = client, server, linktype
        self.seq = {True: isn_c, False: isn_s}
        self.frames: list[tuple[int, bytes]] = []

    def handshake(self, t: int) -> "Conn":
        self.frame(t, True, b"", TCP_SYN)
        self.frame(t, False, b"", TCP_SYN | TCP_ACK)
        return self

    def frame(self, t: int, up: bool, payload: bytes = b"", flags: int = TCP_ACK, seq: int | None = None):
        """A segment at t (ns after T0) from the client (up) or the server; seq None: the next bytes."""
        src, dst = (self.client, self.server) if up else (self.server, self.client)
        if seq is None:
            seq = self.seq[up]
            self.seq[up] = (seq + len(payload) + (1 if flags & (TCP_SYN | TCP_FIN) else 0)) & 0xFFFFFFFF
        self.frames.append((T0 + t, tcp_frame(src, dst, seq, payload, flags, self.linktype)))
        return seq

    def send(self, t: int, up: bool, data: bytes, size: int = 1 << 30, step: int = 0) -> None:
        for i in range(0, len(data), size):
            self.frame(t + (i // size) * step, up, data[i:i + size])


def sse(*docs) -> bytes:
    return b"".join(b"data: " + (d if isinstance(d, bytes) else json.dumps(d).encode()) + b"\n\n" for d in docs)


def chunk(b: bytes) -> bytes:
    return b"%x\r\n" % len(b) + b + b"\r\n"


ROLE = {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}
FINISH = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}


def token(t: str):
    return {"choices": [{"index": 0, "delta": {"content": t}, "finish_reason": None}]}


REQUEST = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
           b"Content-Length: 13\r\n\r\n{\"stream\":1}\n")
SSE_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\ntransfer-encoding: chunked\r\n\r\n"


def test_a_chunked_stream_with_role_finish_usage_and_done_chunks():
    c = Conn().handshake(0)
    c.send(1 * MS, True, REQUEST[:20])
    c.send(2 * MS, True, REQUEST[20:])
    c.send(5 * MS, False, SSE_HEAD)
    c.send(6 * MS, False, chunk(sse(ROLE)))
    for i, t in enumerate("abc"):
        c.send((40 + 10 * i) * MS, False, chunk(sse(token(t))))
    c.send(71 * MS, False, chunk(sse(FINISH)))
    usage = {"id": "x", "model": "m1", "choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 3}}
    c.send(72 * MS, False, chunk(sse(usage, b"[DONE]")) + b"0\r\n\r\n")
    (x,) = exchanges(write_pcap(c.frames), 8000)
    assert (x.method, x.path, x.status, x.chunked, x.complete, x.streamed) == (
        "POST", "/v1/chat/completions", 200, True, True, True)
    assert x.client == ("127.0.0.1", 40000) and x.request_body == b'{"stream":1}\n'
    assert [e.kind for e in x.events] == ["role", "content", "content", "content", "finish", "usage", "done"]
    assert x.request_first_ns == T0 + 1 * MS and x.request_last_ns == T0 + 2 * MS
    assert x.response_first_ns == T0 + 5 * MS and x.response_last_ns == T0 + 72 * MS
    assert x.ttft_ns == 39 * MS and x.tpot_ns == 10 * MS and x.duration_ns == 71 * MS
    assert x.usage == {"prompt_tokens": 7, "completion_tokens": 3} and x.model == "m1"
    assert x.expected_output_tokens == 3


def test_without_usage_the_tokens_are_the_content_events_and_a_text_completion_counts_text():
    c = Conn(linktype=LINKTYPE_LINUX_SLL).handshake(0)
    c.send(1 * MS, True, REQUEST.replace(b"chat/completions", b"completions"))
    text = lambda t, f=None: {"choices": [{"index": 0, "text": t, "finish_reason": f}]}  # noqa: E731
    body = sse(text(""), text("a"), text("b"), text("", "length"), b"[DONE]")
    c.send(3 * MS, False, SSE_HEAD + chunk(body) + b"0\r\n\r\n")  # head and every event in one segment
    (x,) = exchanges(write_pcap(c.frames, LINKTYPE_LINUX_SLL), 8000)
    assert [e.kind for e in x.events] == ["role", "content", "content", "finish", "done"]
    assert x.expected_output_tokens == 2 and x.usage is None
    assert x.ttft_ns == 2 * MS and x.tpot_ns == 0


def test_a_content_chunk_that_also_finishes_is_content():
    assert classify({"choices": [{"delta": {"content": "z"}, "finish_reason": "stop"}]}) == "content"
    assert classify({"choices": [{"delta": {"content": None}, "finish_reason": None}]}) == "role"
    assert classify({"choices": [{"delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}) == "role"
    # vLLM's event for a token whose text it held back, and for the stop token: tokens it counts
    assert classify({"choices": [{"delta": {"content": ""}, "finish_reason": None}]}) == "content"
    assert classify({"choices": [{"delta": {"content": ""}, "finish_reason": "stop"}]}) == "content"
    assert classify({"choices": [{"delta": {}, "finish_reason": "length"}]}) == "finish"
    assert classify({"choices": [], "usage": {"completion_tokens": 1}}) == "usage"
    assert classify({"error": "x"}) == "other" and classify([1]) == "other"


def test_events_split_over_segments_take_the_time_of_their_first_byte_and_crlf_and_comments_parse():
    c = Conn(client=("::1", 50000), server=("::1", 8000)).handshake(0)
    c.send(1 * MS, True, REQUEST)
    body = (b": ping\r\n\r\n" + b"data: " + json.dumps(token("a")).encode() + b"\r\n\r\n"
            + b"event: message\r\ndata: {\"choices\":[{\"delta\":\r\ndata: {\"content\":\"b\"}}]}\r\n\r\n")
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n"  # no length: ends at the close
    c.send(2 * MS, False, head)
    c.send(10 * MS, False, body, size=7, step=MS)  # 7 bytes a segment, 1 ms apart
    c.frame(200 * MS, False, b"", TCP_FIN | TCP_ACK)
    (x,) = exchanges(write_pcap(c.frames), 8000)
    assert x.client == ("::1", 50000) and x.complete and not x.chunked
    assert [e.kind for e in x.events] == ["content", "content"]
    first = len(b": ping\r\n\r\n")
    second = first + len(b"data: " + json.dumps(token("a")).encode() + b"\r\n\r\n")
    assert [e.ts_ns - T0 for e in x.events] == [(10 + first // 7) * MS, (10 + second // 7) * MS]
    assert x.events[1].json == {"choices": [{"delta": {"content": "b"}}]}
    assert x.response_last_ns == T0 + (10 + (len(body) - 1) // 7) * MS


def test_retransmits_and_reordering_keep_the_first_time_of_each_byte():
    c = Conn(isn_c=0xFFFFFF00, isn_s=0xFFFFFFF0).handshake(0)  # both directions wrap around 2**32
    c.send(1 * MS, True, REQUEST)
    resp = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 300\r\n\r\n'
    body = b'{"model":"big",' + b'"pad":"' + b"p" * 200 + b'",' + b'"usage":{"completion_tokens":42}}'
    body = body[:-1] + b" " * (300 - len(body)) + b"}"
    data = resp + body
    base = c.seq[False]
    # 0..100 at 3 ms; 150..end at 4 ms (out of order); 100..150 lost, then 50..160 retransmitted at 9 ms;
    # 0..100 again at 10 ms (a duplicate)
    c.frame(3 * MS, False, data[:100], seq=base)
    c.frame(4 * MS, False, data[150:], seq=(base + 150) & 0xFFFFFFFF)
    c.frame(9 * MS, False, data[50:160], seq=(base + 50) & 0xFFFFFFFF)
    c.frame(10 * MS, False, data[:100], seq=base)
    (x,) = exchanges(write_pcap(c.frames), 8000)
    assert x.complete and x.status == 200 and x.body == body
    assert x.body_json["usage"] == {"completion_tokens": 42} and x.model == "big"
    assert x.expected_output_tokens == 42 and not x.events and x.ttft_ns is None
    assert x.response_first_ns == T0 + 3 * MS and x.response_last_ns == T0 + 4 * MS
    conns = wire.connections(wire.segments(write_pcap(c.frames)), 8000)
    down = conns[0].down
    assert [down.time_at(i) - T0 for i in (0, 99, 100, 149, 150, len(data) - 1)] == [3 * MS, 3 * MS, 9 * MS, 9 * MS,
                                                                                      4 * MS, 4 * MS]


def test_keep_alive_pipelining_interim_answers_and_an_unanswered_request_on_one_connection():
    c = Conn(linktype=LINKTYPE_LINUX_SLL2).handshake(0)
    get = b"GET /a?q=1 HTTP/1.1\r\nHost: x\r\n\r\n"
    c.send(1 * MS, True, get + b"HEAD /b HTTP/1.1\r\nHost: x\r\n\r\n")  # two pipelined in one segment
    c.send(2 * MS, False, b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\nno!")
    c.send(3 * MS, False, b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n")  # HEAD: no body
    c.send(4 * MS, True, b"POST /v1/completions HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
           + chunk(b'{"a":') + chunk(b"1}") + b"0\r\n\r\n")
    c.send(5 * MS, True, b"GET /never")  # cut short on the wire, never answered
    (a, b, p, n) = exchanges(write_pcap(c.frames, LINKTYPE_LINUX_SLL2), 8000)
    assert [(x.index, x.method, x.path, x.status) for x in (a, b, p, n)] == [
        (0, "GET", "/a?q=1", 404), (1, "HEAD", "/b", 200), (2, "POST", "/v1/completions", 0), (3, "GET", "/never", 0)]
    assert a.body == b"no!" and a.response_first_ns == T0 + 2 * MS and b.body == b"" and b.complete
    assert p.request_body == b'{"a":1}' and p.request_first_ns == T0 + 4 * MS and not p.complete
    assert n.request_first_ns == T0 + 5 * MS


def test_a_new_connection_on_a_reused_four_tuple_is_a_new_connection():
    c = Conn().handshake(0)
    c.send(1 * MS, True, b"GET /1 HTTP/1.1\r\n\r\n")
    c.send(2 * MS, False, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    d = Conn(isn_c=77, isn_s=99).handshake(10 * MS)
    d.send(11 * MS, True, b"GET /2 HTTP/1.1\r\n\r\n")
    d.send(12 * MS, False, b"HTTP/1.1 204 No Content\r\n\r\n")
    xs = exchanges(write_pcap(c.frames + d.frames), 8000)
    assert [(x.path, x.status, x.index) for x in xs] == [("/1", 200, 0), ("/2", 204, 0)]


def test_pcap_formats_microseconds_big_endian_and_a_truncated_last_record():
    c = Conn().handshake(0)
    c.send(1 * MS + 1234, True, b"GET / HTTP/1.1\r\n\r\n")
    pcap = write_pcap(c.frames, nano=False, big_endian=True)
    cut = struct.pack(">IIII", 1, 2, 100, 100) + b"\x00" * 10  # a record still being written
    linktype, records = read_pcap(pcap + cut)
    assert linktype == LINKTYPE_EN10MB and len(records) == 3
    assert records[2][0] == T0 + 1 * MS + 1000  # microseconds
    (x,) = exchanges(pcap, 8000)
    assert x.path == "/" and x.request_first_ns == T0 + 1 * MS + 1000
    with pytest.raises(ValueError):
        read_pcap(b"\x0a\x0d\x0d\x0a" + b"\0" * 40)  # pcapng


def test_sse_events_need_a_blank_line_to_end():
    events = sse_events(b'data: {"choices":[{"delta":{"content":"x"}}]}\n\ndata: [DO', lambda off: off)
    assert [(e.kind, e.ts_ns) for e in events] == [("content", 0)]


@pytest.mark.root
@pytest.mark.skipif(shutil.which("tcpdump") is None, reason="tcpdump is not installed (scripts/install.sh --dev)")
def test_a_live_capture_on_lo_matches_what_the_client_saw():
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):  # noqa: N802
            self.rfile.read(int(self.headers["Content-Length"]))
            body = json.dumps({"model": "live", "usage": {"completion_tokens": 5}}).encode() + b" " * 4000
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_a):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with wire.Capture(port) as cap:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            for _ in range(3):
                conn.request("POST", "/v1/completions", body=b"{}")
                assert conn.getresponse().read().startswith(b'{"model": "live"')
            conn.close()
            cap.stop()
        assert cap.dropped == 0
        xs = cap.exchanges()
        assert [(x.method, x.path, x.status, x.index, x.expected_output_tokens, x.model) for x in xs] == [
            ("POST", "/v1/completions", 200, i, 5, "live") for i in range(3)]
        assert all(x.complete and 0 < x.duration_ns < 5_000_000_000 for x in xs)
    finally:
        server.shutdown()
        server.server_close()
