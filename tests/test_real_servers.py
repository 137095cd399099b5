"""`ebpftool inference` against real servers from PyPI, checked against the wire only.

Each run: a real server (FastAPI on uvicorn with sse-starlette, aiohttp, Ray Serve's HTTP proxy in front of
a FastAPI deployment: tests/servers/openai_apps.py) on a free loopback port, a packet capture of that port
on `lo` (tests/wire.py), `ebpftool inference --port P` exporting to a real OTLP receiver, and the official
`openai` client driving the server: streamed with and without `stream_options.include_usage`, not
streamed (some answers longer than 1,500 bytes), four streams at a time, a 404, a bad-JSON 400, and two
requests sent 16 bytes at a time. ebpftool is stopped (its stop flushes everything), then the capture.

What ebpftool reported is compared with what the capture says happened: one span per request on the
wire, statuses, operations, output tokens (usage.completion_tokens where the answer carries it, else its
content events: role-only, finish-only and usage-only chunks and [DONE] are not tokens), the token metric
summed, the model of non-streamed answers, the span's start (the request's first byte on the wire), its
duration, time to first token and time per output token within max(1 ms, 2%) of the wire's, and the
executable of the process that listens. Expectations never come from ebpftool itself.

Selected with `-m ray` for the Ray Serve runs (one Ray instance for the module: its start dominates).
"""
from __future__ import annotations

import http.client
import json
import os
import socket
import statistics
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests import wire
from tests.conftest import EbpftoolProcess, inference_args
from tests.otlp_receiver import GrpcReceiver
from tests.servers import openai_apps
from tests.servers.nginx import free_port

pytestmark = [pytest.mark.bpf, pytest.mark.timeout(300)]

OPERATIONS = {"/v1/chat/completions": "chat", "/v1/completions": "text_completion"}
MS = 1_000_000
TOKENS_METRIC = "ebpftool.gen_ai.server.output_tokens"

# (server, --hooks): every server with both ways in
CASES = [
    pytest.param(("fastapi", "socket"), id="fastapi-socket"),
    pytest.param(("aiohttp", "socket"), id="aiohttp-socket"),
    pytest.param(("ray", "socket"), id="ray-socket", marks=pytest.mark.ray),
    pytest.param(("fastapi", "syscall"), id="fastapi-syscall"),
    pytest.param(("aiohttp", "syscall"), id="aiohttp-syscall"),
    pytest.param(("ray", "syscall"), id="ray-syscall", marks=pytest.mark.ray),
]


@dataclass
class Run:
    server: str
    hooks: str
    port: int = 0
    pid: int = 0
    exe: str = ""       # base name of /proc/PID/exe of the listening process, read while it ran
    comm: str = ""
    exchanges: list = field(default_factory=list)       # wire.Exchange, the truth
    spans: list = field(default_factory=list)           # what the receiver decoded
    tokens_metric: list = field(default_factory=list)   # latest points of TOKENS_METRIC for the port
    server_log: list = field(default_factory=list)      # the server's own log lines (tests/servers/openai_apps.py)
    dropped: int | None = None
    exit_code: int | None = None
    output: str = ""
    _pairs: list | None = None

    def pairs(self) -> list[tuple[wire.Exchange, object]]:
        """(exchange, span or None) for each request on the wire. Spans are matched to requests by client
        port and request order (on one connection, requests follow each other: the span nearest each
        request in time). Spans without a client port (which test_one_span_per_request... flags) are then
        matched to the requests left by time alone, closest pairs first."""
        if self._pairs is not None:
            return self._pairs
        match: dict[int, object] = {}
        by_port: dict[int, list] = {}
        for s in self.spans:
            by_port.setdefault(s.attributes.get("client.port"), []).append(s)
        left_spans = list(by_port.pop(None, []))
        for port, spans in by_port.items():
            mine = [i for i, x in enumerate(self.exchanges) if x.client[1] == port]
            left_spans += _nearest(self.exchanges, mine, spans, match)
        rest = [i for i in range(len(self.exchanges)) if i not in match]
        _nearest(self.exchanges, rest, left_spans, match)
        self._pairs = [(x, match.get(i)) for i, x in enumerate(self.exchanges)]
        return self._pairs

    def answered(self, streamed: bool | None = None) -> list[tuple[wire.Exchange, object]]:
        """Pairs of the 200 answers of the OpenAI paths (streamed or not, or both)."""
        return [(x, s) for x, s in self.pairs() if x.status == 200 and x.path in OPERATIONS
                and (streamed is None or x.streamed == streamed)]


