"""HTTP/2 and gRPC: connections that begin with the client preface, their frames walked in the kernel
(bpf/inference/http2.bpf.h) and their streams decoded in user space (http2.py, h2_streams.py).

Servers and clients nobody here wrote: grpcio's server and client (gRPC's C core: its own HTTP/2, HPACK with
the dynamic table, many streams on one connection) with unary, server-streaming and failing calls; nginx's
HTTP/2 (h2c with prior knowledge, and h2 over TLS by ALPN) driven by nghttp2's h2load. What a real OTLP
receiver decoded is compared with what the clients did and saw: counts, statuses and messages exact, times
between the server's own and the client's."""
from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import grpc
import pytest

from tests.conftest import EbpftoolProcess, skip_unless_kernel_offers
from tests.otlp_receiver import GrpcReceiver
from tests.servers.nginx import free_port, nginx_server
from ebpftool.tracers.inference.tracer import LATER_PROGRAMS_LOADED
from tests.servers.process import serving
from tests.servers.split_relay import command as split_relay_command
from tests.test_tls import tls_unknown_connections

pytestmark = pytest.mark.bpf

SERVICE = "ebpftool.test.Infer"
TOLERANCE_NS = 1_000_000   # the max(1 ms, 2%): the spans here last a few ms


@pytest.fixture(params=["socket", "syscall"])
def hooks(request) -> list[str]:
    args = ["--hooks", request.param]
    skip_unless_kernel_offers(args)
    return args


@contextlib.contextmanager
def grpc_server(tmp_path, tls: tuple[str, str] | None = None):
    port = free_port()
    log = tmp_path / "calls.jsonl"
    args = [sys.executable, "-m", "tests.servers.grpc_server", str(port), str(log)]
    if tls:
        args += ["--tls", *tls]
    with serving(args, port, ready_line=True):
        yield port, log


