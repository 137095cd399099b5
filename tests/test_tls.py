"""Requests over TLS (OpenSSL's libssl): the plaintext from the library's uprobes, through the same state
machine as cleartext (bpf/inference/hooks_tls.bpf.h).

Servers nobody here wrote, each with its own use of OpenSSL: nginx (SSL_read / SSL_write on its sockets)
and the standard library's http.server on an ssl-wrapped socket (Python's ssl module: SSL_read_ex /
SSL_write_ex). Clients: Python's http.client over TLS. What a real OTLP receiver decoded is compared with
what the clients sent and got."""
from __future__ import annotations

import contextlib
import http.client
import json
import re
import shutil
import ssl
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.conftest import EbpftoolProcess, assert_started_at_arrival, skip_unless_kernel_notes_arrivals, skip_unless_kernel_offers
from tests.otlp_receiver import GrpcReceiver
from tests.servers.nginx import free_port, nginx_server, wait_listening
from tests.servers.process import serving
from tests.servers.split_relay import late_reader

pytestmark = pytest.mark.bpf

STDLIB_TLS_SERVER = textwrap.dedent('''
    import http.server, json, ssl, sys
    port, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3]

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        def log_message(self, *args):
            pass
        def _answer(self, status, body, content_type="application/json"):
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        def do_GET(self):
            if self.path == "/v1/models":
                self._answer(200, b'{"data":[{"id":"tiny"}]}')
            else:
                self._answer(404, b"{}")
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if self.path != "/v1/chat/completions":
                return self._answer(404, b"{}")
            if not body.get("stream"):
                answer = {"model": body["model"], "choices": [{"message": {"content": "hi"}}],
                          "usage": {"prompt_tokens": 3, "completion_tokens": 1}}
                return self._answer(200, json.dumps(answer).encode())
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            def chunk(data):
                self.wfile.write(b"%x\\r\\n%s\\r\\n" % (len(data), data))
            chunk(b'data: {"choices":[{"delta":{"role":"assistant","content":""}}]}\\n\\n')
            for word in ("one", " two", " three"):
                chunk(b'data: {"choices":[{"delta":{"content":"%s"}}]}\\n\\n' % word.encode())
            chunk(b"data: [DONE]\\n\\n")
            self.wfile.write(b"0\\r\\n\\r\\n")

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.serve_forever()
''')


@pytest.fixture(params=["socket", "syscall"])
def hooks(request) -> list[str]:
    """Each test runs with both ways in: the TLS uprobes share their connections with either."""
    args = ["--hooks", request.param]
    skip_unless_kernel_offers(args)
    return args


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    cert, key = str(d / "cert.pem"), str(d / "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
                    "-days", "1", "-keyout", key, "-out", cert], check=True, capture_output=True)
    return cert, key


@contextlib.contextmanager
def stdlib_tls_server(cert: str, key: str):
    port = free_port()
    with serving(["/usr/bin/python3", "-c", STDLIB_TLS_SERVER, str(port), cert, key], port):
        yield port


def client(port: int) -> http.client.HTTPSConnection:
    return http.client.HTTPSConnection("127.0.0.1", port, timeout=30, context=ssl._create_unverified_context())


def request(conn, method: str, path: str, body: dict | None = None) -> tuple[int, bytes]:
    conn.request(method, path, body=json.dumps(body) if body is not None else None,
                 headers={"Content-Type": "application/json"} if body is not None else {})
    response = conn.getresponse()
    return response.status, response.read()


def spans_on(receiver, port):
    return [s for s in receiver.spans() if s.attributes.get("server.port") == port]


def test_nginx_over_tls_is_measured_as_https(certificate, hooks):
    receiver = GrpcReceiver()
    try:
        with nginx_server(tls=certificate) as port:
            with EbpftoolProcess(["inference", "--port", str(port), "--otlp-endpoint", receiver.endpoint,
                                  "--otlp-protocol", "grpc", "--interval", "1", "--no-ui", *hooks]) as proc:
                conn = client(port)
                statuses = [request(conn, "GET", path)[0] for path in ("/index.html", "/missing", "/index.html")]
                conn.close()   # the last request ends at the latest here
                fresh = client(port)
                statuses.append(request(fresh, "GET", "/index.html")[0])
                fresh.close()
                assert receiver.wait_for(lambda: len(spans_on(receiver, port)) >= 4), proc.stderr
                assert proc.stop() == 0, proc.stderr
        assert statuses == [200, 404, 200, 200]
        spans = spans_on(receiver, port)
        assert sorted(s.attributes["http.response.status_code"] for s in spans) == sorted(statuses)
        assert {s.attributes["url.scheme"] for s in spans} == {"https"}
        assert {s.attributes.get("url.path") for s in spans} == {"/index.html", "/missing"}
        assert proc.figures("inference")["connections_unparsed"] == 0, proc.stdout
        assert proc.figures("inference")["connections_tls"] == 2, proc.stdout
    finally:
        receiver.stop()


