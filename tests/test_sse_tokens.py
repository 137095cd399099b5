"""The kernel's token count (`data:` events in each write of a streamed answer) against a reference.

A server in this process answers each request with a head and then writes of random Server-Sent Events
(several per write, split lines, [DONE] both ways, usage-only chunks both ways, `data:` inside a payload,
chunk framing, writes longer than what the kernel scans, an event cut by that limit); every send() is one
write the tracer sees. What `ebpftool inference` exports per request must equal what the reference rule
below counts on the same bytes.
"""
from __future__ import annotations

import random
import select
import socket
import threading
import time

import pytest

from ebpftool.core.cstruct import load_header
from tests.conftest import EbpftoolProcess, inference_args
from tests.otlp_receiver import GrpcReceiver
from tests.servers.nginx import free_port

pytestmark = [pytest.mark.bpf, pytest.mark.timeout(180)]

_, H = load_header("inference/inference.h")
SSE_SCAN_MAX = H["SSE_SCAN_MAX"]
HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"
REQUEST = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
           b"Content-Length: 2\r\n\r\n{}")


RARE_WORDS = 8  # bpf/inference/maps.bpf.h RARE_WORDS: words of one buffer looked at closer for marks
# What find_marks() compares, each ending at the byte pair its word was noted for (usage-only, empty-text,
# finish-only, done, special and role-only chunks): the bytes before the pair are compared as they are.
MARKS = (b'oices":[]', b'oices": []', b'ssistant","content":""', b'ssistant", "content": ""', b'"text":""',
         b'"text": ""', b'sponse":""',
         b'output":""', b'"delta":{}', b'delta": {}', b'"done":t', b'"stop":t', b'pecial":t',
         b'ssistant"}')


def _triggers(data: bytes, i: int) -> bool:
    """The byte pairs (and `t"}`) at which the kernel's first pass notes a word for a closer look."""
    pair = data[i:i + 2]
    return (pair in (b"[]", b'""', b"{}", b":t", b"_t", b"_c")) or (data[i - 1:i + 2] == b't"}')