def tolerance(ns: int) -> int:
    return max(TOLERANCE_NS, ns // 50)


class Calls:
    """The client's side of each call: wall-clock times around it (what the client waited) and what it got."""

    def __init__(self) -> None:
        self.done: list[dict] = []
        self.lock = threading.Lock()

    def unary(self, channel, payload: bytes) -> None:
        start = time.time_ns()
        answer = channel.unary_unary(f"/{SERVICE}/Unary")(payload)
        end = time.time_ns()
        assert answer == payload[::-1]
        self._add("Unary", "OK", start, end, 1, None)

    def stream(self, channel, messages: int, gap_ms: float, size: int) -> None:
        start = time.time_ns()
        first, got = None, 0
        for _ in channel.unary_stream(f"/{SERVICE}/Generate")(
                json.dumps({"messages": messages, "gap_ms": gap_ms, "size": size}).encode()):
            got += 1
            first = first or time.time_ns()
        self._add("Generate", "OK", start, time.time_ns(), got, first)

    def fail(self, channel, code: str) -> None:
        start = time.time_ns()
        with pytest.raises(grpc.RpcError) as err:
            channel.unary_unary(f"/{SERVICE}/Fail")(code.encode())
        assert err.value.code().name == code
        self._add("Fail", code, start, time.time_ns(), 0, None)

    def _add(self, method, status, start, end, messages, first) -> None:
        with self.lock:
            self.done.append({"method": method, "status": status, "start": start, "end": end,
                              "messages": messages, "first": first})


def rpc_spans(receiver, port):
    return [s for s in receiver.spans() if s.attributes.get("server.port") == port
            and s.attributes.get("rpc.system.name") == "grpc"]


def test_grpc_calls_are_measured_with_their_status_and_messages(tmp_path, hooks):
    """Unary, server-streaming (four at once on one connection) and failing calls of grpcio's client to
    grpcio's server: one span per call with rpc.method, the status the client got and the messages it
    received; the call-duration metric counts every call; times lie between the server's and the client's."""
    receiver = GrpcReceiver()
    calls = Calls()
    try:
        with grpc_server(tmp_path) as (port, log):
            with EbpftoolProcess(["inference", "--port", str(port), "--otlp-endpoint", receiver.endpoint,
                                  "--otlp-protocol", "grpc", "--interval", "1", "--no-ui", *hooks]) as proc:
                channel = grpc.insecure_channel(f"127.0.0.1:{port}")
                grpc.channel_ready_future(channel).result(timeout=30)
                for i in range(5):
                    calls.unary(channel, b"question %d" % i)
                streams = [threading.Thread(target=calls.stream, args=(channel, n, 4, size))
                           for n, size in ((12, 20), (7, 300), (30, 8), (1, 64))]
                for t in streams:
                    t.start()
                for t in streams:
                    t.join()
                calls.fail(channel, "UNAVAILABLE")
                calls.fail(channel, "NOT_FOUND")
                channel.close()
                assert receiver.wait_for(lambda: len(rpc_spans(receiver, port)) >= len(calls.done)), proc.stderr
                assert receiver.wait_for_exports_from_now("rpc.server.call.duration")
                assert proc.stop() == 0, proc.stderr
        server_side = [json.loads(line) for line in log.read_text().splitlines()]
    finally:
        receiver.stop()
    spans = rpc_spans(receiver, port)
    assert len(spans) == len(calls.done) == 11
    seen = sorted((s.attributes["rpc.method"], s.attributes["rpc.response.status_code"],
                   s.attributes["ebpftool.rpc.response_messages"]) for s in spans)
    assert seen == sorted((f"{SERVICE}/{c['method']}", c["status"], c["messages"]) for c in calls.done)
    for s in spans:
        assert s.name == s.attributes["rpc.method"]
        assert s.kind == "SERVER"
        assert s.attributes["network.protocol.version"] == "2"
        assert s.attributes["url.scheme"] == "http"
        error = s.attributes["rpc.response.status_code"] == "UNAVAILABLE"   # a server error; NOT_FOUND is not
        assert (s.status_code == 2) == error and (s.attributes.get("error.type") == "UNAVAILABLE") == error
    # Times: each span within its client's wait and no shorter than its server's handler.
    handler = {}
    for rec in server_side:
        handler.setdefault(rec["method"], []).append(int((rec["end"] - rec["start"]) * 1e9))
    by_method: dict[str, list] = {}
    for s in spans:
        by_method.setdefault(s.attributes["rpc.method"].split("/")[1], []).append(s)
    for method, group in by_method.items():
        waits = sorted(c["end"] - c["start"] for c in calls.done if c["method"] == method)
        durations = sorted(s.end_ns - s.start_ns for s in group)
        handlers = sorted(handler[method])
        for waited, measured, handled in zip(waits, durations, handlers):
            assert handled - tolerance(handled) <= measured <= waited + tolerance(waited), (method, handled, measured, waited)
    for c in (c for c in calls.done if c["method"] == "Generate"):
        span = min((s for s in spans if s.attributes["ebpftool.rpc.response_messages"] == c["messages"]
                    and s.attributes["rpc.method"].endswith("/Generate")), key=lambda s: abs(s.start_ns - c["start"]))
        assert c["start"] - TOLERANCE_NS <= span.start_ns
        first = span.start_ns + int(span.attributes["ebpftool.rpc.server.time_to_first_message"] * 1e9)
        assert first <= c["first"] + TOLERANCE_NS
    # Metrics: every call counted, messages per call summed exactly.
    durations = receiver.latest("rpc.server.call.duration")
    counted = {(p.attributes["rpc.method"], p.attributes["rpc.response.status_code"]): p.count for p in durations
               if p.attributes.get("server.port") == port}
    expected: dict = {}
    for c in calls.done:
        key = (f"{SERVICE}/{c['method']}", c["status"])
        expected[key] = expected.get(key, 0) + 1
    assert counted == expected
    per_rpc = [p for p in receiver.latest("ebpftool.rpc.server.responses_per_rpc") if p.attributes.get("server.port") == port]
    assert sum(p.sum for p in per_rpc) == sum(c["messages"] for c in calls.done)
    first_message = [p for p in receiver.latest("ebpftool.rpc.server.time_to_first_message")
                     if p.attributes.get("server.port") == port]
    assert sum(p.count for p in first_message) == sum(1 for c in calls.done if c["messages"])
    figures = proc.figures("inference")
    assert figures["connections_h2"] == 1 and figures["h2_connections_lost"] == 0, proc.stdout
    assert figures["connections_unparsed"] == 0


@contextlib.contextmanager
def split_relay(upstream: int, *args: str):
    """tests/servers/split_relay.py in front of a server: by default 7-byte reads from the client, 5-byte
    writes to it (args: READ_SIZE WRITE_SIZE READ_DELAY_MS)."""
    port = free_port()
    with serving(split_relay_command(port, upstream, *args), port, ready_line=True):
        yield port


def test_frames_cut_at_every_point_between_syscalls_are_followed(tmp_path, hooks):
    """The watched process (a relay in front of grpcio's server) reads 7 bytes at a time and writes 5: frame
    headers span two or three reads (up to 8 of their 9 bytes before the last), payloads many. Every call is
    still measured, with the status and messages the client got, and no connection is lost."""
    receiver = GrpcReceiver()
    calls = Calls()
    try:
        with grpc_server(tmp_path) as (upstream, _log), split_relay(upstream) as port:
            with EbpftoolProcess(["inference", "--port", str(port), "--otlp-endpoint", receiver.endpoint,
                                  "--otlp-protocol", "grpc", "--interval", "1", "--no-ui", *hooks]) as proc:
                channel = grpc.insecure_channel(f"127.0.0.1:{port}")
                grpc.channel_ready_future(channel).result(timeout=30)
                for i in range(12):
                    calls.unary(channel, b"q" * (i * 7 + 1))
                calls.stream(channel, 9, 1, 33)
                calls.fail(channel, "UNAVAILABLE")
                channel.close()
                assert receiver.wait_for(lambda: len(rpc_spans(receiver, port)) >= len(calls.done)), proc.stderr
                assert proc.stop() == 0, proc.stderr
    finally:
        receiver.stop()
    spans = rpc_spans(receiver, port)
    assert sorted((s.attributes["rpc.method"], s.attributes["rpc.response.status_code"],
                   s.attributes["ebpftool.rpc.response_messages"]) for s in spans) == \
        sorted((f"{SERVICE}/{c['method']}", c["status"], c["messages"]) for c in calls.done)
    figures = proc.figures("inference")
    assert figures["h2_connections_lost"] == 0 and figures["h2_streams"] == len(calls.done), proc.stdout


def test_a_call_starts_when_its_request_arrived_not_when_the_server_read_it(tmp_path, hooks):
    """The watched process reads each request 300 ms after its bytes are there (they wait in the socket's queue,
    as at a busy server): the span starts at the arrival, so it lasts about as long as the client waited (at
    least half of it, here ~300 ms: a request that came while the relay already waited for earlier bytes waits
    less), not the few ms from the late read to the answer."""
    delay_ms = 300
    receiver = GrpcReceiver()
    calls = Calls()
    try:
        with grpc_server(tmp_path) as (upstream, _log), split_relay(upstream, "65536", "65536", str(delay_ms)) as port:
            with EbpftoolProcess(["inference", "--port", str(port), "--otlp-endpoint", receiver.endpoint,
                                  "--otlp-protocol", "grpc", "--interval", "1", "--no-ui", *hooks]) as proc:
                channel = grpc.insecure_channel(f"127.0.0.1:{port}")
                grpc.channel_ready_future(channel).result(timeout=30)
                for i in range(3):
                    calls.unary(channel, b"late %d" % i)
                channel.close()
                assert receiver.wait_for(lambda: len(rpc_spans(receiver, port)) >= 3), proc.stderr
                assert proc.stop() == 0, proc.stderr
    finally:
        receiver.stop()
    durations = sorted(s.end_ns - s.start_ns for s in rpc_spans(receiver, port))
    waits = sorted(c["end"] - c["start"] for c in calls.done)
    for measured, waited in zip(durations, waits):
        assert waited // 2 <= measured <= waited + tolerance(waited), (durations, waits)
    assert min(waits) > delay_ms * 1_000_000 // 2


def test_grpcio_over_tls_is_counted_as_tls_no_hooked_library_reads(tmp_path):
    """grpcio's server with TLS credentials: PyPI's grpcio carries BoringSSL inside its cygrpc module with no
    symbol exported, so no uprobe reaches its plaintext (docs/inference.md, TLS). Its calls are invisible, and
    the connection that carried them is counted as unparsed with the reason tls_without_known_library."""
    import glob
    cygrpc = glob.glob(os.path.join(os.path.dirname(grpc.__file__), "_cython", "cygrpc*.so"))
    assert cygrpc and "SSL_read" not in subprocess.run(["nm", "-D", "--defined-only", cygrpc[0]],
                                                       capture_output=True, text=True).stdout
    cert, key = self_signed(tmp_path)
    receiver = GrpcReceiver()
    calls = Calls()
    try:
        with grpc_server(tmp_path, tls=(cert, key)) as (port, _log):
            with EbpftoolProcess(["inference", "--port", str(port), "--otlp-endpoint", receiver.endpoint,
                                  "--otlp-protocol", "grpc", "--interval", "1", "--no-ui"]) as proc:
                credentials = grpc.ssl_channel_credentials(open(cert, "rb").read())
                channel = grpc.secure_channel(f"localhost:{port}", credentials)
                for i in range(3):
                    calls.unary(channel, b"question %d" % i)
                channel.close()
                assert receiver.wait_for(lambda: tls_unknown_connections(receiver, port) == 1), proc.stderr
                assert proc.stop() == 0, proc.stderr
    finally:
        receiver.stop()
    assert len(calls.done) == 3
    assert not rpc_spans(receiver, port)
    assert proc.figures("inference")["connections_tls_unknown"] == 1, proc.stdout


def self_signed(tmp_path) -> tuple[str, str]:
    """A self-signed certificate for localhost and its key (PEM files in tmp_path)."""
    cert, key = str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
                    "-days", "1", "-keyout", key, "-out", cert], check=True, capture_output=True)
    return cert, key