def test_python_ssl_server_streams_over_tls_with_its_tokens(certificate, hooks):
    receiver = GrpcReceiver()
    try:
        with stdlib_tls_server(*certificate) as port:
            with EbpftoolProcess(["inference", "--port", str(port), "--otlp-endpoint", receiver.endpoint,
                                  "--otlp-protocol", "grpc", "--interval", "1", "--no-ui", *hooks]) as proc:
                conn = client(port)
                got = [request(conn, "GET", "/v1/models"),
                       request(conn, "POST", "/v1/chat/completions", {"model": "tiny", "messages": []}),
                       request(conn, "POST", "/v1/chat/completions", {"model": "tiny", "messages": [], "stream": True})]
                conn.close()
                assert receiver.wait_for(lambda: len(spans_on(receiver, port)) >= 3), proc.stderr
                assert proc.stop() == 0, proc.stderr
        assert [status for status, _ in got] == [200, 200, 200]
        streamed = got[2][1]
        text_events = [line for line in streamed.split(b"\n") if line.startswith(b"data: {") and b'"content":""' not in line]
        spans = sorted(spans_on(receiver, port), key=lambda s: s.start_ns)
        assert [s.attributes["url.scheme"] for s in spans] == ["https"] * 3
        assert [s.attributes.get("url.path") for s in spans] == ["/v1/models", "/v1/chat/completions", "/v1/chat/completions"]
        chat, stream = spans[1], spans[2]
        assert chat.attributes["gen_ai.usage.output_tokens"] == 1
        assert chat.attributes.get("gen_ai.response.model") == "tiny"
        assert stream.attributes["gen_ai.usage.output_tokens"] == len(text_events) == 3
    finally:
        receiver.stop()


# -- asyncio's TLS (OpenSSL memory BIOs): the application moves the ciphertext apart from the library calls ----

def _openai_client(port: int):
    import openai
    return openai.OpenAI(base_url=f"https://127.0.0.1:{port}/v1", api_key="x", max_retries=0, timeout=60,
                         http_client=openai.DefaultHttpxClient(verify=False))


def _drive_openai_over_tls(port: int) -> list[int]:
    """Streamed and plain chat and completions, three streams at once, then a 404; the last one's status."""
    client = _openai_client(port)
    client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], max_tokens=5)
    list(client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], max_tokens=6,
                                        stream=True))
    list(client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], max_tokens=4,
                                        stream=True, stream_options={"include_usage": True}))
    list(client.completions.create(model="m", prompt="hi", max_tokens=3, stream=True))
    with ThreadPoolExecutor(3) as pool:  # each on a connection of its own
        list(pool.map(lambda n: list(_openai_client(port).chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}], max_tokens=n, stream=True)), (7, 8, 9)))
    client.close()
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=30, context=ssl._create_unverified_context())
    status, _ = request(conn, "GET", "/missing")
    conn.close()
    return [status]