def reference_tokens(write: bytes) -> int:
    """The rule the kernel applies to one write (bpf/inference/sse.bpf.h, find_events / find_marks): in its first
    SSE_SCAN_MAX bytes, events are `data:` at the write's start or after a '\\n', not followed by `[` or ` [`
    ([DONE]), whose ':' lies in those bytes; an event is a token unless a mark (a usage-only, role-only,
    finish-only or empty chunk) lies wholly in those bytes before the next event, in one of the first
    RARE_WORDS 8-byte words that hold a trigger (words counted from the window's start less 16 bytes)."""
    window = write[:SSE_SCAN_MAX]
    data = bytes(15) + b"\n" + window + bytes(16)  # as the kernel lays it out: the window at offset 16
    end = 16 + len(window)
    starts = []
    for p in range(15, end):
        if data[p:p + 6] == b"\ndata:" and p + 6 <= end:
            after = data[p + 6:p + 8]
            if not (after[:1] == b"[" or after == b" ["):
                starts.append(p)
    rare_words = [w for w in range(1, (16 + SSE_SCAN_MAX) // 8) if w * 8 < end and
                  any(_triggers(data, w * 8 + b) for b in range(8))][:RARE_WORDS]
    marked = set()
    for w in rare_words:
        owner = sum(1 for p in starts if p < w * 8)  # events begun before this word
        for b in range(8):
            p = w * 8 + b
            if p + 2 > end:
                continue
            if any(data[p - len(m) + 2:p + 2] == m for m in MARKS if m.endswith(data[p:p + 2])):
                if owner:
                    marked.add(owner - 1)
    # an `event:` line of the Responses or Messages API names the event whose `data:` line comes next (its
    # index: the events begun before the line), a token when the name ends in `delta` (not `message_delta`)
    named, named_token = set(), set()
    for p in range(15, end):
        if data[p] != 0x0A:
            continue
        index = sum(1 for q in starts if q < p)
        if index >= 64:
            continue
        if data[p:p + 7] == b"\nevent:" and (_known_name(data[p + 7:p + 15]) or
                                             (data[p + 7:p + 8] == b" " and _known_name(data[p + 8:p + 16]))):
            named.add(index)
        line_end = data[p - 5:p] if data[p - 1:p] != b"\r" else data[p - 6:p - 1]
        before = data[p - 13:p - 5] if data[p - 1:p] != b"\r" else data[p - 14:p - 6]
        if line_end == b"delta" and before != b"message_":
            named_token.add(index)
    not_tokens = {i for i in named if i not in named_token} | {i for i in marked if i not in named}
    return len(starts) - len(not_tokens)


def _known_name(first8: bytes) -> bool:
    """sse.bpf.h's known_event_name on a name's first 8 bytes (zeros past the buffer)."""
    return (first8 in (b"response", b"message_", b"content_") or
            (first8[:4] == b"ping" and first8[4:5] in (b"\n", b"\r")) or
            (first8[:5] == b"error" and first8[5:6] in (b"\n", b"\r")))


def _piece(rng: random.Random) -> bytes:
    text = "".join(rng.choice("abcdefghij ") for _ in range(rng.randrange(0, 120)))
    kind = rng.randrange(10)
    if kind == 0:
        return b"data: [DONE]\n\n" if rng.random() < 0.5 else b"data:[DONE]\n\n"
    if kind == 1:
        return b'data: {"choices":[],"usage":null}\n\n' if rng.random() < 0.5 else b'data: {"choices": [], "n": 1}\n\n'
    if kind == 2:
        return b": keep-alive " + text.encode() + b"\n\n"
    if kind == 3:
        return b'data: {"text": "data: inline, not an event ' + text.encode() + b'"}\n\n'
    if kind == 4:
        return b"event: message\r\ndata:" + text.encode() + b"\r\n\r\n"
    if kind == 5:
        return b"data: " + text.encode() + b"\ndata: second line\n\n"  # two events by this rule
    if kind == 7 and rng.random() < 0.5:
        # vLLM's event for a token whose text it held back (a token), or a role chunk, spaced or not (none)
        return rng.choice((b'data: {"choices":[{"index":0,"delta":{"content":""},"finish_reason":null}]}\n\n',
                           b'data: {"choices": [{"delta": {"content": ""}, "finish_reason": "stop"}]}\n\n',
                           b'data: {"choices":[{"delta":{"role":"assistant","content":""}}]}\n\n',
                           b'data: {"choices": [{"delta": {"role": "assistant", "content": ""}}]}\n\n'))
    if kind == 8 and rng.random() < 0.6:
        # named events (the Responses API's, Anthropic's; \r\n or \n; a name of another API changes nothing)
        sep = rng.choice((b"\n", b"\r\n"))
        name = rng.choice((b"response.output_text.delta", b"response.created", b"response.content_part.added",
                           b"content_block_delta", b"content_block_start", b"message_delta", b"message_start",
                           b"ping", b"error", b"message", b"token_delta"))
        data = rng.choice((b'{"type":"x","delta":"' + text.encode() + b'"}', b'{"part":{"text":""}}',
                           b'{"choices":[],"usage":null}'))
        return b"event: " + name + sep + b"data: " + data + sep + sep
    body = b'data: {"choices":[{"delta":{"content":"' + text.encode() + b'"}}]}\n\n'
    if kind == 6:  # chunked framing around the event, as an HTTP/1.1 server writes it
        return b"%x\r\n" % len(body) + body + b"\r\n"
    return body


def _writes(rng: random.Random) -> list[bytes]:
    writes = []
    for _ in range(rng.randrange(1, 8)):
        w = b"".join(_piece(rng) for _ in range(rng.randrange(1, 7)))
        r = rng.random()
        if r < 0.15:  # past what the kernel scans: the events there are not counted
            w = b"data: " + b"x" * rng.randrange(SSE_SCAN_MAX - 60, SSE_SCAN_MAX + 40) + b"\n\n" + w
        elif r < 0.25:  # an event that the scan limit cuts
            w = b"data: " + b"y" * (SSE_SCAN_MAX - 10 - rng.randrange(0, 6)) + b"\ndata: cut\n\n"
        writes.append(w)
    # every answer has a token the kernel sees (a request with none is not a stream), and some a role-only
    # first chunk or a finish-only last one (events, not tokens)
    writes.insert(rng.randrange(len(writes) + 1), b'data: {"choices":[{"delta":{"content":"x"}}]}\n\n')
    if rng.random() < 0.5:
        writes.insert(0, b'data: {"choices":[{"delta":{"role":"assistant","content":""}}]}\n\n')
    if rng.random() < 0.5:
        writes.append(b'data: {"choices":[{"delta": {}, "finish_reason": "stop"}]}\n\n')
    return writes


def _serve(listener: socket.socket, answers: list[list[bytes]]) -> None:
    for writes in answers:
        conn, _ = listener.accept()
        with conn:
            got = b""
            while not got.endswith(b"{}"):
                got += conn.recv(4096)
            conn.sendall(HEAD)
            for w in writes:
                conn.sendall(w)  # one send() each: one write for the kernel


@pytest.mark.parametrize("hooks", ["socket", "socket-raw", "syscall"])
def test_token_counts_match_the_reference_on_random_event_streams(hooks):
    rng = random.Random(20261123)
    answers = [_writes(rng) for _ in range(40)]
    # more words where a named event's line may begin than the scan looks at for marks (RARE_WORDS), then
    # a mark: those words are not among the ones looked at for marks (the usage-only chunk is no token)
    answers.append([b"event: message\ndata: x\n\n" * (RARE_WORDS + 1) + b'data: {"choices":[],"usage":null}\n\n'])
    for w in (w for writes in answers for w in writes):
        assert not w.endswith(b"0\r\n\r\n")  # that would be a chunked answer's end, not a token write
    expected = [sum(reference_tokens(w) for w in writes) for writes in answers]
    assert any(b"\ndata:" in w[SSE_SCAN_MAX:] for writes in answers for w in writes)  # events past the limit
    port = free_port()
    listener = socket.create_server(("127.0.0.1", port))
    receiver = GrpcReceiver()
    try:
        with EbpftoolProcess(inference_args(port, receiver, hooks)) as proc:
            server = threading.Thread(target=_serve, args=(listener, answers), daemon=True)
            server.start()
            for _ in answers:
                with socket.create_connection(("127.0.0.1", port), timeout=15) as c:
                    c.sendall(REQUEST)
                    while c.recv(65536):
                        pass
            server.join(15)
            assert receiver.wait_for(lambda: len(receiver.spans()) >= len(answers), timeout=20)
            assert proc.stop() == 0, proc.stderr  # its last export holds every token
        spans = sorted(receiver.spans(), key=lambda s: s.start_ns)
        assert [s.attributes.get("gen_ai.usage.output_tokens") for s in spans] == expected
        (total,) = [p.value for p in receiver.latest("ebpftool.gen_ai.server.output_tokens")]
        assert total == sum(expected)
    finally:
        listener.close()
        receiver.stop()


BACKPRESSURE_EVENTS = 150


def _serve_to_a_slow_reader(listener: socket.socket, stalls: list[int]) -> None:
    """One event per write, non-blocking, into a small send buffer: writes fail with EAGAIN or go out in
    part, and are retried (the rest of a part-written one) as servers do."""
    conn, _ = listener.accept()
    with conn:
        got = b""
        while not got.endswith(b"{}"):
            got += conn.recv(4096)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        conn.setblocking(False)
        event = b'data: {"choices": [{"delta": {"content": "' + b"x" * 300 + b'"}}]}\n\n'
        for buf in [HEAD] + [event] * BACKPRESSURE_EVENTS:
            while buf:
                try:
                    n = conn.send(buf)
                except BlockingIOError:
                    stalls.append(0)
                    select.select([], [conn], [], 1)
                    continue
                if n < len(buf):
                    stalls.append(n)
                buf = buf[n:]


@pytest.mark.parametrize("hooks", ["socket", "socket-raw", "syscall"])
def test_token_counts_hold_when_writes_wait_for_buffer_space(hooks):
    """A slow reader: the server's writes wait for send-buffer space, fail with EAGAIN and are retried, or
    go out in part. Every event is counted once: the BTF send hook sees a write before its outcome, so
    it must skip the turns that will wait (seen again when retried)."""
    port = free_port()
    listener = socket.create_server(("127.0.0.1", port))
    receiver = GrpcReceiver()
    stalls: list[int] = []
    try:
        with EbpftoolProcess(inference_args(port, receiver, hooks)) as proc:
            server = threading.Thread(target=_serve_to_a_slow_reader, args=(listener, stalls), daemon=True)
            server.start()
            with socket.socket() as c:
                c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                c.settimeout(15)
                c.connect(("127.0.0.1", port))
                c.sendall(REQUEST)
                time.sleep(0.3)  # the server fills both buffers meanwhile
                while c.recv(2048):
                    time.sleep(0.002)
            server.join(15)
            assert stalls.count(0) > 0 and any(stalls), stalls  # writes did fail with EAGAIN and go out in part
            assert receiver.wait_for(lambda: len(receiver.spans()) >= 1, timeout=20)
            assert proc.stop() == 0, proc.stderr
        (span,) = receiver.spans()
        assert span.attributes.get("gen_ai.usage.output_tokens") == BACKPRESSURE_EVENTS
    finally:
        listener.close()
        receiver.stop()
