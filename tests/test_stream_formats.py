"""Streams in the formats their servers publish: Ollama's `/api/chat` and `/api/generate` (newline-delimited
JSON objects, `"done":true` last with `eval_count`) and TGI's `/generate_stream` (SSE events
`{"token":{...,"special":...}}`, the last with `details.generated_tokens`), which cannot be installed on these
machines; and vLLM's chat stream with its empty-text token events (seen from vLLM 0.32 here). A server in
this process writes them as Go's net/http, TGI's axum and uvicorn do (chunked, one object or event per
write); the tracer's tokens, time to first token and output-token metric are checked against what was
written."""
from __future__ import annotations

import json
import socket
import threading
import time

import pytest

from tests.conftest import EbpftoolProcess, inference_args
from tests.otlp_receiver import GrpcReceiver
from tests.servers.nginx import free_port

pytestmark = [pytest.mark.bpf, pytest.mark.timeout(180)]
TOKEN_GAP = 0.02  # seconds between written tokens


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n" % len(data) + data + b"\r\n"


def ollama_chat(n: int) -> list[bytes]:
    """/api/chat, streamed: n content objects, then the final object (empty content, done, eval_count)."""
    objs = [{"model": "llama3", "created_at": "2026-12-03T20:00:00Z",
             "message": {"role": "assistant", "content": f"tok{i} "}, "done": False} for i in range(n)]
    objs.append({"model": "llama3", "created_at": "2026-12-03T20:00:01Z", "message": {"role": "assistant", "content": ""},
                 "done_reason": "stop", "done": True, "total_duration": 123, "prompt_eval_count": 7,
                 "eval_count": n + 1, "eval_duration": 99})  # one more than written: the end-of-sequence token
    return [json.dumps(o, separators=(",", ":")).encode() + b"\n" for o in objs]


def ollama_generate(n: int) -> list[bytes]:
    objs = [{"model": "llama3", "created_at": "2026-12-03T20:00:00Z", "response": f"w{i}", "done": False}
            for i in range(n)]
    objs.append({"model": "llama3", "created_at": "2026-12-03T20:00:01Z", "response": "", "done": True,
                 "done_reason": "stop", "context": [1, 2, 3], "eval_count": n})
    return [json.dumps(o, separators=(",", ":")).encode() + b"\n" for o in objs]


def tgi_generate_stream(n: int) -> list[bytes]:
    """/generate_stream: n text tokens, then the end-of-sequence token (special) with generated_text and
    details.generated_tokens (which counts it)."""
    events = [{"index": i + 1, "token": {"id": 100 + i, "text": f" t{i}", "logprob": -0.5, "special": False},
               "generated_text": None, "details": None} for i in range(n)]
    events.append({"index": n + 1, "token": {"id": 2, "text": "</s>", "logprob": -0.1, "special": True},
                   "generated_text": "".join(f" t{i}" for i in range(n)),
                   "details": {"finish_reason": "eos_token", "generated_tokens": n + 1, "seed": None}})
    return [b"data:" + json.dumps(e, separators=(",", ":")).encode() + b"\n\n" for e in events]


