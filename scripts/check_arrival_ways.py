#!/usr/bin/env python3
"""How exact the two arrival ways that scripts/bench_inference_breakdown.py measured but the tracer does not use
are, on a connection in interactive mode (answered at once, so TCP delays its ACKs) with requests the server
reads 300 ms late:

    sudo /opt/ebpftool/venv/bin/python scripts/check_arrival_ways.py [arrival_clock|arrival_skb]

A loopback server answers nine requests on one connection, two of them read 300 ms after they came; the
variant's tracer watches its port and notes each read's arrival (its read_clock map). Prints, per request, how
long after the client's send the noted arrival lies: arrival_clock (TCP's clock of the socket before the read
refreshes it) moves to the delayed-ACK timer's firing on the late ones; arrival_skb (the time the kernel stamped
on the skb) stays at the send. Not part of the test suite.
"""
import ctypes
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import bench_inference_breakdown as breakdown  # noqa: E402
from tests.servers.nginx import free_port  # noqa: E402

REQUESTS, LATE, LATE_S = 9, {5, 7}, 0.3
ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def serve(listener: socket.socket) -> None:
    conn, _ = listener.accept()
    with conn:
        for i in range(REQUESTS):
            if i in LATE:
                time.sleep(LATE_S)  # the request waits in the socket's queue
            conn.recv(4096)
            conn.sendall(ANSWER)


def main() -> None:
    name = sys.argv[1] if len(sys.argv) > 1 else "arrival_clock"
    if name not in ("arrival_clock", "arrival_skb"):
        raise SystemExit("which way: arrival_clock or arrival_skb")
    port = free_port()
    listener = socket.create_server(("127.0.0.1", port))
    threading.Thread(target=serve, args=(listener,), daemon=True).start()
    with tempfile.TemporaryDirectory() as tmp:
        with breakdown.variant(name, breakdown.variant_dir(name, Path(tmp)), port) as loaded:
            client = socket.create_connection(("127.0.0.1", port))
            for i in range(REQUESTS):
                sent = time.monotonic_ns()
                client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                client.recv(4096)
                answered = time.monotonic_ns()
                noted = max(v.t for v in loaded.tracer.prog.bpf["read_clock"][ctypes.c_int(0)])
                late = f" (read {LATE_S * 1000:.0f} ms late)" if i in LATE else ""
                print(f"{name} request {i}{late}: arrival noted {(noted - sent) / 1e6:8.3f} ms after the send; "
                      f"answered at +{(answered - sent) / 1e6:.1f} ms", flush=True)
            client.close()


if __name__ == "__main__":
    main()
