"""`ebpftool inference` against real servers and clients, checked on what a real OTLP receiver decoded.

One tracer run (module fixture) watches a real nginx (200/404, keep-alive, pipelining, garbage) and
the streaming OpenAI-compatible test server (SSE, 500, split requests, secrets), driven by real
clients: http.client, raw sockets and the official `openai` client. The tests then check spans,
metrics and the --jsonl file from that run.
"""
from __future__ import annotations

import http.client
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import (ROOT, EbpftoolProcess, assert_started_at_arrival, inference_args, run_ebpftool,
                            skip_unless_kernel_notes_arrivals, skip_unless_kernel_offers)
from tests.kernel_state import read_by_server, wait_until
from tests.otlp_receiver import GrpcReceiver
from tests.servers.nginx import free_port, master_pid, nginx_server, wait_listening
from tests.servers.split_relay import late_reader
from tests.servers.streaming_server import running as streaming_server

pytestmark = [pytest.mark.bpf, pytest.mark.timeout(180)]

SECRET_HEADER = "sk-SECRET-header-7f3a"
SECRET_BODY = "body-secret-91c2"
SECRET_QUERY = "query-secret-55d0"
STREAMS = 3
STREAM_TOKENS = 6
NGINX_KEEPALIVE = 5


class Run:
    """What the module's traffic was, to compare with what the receiver got."""

    def __init__(self) -> None:
        self.nginx_port = 0
        self.llm_port = 0
        self.expected: dict[int, list[int]] = {}   # port -> statuses of the requests made
        self.receiver: GrpcReceiver | None = None
        self.jsonl = ""
        self.timings: list[dict] = []
        self.client_ttft: list[float] = []   # per streamed chat request: from before its send to its first chunk
        self.exit_code = None
        self.stdout = ""
        self.hooks = ""

    def expect(self, port: int, status: int, n: int = 1) -> None:
        self.expected.setdefault(port, []).extend([status] * n)


def _get(conn: http.client.HTTPConnection, path: str) -> int:
    conn.request("GET", path)
    r = conn.getresponse()
    r.read()
    return r.status


def _nginx_traffic(run: Run) -> None:
    port = run.nginx_port
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    for _ in range(NGINX_KEEPALIVE):  # keep-alive: several requests on one connection
        assert _get(conn, "/index.html") == 200
    assert _get(conn, f"/missing?token={SECRET_QUERY}") == 404
    conn.close()
    run.expect(port, 200, NGINX_KEEPALIVE)
    run.expect(port, 404)
    # Pipelining: three requests in one send, answered in order.
    data = _exchange(port, b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n" * 2 +
                     b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", timeout=5)
    assert data.count(b"HTTP/1.1 200") == 2 and data.count(b"HTTP/1.1 404") == 1
    run.expect(port, 200, 2)
    run.expect(port, 404)
    # Garbage on the port: counted as unparsed, no span, nothing crashes.
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(bytes(range(256)) * 4)
        try:
            while s.recv(65536):
                pass
        except OSError:
            pass
    # A connection that never sends a byte: accepted all the same (a flood of them shows in the count).
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        pass
    # A request that never gets an answer: the client gives up and closes.
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /index.html HTTP/1.1\r\nHost: x\r\n")
        assert wait_until(lambda: read_by_server(port, s.getsockname()[1]))  # the server read it: a request begun
    run.expect(port, 0)


def _llm_traffic(run: Run) -> None:
    import openai

    port = run.llm_port
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=SECRET_HEADER, max_retries=0)
    for i in range(STREAMS):
        sent = time.monotonic()
        stream = client.chat.completions.create(
            model="test-llm", messages=[{"role": "user", "content": "hello"}], stream=True, max_tokens=STREAM_TOKENS,
            stream_options={"include_usage": True} if i == 0 else None,
            extra_body={"api_key": SECRET_BODY, "ttft_ms": 40, "tpot_ms": 15},
        )
        chunks = []
        for c in stream:
            if not chunks:
                run.client_ttft.append(time.monotonic() - sent)
            chunks.append(c)
        assert len(chunks) == STREAM_TOKENS + (1 if i == 0 else 0)
    run.expect(port, 200, STREAMS)
    answer = client.completions.create(model="test-llm", prompt="hi", max_tokens=3)  # not streamed
    assert answer.usage.completion_tokens == 3
    run.expect(port, 200)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    assert _get(conn, "/status/500") == 500
    assert _get(conn, "/status/503") == 503
    conn.close()
    run.expect(port, 500)
    run.expect(port, 503)
    # A request split over many small sends (and so, many reads).
    body = json.dumps({"model": "split-model", "max_tokens": 2, "stream": True, "ttft_ms": 5, "tpot_ms": 5}).encode()
    req = (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
           b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body)) + body
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(0, len(req), 16):
            s.sendall(req[i:i + 16])
            time.sleep(0.002)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200") and data.count(b"data:") == 3
    run.expect(port, 200)