def h2load(url: str, *args: str) -> dict[str, int]:
    """nghttp2's load generator (HTTP/2, prior knowledge or ALPN h2): its own count of answers by status class."""
    out = subprocess.run(["h2load", *args, url], capture_output=True, text=True, timeout=300).stdout
    m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    assert m, out
    return {"2xx": int(m.group(1)), "3xx": int(m.group(2)), "4xx": int(m.group(3)), "5xx": int(m.group(4))}


@pytest.mark.parametrize("tls", [False, True], ids=["h2c", "h2-over-tls"])
def test_nginx_http2_requests_are_counted_exactly(tls, hooks, tmp_path):
    """h2load against nginx's HTTP/2, ten streams at a time on each of two connections, found and missing
    pages: the request-duration metric counts each answer under its status with network.protocol.version 2,
    exactly as h2load counted them; over TLS (ALPN h2) through the TLS uprobes, with url.scheme https."""
    certificate = self_signed(tmp_path) if tls else None
    receiver = GrpcReceiver()
    try:
        with nginx_server(tls=certificate, http2=True) as port:
            scheme = "https" if tls else "http"
            with EbpftoolProcess(["inference", "--port", str(port), "--otlp-endpoint", receiver.endpoint,
                                  "--otlp-protocol", "grpc", "--interval", "1", "--no-ui", *hooks]) as proc:
                found = h2load(f"{scheme}://127.0.0.1:{port}/index.html", "-n", "400", "-c", "2", "-m", "10")
                missing = h2load(f"{scheme}://127.0.0.1:{port}/missing", "-n", "60", "-c", "1", "-m", "5")
                assert receiver.wait_for_exports_from_now("http.server.request.duration")
                assert proc.stop() == 0, proc.stderr
    finally:
        receiver.stop()
    assert found["2xx"] == 400 and missing["4xx"] == 60
    points = [p for p in receiver.latest("http.server.request.duration") if p.attributes.get("server.port") == port]
    counted = {(p.attributes.get("network.protocol.version"), p.attributes.get("http.response.status_code"),
                p.attributes.get("url.scheme"), p.attributes.get("http.request.method")): p.count for p in points}
    assert counted == {("2", 200, scheme, "GET"): 400, ("2", 404, scheme, "GET"): 60}
    spans = [s for s in receiver.spans() if s.attributes.get("server.port") == port]
    assert spans and {s.attributes.get("url.path") for s in spans} == {"/index.html", "/missing"}
    assert {s.name for s in spans} == {"GET /index.html", "GET /missing"}
    figures = proc.figures("inference")
    assert figures["connections_h2"] == 3 and figures["h2_connections_lost"] == 0, proc.stdout


