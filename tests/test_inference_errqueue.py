"""A server that reads its socket's error queue (transmit timestamps, SO_TIMESTAMPING) between requests.

Such a read returns the socket's own sent bytes (here the response) with the timestamp, not bytes from the
client: the tracer must not take it for a request (it would count it as unparsed, and its leftover rule
would merge it with the next request).
"""
from __future__ import annotations

import select
import socket
import threading
import time

import pytest

from tests.conftest import EbpftoolProcess, inference_args
from tests.otlp_receiver import GrpcReceiver
from tests.servers.nginx import free_port

pytestmark = [pytest.mark.bpf, pytest.mark.timeout(120)]

SO_TIMESTAMPING = 37                # asm-generic/socket.h (x86-64)
SOF_TIMESTAMPING_TX_SOFTWARE = 1 << 1
SOF_TIMESTAMPING_SOFTWARE = 1 << 4
REQUESTS = 12
REQUEST = b"GET /timestamped HTTP/1.1\r\nHost: x\r\n\r\n"
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def _serve(listener: socket.socket, errqueue_reads: list[int]) -> None:
    conn, _ = listener.accept()
    with conn:
        conn.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPING, SOF_TIMESTAMPING_TX_SOFTWARE | SOF_TIMESTAMPING_SOFTWARE)
        for _ in range(REQUESTS):
            got = b""
            while not got.endswith(b"\r\n\r\n"):
                got += conn.recv(4096)
            conn.sendall(RESPONSE)
            # the transmit timestamp, queued once the response left: POLLERR, then a read of the error queue
            deadline = time.monotonic() + 2
            while time.monotonic() < deadline:
                select.select([], [], [conn], 0.1)
                try:
                    data, _, _, _ = conn.recvmsg(4096, 1024, socket.MSG_ERRQUEUE | socket.MSG_DONTWAIT)
                except BlockingIOError:
                    continue
                errqueue_reads.append(len(data))
                break


@pytest.mark.parametrize("hooks", ["socket", "syscall"])
def test_reads_of_the_error_queue_are_not_requests(hooks):
    port = free_port()
    listener = socket.create_server(("127.0.0.1", port))
    receiver = GrpcReceiver()
    errqueue_reads: list[int] = []
    try:
        with EbpftoolProcess(inference_args(port, receiver, hooks)) as proc:
            server = threading.Thread(target=_serve, args=(listener, errqueue_reads), daemon=True)
            server.start()
            with socket.create_connection(("127.0.0.1", port), timeout=15) as c:
                f = c.makefile("rb")
                for _ in range(REQUESTS):
                    c.sendall(REQUEST)
                    assert f.readline().startswith(b"HTTP/1.1 200")
                    while f.readline() != b"\r\n":
                        pass
                    assert f.read(2) == b"ok"
            server.join(15)
            # the error queue did hand back bytes each time: the case under test happened
            assert len(errqueue_reads) == REQUESTS and min(errqueue_reads) > 0, errqueue_reads
            assert receiver.wait_for(lambda: len(receiver.spans()) >= REQUESTS, timeout=20)
            assert proc.stop() == 0, proc.stderr  # its last export holds every request
        spans = receiver.spans()
        assert [(s.name, s.attributes["http.response.status_code"]) for s in spans] == \
            [("GET /timestamped", 200)] * REQUESTS
        assert sum(p.value for p in receiver.latest("ebpftool.http.server.unparsed_connections")) == 0
        (count,) = [p.count for p in receiver.latest("http.server.request.duration")]
        assert count == REQUESTS
    finally:
        listener.close()
        receiver.stop()
