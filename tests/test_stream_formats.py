"""Streams in the formats their servers publish: Ollama's `/api/chat` and `/api/generate` (newline-delimited
JSON objects, `"done":true` last with `eval_count`) and TGI's `/generate_stream` (SSE events
`{"token":{...,"special":...}}`, the last with `details.generated_tokens`) and llama.cpp's own `/completion`
(llama-server: `{"content":...,"stop":false}` events, the last `"stop":true`), which cannot be installed on these
machines; and vLLM's chat stream with its empty-text token events, its Responses API and Anthropic Messages API
streams (seen from vLLM 0.32 here). A server in
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
from tests.test_sse_tokens import RARE_WORDS, _triggers

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


def llama_server_completion(n: int) -> list[bytes]:
    """llama.cpp's own /completion (llama-server, tools/server: to_json_non_oaicompat_partial / _final), streamed:
    one event per token, then the final one, its content empty and `"stop":true`, whose tokens_predicted also
    counts the end-of-sequence token the stream did not carry."""
    events = [{"index": 0, "content": f"tok{i}", "tokens": [100 + i], "stop": False, "id_slot": -1,
               "tokens_predicted": i + 1, "tokens_evaluated": 7} for i in range(n)]
    events.append({"index": 0, "content": "", "tokens": [], "id_slot": 0, "stop": True, "model": "llama3",
                   "tokens_predicted": n + 1, "tokens_evaluated": 7, "prompt": "<s> Tell me", "has_new_line": False,
                   "truncated": False, "stop_type": "eos", "stopping_word": "", "tokens_cached": n + 7,
                   "timings": {"prompt_n": 7, "prompt_ms": 12.5, "predicted_n": n + 1, "predicted_ms": 80.0}})
    return [b"data: " + json.dumps(e, separators=(",", ":")).encode() + b"\n\n" for e in events]


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


def _named(name: str, doc: dict) -> bytes:
    """One named event as vLLM (sse-starlette-like framing in its own code) writes it."""
    return b"event: " + name.encode() + b"\ndata: " + json.dumps(doc, separators=(",", ":")).encode() + b"\n\n"


def vllm_responses(n: int) -> list[bytes]:
    """/v1/responses (the Responses API) as vLLM 0.32 streams it: four events before the text (created,
    in_progress, output_item.added, content_part.added with an empty text), one `response.output_text.delta`
    per token, then four after it, the last (`response.completed`) with usage.output_tokens (seen 2026-12-07),
    here one more than the deltas (vLLM puts two tokens in one delta when its API server falls behind): past
    more than eight words the kernel's scan would note for a mark or a count, as vLLM's usage lies."""
    resp = {"id": "resp_966060fce3a62b7e", "created_at": 1796680507, "incomplete_details": None, "instructions": None,
            "metadata": None, "model": "vllm-model", "object": "response", "output": [], "parallel_tool_calls": True,
            "temperature": 1.0, "tool_choice": "none", "tools": [], "top_p": 1.0, "background": False,
            "max_output_tokens": n, "max_tool_calls": None, "previous_response_id": None, "prompt": None,
            "reasoning": None, "service_tier": "auto", "status": "in_progress", "text": None, "top_logprobs": None,
            "truncation": "disabled", "usage": None, "user": None, "presence_penalty": 0.0, "frequency_penalty": 0.0,
            "kv_transfer_params": None, "ec_transfer_params": None, "input_messages": None, "output_messages": None}
    item = {"id": "msg_1", "content": [], "role": "assistant", "status": "in_progress", "type": "message"}
    text = "".join(f"tok{i}" for i in range(n))
    part = {"annotations": [], "text": "", "type": "output_text", "logprobs": []}
    events = [("response.created", {"response": resp, "sequence_number": 0, "type": "response.created"}),
              ("response.in_progress", {"response": resp, "sequence_number": 1, "type": "response.in_progress"}),
              ("response.output_item.added", {"item": item, "output_index": 0, "sequence_number": 2,
                                              "type": "response.output_item.added"}),
              ("response.content_part.added", {"content_index": 0, "item_id": "msg_1", "output_index": 0, "part": part,
                                               "sequence_number": 3, "type": "response.content_part.added"})]
    events += [("response.output_text.delta", {"content_index": 0, "delta": f"tok{i}", "item_id": "msg_1",
                                               "logprobs": [], "output_index": 0, "sequence_number": 4 + i,
                                               "type": "response.output_text.delta"}) for i in range(n)]
    done = {**resp, "status": "completed", "output": [{**item, "status": "completed",
                                                       "content": [{**part, "text": text}]}],
            "usage": {"input_tokens": 20, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": n + 1,
                      "output_tokens_details": {"reasoning_tokens": 0, "tool_output_tokens": 0},
                      "total_tokens": 21 + n}}
    events += [("response.output_text.done", {"content_index": 0, "item_id": "msg_1", "logprobs": [], "output_index": 0,
                                              "sequence_number": 4 + n, "text": text,
                                              "type": "response.output_text.done"}),
               ("response.content_part.done", {"content_index": 0, "item_id": "msg_1", "output_index": 0,
                                               "part": {**part, "text": text}, "sequence_number": 5 + n,
                                               "type": "response.content_part.done"}),
               ("response.output_item.done", {"item": done["output"][0], "output_index": 0, "sequence_number": 6 + n,
                                              "type": "response.output_item.done"}),
               ("response.completed", {"response": done, "sequence_number": 7 + n, "type": "response.completed"})]
    return [_named(name, doc) for name, doc in events]


def vllm_messages(n: int) -> list[bytes]:
    """/v1/messages (Anthropic's Messages API) as vLLM 0.32 streams it: message_start (usage.output_tokens 0),
    content_block_start with an empty text, one content_block_delta per token, content_block_stop,
    message_delta with the stop reason and usage.output_tokens, message_stop (seen 2026-12-07)."""
    message = {"id": "msg_1", "type": "message", "role": "assistant", "content": [], "model": "vllm-model",
               "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 10, "output_tokens": 0}}
    events = [("message_start", {"type": "message_start", "message": message}),
              ("content_block_start", {"type": "content_block_start", "content_block": {"type": "text", "text": ""},
                                       "index": 0})]
    events += [("content_block_delta", {"type": "content_block_delta", "delta": {"type": "text_delta",
                                                                                "text": f" tok{i}"}, "index": 0})
               for i in range(n)]
    events += [("content_block_stop", {"type": "content_block_stop", "index": 0}),
               ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "max_tokens", "stop_sequence": None},
                                  "usage": {"input_tokens": 10, "output_tokens": n}}),
               ("message_stop", {"type": "message_stop"})]
    return [_named(name, doc) for name, doc in events]


ANSWERS = {
    "/api/chat": ("application/x-ndjson", ollama_chat),
    "/api/generate": ("application/x-ndjson", ollama_generate),
    "/generate_stream": ("text/event-stream", tgi_generate_stream),
    "/v1/chat/completions": ("text/event-stream", vllm_chat),
    "/completion": ("text/event-stream", llama_server_completion),
}


NAMED_ANSWERS = {
    "/v1/responses": ("text/event-stream", vllm_responses),
    "/v1/messages": ("text/event-stream", vllm_messages),
}


def _serve(listener: socket.socket, count: int, n: int, answers: dict = ANSWERS,
           written: dict | None = None) -> None:
    """count answers; written[client port]: the wall-clock time just before each piece's write."""
    for _ in range(count):
        conn, peer = listener.accept()
        with conn:
            got = b""
            while b"\r\n\r\n" not in got or not got.endswith(b"}"):
                got += conn.recv(4096)
            path = got.split(b" ")[1].decode()
            ctype, make = answers[path]
            conn.sendall(f"HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\nTransfer-Encoding: chunked\r\n\r\n".encode())
            times = [] if written is None else written.setdefault(peer[1], [])
            for piece in make(n):
                time.sleep(TOKEN_GAP)
                times.append(time.time_ns())
                conn.sendall(_chunk(piece))
            times.append(time.time_ns())
            conn.sendall(b"0\r\n\r\n")


def _ask(port: int, paths: list[str]) -> None:
    for path in paths:
        body = b'{"model":"llama3","stream":true}'
        with socket.create_connection(("127.0.0.1", port), timeout=15) as c:
            c.sendall(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (path.encode(), len(body)) + body)
            while not (data := c.recv(65536)).endswith(b"0\r\n\r\n") and data:
                pass


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
            _ask(port, paths)
            server.join(15)
            assert receiver.wait_for(lambda: len(receiver.spans()) >= len(paths), timeout=20)
            assert proc.stop() == 0, proc.stderr
        spans = {}
        for s in receiver.spans():
            spans.setdefault(s.attributes["url.path"], []).append(s)
        # Stated counts win: Ollama's eval_count, TGI's generated_tokens (each one more than the text tokens
        # in chat and TGI: the end-of-sequence token); time to first token and per token from text tokens.
        # vLLM states no count here: its token events, the empty ones included (n + 2).
        # llama.cpp's /completion states its count as tokens_predicted, not read: its token events (n).
        expected = {"/api/chat": n + 1, "/api/generate": n, "/generate_stream": n + 1, "/v1/chat/completions": n + 2,
                    "/completion": n}
        operations = {"/api/chat": "chat", "/api/generate": "text_completion", "/generate_stream": "text_completion",
                      "/v1/chat/completions": "chat", "/completion": "text_completion"}
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
        # per operation and the model the answers name: Ollama's; none for TGI, nor for llama.cpp, which names it
        # only in its last event (the kernel looks in the answer's first bytes)
        tokens: dict[tuple, float] = {}
        for p in receiver.latest("ebpftool.gen_ai.server.output_tokens"):
            key = (p.attributes["gen_ai.operation.name"], p.attributes.get("gen_ai.response.model"))
            tokens[key] = tokens.get(key, 0) + p.value
        assert tokens == {("chat", "llama3"): 2 * (n + 1), ("text_completion", "llama3"): 2 * n,
                          ("text_completion", None): 2 * (n + 1) + 2 * n, ("chat", "vllm-model"): 2 * (n + 2)}
    finally:
        listener.close()
        receiver.stop()


@pytest.mark.parametrize("hooks", ["socket", "syscall"])
def test_responses_and_messages_streams_time_their_delta_events(hooks):
    """The Responses API's and Anthropic's streams (vLLM's bytes): only their delta events are tokens, so the
    first token is the first delta's write and the last the last delta's, not the events around them."""
    n = 6
    before = {"/v1/responses": 4, "/v1/messages": 2}   # events written before the first delta
    stated = {"/v1/responses": n + 1, "/v1/messages": n}
    port = free_port()
    listener = socket.create_server(("127.0.0.1", port))
    receiver = GrpcReceiver()
    paths = list(NAMED_ANSWERS) * 2
    written: dict[int, list[int]] = {}
    try:
        with EbpftoolProcess(inference_args(port, receiver, hooks)) as proc:
            server = threading.Thread(target=_serve, args=(listener, len(paths), n, NAMED_ANSWERS, written),
                                      daemon=True)
            server.start()
            _ask(port, paths)
            server.join(15)
            assert receiver.wait_for(lambda: len(receiver.spans()) >= len(paths), timeout=20)
            assert proc.stop() == 0, proc.stderr
        spans = receiver.spans()
        assert sorted(s.attributes["url.path"] for s in spans) == sorted(paths)
        slack = 1_000_000  # the span's clock against time.time_ns(): the writes are TOKEN_GAP apart
        for s in spans:
            a = s.attributes
            path = a["url.path"]
            assert a["gen_ai.operation.name"] == "chat", a
            assert a["gen_ai.response.model"] == "vllm-model", a
            assert a["gen_ai.usage.output_tokens"] == stated[path], a
            times = written[a["client.port"]]
            first_delta, last_delta = before[path], before[path] + n - 1
            first = [t for name, t, _ in s.events if name == "ebpftool.gen_ai.first_token"]
            assert len(first) == 1, s.events
            # each write happened after the time noted before it and before the next piece's
            assert times[first_delta] - slack <= first[0] < times[first_delta + 1], (path, a, first[0], times)
            last = first[0] + a["ebpftool.gen_ai.time_per_output_token"] * 1e9 * (n - 1)
            assert times[last_delta] - slack <= last < times[last_delta + 1], (path, a, last, times)
        tokens = sum(p.value for p in receiver.latest("ebpftool.gen_ai.server.output_tokens")
                     if p.attributes["gen_ai.operation.name"] == "chat")
        assert tokens == 2 * (stated["/v1/responses"] + stated["/v1/messages"])
    finally:
        listener.close()
        receiver.stop()


@pytest.mark.parametrize("hooks", ["socket", "syscall"])
def test_a_whole_responses_answer_states_its_usage_past_many_fields(hooks):
    """A non-streamed Responses API answer (Content-Length, one write, ~1.4 KB as vLLM's): its usage comes
    after dozens of fields whose words the kernel's scan notes (`_t`, `[]`, ...): the count is still read."""
    n = 6
    answer = json.loads(vllm_responses(n)[-1].split(b"data: ", 1)[1])["response"]
    body = json.dumps(answer, separators=(",", ":")).encode()
    # more words the scan notes before the usage than it looks at from the start (RARE_WORDS)
    padded = bytes(15) + b"\n" + body
    noted = [w for w in range(1, body.index(b'"output_tokens"') // 8 + 2) if any(_triggers(padded, 8 * w + b) for b in range(8))]
    assert len(noted) > RARE_WORDS, noted
    port = free_port()
    listener = socket.create_server(("127.0.0.1", port))
    receiver = GrpcReceiver()

    def serve() -> None:
        for _ in range(2):
            conn, _ = listener.accept()
            with conn:
                got = b""
                while not got.endswith(b"}"):
                    got += conn.recv(4096)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                             % len(body))
                conn.sendall(body)
                conn.recv(1)  # until the client closes
    try:
        with EbpftoolProcess(inference_args(port, receiver, hooks)) as proc:
            server = threading.Thread(target=serve, daemon=True)
            server.start()
            for _ in range(2):
                with socket.create_connection(("127.0.0.1", port), timeout=15) as c:
                    c.sendall(b'POST /v1/responses HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}')
                    got = b""
                    while not got.endswith(body):
                        got += c.recv(65536)
            server.join(15)
            assert receiver.wait_for(lambda: len(receiver.spans()) >= 2, timeout=20)
            assert proc.stop() == 0, proc.stderr
        for s in receiver.spans():
            assert s.attributes["gen_ai.usage.output_tokens"] == n + 1, s.attributes
        assert sum(p.value for p in receiver.latest("ebpftool.gen_ai.server.output_tokens")) == 2 * (n + 1)
    finally:
        listener.close()
        receiver.stop()
