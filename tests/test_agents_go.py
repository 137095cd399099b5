"""LLM calls from a Go client (net/http over Go's own crypto/tls, no libssl): tests/clients/go_llm, built here
with Debian's Go, calls the OpenAI-compatible test API (tests/servers/llm_apis.py) over TLS with the test's CA.
The client is started before the tracer and waits for a line on its stdin: the tracer finds the running Go
executable and attaches to it by file; then the client makes its calls. Expected values come from what the
client itself received, never from ebpftool's output."""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT, EbpftoolProcess
from tests.otlp_receiver import GrpcReceiver
from tests.servers import llm_apis
from tests.servers.nginx import free_port
from tests.test_agents_http2 import front

pytestmark = [pytest.mark.timeout(300),
              pytest.mark.skipif(shutil.which("go") is None, reason="no Go toolchain (install.sh --dev installs it)")]

CLIENT = ROOT / "tests" / "clients" / "go_llm"


@pytest.fixture(scope="module")
def go_client(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("go") / "go_llm"
    env = {**os.environ, "GOFLAGS": "-mod=mod", "GOCACHE": str(out.parent / "cache"), "GOPATH": str(out.parent / "gopath")}
    subprocess.run(["go", "build", "-o", str(out), "."], cwd=CLIENT, env=env, check=True, timeout=240)
    return out


@contextlib.contextmanager
def api_over_tls(tmp_path, http2: bool):
    """The test API over TLS, its URL base and CA: directly (HTTP/1.1), or behind nghttpx, whose TLS front
    offers h2 by ALPN, which Go's net/http then takes (as it does with the real APIs)."""
    if http2:
        with front(tmp_path, True) as (_port, base, ca):
            yield base, ca
        return
    certs = llm_apis.make_certificates(tmp_path)
    port = free_port()
    with llm_apis.running(port, str(tmp_path / "wire.jsonl"), tls=(certs["cert"], certs["key"])):
        yield f"https://127.0.0.1:{port}", certs["ca"]


def run_go_client(go_client: Path, tmp_path: Path, http2: bool, *options: str):
    """The Go client, started before `ebpftool agents OPTIONS` and let go once the tracer runs; what the client
    received (its pid and calls), the spans of its pid the receiver got by the tracer's stop, and the tracer's
    standard output (the exit summary)."""
    receiver = GrpcReceiver()
    client = None
    try:
        with api_over_tls(tmp_path, http2) as (base, ca):
            client = subprocess.Popen([str(go_client), base, ca],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            with EbpftoolProcess(["agents", "--otlp-endpoint", receiver.endpoint, "--otlp-protocol", "grpc",
                                  "--interval", "1", "--no-ui", *options]) as proc:
                out, _ = client.communicate("go\n", timeout=120)
                assert client.returncode == 0
                run = json.loads(out)
                if "--no-go-tls" not in options:
                    assert receiver.wait_for(lambda: len(spans_of(receiver, run["pid"])) >= len(run["calls"]),
                                             timeout=30)
                assert proc.stop() == 0, proc.stderr   # every event read and exported by then
        return run, spans_of(receiver, run["pid"]), proc.stdout
    finally:
        if client is not None and client.poll() is None:
            client.kill()
        receiver.stop()


@pytest.mark.parametrize("http2", [False, True], ids=["http1", "h2"])
def test_a_go_clients_calls_over_its_own_tls(go_client, tmp_path, http2):
    run, spans, summary = run_go_client(go_client, tmp_path, http2)
    assert len(spans) == len(run["calls"])
    for span, call in zip(spans, run["calls"]):
        a = span.attributes
        what = (call, a)
        assert call["proto"] == ("HTTP/2.0" if http2 else "HTTP/1.1"), what
        assert span.kind == "CLIENT" and a["gen_ai.operation.name"] == "chat", what
        assert a["http.response.status_code"] == call["status"], what
        assert a["process.executable.name"] == "go_llm", what
        if call["status"] != 200:
            assert a["error.type"] == "rate_limited", what
            continue
        assert a["gen_ai.response.model"] == call["model"], what
        assert a.get("gen_ai.usage.input_tokens") == call["input"], what
        assert a.get("gen_ai.usage.output_tokens") == call["output"], what
        if call["stream"]:
            assert a["ebpftool.gen_ai.client.chunks"] == call["chunks"], what
    assert not any("sk-go-client-secret" in repr(s) for s in spans)
    assert re.search(r"Go executables traced \(crypto/tls\)\s*│\s*[1-9]", summary), summary


def test_no_go_tls_leaves_go_programs_alone(go_client, tmp_path):
    """--no-go-tls: no uprobe in Go executables (their TLS reads pay nothing); their calls are not seen."""
    run, spans, summary = run_go_client(go_client, tmp_path, False, "--no-go-tls")
    assert len(run["calls"]) == 3 and spans == []
    assert "none: not asked for (--no-go-tls)" in summary, summary


def spans_of(receiver, pid: int) -> list:
    return sorted((s for s in receiver.spans() if s.attributes.get("process.pid") == pid), key=lambda s: s.start_ns)


def test_the_go_executable_is_told_and_its_probes_placed(go_client):
    """A Go executable and its Go version by its .go.buildinfo section (a Python one is none); Write, Read and
    Close probed on an instruction the kernel emulates, Read's count at every ret objdump lists."""
    import sys

    from ebpftool.core.elf import read_elf
    from ebpftool.tracers.agents import go_tls

    go = subprocess.run(["go", "version"], capture_output=True, text=True, check=True).stdout.split()[2]
    assert go_tls.go_version(str(go_client)) == go and go_tls.register_abi(go)   # e.g. go1.19.8
    assert go_tls.go_version(os.path.realpath(sys.executable)) is None
    assert not go_tls.register_abi("go1.16.15") and not go_tls.register_abi("")
    elf = read_elf(str(go_client))
    plan = go_tls.probe_plan(elf)
    by_program: dict[str, list] = {}
    for probe in plan:
        by_program.setdefault(probe.program, []).append(probe)
    assert set(by_program) == go_tls.PROGRAMS
    read = elf.symbol(go_tls.READ)
    rets = by_program["go_tls_read_return"]
    assert rets and all(read.value < p.vaddr < read.value + read.size for p in rets)
    assert all(elf.code_at(p.vaddr, 1) == b"\xc3" for p in rets)
    for program in ("go_tls_write_enter", "go_tls_read_enter", "go_tls_close_enter"):
        (entry,) = by_program[program]
        assert entry.vaddr > elf.symbol(entry.label.split("+")[0]).value   # past the stack check's cmp
