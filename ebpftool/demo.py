"""`ebpftool demo`: something to trace on a node with no GPU, no inference server and one zone.

It starts, and always removes again:
- a small OpenAI-compatible streaming server on loopback and a client asking it for chat completions;
- two network namespaces joined by a veth pair, as zones `demo-a` and `demo-b`, with traffic between them;
- a process calling the real CUDA runtime (libcudart) in a loop: without a driver each call fails, but each
  passes through the uprobes.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from ebpftool import IMPORT_ROOT
from ebpftool.errors import EbpftoolError

DEMO_NS = ("ebt-demo-a", "ebt-demo-b")
DEMO_ADDRS = ("10.251.0.1", "10.251.0.2")
DEMO_PREFIX = "10.251.0"
CUDART_CANDIDATES = ("/usr/local/cuda/lib64/libcudart.so.13", "/usr/local/cuda/lib64/libcudart.so")
TOKEN_INTERVAL_S = 0.02
TOKENS_PER_ANSWER = 12


# --- the OpenAI-compatible streaming server -------------------------------------------------------
class ChatHandler(BaseHTTPRequestHandler):
    """POST /v1/chat/completions with {"stream": true}: SSE chunks, one token each, then [DONE]."""

    protocol_version = "HTTP/1.1"

    def do_POST(self):  # noqa: N802
        length = int(self.headers.get("Content-Length", 0))
        body = json.loads(self.rfile.read(length) or b"{}")
        if self.path != "/v1/chat/completions":
            self._plain(404, b'{"error":"not found"}')
            return
        model = body.get("model", "demo-model")
        if not body.get("stream"):
            self._plain(200, json.dumps({"id": "d", "object": "chat.completion", "model": model, "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "hello"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}).encode())
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for i in range(TOKENS_PER_ANSWER):
            time.sleep(TOKEN_INTERVAL_S)
            chunk = {"id": "d", "object": "chat.completion.chunk", "model": model,
                     "choices": [{"index": 0, "delta": {"content": f"tok{i} "}, "finish_reason": None}]}
            self._chunk(f"data: {json.dumps(chunk)}\n\n".encode())
        usage = {"id": "d", "object": "chat.completion.chunk", "model": model, "choices": [],
                 "usage": {"prompt_tokens": 5, "completion_tokens": TOKENS_PER_ANSWER, "total_tokens": 5 + TOKENS_PER_ANSWER}}
        self._chunk(f"data: {json.dumps(usage)}\n\n".encode())
        self._chunk(b"data: [DONE]\n\n")
        self.wfile.write(b"0\r\n\r\n")

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _plain(self, status: int, data: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *_a):
        pass


def serve(port: int) -> None:
    """Run the streaming server (in its own process, so the tracer sees a separate server)."""
    server = ThreadingHTTPServer(("127.0.0.1", port), ChatHandler)
    server.daemon_threads = True
    server.serve_forever()


def chat_client(port: int, seconds: float) -> None:
    """Streams chat completions from the demo server for a while (raw HTTP: no extra dependency)."""
    import http.client

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            body = json.dumps({"model": "demo-llm", "stream": True, "messages": [{"role": "user", "content": "hi"}]})
            conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json",
                                                                   "Authorization": "Bearer sk-demo-not-a-secret"})
            conn.getresponse().read()
            conn.close()
        except OSError:
            time.sleep(0.1)


# --- zones from network namespaces ----------------------------------------------------------------
def _ip(*args: str) -> None:
    r = subprocess.run(["ip", *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise EbpftoolError(f"demo: `ip {' '.join(args)}` failed: {r.stderr.strip()}")


def make_zones() -> None:
    remove_zones()
    a, b = DEMO_NS
    _ip("netns", "add", a)
    _ip("netns", "add", b)
    _ip("link", "add", "ebtdemo0", "netns", a, "type", "veth", "peer", "name", "ebtdemo1", "netns", b)
    _ip("-n", a, "addr", "add", f"{DEMO_ADDRS[0]}/24", "dev", "ebtdemo0")
    _ip("-n", b, "addr", "add", f"{DEMO_ADDRS[1]}/24", "dev", "ebtdemo1")
    for ns, dev in ((a, "ebtdemo0"), (b, "ebtdemo1")):
        _ip("-n", ns, "link", "set", dev, "up")
        _ip("-n", ns, "link", "set", "lo", "up")


def remove_zones() -> None:
    for ns in DEMO_NS:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


ZONE_SERVER = r"""
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 5201)); s.listen(8)
while True:
    c, _ = s.accept()
    while c.recv(65536):
        pass
    c.close()