def _nearest(exchanges, indices: list[int], spans: list, match: dict) -> list:
    """Pairs exchanges[i] (i in indices) with spans, the closest first (the span's start to the request's
    first byte plus its end to the response's last byte); fills match; returns the spans left over."""
    def cost(x: wire.Exchange, s) -> int:  # both ends: concurrent requests start together, end apart
        return abs(s.start_ns - x.request_first_ns) + abs(s.end_ns - (x.response_last_ns or x.request_last_ns))
    dist = sorted((cost(exchanges[i], s), i, k) for i in indices for k, s in enumerate(spans))
    used = set()
    for _d, i, k in dist:
        if i not in match and k not in used:
            match[i] = spans[k]
            used.add(k)
    return [s for k, s in enumerate(spans) if k not in used]


# -- traffic ----------------------------------------------------------------------------------------------

def _client(port: int):
    import openai
    return openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0, timeout=60)


def _chat_stream(client, n: int, usage: bool, **timing) -> int:
    stream = client.chat.completions.create(
        model="real-test-model", messages=[{"role": "user", "content": "count for me"}], stream=True, max_tokens=n,
        stream_options={"include_usage": True} if usage else None, extra_body=timing or None)
    chunks = list(stream)
    content = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(content) == n and (chunks[-1].usage.completion_tokens == n if usage else chunks[-1].usage is None)
    return n


def _completion_stream(client, n: int, usage: bool) -> int:
    stream = client.completions.create(model="real-test-model", prompt="count", stream=True, max_tokens=n,
                                       stream_options={"include_usage": True} if usage else None)
    assert len([c for c in stream if c.choices and c.choices[0].text]) == n
    return n


def _split_request(port: int, path: str, body: dict) -> bytes:
    """A request sent 16 bytes at a time (TCP_NODELAY: each piece its own segment, so the server may read
    it in any number of pieces); its whole answer (Connection: close)."""
    payload = json.dumps(body).encode()
    req = (b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nAuthorization: Bearer x\r\n"
           b"Content-Length: %d\r\nConnection: close\r\n\r\n" % (path.encode(), len(payload))) + payload
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(0, len(req), 16):
            s.sendall(req[i:i + 16])
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data