@contextlib.contextmanager
def nghttpx_h2c(backend_port: int):
    """nghttp2's proxy with a cleartext frontend (HTTP/1.1, HTTP/2 with prior knowledge, and the h2c Upgrade)
    in front of an HTTP/1 backend; yields the frontend's port."""
    port = free_port()
    with serving(["nghttpx", f"--frontend=127.0.0.1,{port};no-tls", f"--backend=127.0.0.1,{backend_port}",
                  "--workers=1", "--log-level=WARN", "--errorlog-file=/dev/stderr", "--accesslog-file=/dev/null",
                  "--no-ocsp", "--conf=/dev/null"], port):
        yield port


def test_h2c_upgrade_requests_are_measured_as_http2(hooks, tmp_path):
    """The h2c Upgrade (RFC 7540 3.2) that curl --http2 and nghttp -u make over http:// to nghttpx: the
    HTTP/1.1 request that asks becomes stream 1, answered in HTTP/2 after the 101, and the streams after it
    on the connection follow. Each answer is counted once, under HTTP/2 and the status the clients got (not
    as an HTTP/1 request answered 101), with its path on the span."""
    receiver = GrpcReceiver()
    got: list[tuple[str, str]] = []
    try:
        with nginx_server() as backend, nghttpx_h2c(backend) as port:
            with EbpftoolProcess(["inference", "--port", str(port), "--otlp-endpoint", receiver.endpoint,
                                  "--otlp-protocol", "grpc", "--interval", "1", "--no-ui", *hooks],
                                 ready_marker=LATER_PROGRAMS_LOADED) as proc:
                for _ in range(3):
                    out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_version} %{response_code}",
                                          "--http2", f"http://127.0.0.1:{port}/index.html"],
                                         capture_output=True, text=True, timeout=30, check=True).stdout
                    got.append(tuple(out.split()))
                out = subprocess.run(["nghttp", "-u", "-v", "-n", f"http://127.0.0.1:{port}/missing",
                                      f"http://127.0.0.1:{port}/index.html", f"http://127.0.0.1:{port}/gone"],
                                     capture_output=True, text=True, timeout=30, check=True).stdout
                assert "HTTP Upgrade success" in out, out
                got += [("2", status) for status in re.findall(r"^HTTP/1\.1 (\d{3}) ", out, re.M) if status != "101"]
                got += [("2", status) for status in re.findall(r":status: (\d{3})", out)]
                assert receiver.wait_for_exports_from_now("http.server.request.duration")
                assert proc.stop() == 0, proc.stderr
    finally:
        receiver.stop()
    # what the clients saw: every answer over HTTP/2, the Upgrade's own included
    assert sorted(got) == [("2", "200")] * 4 + [("2", "404")] * 2, got
    points = [p for p in receiver.latest("http.server.request.duration") if p.attributes.get("server.port") == port]
    counted = {(p.attributes.get("network.protocol.version"), p.attributes.get("http.response.status_code"),
                p.attributes.get("http.request.method")): p.count for p in points}
    assert counted == {("2", 200, "GET"): 4, ("2", 404, "GET"): 2}, counted
    spans = [s for s in receiver.spans() if s.attributes.get("server.port") == port]
    assert sorted(s.name for s in spans) == ["GET /gone"] + ["GET /index.html"] * 4 + ["GET /missing"]
    figures = proc.figures("inference")
    assert figures["connections_h2"] == 4 and figures["h2_connections_lost"] == 0, proc.stdout


