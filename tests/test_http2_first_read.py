"""An HTTP/2 connection's first stream whose HEADERS the server reads together with the client preface.

Found by the real-server re-run of 2026-12-06 (Triton's gRPC frontend, `scripts/check_grpc_server.sh`): the
first call on a new connection started up to 1.9 ms late, at the server's read, where every later stream
started at its bytes' arrival. The kernel notes the arrival (sk_data_ready) before the first read, and
on_read() (bpf/inference/http1.bpf.h) takes it for an HTTP/1 request (`begin_request(c, arrival)`,
`c->arrival = 0`) before it finds the preface and hands the read to the HTTP/2 walk (`h2_begin`, READ_H2),
whose records then carry no arrival: the streams in that first read start when it returned.

h2_begin() now gives that arrival back to the walk.
A raw h2c client (preface, SETTINGS and one GET in one write) and a server that waits DELAY_S after each
accept before its first read: the span should start when the client sent the request, not DELAY_S later."""
from __future__ import annotations

import socket
import threading
import time

import pytest

from tests.conftest import skip_unless_kernel_notes_arrivals
from tests.h2c_raw import (PREFACE, SETTINGS, SETTINGS_ACK, accepted, frame, recv_at_least, spans_of,
                           traced_server)

pytestmark = pytest.mark.bpf

DELAY_S = 0.030
TOLERANCE_NS = 1_000_000

# HPACK: :method GET, :scheme http, :path / (static indices 2, 6, 4), :authority localhost (literal, name 1).
GET = frame(1, 0x5, 1, b"\x82\x86\x84\x41\x09localhost")           # END_STREAM | END_HEADERS
ANSWER = SETTINGS + SETTINGS_ACK + frame(1, 0x5, 1, b"\x88")        # :status 200


def late_reader(listener: socket.socket, stop: threading.Event) -> None:
    """For each connection, waits DELAY_S with the client's bytes in the socket's queue, reads them in one
    read, answers."""
    for conn in accepted(listener, stop):
        time.sleep(DELAY_S)
        conn.recv(65536)
        conn.sendall(ANSWER)
        while conn.recv(65536):
            pass


@pytest.mark.parametrize("hooks", ["socket", "syscall"])
def test_the_first_stream_read_with_the_preface_starts_at_its_arrival(hooks):
    skip_unless_kernel_notes_arrivals()
    sent: dict[int, int] = {}
    with traced_server(late_reader, hooks) as (port, receiver, proc):
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", port)) as c:
                sent[c.getsockname()[1]] = time.time_ns()
                c.sendall(PREFACE + SETTINGS + GET)
                recv_at_least(c, len(ANSWER))
                c.sendall(SETTINGS_ACK)
            time.sleep(0.05)
        assert receiver.wait_for(lambda: len(spans_of(receiver, port)) >= 3), proc.stderr
        assert proc.stop() == 0, proc.stderr
    late = {s.attributes.get("client.port"): (s.start_ns - sent[s.attributes.get("client.port")]) / 1e6
            for s in spans_of(receiver, port)}
    assert sorted(late) == sorted(sent), late
    # The span starts when the request arrived (a few µs after the client's clock read), not DELAY_S later.
    assert all(-TOLERANCE_NS / 1e6 < ms < TOLERANCE_NS / 1e6 for ms in late.values()), f"start - sent (ms): {late}"