"""

ZONE_CLIENT = r"""
import socket, sys, time
chunk = b"z" * 65536
end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    try:
        c = socket.create_connection((sys.argv[1], 5201), timeout=5)
        for _ in range(16):
            c.sendall(chunk)
        c.close()
    except OSError:
        time.sleep(0.2)
    time.sleep(0.2)
"""

CUDA_LOOP = r"""
import ctypes, sys, time
lib = ctypes.CDLL(sys.argv[1])
end = time.monotonic() + float(sys.argv[2])
ptr = ctypes.c_void_p()
buf = ctypes.create_string_buffer(4096)
while time.monotonic() < end:
    lib.cudaMalloc(ctypes.byref(ptr), ctypes.c_size_t(1 << 20))
    lib.cudaMemcpy(ptr, buf, ctypes.c_size_t(4096), 1)
    lib.cudaDeviceSynchronize()
    lib.cudaFree(ptr)
    time.sleep(0.01)
"""


def zones_file(directory: Path) -> Path:
    path = directory / "zones.yaml"
    path.write_text(f"zones:\n  demo-a: {{region: demo, cidrs: [{DEMO_ADDRS[0]}/32]}}\n"
                    f"  demo-b: {{region: demo, cidrs: [{DEMO_ADDRS[1]}/32]}}\n")
    return path


def find_cudart() -> str | None:
    return next((p for p in CUDART_CANDIDATES if os.path.exists(p)), None)


@dataclass
class DemoWorkloads:
    """Everything the demo starts; stop() removes it all, whatever happened."""

    seconds: float
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="ebpftool-demo-")))
    server_port: int = 0
    procs: list[subprocess.Popen] = field(default_factory=list)

    def _spawn(self, argv: list[str]) -> None:
        """A child process; its Python imports this ebpftool (IMPORT_ROOT), not one where root started us."""
        self.procs.append(subprocess.Popen(argv, cwd=IMPORT_ROOT))

    def start_server(self) -> int:
        """The server and the zones exist before the tracers start; traffic begins after."""
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.server_port = s.getsockname()[1]
        self._spawn([sys.executable, "-c", f"from ebpftool.demo import serve; serve({self.server_port})"])
        make_zones()
        return self.server_port

    def start_traffic(self) -> None:
        """Client, zone traffic and the CUDA loop: started once the tracers are attached."""
        self._spawn([sys.executable, "-c",
                     f"from ebpftool.demo import chat_client; chat_client({self.server_port}, {self.seconds})"])
        a, b = DEMO_NS
        self._spawn(["ip", "netns", "exec", b, sys.executable, "-c", ZONE_SERVER, DEMO_ADDRS[1]])
        time.sleep(0.3)
        self._spawn(["ip", "netns", "exec", a, sys.executable, "-c", ZONE_CLIENT,
                     DEMO_ADDRS[1], str(self.seconds)])
        cudart = find_cudart()
        if cudart:
            self._spawn([sys.executable, "-c", CUDA_LOOP, cudart, str(self.seconds)])

    def stop(self) -> None:
        for p in self.procs:
            with contextlib.suppress(OSError):
                p.terminate()
        for p in self.procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
        remove_zones()
        subprocess.run(["rm", "-rf", str(self.workdir)], check=False)