@pytest.fixture(scope="module", params=["socket", "socket-raw", "syscall"])
def run(request):
    """The whole module's traffic, once with each way in (--hooks): the same assertions hold for both."""
    r = Run()
    r.hooks = request.param
    r.receiver = GrpcReceiver()
    workdir = Path(tempfile.mkdtemp(prefix="ebpftool-inference-test-"))
    timings = workdir / "timings.jsonl"
    r.jsonl = str(workdir / "out.jsonl")
    r.llm_port = free_port()
    llm = subprocess.Popen([sys.executable, "-m", "tests.servers.streaming_server", str(r.llm_port), str(timings)],
                           cwd=ROOT, stdout=subprocess.DEVNULL)
    try:
        wait_listening(r.llm_port)
        with nginx_server() as nginx_port:
            r.nginx_port = nginx_port
            proc = EbpftoolProcess(["inference", "--port", str(nginx_port), "--port", str(r.llm_port),
                                    "--otlp-endpoint", r.receiver.endpoint, "--otlp-protocol", "grpc", "--interval", "1", "--no-ui",
                                    "--jsonl", r.jsonl, "--hooks", r.hooks])
            with proc:
                _nginx_traffic(r)
                _llm_traffic(r)
                total = sum(len(v) for v in r.expected.values())
                assert r.receiver.wait_for(lambda: len(r.receiver.spans()) >= total, timeout=20), r.receiver.spans()
                # no wait for one more metric export: stop() exports and flushes a last snapshot
                r.exit_code = proc.stop()
            r.stdout = proc.stdout + proc.stderr
        r.timings = [json.loads(line) for line in timings.read_text().splitlines()]
        yield r
    finally:
        llm.terminate()
        llm.wait(10)
        r.receiver.stop()


def _spans(run: Run, port: int):
    return [s for s in run.receiver.spans() if s.attributes.get("server.port") == port]


def test_one_span_per_request_with_the_right_status(run):
    assert run.exit_code == 0, run.stdout
    # the way in asked for, not a fallback (a kernel without the socket tracepoints skips those: conftest)
    assert re.search(rf"hooks\s*│\s*{run.hooks}\s*│", run.stdout), run.stdout
    for port, statuses in run.expected.items():
        spans = _spans(run, port)
        assert len(spans) == len(statuses), (port, [(s.name, s.attributes.get("http.response.status_code")) for s in spans])
        got = sorted(s.attributes.get("http.response.status_code", 0) for s in spans)
        assert got == sorted(statuses)
        for s in spans:
            assert s.kind == "SERVER"
            assert s.end_ns >= s.start_ns > 0
            assert s.attributes["client.address"] == "127.0.0.1"
            assert s.attributes["process.pid"] > 0 and s.attributes["process.executable.name"]
            status = s.attributes.get("http.response.status_code", 0)
            assert (s.status_code == 2) == (status >= 500 or status == 0), (s.name, status, s.status_code)


def test_span_names_paths_and_methods(run):
    nginx = _spans(run, run.nginx_port)
    named = {s.name for s in nginx}
    assert "GET /index.html" in named and "GET /missing" in named
    paths = {s.attributes.get("url.path") for s in nginx}
    assert "/missing" in paths  # the query string is gone
    unanswered = [s for s in nginx if "http.response.status_code" not in s.attributes]
    assert len(unanswered) == 1 and unanswered[0].attributes["error.type"] == "no_response"
    llm = _spans(run, run.llm_port)
    chat = [s for s in llm if s.name == "POST /v1/chat/completions"]
    assert len(chat) == STREAMS
    for s in chat:
        assert s.attributes["gen_ai.operation.name"] == "chat"
        assert s.attributes["gen_ai.request.model"] == "test-llm"
        assert s.attributes["gen_ai.usage.output_tokens"] == STREAM_TOKENS
        assert s.attributes["http.request.method"] == "POST"
        assert s.attributes["network.protocol.version"] == "1.1"
        assert [e[0] for e in s.events] == ["ebpftool.gen_ai.first_token"]
    with_usage = [s for s in chat if "gen_ai.usage.input_tokens" in s.attributes]
    assert len(with_usage) == 1 and with_usage[0].attributes["gen_ai.usage.input_tokens"] == 7
    split = [s for s in llm if s.name == "POST /v1/completions" and s.attributes.get("gen_ai.request.model") == "split-model"]
    assert len(split) == 1 and split[0].attributes["gen_ai.usage.output_tokens"] == 2
    plain = [s for s in llm if s.name == "POST /v1/completions" and s.attributes.get("gen_ai.request.model") == "test-llm"]
    assert len(plain) == 1 and plain[0].attributes["gen_ai.usage.output_tokens"] == 3  # from the JSON usage