@pytest.mark.parametrize("kind", ["fastapi", "aiohttp"])
def test_asyncio_tls_servers_are_measured_with_their_tokens(certificate, kind, tmp_path, hooks):
    """uvicorn (uvloop's TLS) and aiohttp (asyncio's): SSL_read / SSL_write on memory BIOs, the socket
    read and written by the event loop. Truth: the server's own log (tests/servers/openai_apps.py) of each
    answer: path, client port, streamed, tokens written."""
    from tests.servers import openai_apps
    receiver = GrpcReceiver()
    log = tmp_path / "server.jsonl"
    port = free_port()
    try:
        with openai_apps.running(kind, port, str(log), tls=certificate):
            with EbpftoolProcess(["inference", "--port", str(port), "--otlp-endpoint", receiver.endpoint,
                                  "--otlp-protocol", "grpc", "--interval", "1", "--no-ui", *hooks]) as proc:
                missing = _drive_openai_over_tls(port)
                # the server logs an answer once it wrote it all: the client may have read it first
                assert receiver.wait_for(lambda: len(log.read_text().splitlines()) >= 7)
                answers = [json.loads(line) for line in log.read_text().splitlines()]
                seen = receiver.wait_for(lambda: len(spans_on(receiver, port)) >= len(answers) + 1)
                assert proc.stop() == 0, proc.stderr
                assert seen, ([line for line in proc.stdout.splitlines() if "TLS" in line or "request" in line],
                              [(s.attributes.get("url.path"), s.attributes.get("client.port"),
                                s.attributes.get("http.response.status_code")) for s in spans_on(receiver, port)],
                              [(a["path"], a["client_port"], a["n"]) for a in answers])
        tokens = [p for p in receiver.latest("ebpftool.gen_ai.server.output_tokens")
                  if p.attributes.get("server.port") == port]
    finally:
        receiver.stop()
    assert missing == [404] and len(answers) == 7
    spans = spans_on(receiver, port)
    assert len(spans) == 8, [s.name for s in spans]
    assert {s.attributes["url.scheme"] for s in spans} == {"https"}
    assert sorted(s.attributes["http.response.status_code"] for s in spans) == [200] * 7 + [404]
    # each answer's span: same client port, in order on its connection
    by_port: dict[int, list] = {}
    for s in sorted(spans, key=lambda s: s.start_ns):
        if s.attributes["http.response.status_code"] == 200:
            by_port.setdefault(s.attributes.get("client.port"), []).append(s)
    for answer in answers:
        mine = by_port.get(answer["client_port"])
        assert mine, f"no span from client port {answer['client_port']}: {answer}"
        span = mine.pop(0)
        assert span.attributes["url.path"] == answer["path"]
        assert span.attributes.get("gen_ai.usage.output_tokens") == answer["n"], (answer, span.attributes)
        assert span.start_ns <= answer["t_request"], "the span starts after the server's handler began"
        if answer["stream"]:
            assert span.attributes.get("ebpftool.gen_ai.time_to_first_token", 0) > 0, span.attributes
    assert sum(p.value for p in tokens) == sum(a["n"] for a in answers)


def tls_unknown_connections(receiver, port: int) -> float:
    """Connections on port counted as unparsed because no hooked library read their TLS (the latest export)."""
    return sum(p.value for p in receiver.latest("ebpftool.http.server.unparsed_connections")
               if p.attributes.get("server.port") == port
               and p.attributes.get("ebpftool.unparsed.reason") == "tls_without_known_library")


def test_tls_that_no_hooked_library_reads_is_counted_with_its_reason(certificate, hooks, tmp_path):
    """A TLS server whose libssl the tracer cannot find (a copy under another name, as a statically linked or
    vendored TLS library would be): its requests are invisible, and each connection that carried data is
    counted as unparsed with the reason tls_without_known_library, not lost silently."""
    import glob
    import os
    import shutil
    real = sorted(glob.glob("/usr/lib/x86_64-linux-gnu/libssl.so.3"))
    if not real:
        pytest.skip("no libssl.so.3 to copy")
    hidden = tmp_path / "libs"
    hidden.mkdir()
    shutil.copy(real[0], hidden / "libvendoredtls.so.3")
    os.symlink(hidden / "libvendoredtls.so.3", hidden / "libssl.so.3")   # maps show the file's own name
    receiver = GrpcReceiver()
    try:
        port = free_port()
        server = subprocess.Popen(["/usr/bin/python3", "-c", STDLIB_TLS_SERVER, str(port), *certificate],
                                  env={**os.environ, "LD_LIBRARY_PATH": str(hidden)})
        try:
            wait_listening(port)
            maps = open(f"/proc/{server.pid}/maps").read()
            assert "libvendoredtls.so.3" in maps and "libssl.so" not in maps
            with EbpftoolProcess(["inference", "--port", str(port), "--otlp-endpoint", receiver.endpoint,
                                  "--otlp-protocol", "grpc", "--interval", "1", "--no-ui", *hooks]) as proc:
                for _ in range(3):
                    conn = client(port)
                    assert request(conn, "GET", "/v1/models")[0] == 200
                    conn.close()
                assert receiver.wait_for(lambda: tls_unknown_connections(receiver, port) == 3), proc.stderr
                assert proc.stop() == 0, proc.stderr
        finally:
            server.terminate()
            server.wait(10)
        assert not spans_on(receiver, port)
        assert proc.figures("inference")["connections_tls_unknown"] == 3, proc.stdout
    finally:
        receiver.stop()



MAP_FILES = textwrap.dedent('''
    import mmap, sys
    maps = []
    for path in sys.argv[1:]:
        with open(path, "rb") as f:
            maps.append(mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ))
    print("mapped", flush=True)
    sys.stdin.read()
''')