def _traffic(port: int) -> None:
    client = _client(port)
    for i in range(6):
        _chat_stream(client, 6 + i, usage=False)
    for i in range(6):
        _chat_stream(client, 6 + i, usage=True)
    _chat_stream(client, 0, usage=False)  # role chunk, finish chunk, [DONE]: an answer of 0 tokens
    _completion_stream(client, 7, usage=False)
    _completion_stream(client, 5, usage=True)
    for n in (8, 300):  # 300 tokens: an answer over 2,000 bytes, usage at its end
        answer = client.chat.completions.create(model="real-test-model", max_tokens=n,
                                                messages=[{"role": "user", "content": "hi"}])
        assert answer.usage.completion_tokens == n and answer.model == "real-test-model"
    for n in (5, 400):
        answer = client.completions.create(model="real-test-model", prompt="hi", max_tokens=n)
        assert answer.usage.completion_tokens == n
    # four streams at a time, each on its own connection
    errors = []

    def one(i: int) -> None:
        try:
            _chat_stream(_client(port), 8 + i, usage=i % 2 == 0)
        except Exception as e:  # noqa: BLE001 -- reported below
            errors.append(e)
    threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/v1/nope")
    r = conn.getresponse()
    r.read()
    assert r.status == 404
    conn.request("POST", "/v1/chat/completions", body=b'{"model": "real-test-model", "messages": [',
                 headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    r.read()
    assert r.status == 400
    conn.close()
    data = _split_request(port, "/v1/completions", {"model": "real-test-model", "prompt": "split", "max_tokens": 4,
                                                    "stream": True})
    assert data.startswith(b"HTTP/1.1 200") and data.count(b'"text":"tok') == 4 and b"data: [DONE]" in data, data
    data = _split_request(port, "/v1/chat/completions", {"model": "real-test-model", "max_tokens": 12,
                                                         "messages": [{"role": "user", "content": "split"}]})
    assert data.startswith(b"HTTP/1.1 200") and b'"completion_tokens":12' in data.replace(b" ", b""), data[-400:]


# -- the runs ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ray_server(tmp_path_factory):
    """One Ray Serve for the module (its start takes ~20 s): (port, listening pid, log path)."""
    port = free_port()
    log = tmp_path_factory.mktemp("ray-log") / "server.jsonl"
    with openai_apps.running("ray", port, str(log)) as pid:
        yield port, pid, log


@pytest.fixture(scope="module", params=CASES)
def run(request, tmp_path_factory):
    server, hooks = request.param
    r = Run(server, hooks)
    workdir = tmp_path_factory.mktemp(f"real-{server}-{hooks}")  # the capture stays there, for a look
    receiver = GrpcReceiver()
    try:
        if server == "ray":
            r.port, r.pid, log = request.getfixturevalue("ray_server")
            first_log_line = len(log.read_text().splitlines()) if log.exists() else 0
            _run(r, receiver, workdir, log, first_log_line)
        else:
            r.port = free_port()
            log = workdir / "server.jsonl"
            with openai_apps.running(server, r.port, str(log)) as pid:
                r.pid = pid
                _run(r, receiver, workdir, log, 0)
        yield r
    finally:
        receiver.stop()


def _run(r: Run, receiver, workdir: Path, log: Path, first_log_line: int) -> None:
    r.exe = wire.proc_exe_name(r.pid)
    r.comm = Path(f"/proc/{r.pid}/comm").read_text().strip()
    capture = wire.Capture(r.port, str(workdir))
    with capture:  # running (a probe of ours seen) before ebpftool starts, stopped after it
        proc = EbpftoolProcess(inference_args(r.port, receiver, r.hooks))
        with proc:
            _traffic(r.port)
            r.exit_code = proc.stop()  # its stop flushes every span and metric
        r.output = proc.stdout + proc.stderr
        capture.stop()
    r.dropped = capture.dropped
    r.exchanges = capture.exchanges()
    r.spans = [s for s in receiver.spans() if s.attributes.get("server.port") == r.port]
    r.tokens_metric = [p for p in receiver.latest(TOKENS_METRIC) if p.attributes.get("server.port") == r.port]
    r.server_log = [json.loads(line) for line in log.read_text().splitlines()[first_log_line:]] if log.exists() else []


# -- reporting --------------------------------------------------------------------------------------------

def _describe(x: wire.Exchange) -> str:
    kind = "stream" if x.streamed else "plain"
    return f"{x.method} {x.path} {x.status} {kind} port {x.client[1]}#{x.index}"


def _errors_report(name: str, rows: list[tuple[str, float, float]], run: Run | None = None) -> str:
    """rows: (request, ebpftool, wire) in ms; the errors' median, p99 and worst. With EBPFTOOL_ACCURACY_LOG
    set, the figures are also appended there as a JSON line (for docs/inference.md)."""
    errs = sorted(abs(a - b) for _, a, b in rows)
    worst = max(rows, key=lambda t: abs(t[1] - t[2]))
    p99 = errs[min(len(errs) - 1, int(0.99 * len(errs)))]
    if os.environ.get("EBPFTOOL_ACCURACY_LOG") and run is not None:
        rel = sorted(abs(a - b) / b for _, a, b in rows if b > 0)
        with open(os.environ["EBPFTOOL_ACCURACY_LOG"], "a") as f:
            f.write(json.dumps({"server": run.server, "hooks": run.hooks, "figure": name, "n": len(rows),
                                "median_ms": statistics.median(errs), "p99_ms": p99, "worst_ms": errs[-1],
                                "worst_rel": rel[-1] if rel else None}) + "\n")
    return (f"{name}: {len(rows)} requests, |error| median {statistics.median(errs):.3f} ms, p99 {p99:.3f} ms, "
            f"worst {abs(worst[1] - worst[2]):.3f} ms ({worst[0]}: ebpftool {worst[1]:.3f} ms, wire {worst[2]:.3f} ms)")


def _within(ours_ms: float, truth_ms: float) -> bool:
    return abs(ours_ms - truth_ms) <= max(1.0, 0.02 * abs(truth_ms))


def _check_accuracy(name: str, rows: list[tuple[str, float | None, float]], run: Run | None = None) -> None:
    assert rows, f"{name}: no request on the wire has a span to compare with"
    missing = [req for req, ours, _ in rows if ours is None]
    have = [(req, ours, truth) for req, ours, truth in rows if ours is not None]
    bad = [(req, ours, truth) for req, ours, truth in have if not _within(ours, truth)]
    report = _errors_report(name, have, run) if have else f"{name}: none reported"
    assert not missing and not bad, (
        f"{report}; {len(bad)}/{len(have)} outside max(1 ms, 2%)"
        + (f", {len(missing)} without a value ({missing[:3]})" if missing else "")
        + "".join(f"\n  {req}: ebpftool {o:.3f} ms, wire {t:.3f} ms" for req, o, t in bad[:8]))


# -- the truth itself ---------------------------------------------------------------------------------------

def test_the_capture_is_complete_and_agrees_with_the_client_and_the_server(run):
    """The wire truth first: nothing dropped, every answer complete (a stream: up to its [DONE]), the
    traffic the client made (27
    requests), and the server's own log (per request: streamed or not, tokens) says the same."""
    assert run.dropped == 0, "tcpdump dropped packets"
    assert len(run.exchanges) == 27, [_describe(x) for x in run.exchanges]
    # A stream's client stops at [DONE] and closes: the terminating chunk may never be written (sse-starlette)
    finished = [x.complete or (x.streamed and x.events and x.events[-1].kind == "done") for x in run.exchanges]
    assert all(finished), [_describe(x) for x, f in zip(run.exchanges, finished) if not f]
    assert sorted(x.status for x in run.exchanges) == [200] * 25 + [400, 404]
    answered = [x for x in run.exchanges if x.status == 200]
    assert sum(x.streamed for x in answered) == 6 + 6 + 1 + 2 + 4 + 1
    logged = sorted((e["path"], e["stream"], e["n"]) for e in run.server_log)
    on_wire = sorted((x.path, x.streamed, x.expected_output_tokens) for x in answered)
    assert logged == on_wire
    for x in answered:
        if x.streamed:  # the server wrote n tokens: as many content events on the wire, whatever the usage says
            assert len(x.content_events) == (x.usage or {}).get("completion_tokens", len(x.content_events))
            kinds = [e.kind for e in x.events]
            assert kinds[0] in ("role", "content") and kinds[-1] == "done" and "finish" in kinds


# -- ebpftool against the wire --------------------------------------------------------------------------------

def test_one_span_per_request_on_the_wire_with_its_status(run):
    assert run.exit_code == 0, run.output[-3000:]
    pairs = run.pairs()
    problems = []
    lost = [_describe(x) for x, s in pairs if s is None]
    extra = len(run.spans) - (len(pairs) - len(lost))
    if lost or extra:
        problems.append(f"{len(run.spans)} spans for {len(pairs)} requests on the wire; no span for {lost}; "
                        f"{extra} spans for no request")
    wrong = [(_describe(x), s.attributes.get("http.response.status_code")) for x, s in pairs
             if s is not None and s.attributes.get("http.response.status_code") != x.status]
    if wrong:
        problems.append(f"wrong status (request, ebpftool's): {wrong}")
    peers = [(s.attributes.get("client.address"), s.attributes.get("client.port")) for x, s in pairs
             if s is not None and (s.attributes.get("client.address"), s.attributes.get("client.port")) != x.client]
    if peers:  # (uvloop accepts with no address buffer: the syscall hooks take it from the socket)
        problems.append(f"{len(peers)}/{len(pairs) - len(lost)} spans without their request's client address and "
                        f"port (matched to the wire by time instead), e.g. {peers[:2]}")
    assert not problems, "; ".join(problems)


def test_operation_names_whatever_the_reads(run):
    """chat / text_completion by the path, also for the requests that came 16 bytes at a time."""
    assert any(s for _, s in run.answered()), "no answer on the wire has a span"
    wrong = [(_describe(x), s.attributes.get("gen_ai.operation.name")) for x, s in run.answered()
             if s is not None and s.attributes.get("gen_ai.operation.name") != OPERATIONS[x.path]]
    assert not wrong, wrong


def _kind(x: wire.Exchange) -> str:
    return ("stream+usage" if x.usage else "stream") if x.streamed else "plain"


def test_output_tokens_of_each_request_are_the_wire_s(run):
    rows = [(x, s.attributes.get("gen_ai.usage.output_tokens")) for x, s in run.answered() if s is not None]
    assert rows, "no answer on the wire has a span"
    report = []
    for kind in ("stream", "stream+usage", "plain"):
        for path in OPERATIONS:
            mine = [(x, got) for x, got in rows if _kind(x) == kind and x.path == path]
            wrong = [(got, x.expected_output_tokens) for x, got in mine if got != x.expected_output_tokens]
            if wrong:
                diffs = Counter("missing" if got is None else f"{got - want:+d}" for got, want in wrong)
                report.append(f"{kind} {path}: {len(wrong)}/{len(mine)} wrong (ebpftool - wire: "
                              f"{', '.join(f'{d} x{n}' for d, n in diffs.items())}; e.g. ebpftool {wrong[0][0]} vs wire "
                              f"{wrong[0][1]})")
    assert not report, "; ".join(report)


def test_the_output_token_metric_sums_every_request_s_tokens(run):
    expected = sum(x.expected_output_tokens or 0 for x, _ in run.answered())
    streamed = sum(x.expected_output_tokens or 0 for x, _ in run.answered(streamed=True))
    got = sum(p.value for p in run.tokens_metric)
    assert got == expected, (f"{TOKENS_METRIC}: ebpftool {got} vs wire {expected} "
                             f"({streamed} of them streamed); points {[(p.attributes, p.value) for p in run.tokens_metric]}")


def test_the_output_token_metric_is_split_by_the_model_each_answer_names(run):
    """The kernel reads the model an answer names (bpf/inference/model.bpf.h): the token metric per
    gen_ai.response.model equals the wire's sums per the model of each answer."""
    expected: dict[str | None, int] = {}
    for x, _ in run.answered():
        if x.expected_output_tokens:
            expected[x.model] = expected.get(x.model, 0) + x.expected_output_tokens
    got: dict[str | None, int] = {}
    for p in run.tokens_metric:
        model = p.attributes.get("gen_ai.response.model")
        got[model] = got.get(model, 0) + int(p.value)
    assert got == expected, f"per model: ebpftool {got} vs wire {expected}"


def test_non_streamed_answers_carry_their_model(run):
    rows = [(x, s) for x, s in run.answered(streamed=False) if s is not None]  # (a lost span: another test)
    assert rows, "no non-streamed answer on the wire has a span"
    wrong = [(_describe(x), len(x.body), s.attributes.get("gen_ai.response.model"), x.model) for x, s in rows
             if s.attributes.get("gen_ai.response.model") != x.model]
    assert not wrong, f"(request, body bytes, ebpftool, wire): {wrong}"


def test_span_start_is_the_request_s_first_byte_on_the_wire(run):
    rows = [(_describe(x), s.start_ns / MS, x.request_first_ns / MS) for x, s in run.pairs() if s is not None]
    assert rows, "no request on the wire has a span"
    bad = [r for r in rows if abs(r[1] - r[2]) > 1.0]
    report = _errors_report("span start", rows, run)  # (also logged when asked)
    assert not bad, report + f"; {len(bad)}/{len(rows)} over 1 ms"


def test_span_duration_is_the_wire_s(run):
    _check_accuracy("duration", [(_describe(x), (s.end_ns - s.start_ns) / MS, x.duration_ns / MS)
                                 for x, s in run.pairs() if s is not None and x.duration_ns is not None], run)


def test_time_to_first_token_is_the_wire_s(run):
    rows = []
    for x, s in run.answered(streamed=True):
        if s is None or x.ttft_ns is None:  # (a stream of no token has no first token)
            continue
        ours = s.attributes.get("ebpftool.gen_ai.time_to_first_token")
        rows.append((_describe(x), ours * 1000 if ours is not None else None, x.ttft_ns / MS))
    _check_accuracy("time to first token", rows, run)


def test_time_per_output_token_is_the_wire_s(run):
    rows = []
    for x, s in run.answered(streamed=True):
        if s is None or x.tpot_ns is None:
            continue
        ours = s.attributes.get("ebpftool.gen_ai.time_per_output_token")
        rows.append((_describe(x), ours * 1000 if ours is not None else None, x.tpot_ns / MS))
    _check_accuracy("time per output token", rows, run)


def test_process_is_the_listening_process_and_its_executable(run):
    got = {(s.attributes.get("process.pid"), s.attributes.get("process.executable.name")) for s in run.spans}
    assert got == {(run.pid, run.exe)}, f"listening pid {run.pid} (exe {run.exe}, comm {run.comm!r}); spans say {got}"


def test_spans_pair_with_requests_by_client_port_then_by_time():
    """The pairing the tests above rest on (no tracer here): by client port and order; spans without a
    port by both ends in time, so that concurrent requests that start together are told apart."""
    from tests.otlp_receiver import Span

    def x(port: int, index: int, start: int, end: int) -> wire.Exchange:
        return wire.Exchange(("127.0.0.1", port), ("127.0.0.1", 8000), index, "POST", "/v1/chat/completions", {},
                             b"", start * MS, start * MS, 200, response_last_ns=end * MS)

    def span(start: float, end: float, port: int | None = None) -> Span:
        attrs = {"client.port": port} if port else {}
        return Span("s", "SERVER", int(start * MS), int(end * MS), attrs, 0, [], {})

    keep_alive = [x(1000, 0, 0, 50), x(1000, 1, 60, 90), x(1000, 2, 100, 130)]
    concurrent = [x(2000 + i, 0, 200, 260 + 10 * i) for i in range(4)]  # start together, end 10 ms apart
    r = Run("test", "socket", exchanges=keep_alive + concurrent)
    r.spans = [span(101, 130, 1000), span(2, 50, 1000)] + [span(203 - i, 260 + 10 * i) for i in (3, 1, 0, 2)]
    got = [(p.start_ns // MS if p else None) for _, p in r.pairs()]
    assert got == [2, None, 101, 203, 202, 201, 200]
