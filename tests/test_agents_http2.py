"""LLM calls over HTTP/2, from the client side: curl and nghttp (nghttp2's, linked to the system OpenSSL) call the
OpenAI-compatible test API through nghttpx, which speaks HTTP/2 on its front (h2 by ALPN over TLS, or h2c with
prior knowledge) and HTTP/1.1 to tests/servers/llm_apis.py behind it. `ebpftool agents` follows the clients,
processes it did not start: over TLS through the OpenSSL uprobes, in clear through its cleartext hooks.

Expected values come from what each client received (the answer's model and usage, the content chunks counted
in the Server-Sent Events curl wrote out), never from ebpftool's output.
"""
from __future__ import annotations

import contextlib
import json
import subprocess

import pytest

from tests.conftest import EbpftoolProcess
from tests.otlp_receiver import GrpcReceiver
from tests.servers import llm_apis
from tests.servers.nginx import free_port, wait_listening

PROMPT = [{"role": "user", "content": "Say four words about the sea, please."}]
CALLS = [  # (name, body): streamed with and without usage, not streamed, a rate limit
    ("stream-usage", {"model": "gpt-4o-mini", "messages": PROMPT, "max_tokens": 4, "stream": True,
                      "stream_options": {"include_usage": True}}),
    ("stream", {"model": "gpt-4o-mini", "messages": PROMPT, "max_tokens": 6, "stream": True}),
    ("plain", {"model": "gpt-4.1", "messages": PROMPT, "max_tokens": 3}),
    ("limited", {"model": "rate-limited", "messages": PROMPT}),
]


@contextlib.contextmanager
def front(tmp_path, tls: bool):
    """The test API behind nghttpx; yields (its frontend port, the URL base, the CA file or '')."""
    api_port, port = free_port(), free_port()
    certs = llm_apis.make_certificates(tmp_path) if tls else None
    args = ["nghttpx", "--conf=/dev/null", f"--frontend=127.0.0.1,{port}" + ("" if tls else ";no-tls"),
            f"--backend=127.0.0.1,{api_port}", "--workers=1", f"--errorlog-file={tmp_path / 'nghttpx.err'}",
            "--no-ocsp"]
    if certs:
        args += [certs["key"], certs["cert"]]
    with llm_apis.running(api_port, str(tmp_path / "api.jsonl")):
        proxy = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_listening(port)
            yield port, f"{'https' if tls else 'http'}://127.0.0.1:{port}", certs["ca"] if certs else ""
        finally:
            proxy.terminate()
            proxy.wait(10)


def received(out: bytes) -> dict:
    """What the client received: the answer's model, usage and content chunks (SSE or one JSON document)."""
    text = out.decode()
    if text.lstrip().startswith("{"):
        doc = json.loads(text)
        usage = doc.get("usage") or {}
        return {"model": doc.get("model"), "input": usage.get("prompt_tokens"),
                "output": usage.get("completion_tokens"), "chunks": 0}
    model, usage, chunks = None, {}, 0
    for line in text.splitlines():
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        doc = json.loads(line[6:])
        model = doc.get("model") or model
        usage = doc.get("usage") or usage
        choices = doc.get("choices") or []
        if choices and (choices[0].get("delta") or {}).get("content"):
            chunks += 1
    return {"model": model, "input": usage.get("prompt_tokens"), "output": usage.get("completion_tokens"),
            "chunks": chunks}


def curl(base: str, ca: str, how: str, body: dict, out) -> tuple[int, int]:
    """One call by curl over HTTP/2 (how: "--http2" over https, ALPN; over http, the h2c Upgrade; or
    "--http2-prior-knowledge"): its pid and the HTTP status it got; the body it received in out."""
    args = ["curl", "-sS", how, "-o", str(out), "-w", "%{http_code}",
            "-H", "content-type: application/json", "-H", "authorization: Bearer sk-test-secret",
            "--data-binary", json.dumps(body), f"{base}/v1/chat/completions"]
    if ca:
        args[1:1] = ["--cacert", ca]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    code, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, code
    return proc.pid, int(code)


def spans_of(receiver, pid: int) -> list:
    return sorted((s for s in receiver.spans() if s.attributes.get("process.pid") == pid), key=lambda s: s.start_ns)


