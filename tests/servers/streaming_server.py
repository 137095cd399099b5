"""An OpenAI-compatible streaming test server with known token timings, which logs its own timings.

    python -m tests.servers.streaming_server PORT TIMINGS.jsonl [ADDRESS]

ADDRESS: where it listens (default 127.0.0.1; 0.0.0.0 in a container that others reach, as
scripts/test-image.sh's server container).

Standard library only (http.server). Endpoints:
- POST /v1/chat/completions and /v1/completions: with "stream": true, Server-Sent Events, one
  `data:` chunk per token (chunked encoding), an optional usage chunk (stream_options.include_usage),
  then `data: [DONE]`; without it, one JSON answer with usage. The body's "max_tokens" sets the number
  of tokens, "ttft_ms"/"tpot_ms" (extensions of this server) the delay before the first and each
  further token, "framing" how each chunk is written: one write (default), or "sendmsg" / "writev"
  with the size line, the data and the CRLF as three iovecs (as hyper, behind TGI, writes them).
- GET /status/NNN: answers with that status (e.g. 500).
- GET /upgrade: 101 Switching Protocols, then echoes what it reads until the client closes (a
  WebSocket-like upgraded connection: no HTTP after the 101).
- POST /reject: 401 before the body is read (as an auth check in front of an upload does), then the
  body is read and dropped, and the connection serves the next request.
- anything else: 404.
For each request it appends one JSON line to TIMINGS: the server's own monotonic times (seconds) of
the request read (after the body), the first and last token written, and the response end, so the
tracer's figures can be compared with the server's.
"""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

DEFAULT_TOKENS = 8
DEFAULT_TTFT_MS = 30.0
DEFAULT_TPOT_MS = 10.0


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timings_path = ""
    lock = threading.Lock()

    def log_message(self, *_a):
        pass

    def _log(self, **record) -> None:
        with self.lock, open(self.timings_path, "a") as f:
            f.write(json.dumps({"path": self.path, **record}) + "\n")

    def do_GET(self):  # noqa: N802
        t_read = time.monotonic()
        if self.path == "/upgrade":
            self._status = 101
            self.send_response(101)
            self.send_header("Upgrade", "websocket")
            self.send_header("Connection", "Upgrade")
            self.end_headers()
            self._log(status=101, read=t_read, end=time.monotonic())
            while data := self.connection.recv(65536):
                self.connection.sendall(data)
            self.close_connection = True
            return
        if self.path.startswith("/status/"):
            status = int(self.path.rsplit("/", 1)[1])
            self._plain(status, b'{"status": %d}' % status)
        else:
            self._plain(404, b'{"error": "not found"}')
        self._log(status=self._status, read=t_read, end=time.monotonic())

    def do_POST(self):  # noqa: N802
        length = int(self.headers.get("Content-Length", 0))
        if self.path == "/reject":
            t_read = time.monotonic()
            self._plain(401, b'{"error": "unauthorized"}')
            self.rfile.read(length)  # what is left of the body, read after the answer
            self._log(status=401, read=t_read, end=time.monotonic())
            return
        raw = self.rfile.read(length)
        t_read = time.monotonic()
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            self._plain(400, b'{"error": "bad json"}')
            self._log(status=400, read=t_read, end=time.monotonic())
            return
        path = self.path.split("?", 1)[0]
        if path not in ("/v1/chat/completions", "/v1/completions"):
            self._plain(404, b'{"error": "not found"}')
            self._log(status=404, read=t_read, end=time.monotonic())
            return
        model = body.get("model", "test-model")
        n = int(body.get("max_tokens") or DEFAULT_TOKENS)
        ttft = float(body.get("ttft_ms", DEFAULT_TTFT_MS)) / 1000
        tpot = float(body.get("tpot_ms", DEFAULT_TPOT_MS)) / 1000
        chat = path == "/v1/chat/completions"
        self._framing = body.get("framing", "")
        kind = "chat.completion" if chat else "text_completion"
        usage = {"prompt_tokens": 7, "completion_tokens": n, "total_tokens": 7 + n}
        if not body.get("stream"):
            time.sleep(ttft + tpot * (n - 1))
            choice = {"index": 0, "message": {"role": "assistant", "content": "tok " * n}} if chat else \
                {"index": 0, "text": "tok " * n}
            choice["finish_reason"] = "length"
            self._plain(200, json.dumps({"id": "x", "object": kind, "created": 0, "model": model,
                                         "choices": [choice], "usage": usage}).encode())
            self._log(status=200, read=t_read, end=time.monotonic(), tokens=n, stream=False)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        first = last = 0.0
        for i in range(n):
            time.sleep(ttft if i == 0 else tpot)
            delta = {"index": 0, "delta": {"content": f"tok{i} "}, "finish_reason": None} if chat else \
                {"index": 0, "text": f"tok{i} ", "finish_reason": None}
            if i == n - 1:
                delta["finish_reason"] = "length"
            chunk = {"id": "x", "object": kind + ".chunk", "created": 0, "model": model, "choices": [delta]}
            last = time.monotonic()
            first = first or last
            self._chunk(f"data: {json.dumps(chunk)}\n\n".encode())
        if (body.get("stream_options") or {}).get("include_usage"):
            self._chunk(f"data: {json.dumps({'id': 'x', 'object': kind + '.chunk', 'created': 0, 'model': model, 'choices': [], 'usage': usage})}\n\n".encode())
        self._chunk(b"data: [DONE]\n\n")
        self.wfile.write(b"0\r\n\r\n")
        self._log(status=200, read=t_read, first_token=first, last_token=last, end=time.monotonic(), tokens=n,
                  stream=True)

    def _chunk(self, data: bytes) -> None:
        parts = [b"%x\r\n" % len(data), data, b"\r\n"]
        if getattr(self, "_framing", "") == "sendmsg":
            self.connection.sendmsg(parts)
        elif getattr(self, "_framing", "") == "writev":
            os.writev(self.connection.fileno(), parts)
        else:
            self.wfile.write(b"".join(parts))

    def _plain(self, status: int, data: bytes) -> None:
        self._status = status
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        """A client that resets its kept-alive connection (the openai client at exit) is not an error."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@contextlib.contextmanager
def running(timings: Path):
    """This server as its own process on a free loopback port (yields the port), logging its timings to
    `timings` (a line per answer)."""
    from tests.servers.nginx import free_port, wait_listening

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "tests.servers.streaming_server", str(port), str(timings)],
                              cwd=Path(__file__).resolve().parents[2], stdout=subprocess.DEVNULL)
    try:
        wait_listening(port)
        yield port
    finally:
        server.terminate()
        server.wait(10)


def main() -> None:
    port, timings = int(sys.argv[1]), sys.argv[2]
    Handler.timings_path = timings
    address = sys.argv[3] if len(sys.argv) > 3 else "127.0.0.1"
    server = Server((address, port), Handler)
    server.daemon_threads = True
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
