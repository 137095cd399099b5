"""Raw h2c frames and a hand-written server traced by `ebpftool inference`, for tests that need the bytes of
an HTTP/2 connection to arrive, and be read, exactly as they say (when, and in which read)."""
from __future__ import annotations

import selectors
import socket
import struct
import threading
from contextlib import contextmanager
from typing import Callable, Iterator

from tests.conftest import EbpftoolProcess, inference_args, skip_unless_kernel_offers
from tests.otlp_receiver import GrpcReceiver
from tests.servers.nginx import free_port

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return struct.pack("!I", len(payload))[1:] + bytes([kind, flags]) + struct.pack("!I", stream) + payload


SETTINGS, SETTINGS_ACK = frame(4, 0, 0), frame(4, 1, 0)


def recv_at_least(conn: socket.socket, n: int) -> bytes:
    got = b""
    while len(got) < n:
        piece = conn.recv(65536)
        if not piece:
            break
        got += piece
    return got


def accepted(listener: socket.socket, stop: threading.Event) -> Iterator[socket.socket]:
    """Each connection as accepted from select(), as event loops do (no accept() in flight when the tracer
    attaches), until stop; closed when the caller is done with it."""
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ)
    while not stop.is_set():
        if sel.select(0.2):
            conn, _ = listener.accept()
            with conn:
                yield conn


@contextmanager
def traced_server(serve: Callable[[socket.socket, threading.Event], None],
                  hooks: str) -> Iterator[tuple[int, GrpcReceiver, EbpftoolProcess]]:
    """serve(listener, stop) in a thread on a free port of 127.0.0.1, `ebpftool inference --port` with
    --hooks `hooks` watching it and exporting to an OTLP receiver: (port, receiver, tracer process). All
    stopped after, the receiver keeping what it got."""
    skip_unless_kernel_offers(["--hooks", hooks])
    port = free_port()
    listener = socket.create_server(("127.0.0.1", port))
    stop = threading.Event()
    thread = threading.Thread(target=serve, args=(listener, stop), daemon=True)
    thread.start()
    receiver = GrpcReceiver()
    try:
        with EbpftoolProcess(inference_args(port, receiver, hooks)) as proc:
            yield port, receiver, proc
    finally:
        stop.set()
        thread.join(5)
        listener.close()
        receiver.stop()


def spans_of(receiver: GrpcReceiver, port: int) -> list:
    return [s for s in receiver.spans() if s.attributes.get("server.port") == port]
