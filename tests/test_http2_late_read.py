"""An HTTP/2 request whose HEADERS and DATA arrive apart and are read together, late.

Found by the real-server re-run of 2026-12-07 (Triton's gRPC frontend on a busy host,
`scripts/check_grpc_server.sh`): tritonclient's streaming calls send a stream's HEADERS, then its first
message's DATA a millisecond or more later; when the server read both in one read, the stream started at
the DATA's arrival, 1-2.3 ms after its HEADERS came (the wire's start). A read of an HTTP/2 connection was
timed by the latest arrival before it, so that no stream in it starts before its bytes came; the kernel
now also notes how many bytes the socket held when the read's first bytes arrived, and the frames that
begin within them are timed by that first arrival.

A raw h2c client (stream 1 answered at once; then stream 3's HEADERS, DELAY_S later its DATA) and a server
that reads stream 3's two frames in one read once both are queued: the span must start when the HEADERS
came, before the DATA was sent."""
from __future__ import annotations

import array
import fcntl
import functools
import socket
import termios
import threading
import time

import pytest

from tests.h2c_raw import (PREFACE, SETTINGS, SETTINGS_ACK, accepted, frame, recv_at_least, spans_of,
                           traced_server)
from tests.kernel_state import wait_until

pytestmark = pytest.mark.bpf

DELAY_S = 0.030
TOLERANCE_NS = 1_000_000
CONNECTIONS = 3
# HPACK: :method GET / POST, :scheme http, :path / (static indices 2 / 3, 6, 4), :authority localhost.
GET_1 = frame(1, 0x5, 1, b"\x82\x86\x84\x41\x09localhost")           # END_STREAM | END_HEADERS
POST_3 = frame(1, 0x4, 3, b"\x83\x86\x84\x41\x09localhost")          # END_HEADERS: a body follows
BODY_3 = frame(0, 0x1, 3, b"hello")                                  # DATA, END_STREAM
ANSWER_1 = SETTINGS + SETTINGS_ACK + frame(1, 0x5, 1, b"\x88")       # :status 200
ANSWER_3 = frame(1, 0x5, 3, b"\x88")


def queued(conn: socket.socket) -> int:
    """Bytes in the socket's receive queue (FIONREAD)."""
    n = array.array("i", [0])
    fcntl.ioctl(conn.fileno(), termios.FIONREAD, n)
    return n[0]


def server(both_sent: threading.Semaphore, listener: socket.socket, stop: threading.Event) -> None:
    """Answers stream 1 as it comes; reads stream 3's HEADERS and DATA only once the client sent both (it
    releases both_sent) and both are queued, in one read (as a busy server does), and answers it."""
    for conn in accepted(listener, stop):
        recv_at_least(conn, len(PREFACE + SETTINGS + GET_1))
        conn.sendall(ANSWER_1)
        if not both_sent.acquire(timeout=10):
            return
        # the client's DATA segment waits for the ACK of its HEADERS (Nagle's algorithm), which the server, not
        # reading, delays (~40 ms here)
        assert wait_until(lambda: queued(conn) >= len(SETTINGS_ACK + POST_3 + BODY_3)), queued(conn)
        late = conn.recv(65536)
        assert late == SETTINGS_ACK + POST_3 + BODY_3, late  # (both frames in one read)
        conn.sendall(ANSWER_3)
        while conn.recv(65536):
            pass


@pytest.mark.parametrize("hooks", ["socket", "socket-raw", "syscall"])
def test_a_stream_read_with_a_later_frame_starts_at_its_headers_arrival(hooks):
    sent: dict[int, tuple[int, int]] = {}   # client port -> when HEADERS, when DATA were sent
    both_sent = threading.Semaphore(0)
    with traced_server(functools.partial(server, both_sent), hooks) as (port, receiver, proc):
        for _ in range(CONNECTIONS):
            with socket.create_connection(("127.0.0.1", port)) as c:
                c.sendall(PREFACE + SETTINGS + GET_1)
                assert recv_at_least(c, len(ANSWER_1)) == ANSWER_1
                headers_sent = time.time_ns()
                c.sendall(SETTINGS_ACK + POST_3)
                time.sleep(DELAY_S)  # the gap between the two frames, as the real client left it
                sent[c.getsockname()[1]] = headers_sent, time.time_ns()
                c.sendall(BODY_3)
                both_sent.release()
                assert recv_at_least(c, len(ANSWER_3)) == ANSWER_3
        assert receiver.wait_for(lambda: len(spans_of(receiver, port)) >= 2 * CONNECTIONS), proc.stderr
        assert proc.stop() == 0, proc.stderr
    posts = {s.attributes.get("client.port"): s.start_ns for s in spans_of(receiver, port)
             if s.attributes.get("http.request.method") == "POST"}
    assert sorted(posts) == sorted(sent), posts
    # The span starts when the HEADERS arrived (a few µs after the client's clock read; later only where a
    # busy kernel queues the segment late), before the DATA was even sent.
    late = {p: ((start - sent[p][0]) / 1e6, (start - sent[p][1]) / 1e6) for p, start in posts.items()}
    assert all(sent[p][0] - TOLERANCE_NS < start < sent[p][1] for p, start in posts.items()), \
        f"start - HEADERS sent, start - DATA sent (ms): {late}"