def vllm_chat(n: int) -> list[bytes]:
    """/v1/chat/completions as vLLM streams it (0.32, no usage asked): the role chunk, one event per token,
    a token whose text it held back (a skipped special token, a character's first bytes) as an empty content,
    and the stop token's event, empty, with finish_reason "stop": n + 2 tokens by vLLM's own count
    (usage.completion_tokens, vllm:generation_tokens_total), as seen on 2026-12-07."""
    def event(delta: dict, finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish, "token_ids": None}
        doc = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1796670222, "model": "vllm-model",
               "choices": [choice]}
        return b"data: " + json.dumps(doc, separators=(",", ":")).encode() + b"\n\n"
    texts = [f"tok{i}" for i in range(n)]
    texts.insert(n // 2, "")
    return ([event({"role": "assistant", "content": ""})] + [event({"content": t}) for t in texts]
            + [event({"content": ""}, "stop"), b"data: [DONE]\n\n"])


ANSWERS = {
    "/api/chat": ("application/x-ndjson", ollama_chat),
    "/api/generate": ("application/x-ndjson", ollama_generate),
    "/generate_stream": ("text/event-stream", tgi_generate_stream),
    "/v1/chat/completions": ("text/event-stream", vllm_chat),
}


def _serve(listener: socket.socket, count: int, n: int) -> None:
    for _ in range(count):
        conn, _ = listener.accept()
        with conn:
            got = b""
            while b"\r\n\r\n" not in got or not got.endswith(b"}"):
                got += conn.recv(4096)
            path = got.split(b" ")[1].decode()
            ctype, make = ANSWERS[path]
            conn.sendall(f"HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\nTransfer-Encoding: chunked\r\n\r\n".encode())
            for piece in make(n):
                time.sleep(TOKEN_GAP)
                conn.sendall(_chunk(piece))
            conn.sendall(b"0\r\n\r\n")


@pytest.mark.parametrize("hooks", ["socket", "syscall"])
def test_ollama_and_tgi_streams_count_their_tokens(hooks):
    n = 6
    port = free_port()
    listener = socket.create_server(("127.0.0.1", port))
    receiver = GrpcReceiver()
    paths = list(ANSWERS) * 2
    try:
        with EbpftoolProcess(inference_args(port, receiver, hooks)) as proc:
            server = threading.Thread(target=_serve, args=(listener, len(paths), n), daemon=True)
            server.start()
            for path in paths:
                body = b'{"model":"llama3","stream":true}'
                with socket.create_connection(("127.0.0.1", port), timeout=15) as c:
                    c.sendall(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (path.encode(), len(body))
                              + body)
                    while not (data := c.recv(65536)).endswith(b"0\r\n\r\n") and data:
                        pass
            server.join(15)
            assert receiver.wait_for(lambda: len(receiver.spans()) >= len(paths), timeout=20)
            assert proc.stop() == 0, proc.stderr
        spans = {}
        for s in receiver.spans():
            spans.setdefault(s.attributes["url.path"], []).append(s)
        # Stated counts win: Ollama's eval_count, TGI's generated_tokens (each one more than the text tokens
        # in chat and TGI: the end-of-sequence token); time to first token and per token from text tokens.
        # vLLM states no count here: its token events, the empty ones included (n + 2).
        expected = {"/api/chat": n + 1, "/api/generate": n, "/generate_stream": n + 1, "/v1/chat/completions": n + 2}
        operations = {"/api/chat": "chat", "/api/generate": "text_completion", "/generate_stream": "text_completion",
                      "/v1/chat/completions": "chat"}
        for path, want in expected.items():
            assert len(spans[path]) == 2, spans
            for s in spans[path]:
                a = s.attributes
                assert a["gen_ai.operation.name"] == operations[path]
                assert a["gen_ai.usage.output_tokens"] == want, (path, a)
                # the server sleeps at least TOKEN_GAP before each write: before the first token, between tokens
                duration = (s.end_ns - s.start_ns) / 1e9
                assert TOKEN_GAP * 0.9 <= a["ebpftool.gen_ai.time_to_first_token"] < duration, (path, a)
                assert TOKEN_GAP * 0.9 <= a["ebpftool.gen_ai.time_per_output_token"] < duration, (path, a)
        tokens: dict[tuple, float] = {}   # per operation and the model the answers name (Ollama's; TGI's none)
        for p in receiver.latest("ebpftool.gen_ai.server.output_tokens"):
            key = (p.attributes["gen_ai.operation.name"], p.attributes.get("gen_ai.response.model"))
            tokens[key] = tokens.get(key, 0) + p.value
        assert tokens == {("chat", "llama3"): 2 * (n + 1), ("text_completion", "llama3"): 2 * n,
                          ("text_completion", None): 2 * (n + 1), ("chat", "vllm-model"): 2 * (n + 2)}
    finally:
        listener.close()
        receiver.stop()