def test_streaming_times_agree_with_the_server(run):
    streams = [t for t in run.timings if t.get("stream") and t["path"] == "/v1/chat/completions"]
    assert len(streams) == len(run.client_ttft) == STREAMS
    spans = sorted(_spans(run, run.llm_port), key=lambda s: s.start_ns)
    chat = [s for s in spans if s.name == "POST /v1/chat/completions"]
    # One request after another: spans by start, the server's log and the client's times are in the same order.
    for span, server, client_ttft in zip(chat, streams, run.client_ttft):
        ours = span.attributes["ebpftool.gen_ai.time_to_first_token"]
        # The span starts when the request's first byte arrived, before the server read it (however long the
        # bytes waited on a busy machine), and its first token is the write the server timed just before: at
        # least the server's own time to first token. The client sent before that arrival and got the token
        # after that write: at most the client's.
        assert server["first_token"] - server["read"] <= ours <= client_ttft + 1e-6, \
            (ours, server["first_token"] - server["read"], client_ttft)
    for s in chat:
        assert 0.010 <= s.attributes["ebpftool.gen_ai.time_per_output_token"] <= 0.060
    # Metrics: every streamed request, whatever the span budget, with sensible values.
    ttft = [p for p in run.receiver.latest("gen_ai.server.time_to_first_token")
            if p.attributes.get("gen_ai.operation.name") == "chat"]
    assert len(ttft) == 1 and ttft[0].count == STREAMS
    assert 0.035 <= ttft[0].sum / ttft[0].count <= 0.2
    assert ttft[0].bounds == [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0]
    tpot = [p for p in run.receiver.latest("gen_ai.server.time_per_output_token")
            if p.attributes.get("gen_ai.operation.name") == "chat"]
    assert len(tpot) == 1 and tpot[0].count == STREAMS and 0.010 <= tpot[0].sum / tpot[0].count <= 0.060
    tokens: dict[str, float] = {}   # per operation (each model the answers name is a series of its own)
    for p in run.receiver.latest("ebpftool.gen_ai.server.output_tokens"):
        op = p.attributes["gen_ai.operation.name"]
        tokens[op] = tokens.get(op, 0) + p.value
    assert tokens["chat"] == STREAMS * STREAM_TOKENS  # usage-only chunk and [DONE] are not tokens
    # text completions: the split stream's 2 tokens and the 3 that the non-streamed answer's usage states
    assert tokens["text_completion"] == 2 + 3
    # The split request's first read held 16 bytes: its line is classified again as it arrives, so its
    # tokens count under its path's operation however its bytes were split.
    assert "generate_content" not in tokens
    durations = run.receiver.latest("gen_ai.server.request.duration")
    assert sum(p.count for p in durations) == STREAMS + 2
    assert all(p.attributes.get("server.port") == run.llm_port for p in durations)


def test_http_duration_histograms_count_every_request(run):
    points = run.receiver.latest("http.server.request.duration")
    for port, statuses in run.expected.items():
        mine = [p for p in points if p.attributes["server.port"] == port]
        assert sum(p.count for p in mine) == len(statuses)
        by_status: dict[int, int] = {}
        for p in mine:
            status = p.attributes.get("http.response.status_code", 0)
            by_status[status] = by_status.get(status, 0) + p.count
            assert p.unit == "s" and p.bounds == [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10]
            if status >= 500 or status == 0:
                assert p.attributes["error.type"] in (str(status), "no_response")
        assert by_status == {s: statuses.count(s) for s in set(statuses)}
    streamed = [p for p in points if p.attributes["server.port"] == run.llm_port
                and p.attributes["http.request.method"] == "POST"]
    # A stream lasts ttft + (tokens - 1) * tpot = 40 + 5 * 15 ms at least.
    assert min(p.min for p in streamed if p.count) > 0.0


def test_garbage_is_counted_not_traced(run):
    unparsed = {p.attributes["server.port"]: p.value
                for p in run.receiver.latest("ebpftool.http.server.unparsed_connections")}
    assert unparsed.get(run.nginx_port) == 1  # one connection, however many reads its bytes took
    assert "connections not HTTP/1.x (unparsed)" in run.stdout
    accepted = {p.attributes["server.port"]: p.value for p in run.receiver.latest("ebpftool.http.server.connections")}
    # keep-alive, pipelined, garbage, silent, unanswered (the syscall hooks see accept() too)
    assert accepted[run.nginx_port] == 5


def test_no_secret_leaves_the_node(run):
    exported = repr(run.receiver.spans()) + repr([run.receiver.latest(m) for m in run.receiver.metric_names()])
    exported += Path(run.jsonl).read_text()
    assert "test-llm" in exported  # the model does leave: the check below looks at the right data
    for secret in (SECRET_HEADER, SECRET_BODY, SECRET_QUERY, "Bearer", "authorization", "Authorization"):
        assert secret not in exported
    assert oct(os.stat(run.jsonl).st_mode & 0o777) == "0o600"


