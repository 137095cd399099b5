"""A response whose end is known is measured when its last byte is written (issue 20, point 4).

The tracer runs in this process with its start() alone: its polling loop, which finishes requests that
went quiet (the idle flush) and everything at exit, never runs. So a request counted by the kernel was
finished by the kernel itself, at the write that completed its answer, while the client keeps the
connection open and sends nothing more: Content-Length reached (head and body apart, together, or over many
writes), the last chunk of a chunked body, a status or method that has no body. (Heads are read for their
length on gen-AI paths only; elsewhere the last chunk alone ends an answer early.) The servers are the
standard library's http.server (blocked reading the next request: no EAGAIN read ends the answer) and
aiohttp (head and body in one write; back in its event loop after it)."""
from __future__ import annotations

import asyncio
import contextlib
import http.client
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

pytestmark = pytest.mark.bpf

PATH = "/v1/completions"          # a gen-AI path: its answers' heads are read for their length
BODY = b"x" * 1000
BIG = bytes(range(256)) * 1200   # 300 KiB, written in 64 KiB pieces


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def _head(self, status: int, length: int | None, chunked: bool = False) -> None:
        self.send_response(status)
        if length is not None:
            self.send_header("Content-Length", str(length))
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()   # the head in one write

    def do_HEAD(self) -> None:
        self._head(200, len(BODY))

    def do_GET(self) -> None:
        self.path = self.path.partition(f"{PATH}?case=")[2]
        if self.path == "/apart":
            self._head(200, len(BODY))
            self.wfile.write(BODY)
        elif self.path == "/together":
            head = (f"HTTP/1.1 200 OK\r\ncontent-length: {len(BODY)}\r\n"
                    "Content-Type: text/plain\r\n\r\n").encode()
            self.wfile.write(head + BODY)
        elif self.path == "/big":
            self._head(200, len(BIG))
            for i in range(0, len(BIG), 65536):
                self.wfile.write(BIG[i:i + 65536])
        elif self.path == "/chunked":
            self._head(200, None, chunked=True)
            for piece in (b"first", b"second"):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.write(b"0\r\n\r\n")
        elif self.path == "/no-content":
            self._head(204, None)
        elif self.path == "/not-modified":
            self._head(304, len(BODY))   # the length of what it would be: no body follows
        else:
            self._head(404, 0)


@contextlib.contextmanager
def stdlib_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def aiohttp_server():
    from aiohttp import web

    async def answer(request):
        return web.Response(body=BODY, content_type="text/plain")

    app = web.Application()
    app.router.add_get(PATH, answer)
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app, access_log=None)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.run_until_complete(runner.cleanup())
        loop.close()


def measured(tracer) -> int:
    from ebpftool.tracers.inference.records import H
    return tracer.prog.stats()[H["STAT_INF_REQUESTS"]]


@pytest.mark.parametrize("hooks", ["socket", "socket-raw", "syscall"])
@pytest.mark.parametrize("server", ["stdlib", "aiohttp"])
def test_an_answer_whose_end_is_known_is_measured_at_its_last_byte(server, hooks):
    from ebpftool.export.otel import build_resource
    from ebpftool.export.pipeline import Telemetry
    from ebpftool.tracers.inference import InferenceOptions, InferenceTracer

    paths = (["/apart", "/together", "/big", "/chunked", "/no-content", "/not-modified", "HEAD /apart"]
             if server == "stdlib" else ["/apart", "/together"])
    with (stdlib_server() if server == "stdlib" else aiohttp_server()) as port:
        telemetry = Telemetry(build_resource(environ={}), [])
        tracer = InferenceTracer(telemetry, InferenceOptions(ports=[port], hooks=hooks))
        try:
            tracer.start()   # no polling loop: nothing in user space finishes a request
            assert tracer.hooks == hooks.removesuffix("-raw")
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn.connect()   # after start: followed from its handshake (or accept)
            before = measured(tracer)
            for n, path in enumerate(paths, 1):
                method, _, path = path.rpartition(" ")
                conn.request(method or "GET", f"{PATH}?case={path}")
                response = conn.getresponse()
                response.read()   # all of it: the server wrote its last byte
                assert not response.will_close
                # the server now waits for a next request on the open connection, which never comes
                assert measured(tracer) - before == n, f"{method or 'GET'} {path} was not finished at its end"
            conn.close()
        finally:
            tracer.stop()
            telemetry.shutdown()