def test_streams_of_connections_whose_records_were_lost_are_measured_in_the_kernel(hooks, tmp_path):
    """The tracer stopped (SIGSTOP: nothing drains its ring buffer) while h2load runs against nginx's HTTP/2:
    the records of its connections soon find no room, and those connections are muted, their later streams
    measured in the kernel (start, end, the static-table method and :status that nginx and h2load use); a
    connection opened while the ring buffer is full is measured there from its start. Every stream h2load
    counted is in the duration metric under its status, or counted as open when its connection was muted;
    none twice."""
    receiver = GrpcReceiver()
    try:
        with nginx_server(http2=True) as port:
            with EbpftoolProcess(["inference", "--port", str(port), "--otlp-endpoint", receiver.endpoint,
                                  "--otlp-protocol", "grpc", "--interval", "1", "--no-ui", *hooks],
                                 ready_marker=LATER_PROGRAMS_LOADED) as proc:
                os.kill(proc.proc.pid, signal.SIGSTOP)
                try:
                    found = h2load(f"http://127.0.0.1:{port}/index.html", "-n", "20000", "-c", "2", "-m", "10")
                    missing = h2load(f"http://127.0.0.1:{port}/missing", "-n", "2000", "-c", "1", "-m", "5")
                finally:
                    os.kill(proc.proc.pid, signal.SIGCONT)
                assert receiver.wait_for_exports_from_now("http.server.request.duration")
                assert proc.stop() == 0, proc.stderr
    finally:
        receiver.stop()
    assert found["2xx"] == 20000 and missing["4xx"] == 2000
    figures = proc.figures("inference")
    assert figures["h2_streams_kernel"] > 0, proc.stdout      # the kernel took over
    points = [p for p in receiver.latest("http.server.request.duration") if p.attributes.get("server.port") == port]
    counted = {(p.attributes.get("network.protocol.version"), p.attributes.get("http.response.status_code"),
                p.attributes.get("http.request.method")): p.count for p in points}
    assert set(counted) <= {("2", 200, "GET"), ("2", 404, "GET")}, counted
    assert counted.get(("2", 404, "GET")) == 2000, counted    # a connection muted from its start: all of it
    assert counted[("2", 200, "GET")] + figures["h2_streams_lost"] == 20000, (counted, figures)
    assert figures["h2_streams"] + figures["h2_streams_kernel"] == sum(counted.values()), figures