def test_bad_flags_are_one_sentence():
    r = run_ebpftool(["inference", "--duration", "1"])
    assert r.returncode == 1 and "Traceback" not in r.stderr and "--port" in r.stderr
    r = run_ebpftool(["inference", "--port", "70000", "--duration", "1"])
    assert r.returncode == 1 and "Traceback" not in r.stderr and "65535" in r.stderr
    r = run_ebpftool(["inference", "--port", "80", "--capture-bytes", "5000", "--duration", "1"])
    assert r.returncode == 1 and "Traceback" not in r.stderr and "--capture-bytes" in r.stderr


@pytest.mark.parametrize("watch", ["pid", "port"])
@pytest.mark.parametrize("hooks", ["socket", "syscall"])
def test_pid_mode_and_connections_open_before_start(hooks, watch):
    """--pid or --port: a keep-alive connection opened before the tracer started is followed from its next
    request."""
    with nginx_server() as port:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        assert _get(conn, "/index.html") == 200  # before the tracer
        receiver = GrpcReceiver()
        try:
            master = master_pid(port)
            selector = ["--pid", str(master)] if watch == "pid" else ["--port", str(port)]
            with EbpftoolProcess(["inference", *selector, "--otlp-endpoint", receiver.endpoint, "--otlp-protocol", "grpc",
                                  "--interval", "1", "--no-ui", "--hooks", hooks]) as proc:
                for _ in range(3):
                    assert _get(conn, "/index.html") == 200
                # nginx does not read again after answering: the last request of an idle kept-alive
                # connection ends when the next one begins or the connection closes.
                conn.close()
                fresh = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                assert _get(fresh, "/x") == 404
                fresh.close()
                assert receiver.wait_for(lambda: len([s for s in receiver.spans() if s.attributes.get("server.port") == port]) >= 4)
                assert proc.stop() == 0
                if hooks == "socket":  # found by the tcp_rcv_space_adjust program, then let go
                    assert proc.figures("inference")["connections_seeded"] == 1, proc.stdout
            spans = [s for s in receiver.spans() if s.attributes.get("server.port") == port]
            assert sorted(s.attributes["http.response.status_code"] for s in spans) == [200, 200, 200, 404]
        finally:
            conn.close()
            receiver.stop()