def test_a_malformed_file_mapped_as_libssl_is_skipped_and_said(certificate, tmp_path):
    """Root reads every file any process maps under a libssl name. One whose ELF headers point past its end
    (anyone can map such a file) is refused with one line, and the tracer goes on measuring nginx over TLS."""
    real = Path("/usr/lib/x86_64-linux-gnu/libssl.so.3")
    if not real.exists():
        pytest.skip("no libssl.so.3 to start the malformed copy from")
    bad = tmp_path / "libssl.so.3"
    data = bytearray(real.read_bytes()[:4096])
    data[40:48] = (2**64 - 1).to_bytes(8, "little")   # e_shoff: the section headers past any offset a file has
    bad.write_bytes(bytes(data))
    holder = subprocess.Popen([sys.executable, "-c", MAP_FILES, str(bad)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "mapped"
        assert str(bad) in Path(f"/proc/{holder.pid}/maps").read_text()
        with nginx_server(tls=certificate) as port:
            with EbpftoolProcess(["inference", "--port", str(port), "--no-ui"]) as proc:
                conn = client(port)
                for _ in range(3):
                    assert request(conn, "GET", "/")[0] == 200
                conn.close()
                assert proc.stop() == 0, proc.stderr
    finally:
        holder.kill()
        holder.wait(10)
    assert f"TLS: no uprobes on {bad}: not readable as an ELF file" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.figures("inference")["requests"] == 3, proc.stdout

TINY_LIBSSL = ("int SSL_read(void *s, void *b, int n) { return n - 1; }\n"
               "int SSL_write(void *s, const void *b, int n) { return n; }\n")


def test_libssl_files_past_the_limit_are_refused_in_one_line(tmp_path):
    """Any user can map as many copies of a libssl as they like, each a file of its own. The tracer gives
    uprobes to MAX_FILES of them at most and says in one line how many more it refused."""
    from ebpftool.tracers.inference.tls_libs import MAX_FILES
    source = tmp_path / "tiny.c"
    source.write_text(TINY_LIBSSL)
    first = tmp_path / "libs" / "libssl-0.so.3"
    first.parent.mkdir()
    subprocess.run(["gcc", "-O0", "-shared", "-fPIC", "-o", str(first), str(source)], check=True)
    copies = [first] + [first.with_name(f"libssl-{i:x}.so.3") for i in range(1, MAX_FILES + 1)]
    for copy in copies[1:]:
        shutil.copyfile(first, copy)   # a file of its own (a hard link would be the same file)
    holder = subprocess.Popen([sys.executable, "-c", MAP_FILES, *map(str, copies)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "mapped"
        with EbpftoolProcess(["inference", "--port", str(free_port()), "--no-ui"]) as proc:
            assert proc.stop() == 0, proc.stderr
    finally:
        holder.kill()
        holder.wait(10)
    hooked = proc.figures("inference")["tls_libraries"]
    assert hooked == MAX_FILES, proc.stdout
    said = re.search(rf"TLS: no uprobes on (\d+) more libssl files: {MAX_FILES} libssl files have uprobes already",
                     " ".join(proc.stderr.split()))
    assert said, proc.stderr[-3000:]
    # every copy not hooked is among those said (the node's own libssl files may be too: which come first
    # follows the processes' ids)
    copies_hooked = proc.stderr.count(f"TLS: uprobes on {first.parent}/")
    assert int(said.group(1)) >= len(copies) - copies_hooked >= 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr

# -- Node.js: OpenSSL inside its executable (NodeSource's and nodejs.org's builds export it), memory BIOs ------

@contextlib.contextmanager
def node_server(mode: str, cert: str, key: str):
    port = free_port()
    script = str(Path(__file__).parent / "servers" / "node_server.js")
    with serving(["node", script, mode, str(port), cert, key], port, ready_line=True):
        yield port


def curl(*args: str) -> str:
    return subprocess.run(["curl", "-sk", *args], capture_output=True, text=True, timeout=60, check=True).stdout


def test_node_https_and_http2_are_measured_with_their_tokens(certificate, hooks):
    """Node.js's https and http2 servers (its own TLS: SSL_read and SSL_write on memory BIOs, and no
    SSL_do_handshake of its own on the server side: the first SSL_read ties the object to its socket), driven
    by curl: every answer counted under its status with url.scheme https, the HTTP/2 ones with version 2, the
    streamed answers' tokens as curl received them, no TLS connection left unread."""
    receiver = GrpcReceiver()
    seen: list[tuple[str, str]] = []
    tokens = 0
    try:
        with node_server("https", *certificate) as h1, node_server("http2", *certificate) as h2:
            with EbpftoolProcess(["inference", "--port", str(h1), "--port", str(h2), "--otlp-endpoint", receiver.endpoint,
                                  "--otlp-protocol", "grpc", "--interval", "1", "--no-ui", *hooks]) as proc:
                for port, version in ((h1, "--http1.1"), (h2, "--http2")):
                    for path in ("/", "/nope", "/"):
                        seen.append(tuple(curl(version, "-o", "/dev/null", "-w", "%{http_version} %{response_code}",
                                               f"https://127.0.0.1:{port}{path}").split()))
                    for n in (3, 6):
                        out = curl(version, "-N", "-w", "\n%{http_version} %{response_code}", "-d",
                                   json.dumps({"model": "m", "stream": True, "max_tokens": n}),
                                   f"https://127.0.0.1:{port}/v1/chat/completions")
                        *events, status = out.strip().split("\n")
                        seen.append(tuple(status.split()))
                        tokens += sum(1 for e in events if e.startswith("data: {") and '"content":"tok' in e)
                assert receiver.wait_for_exports_from_now("http.server.request.duration")
                assert proc.stop() == 0, proc.stderr
    finally:
        receiver.stop()
    assert sorted(seen) == sorted([("1.1", "200")] * 4 + [("1.1", "404")] + [("2", "200")] * 4 + [("2", "404")])
    assert tokens == 18
    points = receiver.latest("http.server.request.duration")
    counted = {(p.attributes["server.port"], p.attributes.get("network.protocol.version"),
                p.attributes["http.request.method"], p.attributes.get("http.response.status_code"),
                p.attributes.get("url.scheme")): p.count
               for p in points if p.attributes.get("server.port") in (h1, h2)}
    assert counted == {(h1, None, "GET", 200, "https"): 2, (h1, None, "GET", 404, "https"): 1,
                       (h1, None, "POST", 200, "https"): 2, (h2, "2", "GET", 200, "https"): 2,
                       (h2, "2", "GET", 404, "https"): 1, (h2, "2", "POST", 200, "https"): 2}, counted
    # the streams' tokens: HTTP/1's counted in the kernel, HTTP/2's in user space (network.protocol.version 2)
    streamed = receiver.latest("ebpftool.gen_ai.server.output_tokens")
    assert sum(p.value for p in streamed if p.attributes.get("server.port") == h1) == 9
    assert sum(p.value for p in streamed if p.attributes.get("server.port") == h2
               and p.attributes.get("network.protocol.version") == "2") == 9
    figures = proc.figures("inference")
    assert figures["connections_tls_unknown"] == 0 and figures["connections_tls"] == 10, proc.stdout
    node = subprocess.run(["sh", "-c", "readlink -f $(command -v node)"], capture_output=True, text=True).stdout.strip()
    assert f"uprobes on {node}" in proc.stderr + proc.stdout or "libssl" in proc.stderr + proc.stdout


def test_a_request_over_tls_starts_when_its_bytes_arrived(certificate, hooks):
    """The watched process (a relay terminating TLS with Python's ssl, in front of nginx) reads each request
    300 ms after its encrypted bytes are there: the span starts at their arrival (the plaintext comes at the
    library call's return, the time from the socket), so it lasts about as long as the client waited, and
    says how long the bytes waited. The connection is made, then left idle, before its first request: that
    request starts at its own bytes, not at the end of the handshake (TLS 1.3's last flight, the client's
    change cipher spec and encrypted Finished, is no request's)."""
    skip_unless_kernel_notes_arrivals()
    delay_s = 0.3
    receiver = GrpcReceiver()
    waits = []
    try:
        with nginx_server() as upstream, late_reader(upstream, delay_s, certificate) as port, \
                EbpftoolProcess(["inference", "--port", str(port), "--otlp-endpoint", receiver.endpoint,
                                 "--otlp-protocol", "grpc", "--interval", "1", "--no-ui", *hooks]) as proc:
            conn = client(port)
            conn.connect()  # the TLS handshake: before the first request and its client's timing
            time.sleep(delay_s)  # the connection idle (the scenario, not a wait for something)
            for _ in range(4):
                t0 = time.perf_counter_ns()
                assert request(conn, "GET", "/index.html")[0] == 200
                waits.append(time.perf_counter_ns() - t0)
            conn.close()
            assert receiver.wait_for(lambda: len(spans_on(receiver, port)) >= 4), proc.stderr
            assert proc.stop() == 0, proc.stderr
    finally:
        receiver.stop()
    spans = sorted(spans_on(receiver, port), key=lambda s: s.start_ns)
    assert {s.attributes["url.scheme"] for s in spans} == {"https"}, [s.attributes for s in spans]
    assert_started_at_arrival(spans, waits, delay_s)
