"""`ebpftool agents` for real: the tracer as its own process (real BPF: OpenSSL uprobes and syscall
tracepoints), the official `openai` and `anthropic` clients and the `mcp` package's client over TLS with the
test's own CA, and Ollama-style calls over cleartext, each driven from a process of its own that the tracer
did not start, against tests/servers/llm_apis.py (another process).

The truth is what each client returned or raised (tests/agents_drive.py): every call's models, tokens,
chunks, status and error type must be exactly what the tracer exported, as spans and as metrics, for the
driver's process; the first chunk the kernel saw must be the one the client read (never after it, and
close before it); and no key or prompt may be in anything the tracer wrote.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.agents_drive import SECRETS, expected_view, last_conn, observed, records_between, replay
from tests.conftest import ROOT, EbpftoolProcess, run_ebpftool
from tests.otlp_receiver import GrpcReceiver
from tests.servers import llm_apis
from tests.servers.nginx import free_port

pytestmark = pytest.mark.timeout(300)

CLOCK_SLACK_S = 0.001      # the tracer's and this process's monotonic-to-wall offsets, read apart

# A driver run in a process of its own: writes its pid and what its client returned, as JSON.
DRIVE = """
import json, os, sys
from dataclasses import asdict
from tests.agents_drive import DRIVERS
name, base, ca, out = sys.argv[1:5]
calls = DRIVERS[name](base, ca)
with open(out, "w") as f:
    json.dump({"pid": os.getpid(), "calls": [asdict(c) for c in calls]}, f)