def _exchange(port: int, payload: bytes, then: list[bytes] = (), timeout: float = 15) -> bytes:
    """Send payload on a fresh connection (and each of `then`, once the answer so far has come), read
    until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(payload)
        data = s.recv(65536)
        for extra in then:
            s.sendall(extra)
            data += s.recv(65536)
        if then:
            s.shutdown(socket.SHUT_WR)
        while chunk := s.recv(65536):
            data += chunk
    return data


def _stream_request(path: str, body: dict, close: bool = True) -> bytes:
    raw = json.dumps({"model": "m", "stream": True, **body}).encode()
    return (b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n"
            % (path.encode(), len(raw), b"Connection: close\r\n" if close else b"")) + raw


@pytest.mark.parametrize("hooks", ["socket", "socket-raw", "syscall"])
def test_framed_chunks_pipelining_after_a_chunked_answer_upgrades_and_a_slow_first_token(hooks, tmp_path):
    """Answers that used to be mismeasured: events written as the middle iovec of sendmsg/writev (hyper's
    chunk framing), a request pipelined behind a chunked stream (the stream's end closed the first request
    before the second answer), a 101 upgrade (the frames after it are not requests), a body read after its
    401 (the next request on the connection must not join it), and a stream whose first token comes after
    the 5 s that end a quiet plain answer."""
    receiver = GrpcReceiver()
    try:
        with streaming_server(tmp_path / "timings.jsonl") as port, \
                EbpftoolProcess(inference_args(port, receiver, hooks)) as proc:
            for framing in ("sendmsg", "writev"):
                data = _exchange(port, _stream_request("/v1/chat/completions", {"max_tokens": 4, "framing": framing,
                                                                                "ttft_ms": 20, "tpot_ms": 10}))
                assert data.count(b"data:") == 5, data  # 4 tokens and [DONE]
            pipelined = _stream_request("/v1/completions", {"max_tokens": 2, "ttft_ms": 5, "tpot_ms": 5}, close=False)
            data = _exchange(port, pipelined + b"GET /status/404 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert data.startswith(b"HTTP/1.0 200") or data.startswith(b"HTTP/1.1 200"), data
            assert b" 404 " in data, data
            data = _exchange(port, b"GET /upgrade HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
                             then=[b"\x81\x05frame", b"GET / HTTP/1.1 is only a frame here"])
            assert data.startswith(b"HTTP/1.1 101"), data
            upload = b"x" * 200_000  # most of it is still in the socket when the 401 goes out
            with socket.create_connection(("127.0.0.1", port), timeout=15) as s:
                s.sendall(b"POST /reject HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(upload) + upload)
                f = s.makefile("rb")
                assert f.readline().startswith(b"HTTP/1.1 401")
                while f.readline() not in (b"\r\n", b""):
                    pass
                time.sleep(0.3)  # the server reads the rest of the body meanwhile: the next request is a read of its own
                s.sendall(b"GET /status/404 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                assert b" 404 " in f.read(), "the second request on the connection was answered"
            data = _exchange(port, _stream_request("/v1/chat/completions", {"max_tokens": 2, "ttft_ms": 6500,
                                                                            "tpot_ms": 10}))
            assert data.count(b"data:") == 3, data
            assert receiver.wait_for(lambda: len(receiver.spans()) >= 8, timeout=20), \
                [(s.name, s.attributes) for s in receiver.spans()]
            assert proc.stop() == 0, proc.stderr  # its last export holds every request
        spans = receiver.spans()
        assert len(spans) == 8, [(s.name, s.attributes) for s in spans]
        chat = sorted((s for s in spans if s.name == "POST /v1/chat/completions"), key=lambda s: s.start_ns)
        assert [s.attributes.get("gen_ai.usage.output_tokens") for s in chat] == [4, 4, 2]
        slow = chat[-1].attributes["ebpftool.gen_ai.time_to_first_token"]
        assert 6.4 <= slow <= 7.5, slow
        statuses = sorted(s.attributes["http.response.status_code"] for s in spans)
        assert statuses == [101, 200, 200, 200, 200, 401, 404, 404], statuses
        unparsed = [p.value for p in receiver.latest("ebpftool.http.server.unparsed_connections")]
        # the upgraded connection's frames are not requests; the body read after the 401 is what is left
        # of an answered request, not a connection of another protocol
        assert sum(unparsed) == 0, unparsed
        assert proc.figures("inference")["requests_without_response"] == 0, proc.stdout
    finally:
        receiver.stop()


@pytest.mark.parametrize("hooks", ["socket", "socket-raw", "syscall"])
def test_a_chunked_stream_ends_at_its_last_chunk_on_a_kept_alive_connection(hooks, tmp_path):
    """A streamed answer's terminating chunk ("0\\r\\n\\r\\n") ends the request while the client keeps the
    connection open and quiet: its span leaves well before the 5 s after which a quiet answer is flushed."""
    receiver = GrpcReceiver()
    try:
        with streaming_server(tmp_path / "timings.jsonl") as port, \
                EbpftoolProcess(inference_args(port, receiver, hooks)) as proc:
            with socket.create_connection(("127.0.0.1", port), timeout=15) as s:
                s.sendall(_stream_request("/v1/completions", {"max_tokens": 3, "ttft_ms": 5, "tpot_ms": 5},
                                          close=False))
                data = b""
                while not data.endswith(b"0\r\n\r\n"):
                    data += s.recv(65536)
                done = time.monotonic()
                assert receiver.wait_for(lambda: len(receiver.spans()) >= 1, timeout=4), "no span while open"
                assert time.monotonic() - done < 4
            assert proc.stop() == 0, proc.stderr
        (span,) = receiver.spans()
        assert span.name == "POST /v1/completions"
        assert span.attributes["gen_ai.usage.output_tokens"] == 3
    finally:
        receiver.stop()


POD_SERVER = """
import runpy, sys
sys.path.insert(0, sys.argv[3])
sys.argv = ["streaming_server", sys.argv[1], sys.argv[2]]
runpy.run_module("tests.servers.streaming_server", run_name="__main__")
"""
POD_CLIENT = """
import http.client, json, sys
port, plain, streamed = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
c = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
for _ in range(plain):
    c.request("GET", "/status/200")
    c.getresponse().read()
body = json.dumps({"model": "m", "stream": True, "max_tokens": 3, "ttft_ms": 5, "tpot_ms": 5})
for _ in range(streamed):
    c.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
    assert c.getresponse().read().count(b"data:") == 4