@pytest.mark.parametrize("tls, how", [(True, "--http2"), (False, "--http2-prior-knowledge"), (False, "--http2")],
                         ids=["h2-tls", "h2c", "h2c-upgrade"])
def test_curl_calls_over_http2(tmp_path, tls, how):
    """Over TLS with ALPN h2, in clear with prior knowledge, and in clear through the h2c Upgrade (RFC 7540
    3.2: curl's POST goes out as HTTP/1.1 asking for h2c, nghttpx answers 101 and then the call's answer as
    HTTP/2's stream 1)."""
    receiver = GrpcReceiver()
    try:
        with front(tmp_path, tls) as (port, base, ca):
            with EbpftoolProcess(["agents", "--otlp-endpoint", receiver.endpoint, "--otlp-protocol", "grpc",
                                  "--interval", "1", "--no-ui"]) as proc:
                runs = []
                for name, body in CALLS:
                    out = tmp_path / f"{name}.out"
                    pid, status = curl(base, ca, how, body, out)
                    runs.append((name, body, pid, status, received(out.read_bytes()) if status == 200 else None))
                for name, body, pid, status, got in runs:
                    assert receiver.wait_for(lambda: len(spans_of(receiver, pid)) >= 1, timeout=30), name
                assert proc.stop() == 0, proc.stderr
        for name, body, pid, status, got in runs:
            (span,) = spans_of(receiver, pid)
            a = span.attributes
            what = (name, a)
            assert span.kind == "CLIENT" and a["gen_ai.operation.name"] == "chat", what
            assert a["gen_ai.request.model"] == body["model"], what
            assert a["http.response.status_code"] == status, what
            assert a["server.address"] == "127.0.0.1" and a["server.port"] == port, what
            if status != 200:
                assert a["error.type"] == "rate_limited", what
                continue
            assert "error.type" not in a, what
            assert a["gen_ai.response.model"] == got["model"], what
            assert a.get("gen_ai.usage.input_tokens") == got["input"], what
            assert a.get("gen_ai.usage.output_tokens") == got["output"], what
            if body.get("stream"):
                assert a["ebpftool.gen_ai.client.chunks"] == got["chunks"], what
                ttfc = a["ebpftool.gen_ai.client.time_to_first_chunk"] * 1e9
                assert 0 < ttfc <= span.end_ns - span.start_ns, what
        counts = sum(p.count for p in receiver.latest("gen_ai.client.operation.duration")
                     if p.attributes.get("process.pid") in {r[2] for r in runs})
        assert counts == len(CALLS)
        assert not any("sk-test-secret" in repr(s) for s in receiver.spans())
    finally:
        receiver.stop()


def test_streams_at_once_on_one_connection(tmp_path):
    """curl --parallel sends its requests as streams of one HTTP/2 connection at once; each is a call."""
    receiver = GrpcReceiver()
    body = {"model": "gpt-4o-mini", "messages": PROMPT, "max_tokens": 5, "stream": True,
            "stream_options": {"include_usage": True}}
    try:
        with front(tmp_path, True) as (port, base, ca):
            with EbpftoolProcess(["agents", "--otlp-endpoint", receiver.endpoint, "--otlp-protocol", "grpc",
                                  "--interval", "1", "--no-ui"]) as proc:
                outs = [tmp_path / f"stream{i}.out" for i in range(3)]
                args = ["curl", "-sS", "--cacert", ca, "--http2", "--parallel", "--parallel-max", "3",
                        "-H", "content-type: application/json", "--data-binary", json.dumps(body)]
                for i, out in enumerate(outs):
                    args += ["-o", str(out), f"{base}/v1/chat/completions?n={i}"]
                client = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                _, err = client.communicate(timeout=60)
                assert client.returncode == 0, err
                assert receiver.wait_for(lambda: len(spans_of(receiver, client.pid)) >= 3, timeout=30)
                assert proc.stop() == 0, proc.stderr
        spans = spans_of(receiver, client.pid)
        assert len(spans) == 3
        for s, got in zip(spans, sorted((received(o.read_bytes()) for o in outs), key=repr)):
            a = s.attributes
            assert (a["gen_ai.response.model"], a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"],
                    a["ebpftool.gen_ai.client.chunks"]) == (got["model"], got["input"], got["output"], got["chunks"])
    finally:
        receiver.stop()
