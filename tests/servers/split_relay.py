"""A TCP relay that splits what it forwards into small reads and writes, so that a tracer watching it sees
HTTP/2 frames (and their 9-byte headers) cut at every point between its syscalls.

    python -m tests.servers.split_relay LISTEN_PORT UPSTREAM_PORT [READ_SIZE] [WRITE_SIZE] [READ_DELAY_MS] [CERT KEY]

Each accepted connection gets its own connection to 127.0.0.1:UPSTREAM_PORT, made once the client's first
24 bytes (HTTP/2's client preface, itself read in pieces) are in. From the client it reads READ_SIZE bytes at
a time (default 7: a frame header then spans two or three reads, up to 8 of its bytes in the earlier ones);
what the upstream answers goes back in writes of WRITE_SIZE bytes (default 5). READ_DELAY_MS: each read
from the client waits that long after its bytes are there (they wait in the socket's queue). CERT KEY: the
client's side is TLS (Python's ssl: OpenSSL reads the socket inside SSL_read), the upstream's clear text.
Prints "ready" once listening.
"""
from __future__ import annotations

import contextlib
import select
import selectors
import socket
import ssl
import sys
import threading
import time


def command(port: int, upstream: int, *args: str) -> list[str]:
    """The command that runs this relay on port (args: [READ_SIZE [WRITE_SIZE [READ_DELAY_MS [CERT KEY]]]])."""
    return [sys.executable, "-m", "tests.servers.split_relay", str(port), str(upstream), *args]


@contextlib.contextmanager
def late_reader(upstream: int, delay_s: float, certificate: tuple[str, str] | None = None):
    """This relay in front of upstream, reading whole requests, each delay_s after its bytes are there (the
    client's side TLS with certificate: (CERT, KEY)); yields its port once it listens."""
    from tests.servers.nginx import free_port
    from tests.servers.process import serving
    port = free_port()
    args = ["65536", "65536", str(int(delay_s * 1000)), *(certificate or ())]
    with serving(command(port, upstream, *args), port, ready_line=True):
        yield port


class LockedTLS:
    """A TLS socket both pumps use: OpenSSL allows one call at a time on a connection."""

    def __init__(self, sock: ssl.SSLSocket) -> None:
        self.sock, self.lock = sock, threading.Lock()

    def recv(self, n: int) -> bytes:
        with self.lock:
            return self.sock.recv(n)

    def sendall(self, data: bytes) -> None:
        with self.lock:
            self.sock.sendall(data)

    def pending(self) -> int:
        with self.lock:
            return self.sock.pending()

    def fileno(self) -> int:
        return self.sock.fileno()

    def setsockopt(self, *args) -> None:
        self.sock.setsockopt(*args)

    def shutdown(self, how: int) -> None:
        self.sock.shutdown(how)

    def close(self) -> None:
        self.sock.close()


def pump(src: socket.socket, dst: socket.socket, read_size: int, write_size: int, read_delay: float = 0.0) -> None:
    try:
        while True:
            if read_delay and not (isinstance(src, LockedTLS) and src.pending()):  # (decrypted already)
                select.select([src], [], [])
                time.sleep(read_delay)   # the bytes wait in the socket's queue, as at a busy server
            data = src.recv(read_size)
            if not data:
                break
            for i in range(0, len(data), write_size):
                dst.sendall(data[i:i + write_size])
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def main() -> None:
    port, upstream = int(sys.argv[1]), int(sys.argv[2])
    read_size = int(sys.argv[3]) if len(sys.argv) > 3 else 7
    write_size = int(sys.argv[4]) if len(sys.argv) > 4 else 5
    read_delay = float(sys.argv[5]) / 1000 if len(sys.argv) > 5 else 0.0
    tls = None
    if len(sys.argv) > 7:
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(sys.argv[6], sys.argv[7])
    server = socket.create_server(("127.0.0.1", port))
    print("ready", flush=True)
    # Waits in select(), not in accept(), as event-loop servers do: a tracer's syscall hooks started while a
    # thread is blocked inside accept() do not see the connection that ends that call.
    waiting = selectors.DefaultSelector()
    waiting.register(server, selectors.EVENT_READ)
    while True:
        waiting.select()
        client, _ = server.accept()
        if tls is not None:
            try:
                client = LockedTLS(tls.wrap_socket(client, server_side=True))
            except (OSError, ssl.SSLError):
                client.close()
                continue
        threading.Thread(target=relay, args=(client, upstream, read_size, write_size, read_delay), daemon=True).start()


def relay(client: socket.socket, upstream: int, read_size: int, write_size: int, read_delay: float) -> None:
    # The client's first 24 bytes (HTTP/2's preface) are read in pieces too, before the upstream is reached:
    # its own preface (SETTINGS) then comes after the client's, as from a server that reads first.
    first = b""
    while len(first) < 24:
        data = client.recv(min(read_size, 24 - len(first)))
        if not data:
            client.close()
            return
        first += data
    up = socket.create_connection(("127.0.0.1", upstream))
    for s in (client, up):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    up.sendall(first)
    threading.Thread(target=pump, args=(up, client, 65536, write_size), daemon=True).start()
    pump(client, up, read_size, 65536, read_delay)


if __name__ == "__main__":
    main()
