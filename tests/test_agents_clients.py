"""The agents' test servers (tests/servers/llm_apis.py) against the official clients: `openai`, `anthropic`
and the `mcp` package's client (plus a plain HTTP client for Gemini and Ollama), over TLS with a CA made
for the test, the servers as a process of their own. No tracer yet: the truth here is what each client
library returned or raised (tests/agents_drive.py), and it must equal what the parsers of
ebpftool.tracers.agents read from the plaintext the servers logged each way.

This proves two things the kernel side will stand on: the servers answer as the real APIs do (the SDKs
accept every answer and every error as the real ones), and the parsers read the real clients' bytes.
"""
from __future__ import annotations

import os
import ssl
import urllib.error
import urllib.request
from dataclasses import asdict
from types import SimpleNamespace

import pytest

from tests.agents_drive import (DRIVERS, SECRETS, expected_view, last_conn, observed, records_between,
                                replay)
from tests.servers import llm_apis
from tests.servers.nginx import free_port

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def apis(tmp_path_factory):
    d = tmp_path_factory.mktemp("llm-apis")
    certs = llm_apis.make_certificates(d)
    log = d / "wire.jsonl"
    port = free_port()
    with llm_apis.running(port, str(log), tls=(certs["cert"], certs["key"])) as pid:
        yield SimpleNamespace(base=f"https://127.0.0.1:{port}", ca=certs["ca"], log=log, pid=pid, port=port)


@pytest.mark.parametrize("driver", list(DRIVERS))
def test_official_clients_got_what_the_parsers_read_on_the_wire(apis, driver):
    first = last_conn(apis.log) + 1
    expected = DRIVERS[driver](apis.base, apis.ca)
    records = records_between(llm_apis.read_log(apis.log), first, last_conn(apis.log))
    got = replay(records)
    assert [observed(ex) for ex in got] == [expected_view(asdict(e)) for e in expected]
    for ex, e in zip(got, expected):
        # Complete, except where the client stopped reading at an error inside the stream.
        assert ex.answer is not None and (ex.answer.complete or e.stream and e.error_type), e.name
        # The server logged each piece before it wrote it: its first content chunk left after the request
        # began, and before the client had it (one clock: CLOCK_MONOTONIC is the machine's).
        if e.client_first_chunk is not None:
            assert ex.start <= ex.answer.first_chunk_time <= e.client_first_chunk, e.name
        if e.stream and e.error_type is None:
            assert ex.answer.streamed and ex.answer.chunks >= 1, e.name
            assert len(ex.answer.chunk_gaps) == ex.answer.chunks - 1
    # The secrets were on the wire (keys in headers, the prompt in bodies) and none came out of the parsers.
    wire = b"".join(r["data"] for r in records)
    assert any(s.encode() in wire for s in SECRETS)
    out = repr(got)
    assert not [s for s in SECRETS if s in out]


def test_the_servers_are_a_process_of_their_own_speaking_tls_with_the_tests_ca(apis):
    assert apis.pid != os.getpid()
    with open(f"/proc/{apis.pid}/status") as f:
        assert int(next(line for line in f if line.startswith("PPid:")).split()[1]) == os.getpid()
    # A client that trusts the system's CAs refuses the server; one that trusts the test's CA is answered.
    with pytest.raises(urllib.error.URLError) as refused:
        urllib.request.urlopen(f"{apis.base}/v1/models", timeout=10, context=ssl.create_default_context())
    assert isinstance(refused.value.reason, ssl.SSLCertVerificationError)
    with pytest.raises(urllib.error.HTTPError) as answered:   # GET /v1/models: 404 from these servers
        urllib.request.urlopen(f"{apis.base}/v1/models", timeout=10,
                               context=ssl.create_default_context(cafile=apis.ca))
    assert answered.value.code == 404


def test_cleartext_reads_the_same(apis, tmp_path):
    """Without TLS (a local vLLM, a sidecar gateway) the same calls, the same bytes on the socket."""
    log = tmp_path / "wire.jsonl"
    port = free_port()
    with llm_apis.running(port, str(log)):
        expected = DRIVERS["openai"](f"http://127.0.0.1:{port}", apis.ca)
    records = llm_apis.read_log(log)
    assert records[0]["data"].startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
    assert [observed(ex) for ex in replay(records)] == [expected_view(asdict(e)) for e in expected]