c.close()
print("done", flush=True)
"""
# POD_CLIENT whose connection stays open until a line comes on stdin
HOLDING_CLIENT = POD_CLIENT.replace("c.close()\nprint", "print") + "sys.stdin.readline()\nc.close()\n"


@pytest.mark.parametrize("hooks", ["socket", "syscall"])
def test_servers_on_one_port_in_two_pods_are_told_apart_by_pod_and_container(tmp_path, pod_cgroups, hooks):
    """Pods have network namespaces of their own, and their servers often listen on the same port: the
    metrics are one series per server container, named by k8s.pod.uid and container.id (from the
    serving process's cgroup), and so are the spans. A server outside any container gets neither."""
    from tests.netns import TwoZones
    from ebpftool import semconv as sc

    zones = TwoZones.create()
    receiver = GrpcReceiver()
    procs: list[subprocess.Popen] = []
    port, host_port = 8000, free_port()
    pods = {zones.ns_a: (*pod_cgroups(), 3, 1), zones.ns_b: (*pod_cgroups(), 5, 2)}  # uid, cid, dir, plain, streamed
    try:
        host_server = subprocess.Popen([sys.executable, "-m", "tests.servers.streaming_server", str(host_port),
                                        str(tmp_path / "host.jsonl")], cwd=ROOT, stdout=subprocess.PIPE, text=True)
        procs.append(host_server)
        assert host_server.stdout.readline().strip() == "ready"
        for ns, (_uid, _cid, cgroup, _plain, _streamed) in pods.items():
            server = zones.popen(ns, POD_SERVER, str(port), str(tmp_path / f"{ns}.jsonl"), str(ROOT), cgroup=cgroup)
            procs.append(server)
            assert server.stdout.readline().strip() == "ready", server.stderr.read()
        args = ["inference", "--port", str(port), "--port", str(host_port), "--hooks", hooks, "--otlp-endpoint",
                receiver.endpoint, "--otlp-protocol", "grpc", "--interval", "1", "--no-ui"]
        with EbpftoolProcess(args) as proc:
            for ns, (_uid, _cid, _cgroup, plain, streamed) in pods.items():
                client = zones.popen(ns, POD_CLIENT, str(port), str(plain), str(streamed))
                out, err = client.communicate(timeout=60)
                assert out.strip() == "done", err
            c = http.client.HTTPConnection("127.0.0.1", host_port, timeout=20)
            c.request("GET", "/status/200")
            c.getresponse().read()
            c.close()

            def series(metric: str) -> dict:
                """Requests per (Pod, container, port), whatever the method and status."""
                counts: dict = {}
                for p in receiver.latest(metric):
                    key = (p.attributes.get(sc.K8S_POD_UID), p.attributes.get(sc.CONTAINER_ID), p.attributes[sc.SERVER_PORT])
                    counts[key] = counts.get(key, 0) + p.count
                return counts

            want_http = {(uid, cid, port): plain + streamed for uid, cid, _c, plain, streamed in pods.values()}
            want_http[(None, None, host_port)] = 1
            want_genai = {(uid, cid, port): streamed for uid, cid, _c, _p, streamed in pods.values()}
            assert receiver.wait_for(lambda: series(sc.HTTP_SERVER_REQUEST_DURATION) == want_http
                                     and series(sc.GEN_AI_SERVER_REQUEST_DURATION) == want_genai, timeout=15), \
                (series(sc.HTTP_SERVER_REQUEST_DURATION), series(sc.GEN_AI_SERVER_REQUEST_DURATION))
            # Pod a goes away (its server ends, its cgroup is removed): its series end, and the kernel's
            # metric maps let go of its keys, so that Pods coming and going do not fill them.
            uid_a, cid_a, cgroup_a, _plain, _streamed = pods[zones.ns_a]
            procs[1].terminate()
            procs[1].wait(10)
            os.rmdir(cgroup_a)
            del want_http[(uid_a, cid_a, port)], want_genai[(uid_a, cid_a, port)]
            assert receiver.wait_for(lambda: series(sc.HTTP_SERVER_REQUEST_DURATION) == want_http
                                     and series(sc.GEN_AI_SERVER_REQUEST_DURATION) == want_genai, timeout=15), \
                (series(sc.HTTP_SERVER_REQUEST_DURATION), series(sc.GEN_AI_SERVER_REQUEST_DURATION))
            assert proc.stop() == 0, proc.stderr
        want_http[(uid_a, cid_a, port)] = pods[zones.ns_a][3] + pods[zones.ns_a][4]  # its spans went out meanwhile
        spans = {}
        for s in receiver.spans():
            key = (s.attributes.get(sc.K8S_POD_UID), s.attributes.get(sc.CONTAINER_ID), s.attributes[sc.SERVER_PORT])
            spans[key] = spans.get(key, 0) + 1
        assert spans == want_http, spans
    finally:
        for p in procs:
            p.terminate()
            p.wait(10)
        receiver.stop()
        zones.remove()


def test_connections_served_by_an_unwatched_process_are_let_go_at_their_first_read(tmp_path):
    """--pid with the socket hooks: the kernel follows every connection that reaches a port the watched
    processes listen on, and lets go, at its first read, of those another process serves (here a server on
    the same port in another network namespace): none measured, none left in the table or the filter."""
    from tests.netns import TwoZones
    from tests.kernel_state import array_total, bpf_ids_held_by, map_id_named, table_slots
    from ebpftool import semconv as sc

    zones = TwoZones.create()
    receiver = GrpcReceiver()
    other = None
    try:
        with nginx_server() as port:
            master = master_pid(port)
            other = zones.popen(zones.ns_a, POD_SERVER, str(port), str(tmp_path / "other.jsonl"), str(ROOT))
            assert other.stdout.readline().strip() == "ready", other.stderr.read()
            args = ["inference", "--pid", str(master), "--hooks", "socket", "--otlp-endpoint", receiver.endpoint,
                    "--otlp-protocol", "grpc", "--interval", "1", "--no-ui"]
            with EbpftoolProcess(args) as proc:
                _, maps = bpf_ids_held_by(proc.proc.pid)
                # the unwatched server, on a connection held open while the table is looked at
                client = zones.popen(zones.ns_a, HOLDING_CLIENT, str(port), "4", "1")
                assert client.stdout.readline().strip() == "done", client.stderr.read()
                held = (table_slots(maps), array_total(map_id_named(maps, "conn_filter")))
                client.communicate("close\n", timeout=30)
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)  # nginx, watched
                for _ in range(3):
                    assert _get(conn, "/index.html") == 200
                conn.close()
                assert receiver.wait_for(lambda: sum(p.count for p in receiver.latest(sc.HTTP_SERVER_REQUEST_DURATION)) >= 3)
                # whatever else would be counted (the other server's five) is in an export from now on
                assert receiver.wait_for_exports_from_now(sc.HTTP_SERVER_REQUEST_DURATION)
                counts = [(p.attributes.get(sc.HTTP_REQUEST_METHOD), p.count)
                          for p in receiver.latest(sc.HTTP_SERVER_REQUEST_DURATION)]
                left = (table_slots(maps), array_total(map_id_named(maps, "conn_filter")))
                assert proc.stop() == 0, proc.stderr
        assert counts == [("GET", 3)], counts  # nginx's three; none of the other server's five
        assert held == ({}, 0), held  # let go at its first read, not at its close
        assert left == ({}, 0), left
        assert proc.figures("inference")["connections_accepted"] == 1, proc.stdout  # nginx's one
    finally:
        if other is not None:
            other.terminate()
            other.wait(10)
        receiver.stop()
        zones.remove()


