"""A request that arrives as the server's accept() returns keeps its arrival (both ways in).

With the syscall hooks the arrival hook (sk_data_ready) finds a connection's state through its socket, which
accept's exit ties to the connection just before it stores the state; bytes that come before are kept as an
early arrival, which accept's exit takes. Two races with the hook on the other CPU lost it, and the request
started at its read: accept's exit took its clock, the hook its own a little later, and the early arrival
the hook wrote before accept's exit looked was refused as "later than now" (and deleted); and a hook that
looked for the state before it was stored but wrote its early arrival after accept's exit looked the second
time left it unread (now taken at the connection's first read). Together they hit 2-7 connections in
40,000 here (2026-12-07), and a vLLM run's first request now and then.

Many short connections, each sending its request at once. DELAY_S after accepting one the server asks
select() whether its bytes are there, notes the time, waits a millisecond more and reads: a request found
waiting must start before that time; one that lost its arrival starts at the read, after it. (Requests not
there yet are not judged; no margin depends on scheduling.) The races cannot be forced: without the fixes
this failed in 3 runs of 4, with them it passed 5 of 5."""
from __future__ import annotations

import json
import select
import selectors
import socket
import threading
import time

import pytest

from tests.conftest import EbpftoolProcess, inference_args, skip_unless_kernel_notes_arrivals, skip_unless_kernel_offers
from tests.otlp_receiver import GrpcReceiver

pytestmark = [pytest.mark.bpf, pytest.mark.timeout(600)]

CONNECTIONS = 40_000
CLIENTS = 8
DELAY_S = 0.004
ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
MS = 1_000_000


def _serve(listener: socket.socket, stop: threading.Event, waiting: dict[str, int]) -> None:
    """Accepts when select() says a connection is there (as event loops do); DELAY_S later, if the request is
    there, notes when it was seen waiting (wall ns), reads it a millisecond later and files the time under its
    path (each request's own: client ports are used again within a run)."""
    def one(conn: socket.socket) -> None:
        with conn:
            time.sleep(DELAY_S)
            seen = None
            if select.select([conn], [], [], 0)[0]:
                seen = time.time_ns()
                time.sleep(0.001)
            request = conn.recv(65536)
            conn.sendall(ANSWER)
        if seen is not None and request.startswith(b"GET /"):
            waiting[request.split(b" ", 2)[1].decode()] = seen

    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ)
    while not stop.is_set():
        if sel.select(0.2):
            conn, _ = listener.accept()
            threading.Thread(target=one, args=(conn,), daemon=True).start()


@pytest.mark.parametrize("hooks", ["syscall", "socket"])  # (the socket hooks know a connection before its bytes)
def test_a_request_arriving_as_its_accept_returns_starts_at_its_arrival(hooks, tmp_path):
    skip_unless_kernel_notes_arrivals()
    args = ["--hooks", hooks]
    skip_unless_kernel_offers(args)
    listener = socket.create_server(("127.0.0.1", 0), backlog=256)
    port = listener.getsockname()[1]
    stop = threading.Event()
    waiting: dict[str, int] = {}
    threading.Thread(target=_serve, args=(listener, stop, waiting), daemon=True).start()

    def client(first: int, n: int) -> None:
        for i in range(first, first + n):
            with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
                s.sendall(b"GET /arrival/%d HTTP/1.1\r\nHost: x\r\n\r\n" % i)
                while s.recv(65536):
                    pass

    receiver = GrpcReceiver()
    summary = tmp_path / "summary.json"
    per_client = CONNECTIONS // CLIENTS
    try:
        # (no --max-cpu: thinned spans would leave fewer requests to judge; the summary counts what was not sent)
        with EbpftoolProcess(inference_args(port, receiver, hooks) + [
                "--span-rate", "100000", "--max-cpu", "0", "--summary-json", str(summary)]) as proc:
            threads = [threading.Thread(target=client, args=(i * per_client, per_client)) for i in range(CLIENTS)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert proc.stop() == 0, proc.stderr  # its stop flushes every span
        spans = receiver.spans()
    finally:
        stop.set()
        receiver.stop()
        listener.close()
    late, judged = [], 0
    for s in spans:
        seen = waiting.get(s.attributes.get("url.path"))
        if seen is not None:
            judged += 1
            if s.start_ns > seen:
                late.append((s.attributes.get("url.path"), (s.start_ns - seen) / MS))
    assert not late, (f"{len(late)} of {judged} requests seen waiting in their socket's queue started after that "
                      f"(request, ms after it): {late[:5]}")
    # Every request is measured in the kernel; a span not sent is counted (a full ring buffer in a burst like this
    # loses some, how many depends on how busy the machine is: on CI's 38,214 of 40,000 were sent).
    doc = json.loads(summary.read_text())
    figures, drops = doc["tracers"]["inference"], doc["tracers"]["inference"]["drops"]
    assert figures["requests"] == CONNECTIONS, figures
    unsent = drops["events_lost"] + drops["spans_unsampled"] + doc["export"]["spans_dropped_queue"]
    assert len(spans) + unsent >= CONNECTIONS, (len(spans), drops, doc["export"])
    assert judged >= max(len(spans) / 2, 1000), f"only {judged} of {len(spans)} requests were there {DELAY_S} s after accept"