@pytest.mark.parametrize("tls", [False, True], ids=["h2c", "h2-over-tls"])
def test_secrets_in_http2_headers_and_queries_never_leave(tls, tmp_path):
    """h2load's requests to nginx's HTTP/2 carry a bearer token, a cookie and a query secret (HPACK-coded on the
    wire, plain once decoded): the spans, metrics, JSONL, record file and the tracer's own output show the
    requests and their paths, and never a secret (header values, query strings stay on the node), in clear
    text as over TLS."""
    certificate = self_signed(tmp_path) if tls else None
    secrets = ("sk-H2-LIVE-SECRET", "H2COOKIESECRET", "QH2SECRET")
    record, jsonl = tmp_path / "run.rec", tmp_path / "out.jsonl"
    receiver = GrpcReceiver()
    try:
        with nginx_server(tls=certificate, http2=True) as port:
            scheme = "https" if tls else "http"
            with EbpftoolProcess(["inference", "--port", str(port), "--otlp-endpoint", receiver.endpoint,
                                  "--otlp-protocol", "grpc", "--interval", "1", "--no-ui", "--record", str(record),
                                  "--jsonl", str(jsonl)]) as proc:
                got = h2load(f"{scheme}://127.0.0.1:{port}/index.html?token={secrets[2]}", "-n", "20", "-c", "1",
                             "-m", "2", "-H", f"authorization: Bearer {secrets[0]}", "-H", f"cookie: s={secrets[1]}")
                assert receiver.wait_for(lambda: len([s for s in receiver.spans()
                                                      if s.attributes.get("server.port") == port]) >= 20)
                assert proc.stop() == 0, proc.stderr
    finally:
        receiver.stop()
    assert got["2xx"] == 20
    exported = repr(receiver.spans()) + repr([receiver.latest(m) for m in receiver.metric_names()])
    outputs = {"otlp": exported, "record": record.read_bytes().decode("latin-1"), "jsonl": jsonl.read_text(),
               "stdout": proc.stdout, "stderr": proc.stderr}
    for name in ("otlp", "jsonl"):
        assert "/index.html" in outputs[name], name      # the checks look at the requests' own data
    for name, text in outputs.items():
        for secret in (*secrets, "Bearer", "token="):
            assert secret not in text, f"{secret!r} found in {name}"