def test_socket_hooks_take_the_btf_tracepoints_the_kernel_offers_with_measured_syscall_registers(doctor_report):
    """Where the kernel allows tp_btf programs, writes are seen on tcp_sendmsg_locked; where it also allows the
    bpf_rdonly_cast kfunc (Linux 6.2+), reads on the sock_recv_length BTF tracepoint, and at load the tracer
    measured where a task's syscall registers lie from its kernel stack (the read hook then needs no
    bpf_task_pt_regs() call). Doctor's probe of the same kernel says which: the tracer must agree with it."""
    import ctypes

    from ebpftool.commands.common import CommonOptions, build_telemetry
    from ebpftool.tracers.inference import InferenceOptions, InferenceTracer

    skip_unless_kernel_offers(["--hooks", "socket"])
    checks = {c.name: c.ok for c in doctor_report.checks}
    send_btf = checks["BTF tracepoints (tp_btf)"]
    recv_btf = send_btf and checks["kfunc bpf_rdonly_cast"]
    telemetry, _ = build_telemetry(CommonOptions())
    tracer = InferenceTracer(telemetry, InferenceOptions(ports=[free_port()]))
    tracer.start()
    try:
        assert (tracer.hooks, tracer.send_hook_btf, tracer.recv_hook_btf) == ("socket", send_btf, recv_btf)
        btf_probes = {"tp_btf:sock_recv_length"} if recv_btf else set()
        btf_probes |= {"tp_btf:tcp_sendmsg_locked"} if send_btf else set()
        assert {"tp_btf:sock_recv_length", "tp_btf:tcp_sendmsg_locked"} & set(tracer.prog.probes) == btf_probes
        if recv_btf:
            offset = tracer.prog["syscall_regs_offset"][ctypes.c_int(0)].value
            assert 0 < offset < 1 << 20
            assert (offset + ctypes.sizeof(ctypes.c_ulong) * 21) % 4096 == 0  # struct pt_regs (21 words) ends a page
    finally:
        tracer.stop()