"""


def drive_logged(world, name: str, tls: bool, tmp: Path) -> SimpleNamespace:
    """drive() against the world's TLS or cleartext server, with the calls as that server logged them
    (`exchanges`, read from its log with the parsers: the times it wrote each piece, by the one clock of the
    machine)."""
    log = world.dir / ("tls.jsonl" if tls else "plain.jsonl")
    first = last_conn(log) + 1
    run = drive(name, world.tls if tls else world.plain, world.ca, tmp)
    run.exchanges = replay(records_between(llm_apis.read_log(log), first, last_conn(log)))
    return run


def drive(name: str, base: str, ca: str, tmp: Path) -> SimpleNamespace:
    out = tmp / f"{name}-{time.monotonic_ns()}.json"
    subprocess.run([sys.executable, "-c", DRIVE, name, base, ca, str(out)], cwd=ROOT, check=True, timeout=180)
    return SimpleNamespace(**json.loads(out.read_text()))


@contextlib.contextmanager
def driving(name: str, base: str, ca: str, tmp: Path, prelude: str = ""):
    """drive() in a process that stays alive until the block ends: a process's executable name is known only
    while it runs (/proc/PID/exe), and on a busy machine the tracer may read a call after its caller would
    have exited (it then names the process by its thread's name). `prelude`: code run before the calls."""
    out = tmp / f"{name}-{time.monotonic_ns()}.json"
    script = prelude + DRIVE + "\nprint('driven', flush=True)\nsys.stdin.readline()\n"
    proc = subprocess.Popen([sys.executable, "-c", script, name, base, ca, str(out)], cwd=ROOT,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "driven"
        yield SimpleNamespace(**json.loads(out.read_text()))
        proc.stdin.close()
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module", params=["socket", "syscall"])
def world(request, tmp_path_factory):
    """The servers (TLS and cleartext), an OTLP receiver and the tracer, once for the module per way in of
    cleartext calls (--hooks)."""
    d = tmp_path_factory.mktemp("agents-trace")
    certs = llm_apis.make_certificates(d)
    receiver = GrpcReceiver()
    jsonl = d / "out.jsonl"
    tls_port, plain_port = free_port(), free_port()
    try:
        with llm_apis.running(tls_port, str(d / "tls.jsonl"), tls=(certs["cert"], certs["key"])), \
                llm_apis.running(plain_port, str(d / "plain.jsonl")):
            proc = EbpftoolProcess(["agents", "--hooks", request.param, "--otlp-endpoint", receiver.endpoint,
                                    "--otlp-protocol", "grpc",
                                    "--interval", "1", "--no-ui", "--jsonl", str(jsonl),
                                    "--summary-json", str(d / "summary.json")]).start()
            try:
                yield SimpleNamespace(tls=f"https://127.0.0.1:{tls_port}", plain=f"http://127.0.0.1:{plain_port}",
                                      tls_port=tls_port, plain_port=plain_port, ca=certs["ca"], dir=d,
                                      receiver=receiver, proc=proc, jsonl=jsonl, hooks=request.param)
            finally:
                proc.stop()
    finally:
        receiver.stop()


def mine(items, pid: int) -> list:
    return [x for x in items if x.attributes.get("process.pid") == pid]


def llm_spans(receiver, pid: int) -> list:
    return sorted((s for s in mine(receiver.spans(), pid) if "mcp.method.name" not in s.attributes),
                  key=lambda s: s.start_ns)


def expected_output(e: dict) -> int | None:
    """The output tokens the tracer counts: the usage's, else (a stream without usage) the content chunks."""
    if e["output_tokens"] is not None:
        return e["output_tokens"]
    return e["chunks"] if e["stream"] and e["status"] < 400 and e["error_type"] is None else None


def check_llm_calls(world, run: SimpleNamespace, port: int) -> None:
    """Every call the driver made is one span and one observation of each metric, with its exact figures."""
    r = world.receiver
    calls = run.calls
    assert r.wait_for(lambda: len(llm_spans(r, run.pid)) >= len(calls), timeout=30), \
        (len(llm_spans(r, run.pid)), len(calls))
    spans = llm_spans(r, run.pid)
    assert len(spans) == len(calls), [s.name for s in spans]
    assert [observed(ex) for ex in run.exchanges] == [expected_view(e) for e in calls]
    offset_ns = time.time_ns() - time.monotonic_ns()
    for s, e, ex in zip(spans, calls, run.exchanges):
        a = s.attributes
        what = (e["name"], a)
        assert s.kind == "CLIENT", what
        assert a["gen_ai.operation.name"] == e["operation"] and a["gen_ai.provider.name"] == e["provider"], what
        assert a.get("gen_ai.request.model") == e["request_model"], what
        assert a.get("gen_ai.response.model") == e["response_model"], what
        assert a.get("http.response.status_code") == e["status"], what
        assert a.get("error.type") == e["error_type"], what
        assert (s.status_code == 2) == (e["error_type"] is not None), what
        assert a.get("gen_ai.usage.input_tokens") == e["input_tokens"], what
        assert a.get("gen_ai.usage.output_tokens") == e["output_tokens"], what
        assert a.get("server.address") == "127.0.0.1" and a.get("server.port") == port, what
        if e["finish_reason"] is not None:
            assert list(a.get("gen_ai.response.finish_reasons")) == [e["finish_reason"]], what
        if e["stream"] and e["status"] < 400:
            assert a.get("ebpftool.gen_ai.client.chunks") == e["chunks"], what
        if e.get("client_first_chunk") is not None:
            # The kernel's first chunk is the client's read that held it: after the server wrote it (its log
            # line comes before the write) and before the client's own clock saw it.
            kernel = s.start_ns + a["ebpftool.gen_ai.client.time_to_first_chunk"] * 1e9
            client = e["client_first_chunk"] * 1e9 + offset_ns
            server = ex.answer.first_chunk_time * 1e9 + offset_ns
            print(f"{e['name']}: the client saw its first chunk {(client - kernel) / 1e6:.3f} ms after the kernel's "
                  f"read, which came {(kernel - server) / 1e6:.3f} ms after the server wrote it")
            assert server - CLOCK_SLACK_S * 1e9 <= kernel <= client + CLOCK_SLACK_S * 1e9, what
    # Metrics: exact whatever the span budget. Duration: one observation per call, by model and error.
    assert r.wait_for(lambda: sum(p.count for p in mine(r.latest("gen_ai.client.operation.duration"), run.pid))
                      == len(calls), timeout=30)
    by_model: dict = {}
    for p in mine(r.latest("gen_ai.client.operation.duration"), run.pid):
        key = (p.attributes.get("gen_ai.request.model"), p.attributes.get("error.type"))
        by_model[key] = by_model.get(key, 0) + p.count
    want: dict = {}
    for e in calls:
        key = (e["request_model"], e["error_type"])
        want[key] = want.get(key, 0) + 1
    assert by_model == want
    tokens = {"input": (0, 0), "output": (0, 0)}
    for p in mine(r.latest("gen_ai.client.token.usage"), run.pid):
        kind = p.attributes["gen_ai.token.type"]
        n, total = tokens[kind]
        tokens[kind] = (n + p.count, total + p.sum)
    inputs = [e["input_tokens"] for e in calls if e["input_tokens"] is not None]
    outputs = [x for x in map(expected_output, calls) if x is not None]
    assert tokens == {"input": (len(inputs), sum(inputs)), "output": (len(outputs), sum(outputs))}
    streamed = [e for e in calls if e["stream"] and e["status"] < 400 and e["chunks"]]
    ttfc = mine(r.latest("gen_ai.client.operation.time_to_first_chunk"), run.pid)
    assert sum(p.count for p in ttfc) == len(streamed)
    gaps = mine(r.latest("gen_ai.client.operation.time_per_output_chunk"), run.pid)
    assert sum(p.count for p in gaps) == sum(e["chunks"] - 1 for e in streamed)


def test_openai_client_over_tls(world, tmp_path):
    run = drive_logged(world, "openai", True, tmp_path)
    assert run.pid != world.proc.proc.pid and any(e["status"] == 429 for e in run.calls)
    check_llm_calls(world, run, world.tls_port)
    # the price table prices gpt-4o and gpt-4o-mini: their cost is counted, by model
    r = world.receiver
    costs = {p.attributes.get("gen_ai.response.model"): p.value for p in mine(r.latest("ebpftool.gen_ai.client.cost"),
                                                                             run.pid)}
    assert costs.get("gpt-4o-2026-12-01", 0) > 0 and costs.get("gpt-4o-mini-2026-12-01", 0) > 0


def test_anthropic_client_over_tls(world, tmp_path):
    run = drive_logged(world, "anthropic", True, tmp_path)
    assert any(e["status"] == 429 for e in run.calls) and any(e["stream"] for e in run.calls)
    check_llm_calls(world, run, world.tls_port)


def test_ollama_over_cleartext(world, tmp_path):
    """A local model server over plain HTTP (Ollama, vLLM): the syscall hooks, the port from connect()."""
    run = drive_logged(world, "ollama", False, tmp_path)
    check_llm_calls(world, run, world.plain_port)


def test_mcp_tool_calls_over_tls(world, tmp_path):
    run = drive("mcp", world.tls, world.ca, tmp_path)
    r = world.receiver

    def tool_spans():
        return sorted((s for s in mine(r.spans(), run.pid) if s.attributes.get("mcp.method.name") == "tools/call"),
                      key=lambda s: s.start_ns)

    assert r.wait_for(lambda: len(tool_spans()) >= len(run.calls), timeout=30)
    spans = tool_spans()
    assert [(s.name, s.attributes.get("gen_ai.tool.name"), s.attributes.get("error.type")) for s in spans] == \
        [(f"tools/call {e['tool_name']}", e["tool_name"], e["error_type"]) for e in run.calls]
    assert r.wait_for(lambda: sum(p.count for p in mine(r.latest("mcp.client.operation.duration"), run.pid)
                                  if p.attributes.get("mcp.method.name") == "tools/call") == len(run.calls))
    # the handshakes and listings are MCP requests too, timed under their own method
    methods = {p.attributes.get("mcp.method.name") for p in mine(r.latest("mcp.client.operation.duration"), run.pid)}
    assert {"initialize", "tools/list", "tools/call"} <= methods


def test_gemini_over_tls(world, tmp_path):
    """Gemini's shapes (a plain HTTP client: no official one here): SSE with alt=sse, a streamed JSON array."""
    run = drive_logged(world, "gemini", True, tmp_path)
    check_llm_calls(world, run, world.tls_port)


# One kept-alive connection: a POST that is no LLM call (a webhook, an API of another kind), a GET, then an
# LLM call. The tracer lets the connection go after the first (the kernel stops copying it) and takes it
# up again at the next `POST `.
KEEP_ALIVE = """
import json, os, ssl, sys
import httpx2
from tests.agents_drive import PROMPT
base, ca, out = sys.argv[1:4]
with httpx2.Client(base_url=base, verify=ssl.create_default_context(cafile=ca), timeout=30) as http:
    assert http.post("/hooks/deploy", json={"text": PROMPT}).status_code == 404
    assert http.get("/healthz").status_code == 404
    r = http.post("/api/chat", json={"model": "qwen3", "messages": [{"role": "user", "content": PROMPT}],
                                     "stream": False})
    answer = r.json()
json.dump({"pid": os.getpid(), "model": answer["model"], "input": answer["prompt_eval_count"],
           "output": answer["eval_count"]}, open(out, "w"))
"""


def test_a_connection_with_other_requests_is_let_go_and_taken_up_again(world, tmp_path):
    out = tmp_path / "keepalive.json"
    subprocess.run([sys.executable, "-c", KEEP_ALIVE, world.tls, world.ca, str(out)], cwd=ROOT, check=True,
                   timeout=60)
    got = json.loads(out.read_text())
    r = world.receiver
    assert r.wait_for(lambda: len(llm_spans(r, got["pid"])) == 1, timeout=30)
    (span,) = llm_spans(r, got["pid"])
    a = span.attributes
    assert (a["gen_ai.request.model"], a["gen_ai.response.model"], a["gen_ai.usage.input_tokens"],
            a["gen_ai.usage.output_tokens"]) == ("qwen3", got["model"], got["input"], got["output"])
    assert r.wait_for(lambda: sum(p.count for p in mine(r.latest("gen_ai.client.operation.duration"), got["pid"]))
                      == 1)


# A client killed in the middle of a streamed answer: its process never closes the connection itself.
KILLED = """
import json, os, signal, socket, sys
from tests.agents_drive import PROMPT
port, out = int(sys.argv[1]), sys.argv[2]
s = socket.create_connection(("127.0.0.1", port))
body = json.dumps({"model": "llama3.2", "prompt": PROMPT, "options": {"num_predict": 50}}).encode()
s.sendall((f"POST /api/generate HTTP/1.1\\r\\nHost: 127.0.0.1:{port}\\r\\nContent-Type: application/json\\r\\n"
           f"Content-Length: {len(body)}\\r\\n\\r\\n").encode() + body)
data = b""
while b'"done":false' not in data.replace(b" ", b""):
    data += s.recv(65536)
json.dump({"pid": os.getpid()}, open(out, "w"))
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_call_whose_process_was_killed_ends_as_cut(world, tmp_path):
    out = tmp_path / "killed.json"
    done = subprocess.run([sys.executable, "-c", KILLED, str(world.plain_port), str(out)], cwd=ROOT, timeout=60)
    assert done.returncode == -9
    pid = json.loads(out.read_text())["pid"]
    r = world.receiver
    assert r.wait_for(lambda: len(llm_spans(r, pid)) == 1, timeout=30)
    (span,) = llm_spans(r, pid)
    assert span.attributes["gen_ai.request.model"] == "llama3.2" and span.attributes["error.type"] == "_OTHER"
    assert span.attributes["ebpftool.gen_ai.client.chunks"] >= 1


# A client that writes its request with sendmsg() (head and body in two buffers, as Node and Rust's hyper
# write) and reads the answer with readv() and recvmsg(): the vectored syscalls.
VECTORED = """
import json, os, socket, sys
from tests.agents_drive import PROMPT
port, out = int(sys.argv[1]), sys.argv[2]
s = socket.create_connection(("127.0.0.1", port))
body = json.dumps({"model": "qwen3", "messages": [{"role": "user", "content": PROMPT}], "stream": False}).encode()
head = (f"POST /api/chat HTTP/1.1\\r\\nHost: 127.0.0.1:{port}\\r\\nContent-Type: application/json\\r\\n"
        f"Content-Length: {len(body)}\\r\\n\\r\\n").encode()
assert s.sendmsg([head, body]) == len(head) + len(body)
data, turn = b"", 0
while True:
    end = data.find(b"\\r\\n\\r\\n")
    if end >= 0:
        length = int([l.split(b":")[1] for l in data[:end].split(b"\\r\\n") if l.lower().startswith(b"content-length:")][0])
        if len(data) >= end + 4 + length:
            break
    if turn % 2 == 1:
        a, b = bytearray(7), bytearray(65536)
        n = os.readv(s.fileno(), [a, b])
        data += (bytes(a) + bytes(b))[:n]
    else:
        data += s.recvmsg(9 if turn == 0 else 65536)[0]   # the first read cuts the status line
    turn += 1
answer = json.loads(data[end + 4:])
json.dump({"pid": os.getpid(), "model": answer["model"], "input": answer["prompt_eval_count"],
           "output": answer["eval_count"]}, open(out, "w"))
"""


def test_vectored_writes_and_reads_over_cleartext(world, tmp_path):
    out = tmp_path / "vectored.json"
    subprocess.run([sys.executable, "-c", VECTORED, str(world.plain_port), str(out)], cwd=ROOT, check=True,
                   timeout=60)
    got = json.loads(out.read_text())
    r = world.receiver
    assert r.wait_for(lambda: len(llm_spans(r, got["pid"])) == 1, timeout=30)
    (span,) = llm_spans(r, got["pid"])
    a = span.attributes
    assert (a["gen_ai.request.model"], a["gen_ai.response.model"], a["gen_ai.usage.input_tokens"],
            a["gen_ai.usage.output_tokens"], a["server.port"]) == ("qwen3", got["model"], got["input"], got["output"],
                                                                   world.plain_port)


def test_no_secret_leaves_and_nothing_was_lost(world, tmp_path):
    # a call of each kind first (this test may run alone)
    drive("openai", world.tls, world.ca, tmp_path)
    r = world.receiver
    assert r.wait_for(lambda: len(r.spans()) > 0)
    assert world.proc.stop() == 0, world.proc.stderr
    written = [world.jsonl.read_text(), world.proc.stdout, world.proc.stderr,
               repr(r.spans()), repr([p for name in r.metric_names() for p in r.latest(name)])]
    leaked = [s for s in SECRETS for text in written if s in text]
    assert not leaked
    assert "ebpftool.gen_ai.client.cost" in r.metric_names()
    figures = json.loads((world.dir / "summary.json").read_text())["tracers"]["agents"]
    assert figures["calls"] > 0 and figures["libraries_traced"] >= 1
    assert figures["hooks"] == {"socket": "uprobes+sockets", "syscall": "uprobes+syscalls"}[world.hooks]
    assert figures["drops"]["events_lost"] == 0 and figures["calls_lost"] == 0
    assert figures["connections_let_go"] >= 1     # the kept-alive connection's other requests


def test_a_bad_price_table_is_one_sentence(tmp_path):
    bad = tmp_path / "prices.yaml"
    bad.write_text('taken: "2025-11"\nprices:\n  - {provider: openai, model: "gpt-4o*", input: -1, output: 2}\n')
    done = run_ebpftool(["agents", "--prices", str(bad), "--duration", "1", "--no-ui"])
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "price table" in lines[0] and "entry 1" in lines[0], done.stderr


def test_pid_filter_follows_only_that_process(tmp_path):
    """--pid: a driver started before the tracer is followed, another one beside it is not; and
    --span-rate 0 sends no span while the metrics still count every call."""
    certs = llm_apis.make_certificates(tmp_path)
    port = free_port()
    receiver = GrpcReceiver()
    waiting = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.readline()\n" + DRIVE, "ollama",
                                f"https://127.0.0.1:{port}", certs["ca"], str(tmp_path / "watched.json")],
                               cwd=ROOT, stdin=subprocess.PIPE, text=True)
    try:
        with llm_apis.running(port, str(tmp_path / "wire.jsonl"), tls=(certs["cert"], certs["key"])):
            with EbpftoolProcess(["agents", "--pid", str(waiting.pid), "--span-rate", "0", "--otlp-endpoint",
                                  receiver.endpoint, "--otlp-protocol", "grpc", "--interval", "1",
                                  "--no-ui"]) as proc:
                waiting.stdin.write("go\n")
                waiting.stdin.flush()
                other = drive("ollama", f"https://127.0.0.1:{port}", certs["ca"], tmp_path)
                assert waiting.wait(180) == 0
                watched = json.loads((tmp_path / "watched.json").read_text())
                assert receiver.wait_for(lambda: sum(p.count for p in receiver.latest(
                    "gen_ai.client.operation.duration")) == len(watched["calls"]), timeout=30)
                assert proc.stop() == 0, proc.stderr
        points = receiver.latest("gen_ai.client.operation.duration")
        assert {p.attributes["process.pid"] for p in points} == {watched["pid"]} != {other.pid}
        assert receiver.spans() == []
        assert "ebpftool.spans.unsampled" in receiver.metric_names()
        assert sum(p.value for p in receiver.latest("ebpftool.spans.unsampled")) == len(watched["calls"])
    finally:
        if waiting.poll() is None:
            waiting.kill()
        receiver.stop()


def test_trace_runs_the_agents_tracer_when_asked(tmp_path):
    """`trace --agents` (off by default): the agents tracer beside the others, its calls exported the same."""
    receiver = GrpcReceiver()
    port = free_port()
    try:
        with llm_apis.running(port, str(tmp_path / "wire.jsonl")):
            with EbpftoolProcess(["trace", "--agents", "--no-inference", "--no-gpu", "--otlp-endpoint",
                                  receiver.endpoint, "--otlp-protocol", "grpc", "--interval", "1", "--no-ui",
                                  "--summary-json", str(tmp_path / "summary.json")], ready_count=2) as proc:
                run = drive("ollama", f"http://127.0.0.1:{port}", "", tmp_path)
                assert receiver.wait_for(lambda: sum(p.count for p in mine(receiver.latest(
                    "gen_ai.client.operation.duration"), run.pid)) == len(run.calls), timeout=30)
                assert proc.stop() == 0, proc.stderr
        assert set(json.loads((tmp_path / "summary.json").read_text())["tracers"]) == {"net", "agents"}
    finally:
        receiver.stop()


def test_comm_filter_follows_processes_of_that_name(tmp_path):
    """--comm: a process that takes the name after the tracer started is followed from its first connection
    (the kernel matches the name itself); one of another name beside it is not. Its process.executable.name
    is its executable's (the conventions' base name of /proc/PID/exe), not the name it gave its thread."""
    port = free_port()
    receiver = GrpcReceiver()
    try:
        with llm_apis.running(port, str(tmp_path / "wire.jsonl")):
            with EbpftoolProcess(["agents", "--comm", "agent-in-test", "--otlp-endpoint", receiver.endpoint,
                                  "--otlp-protocol", "grpc", "--interval", "1", "--no-ui"]) as proc:
                with driving("ollama", f"http://127.0.0.1:{port}", "", tmp_path,
                             prelude="open('/proc/self/comm', 'w').write('agent-in-test')\n") as watched:
                    other = drive("ollama", f"http://127.0.0.1:{port}", "", tmp_path)
                    assert receiver.wait_for(lambda: sum(p.count for p in receiver.latest(
                        "gen_ai.client.operation.duration")) == len(watched.calls), timeout=30)
                assert proc.stop() == 0, proc.stderr
        points = receiver.latest("gen_ai.client.operation.duration")
        assert {p.attributes["process.pid"] for p in points} == {watched.pid} != {other.pid}
        executable = os.path.basename(os.path.realpath(sys.executable))
        assert {p.attributes["process.executable.name"] for p in points} == {executable} != {"agent-in-test"}
    finally:
        receiver.stop()


def test_tls_only_leaves_cleartext_and_the_syscalls_alone(tmp_path):
    """--no-cleartext: no syscall tracepoint (they cost every read and write of the node); TLS calls are
    followed as before, cleartext ones are not."""
    certs = llm_apis.make_certificates(tmp_path)
    tls_port, plain_port = free_port(), free_port()
    receiver = GrpcReceiver()
    try:
        with llm_apis.running(tls_port, str(tmp_path / "tls.jsonl"), tls=(certs["cert"], certs["key"])), \
                llm_apis.running(plain_port, str(tmp_path / "plain.jsonl")):
            with EbpftoolProcess(["agents", "--no-cleartext", "--otlp-endpoint", receiver.endpoint,
                                  "--otlp-protocol", "grpc", "--interval", "1", "--no-ui"]) as proc:
                plain = drive("ollama", f"http://127.0.0.1:{plain_port}", "", tmp_path)
                tls = drive("ollama", f"https://127.0.0.1:{tls_port}", certs["ca"], tmp_path)
                assert receiver.wait_for(lambda: sum(p.count for p in mine(receiver.latest(
                    "gen_ai.client.operation.duration"), tls.pid)) == len(tls.calls), timeout=30)
                assert proc.stop() == 0, proc.stderr
        assert mine(receiver.latest("gen_ai.client.operation.duration"), plain.pid) == []
    finally:
        receiver.stop()


def test_the_live_view_lists_the_calling_process(tmp_path):
    """The live view (its last frame, as a pipe gets it) lists the driver by its executable and pid with its
    calls of the last minute: calls/s, errors, p50/p99 duration, time to first chunk, tokens/s, cost/h."""
    port = free_port()
    receiver = GrpcReceiver()
    try:
        with llm_apis.running(port, str(tmp_path / "wire.jsonl")):
            with EbpftoolProcess(["agents", "--ui", "--otlp-endpoint", receiver.endpoint, "--otlp-protocol", "grpc",
                                  "--interval", "1"], env={"COLUMNS": "120", "LINES": "60"}) as proc:
                with driving("ollama", f"http://127.0.0.1:{port}", "", tmp_path) as run:
                    assert receiver.wait_for(lambda: sum(p.count for p in mine(receiver.latest(
                        "gen_ai.client.operation.duration"), run.pid)) == len(run.calls), timeout=30)
                assert proc.stop() == 0, proc.stderr
        view = proc.stdout.split("ebpftool summary")[0].splitlines()
        assert view and max(len(line) for line in view) <= 120
        header = next(line for line in view if line.startswith("process"))
        assert header.split() == ["process", "calls/s", "errors", "p50", "p99", "TTFC", "tok/s", "cost/h"]
        name = f"{os.path.basename(os.path.realpath(sys.executable))} ({run.pid})"
        (row,) = [line for line in view if line.startswith(name)]
        rate, errors, p50, p99, ttfc, tokens, cost = row[len(name):].split()
        assert float(rate) > 0 and int(errors) == sum(1 for e in run.calls if e["error_type"] is not None)
        assert all(re.fullmatch(r"\d+(\.\d+)?(µs|ms|s)", x) for x in (p50, p99, ttfc)), row
        assert float(tokens) > 0 and cost.startswith("$")
    finally:
        receiver.stop()