def test_more_series_than_the_table_holds_are_counted_never_lost():
    """5,600 requests, each of its own series (2 ports x 7 methods x 400 statuses, where the series table
    has 4,096 slots): a request whose series found no slot is counted as dropped from the histograms, so
    the histograms' counts and the dropped count add up to every request, and some were dropped."""
    import threading

    methods = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"]
    statuses = range(200, 600)
    servers = [socket.create_server(("127.0.0.1", 0)) for _ in range(2)]

    def answer_each_with_the_status_its_path_names(server):
        conn, _ = server.accept()
        with conn, conn.makefile("rb") as reader:
            while line := reader.readline():
                while reader.readline() not in (b"\r\n", b""):
                    pass  # headers
                status = line.split(b" ")[1].strip(b"/")
                conn.sendall(b"HTTP/1.1 " + status + b" X\r\nContent-Length: 0\r\n\r\n")

    def request_every_series(port):
        with socket.create_connection(("127.0.0.1", port), timeout=15) as client, client.makefile("rb") as r:
            for method in methods:
                for status in statuses:
                    client.sendall(f"{method} /{status} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                    assert r.readline().startswith(f"HTTP/1.1 {status}".encode())
                    r.readline(), r.readline()  # Content-Length, blank line

    receiver = GrpcReceiver()
    ports = [s.getsockname()[1] for s in servers]
    try:
        with EbpftoolProcess(inference_args(ports[0], receiver, "socket") + ["--port", str(ports[1])]) as proc:
            for server, port in zip(servers, ports):
                threading.Thread(target=answer_each_with_the_status_its_path_names, args=(server,), daemon=True).start()
                request_every_series(port)
            sent = len(ports) * len(methods) * len(statuses)

            def counted():
                measured = sum(p.count for p in receiver.latest("http.server.request.duration"))
                dropped = sum(p.value for p in receiver.latest("ebpftool.http.server.metrics_dropped"))
                return measured, dropped
            assert receiver.wait_for(lambda: sum(counted()) == sent, timeout=15), counted()
            assert proc.stop() == 0, proc.stderr
        measured, dropped = counted()
        assert dropped >= sent - 4096 and measured >= 4096 * 3 // 4, (measured, dropped)
    finally:
        for server in servers:
            server.close()
        receiver.stop()


@pytest.mark.parametrize("hooks", ["socket", "syscall"])
def test_a_body_arriving_after_its_answer_is_no_request(hooks):
    """uvicorn answers 404 to a POST before its 2-byte body came (the client sends it after reading the
    answer, as Python's http.client did once by chance against llama.cpp's server): the body's "{}" is
    what is left of the answered request, not a request of its own that the close leaves unanswered."""
    from tests.servers import openai_apps
    receiver = GrpcReceiver()
    port = free_port()
    try:
        with openai_apps.running("fastapi", port), EbpftoolProcess(inference_args(port, receiver, hooks)) as proc:
            for _ in range(3):
                with socket.create_connection(("127.0.0.1", port), timeout=15) as s:
                    s.sendall(b"POST /v1/no-such-endpoint HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
                              b"Content-Type: application/json\r\n\r\n")
                    answer = b""
                    while not (b"\r\n\r\n" in answer and answer.endswith(b"}")):
                        more = s.recv(4096)
                        assert more, answer
                        answer += more
                    assert answer.startswith(b"HTTP/1.1 404"), answer
                    s.sendall(b"{}")
                    s.shutdown(socket.SHUT_WR)
                    assert s.recv(4096) == b""  # the server read the body and closed: all of it was seen
            assert receiver.wait_for(lambda: len(receiver.spans()) >= 3, timeout=20)
            assert proc.stop() == 0, proc.stderr
        spans = receiver.spans()
        assert sorted(s.attributes["http.response.status_code"] for s in spans) == [404] * 3, \
            [(s.name, s.attributes) for s in spans]
        assert proc.figures("inference")["requests_without_response"] == 0, proc.stdout
    finally:
        receiver.stop()


@pytest.mark.parametrize("hooks", ["socket", "syscall"])
def test_a_request_starts_when_it_arrived_not_when_the_server_read_it(hooks):
    """The watched process (a relay in front of nginx) reads each request 300 ms after its bytes are there
    (they wait in the socket's queue, as at a busy server): the span starts at their arrival, so it lasts
    about as long as the client waited, and says how long the bytes waited; not the few ms from the late
    read to the answer."""
    skip_unless_kernel_notes_arrivals()
    delay_s = 0.3
    receiver = GrpcReceiver()
    waits = []
    try:
        with nginx_server() as upstream, late_reader(upstream, delay_s) as port, \
                EbpftoolProcess(inference_args(port, receiver, hooks)) as proc:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
            for _ in range(4):
                t0 = time.perf_counter_ns()
                assert _get(conn, "/index.html") == 200
                waits.append(time.perf_counter_ns() - t0)
            conn.close()
            assert receiver.wait_for(lambda: len(receiver.spans()) >= 4), proc.stderr
            assert proc.stop() == 0, proc.stderr
    finally:
        receiver.stop()
    assert_started_at_arrival(sorted(receiver.spans(), key=lambda s: s.start_ns), waits, delay_s)
