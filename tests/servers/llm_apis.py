"""Local servers that answer like the LLM APIs agents call, and an MCP server, each way's plaintext logged.

    python -m tests.servers.llm_apis PORT LOG.jsonl [--tls CERT KEY]

One process, the way a tracer meets a remote API: a process it did not start, listening on a loopback
port, over TLS (with --tls) or cleartext. It answers:

- OpenAI and compatible: POST /v1/chat/completions, /v1/completions, /v1/responses, /v1/embeddings
  (streamed as Server-Sent Events with `"stream": true`; chat's usage chunk with
  `stream_options.include_usage`; a streamed chat with `tools` calls the first one, its arguments in
  fragments; the Responses API's typed events up to `response.completed` (`response.failed` for
  `midstream-error`); embeddings as floats or base64, as the client asks, gzip-compressed when the
  client accepts it, as a CDN in front of a real API compresses JSON).
- Anthropic: POST /v1/messages (its SSE events message_start ... message_stop; usage with prompt-cache
  reads, as the real API reports them).
- Gemini: POST /v1beta/models/MODEL:generateContent and :streamGenerateContent (with `?alt=sse` as
  Server-Sent Events, without it as a JSON array written element by element).
- Ollama: POST /api/chat, /api/generate (newline-delimited JSON unless `"stream": false`), /api/embed.
- MCP: the `mcp` package's own streamable-HTTP server at /mcp, with the tools `add` and `fail` (a tool
  error: `isError`).

A call's model name picks an error instead of an answer: `rate-limited` (HTTP 429 with the provider's
own body and a retry-after header), `bad-request` (400), `server-error` (500), `overloaded` (Anthropic's
529), `midstream-error` (a stream that begins and then carries the provider's error event). Answers are
deterministic: `max_tokens` (or the API's own name for it; 5 when not given) chunks of `tok{i} `, the
input tokens the number of words in the JSON of the prompt, and the response model the request's plus a
version suffix where the real API adds one (OpenAI `-2026-12-01`, Gemini `-001`).

The log: the plaintext bytes each way exactly as they crossed the TLS layer (a front that terminates
TLS and relays to the app on a Unix socket), one JSON line a read: {"conn": n, "dir": "request" |
"response" | "close", "t": monotonic seconds, "data": base64}. These are the bytes a client's SSL_write
and SSL_read see, so tests feed them to the parsers of ebpftool.tracers.agents.

`running(port, log, tls=(cert, key))` runs it as its own process and yields its pid once it listens;
`make_certificates(dir)` makes a CA and a certificate for 127.0.0.1/localhost signed by it (the openssl
CLI, as tests/test_tls.py does), so clients verify the server as they would a real API.
"""
# No `from __future__ import annotations`: the mcp package reads its tools' annotations at run time.
import asyncio
import base64
import contextlib
import gzip
import json
import os
import signal
import ssl
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_TOKENS = 5
CHUNK_GAP_S = 0.002       # between streamed chunks, so that they leave in writes of their own
OPENAI_VERSION = "-2026-12-01"
GEMINI_VERSION = "-001"
CACHE_READ = 3            # Anthropic: input tokens read from the prompt cache, on every answer
ERROR_MODELS = ("rate-limited", "bad-request", "server-error", "overloaded")


# -- certificates ---------------------------------------------------------------------------------------

def make_certificates(directory: str | os.PathLike) -> dict[str, str]:
    """A CA and a server certificate it signed (127.0.0.1, ::1, localhost), as PEM files in directory."""
    d = Path(directory)
    p = {name: str(d / f"{name}.pem") for name in ("ca", "ca_key", "cert", "key", "csr")}
    ext = d / "san.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
                   "keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=ebpftool test CA", "-days", "1",
            "-keyout", p["ca_key"], "-out", p["ca"], "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", p["key"], "-out", p["csr"])
    openssl("x509", "-req", "-in", p["csr"], "-CA", p["ca"], "-CAkey", p["ca_key"], "-CAcreateserial",
            "-days", "1", "-out", p["cert"], "-extfile", str(ext))
    return {"ca": p["ca"], "cert": p["cert"], "key": p["key"]}


# -- what every answer is made of -----------------------------------------------------------------------

def words(value) -> int:
    """Input tokens: the words of the prompt's JSON (deterministic, and different per request)."""
    return len(json.dumps(value).split()) if value is not None else 0


def tokens(n: int) -> list[str]:
    return [f"tok{i} " for i in range(n)]


def _n(value) -> int:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) and value > 0 else DEFAULT_TOKENS


def _compact(doc) -> str:
    return json.dumps(doc, separators=(",", ":"))


def _id(prefix: str) -> str:
    return f"{prefix}{time.monotonic_ns():x}"


# -- the app --------------------------------------------------------------------------------------------

def build_app():
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response, StreamingResponse
    from starlette.routing import Route

    def sse(events, named: bool = False):
        """Server-Sent Events, one write each: (name, doc) pairs when named, else docs or "[DONE]"."""
        async def body():
            for i, ev in enumerate(events):
                if i:
                    await asyncio.sleep(CHUNK_GAP_S)
                if named:
                    name, doc = ev
                    yield f"event: {name}\ndata: {_compact(doc)}\n\n"
                else:
                    yield f"data: {ev if isinstance(ev, str) else _compact(ev)}\n\n"
        return StreamingResponse(body(), media_type="text/event-stream",
                                 headers={"cache-control": "no-cache"})

    def lines(docs, media_type="application/x-ndjson"):
        async def body():
            for i, doc in enumerate(docs):
                if i:
                    await asyncio.sleep(CHUNK_GAP_S)
                yield _compact(doc) + "\n"
        return StreamingResponse(body(), media_type=media_type)

    # -- OpenAI ------------------------------------------------------------------------------------------
    def openai_error(model: str):
        if model == "rate-limited":
            return JSONResponse({"error": {"message": "Rate limit reached for requests", "type": "requests",
                                           "param": None, "code": "rate_limit_exceeded"}}, 429,
                                headers={"retry-after": "1"})
        if model == "bad-request":
            return JSONResponse({"error": {"message": "Invalid value for 'model'", "type": "invalid_request_error",
                                           "param": "model", "code": None}}, 400)
        if model == "server-error":
            return JSONResponse({"error": {"message": "The server had an error", "type": "server_error",
                                           "param": None, "code": None}}, 500)
        return None

    async def chat(request: Request):
        body = await request.json()
        model = body.get("model", "")
        if (err := openai_error(model)) is not None:
            return err
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        n, prompt = _n(limit), words(body.get("messages"))
        finish = "length" if limit else "stop"
        rid, created, rmodel = _id("chatcmpl-"), int(time.time()), model + OPENAI_VERSION
        usage = {"prompt_tokens": prompt, "completion_tokens": n, "total_tokens": prompt + n,
                 "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                 "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0}}
        if not body.get("stream"):
            return JSONResponse({"id": rid, "object": "chat.completion", "created": created, "model": rmodel,
                                 "choices": [{"index": 0, "message": {"role": "assistant",
                                                                      "content": "".join(tokens(n)), "refusal": None},
                                              "logprobs": None, "finish_reason": finish}],
                                 "usage": usage, "system_fingerprint": "fp_test"})
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def chunk(delta, finish_reason=None, choices=True):
            doc = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": rmodel,
                   "system_fingerprint": "fp_test",
                   "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]
                   if choices else []}
            if include_usage:
                doc["usage"] = None
            return doc

        events = [chunk({"role": "assistant", "content": ""})] + [chunk({"content": t}) for t in tokens(n)]
        if body.get("tools"):
            # An agent's turn: the model calls the first tool, its arguments streamed in fragments.
            name = body["tools"][0]["function"]["name"]
            fragments = ['{"city"', ': "Par', 'is"}'][:n]
            events = [chunk({"role": "assistant", "content": None, "tool_calls": [
                {"index": 0, "id": _id("call_"), "type": "function", "function": {"name": name, "arguments": ""}}]})]
            events += [chunk({"tool_calls": [{"index": 0, "function": {"arguments": f}}]}) for f in fragments]
            finish = "tool_calls"
            usage = {**usage, "completion_tokens": len(fragments) + 1, "total_tokens": prompt + len(fragments) + 1}
        if model == "midstream-error":
            events = events[:3] + [{"error": {"message": "The server had an error while processing your request",
                                              "type": "server_error", "param": None, "code": None}}]
        else:
            events.append(chunk({}, finish))
            if include_usage:
                events.append({**chunk({}, choices=False), "usage": usage})
        return sse(events + ["[DONE]"])

    async def completions(request: Request):
        body = await request.json()
        model = body.get("model", "")
        if (err := openai_error(model)) is not None:
            return err
        limit = body.get("max_tokens")
        n, prompt = _n(limit), words(body.get("prompt"))
        finish = "length" if limit else "stop"
        rid, created, rmodel = _id("cmpl-"), int(time.time()), model + OPENAI_VERSION
        usage = {"prompt_tokens": prompt, "completion_tokens": n, "total_tokens": prompt + n}
        if not body.get("stream"):
            return JSONResponse({"id": rid, "object": "text_completion", "created": created, "model": rmodel,
                                 "choices": [{"index": 0, "text": "".join(tokens(n)), "logprobs": None,
                                              "finish_reason": finish}], "usage": usage})

        def chunk(text, finish_reason=None):
            return {"id": rid, "object": "text_completion", "created": created, "model": rmodel,
                    "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}]}
        events = [chunk(t) for t in tokens(n)] + [chunk("", finish)]
        if (body.get("stream_options") or {}).get("include_usage"):
            events.append({"id": rid, "object": "text_completion", "created": created, "model": rmodel,
                           "choices": [], "usage": usage})
        return sse(events + ["[DONE]"])

    async def responses(request: Request):
        body = await request.json()
        model = body.get("model", "")
        if (err := openai_error(model)) is not None:
            return err
        limit = body.get("max_output_tokens")
        n, prompt = _n(limit), words(body.get("input"))
        rid, msg_id, created, rmodel = _id("resp_"), _id("msg_"), int(time.time()), model + OPENAI_VERSION
        text = "".join(tokens(n))
        part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
        item = {"id": msg_id, "type": "message", "status": "completed", "role": "assistant", "content": [part]}
        usage = {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": n,
                 "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": prompt + n}

        def response(status, output, with_usage):
            return {"id": rid, "object": "response", "created_at": created, "status": status, "error": None,
                    "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
                    "instructions": None, "max_output_tokens": limit, "model": rmodel, "output": output,
                    "parallel_tool_calls": True, "previous_response_id": None, "store": False,
                    "temperature": 1.0, "text": {"format": {"type": "text"}}, "tool_choice": "auto", "tools": [],
                    "top_p": 1.0, "truncation": "disabled", "usage": usage if with_usage else None,
                    "metadata": {}}
        final = "incomplete" if limit else "completed"
        if not body.get("stream"):
            return JSONResponse(response(final, [item], True))
        seq = iter(range(10_000))

        def ev(kind, **fields):
            return kind, {"type": kind, "sequence_number": next(seq), **fields}
        empty_item = {**item, "status": "in_progress", "content": []}
        events = [ev("response.created", response=response("in_progress", [], False)),
                  ev("response.in_progress", response=response("in_progress", [], False)),
                  ev("response.output_item.added", output_index=0, item=empty_item),
                  ev("response.content_part.added", item_id=msg_id, output_index=0, content_index=0,
                     part={**part, "text": ""})]
        events += [ev("response.output_text.delta", item_id=msg_id, output_index=0, content_index=0, delta=t,
                      logprobs=[]) for t in tokens(n)]
        if model == "midstream-error":
            failed = {**response("failed", [], False),
                      "error": {"code": "server_error", "message": "The model failed to generate a response"}}
            return sse(events[:6] + [ev("response.failed", response=failed)], named=True)
        events += [ev("response.output_text.done", item_id=msg_id, output_index=0, content_index=0, text=text,
                      logprobs=[]),
                   ev("response.content_part.done", item_id=msg_id, output_index=0, content_index=0, part=part),
                   ev("response.output_item.done", output_index=0, item=item),
                   ev(f"response.{final}", response=response(final, [item], True))]
        return sse(events, named=True)

    async def embeddings(request: Request):
        body = await request.json()
        model = body.get("model", "")
        if (err := openai_error(model)) is not None:
            return err
        inputs = body.get("input")
        inputs = inputs if isinstance(inputs, list) else [inputs]
        prompt = words(inputs)
        data = []
        for i, _ in enumerate(inputs):
            vector = [round(0.125 * (i + 1) * (k + 1), 3) for k in range(8)]
            if body.get("encoding_format") == "base64":
                vector = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
            data.append({"object": "embedding", "index": i, "embedding": vector})
        answer = JSONResponse({"object": "list", "data": data, "model": model,
                               "usage": {"prompt_tokens": prompt, "total_tokens": prompt}})
        if "gzip" in request.headers.get("accept-encoding", ""):
            # as a CDN in front of a real API compresses a JSON answer for a client that accepts it
            return Response(gzip.compress(answer.body), media_type="application/json",
                            headers={"content-encoding": "gzip"})
        return answer

    # -- Anthropic -----------------------------------------------------------------------------------------
    def anthropic_error(model: str):
        kinds = {"rate-limited": (429, "rate_limit_error", "Number of request tokens has exceeded your rate limit"),
                 "bad-request": (400, "invalid_request_error", "max_tokens: Field required"),
                 "server-error": (500, "api_error", "Internal server error"),
                 "overloaded": (529, "overloaded_error", "Overloaded")}
        if model not in kinds:
            return None
        status, kind, message = kinds[model]
        return JSONResponse({"type": "error", "error": {"type": kind, "message": message},
                             "request_id": _id("req_")}, status,
                            headers={"retry-after": "1"} if status == 429 else None)

    async def messages(request: Request):
        body = await request.json()
        model = body.get("model", "")
        if (err := anthropic_error(model)) is not None:
            return err
        limit = body.get("max_tokens")
        n = min(_n(limit), DEFAULT_TOKENS)
        prompt = words(body.get("messages")) + words(body.get("system"))
        stop = "max_tokens" if n == limit else "end_turn"
        mid = _id("msg_")
        usage = {"input_tokens": prompt, "cache_creation_input_tokens": 0, "cache_read_input_tokens": CACHE_READ,
                 "output_tokens": n, "service_tier": "standard"}
        if not body.get("stream"):
            return JSONResponse({"id": mid, "type": "message", "role": "assistant", "model": model,
                                 "content": [{"type": "text", "text": "".join(tokens(n))}], "stop_reason": stop,
                                 "stop_sequence": None, "usage": usage})
        start = {"id": mid, "type": "message", "role": "assistant", "model": model, "content": [],
                 "stop_reason": None, "stop_sequence": None, "usage": {**usage, "output_tokens": 1}}
        events = [("message_start", {"type": "message_start", "message": start}),
                  ("content_block_start", {"type": "content_block_start", "index": 0,
                                           "content_block": {"type": "text", "text": ""}}),
                  ("ping", {"type": "ping"})]
        events += [("content_block_delta", {"type": "content_block_delta", "index": 0,
                                            "delta": {"type": "text_delta", "text": t}}) for t in tokens(n)]
        if model == "midstream-error":
            events = events[:5] + [("error", {"type": "error", "error": {"type": "overloaded_error",
                                                                         "message": "Overloaded"}})]
        else:
            events += [("content_block_stop", {"type": "content_block_stop", "index": 0}),
                       ("message_delta", {"type": "message_delta",
                                          "delta": {"stop_reason": stop, "stop_sequence": None},
                                          "usage": {"output_tokens": n}}),
                       ("message_stop", {"type": "message_stop"})]
        return sse(events, named=True)

    # -- Gemini ----------------------------------------------------------------------------------------------
    async def gemini(request: Request):
        target = request.path_params["target"]
        model, _, method = target.rpartition(":")
        if method not in ("generateContent", "streamGenerateContent"):
            return JSONResponse({"error": {"code": 404, "message": "not found", "status": "NOT_FOUND"}}, 404)
        kinds = {"rate-limited": (429, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota)."),
                 "bad-request": (400, "INVALID_ARGUMENT", "Request contains an invalid argument."),
                 "server-error": (500, "INTERNAL", "An internal error has occurred.")}
        if model in kinds:
            status, kind, message = kinds[model]
            return JSONResponse({"error": {"code": status, "message": message, "status": kind}}, status)
        body = await request.json()
        limit = (body.get("generationConfig") or {}).get("maxOutputTokens")
        n, prompt = _n(limit), words(body.get("contents"))
        finish = "MAX_TOKENS" if limit else "STOP"
        rversion, rid = model + GEMINI_VERSION, _id("")

        def doc(parts_text, i_done, finish_reason=None):
            cand = {"content": {"parts": [{"text": parts_text}], "role": "model"}, "index": 0}
            if finish_reason:
                cand["finishReason"] = finish_reason
            return {"candidates": [cand], "usageMetadata": {"promptTokenCount": prompt,
                                                             "candidatesTokenCount": i_done,
                                                             "totalTokenCount": prompt + i_done},
                    "modelVersion": rversion, "responseId": rid}
        if method == "generateContent":
            return JSONResponse(doc("".join(tokens(n)), n, finish))
        docs = [doc(t, i + 1, finish if i == n - 1 else None) for i, t in enumerate(tokens(n))]
        if request.query_params.get("alt") == "sse":
            return sse(docs)

        async def array():       # the JSON array as the API writes it: element by element
            for i, d in enumerate(docs):
                if i:
                    await asyncio.sleep(CHUNK_GAP_S)
                yield ("[" if i == 0 else ",\r\n") + json.dumps(d, indent=2)
            yield "]"
        return StreamingResponse(array(), media_type="application/json")

    # -- Ollama -----------------------------------------------------------------------------------------------
    async def ollama(request: Request):
        body = await request.json()
        path = request.url.path
        model = body.get("model", "")
        if model in ERROR_MODELS:
            return JSONResponse({"error": f"model '{model}' not found, try pulling it first"}, 404)
        if path == "/api/embed":
            inputs = body.get("input")
            inputs = inputs if isinstance(inputs, list) else [inputs]
            return JSONResponse({"model": model, "embeddings": [[0.5, 0.25, 0.125] for _ in inputs],
                                 "total_duration": 1000, "load_duration": 10, "prompt_eval_count": words(inputs)})
        chat_api = path == "/api/chat"
        limit = (body.get("options") or {}).get("num_predict")
        n, prompt = _n(limit), words(body.get("messages") if chat_api else body.get("prompt"))
        done_reason = "length" if limit else "stop"
        now = "2026-12-06T08:00:00.000000Z"

        def piece(text):
            d = {"model": model, "created_at": now}
            d.update({"message": {"role": "assistant", "content": text}} if chat_api else {"response": text})
            return d
        final = {**piece(""), "done": True, "done_reason": done_reason, "total_duration": 5000000,
                 "load_duration": 100000, "prompt_eval_count": prompt, "prompt_eval_duration": 1000000,
                 "eval_count": n, "eval_duration": 3000000}
        if not chat_api:
            final["context"] = [1, 2, 3]
        if body.get("stream") is False:
            whole = {**final, **piece("".join(tokens(n)))}
            return JSONResponse(whole)
        docs = [{**piece(t), "done": False} for t in tokens(n)] + [final]
        if model == "midstream-error":
            docs = docs[:2] + [{"error": "an error was encountered while running the model"}]
        return lines(docs)

    async def not_found(request: Request):
        return Response(b"404 page not found", 404, media_type="text/plain")

    llm = Starlette(routes=[
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/v1/responses", responses, methods=["POST"]),
        Route("/v1/embeddings", embeddings, methods=["POST"]),
        Route("/v1/messages", messages, methods=["POST"]),
        Route("/v1beta/models/{target:path}", gemini, methods=["POST"]),
        Route("/api/chat", ollama, methods=["POST"]),
        Route("/api/generate", ollama, methods=["POST"]),
        Route("/api/embed", ollama, methods=["POST"]),
        Route("/{rest:path}", not_found, methods=["GET", "POST"]),
    ])
    mcp_app = build_mcp_app()

    async def app(scope, receive, send):
        # The MCP app owns the lifespan (its session manager runs there); /mcp is its, the rest the APIs'.
        if scope["type"] == "lifespan" or scope.get("path", "").startswith("/mcp"):
            return await mcp_app(scope, receive, send)
        return await llm(scope, receive, send)
    return app


def build_mcp_app():
    from mcp.server.mcpserver import MCPServer

    server = MCPServer("ebpftool-test-tools", log_level="WARNING")

    @server.tool()
    def add(a: int, b: int) -> int:
        """Adds two integers."""
        return a + b

    @server.tool()
    def fail(reason: str) -> str:
        """Always fails: a tool error (isError) for the tests."""
        raise ValueError(f"failed on purpose: {reason}")

    return server.streamable_http_app(streamable_http_path="/mcp")


# -- the TLS front and its log ------------------------------------------------------------------------------

class Tap:
    """Accepts the clients (TLS or not), relays each connection to the app's Unix socket, and logs the
    plaintext each way, one line a read."""

    def __init__(self, log_path: str, uds: str) -> None:
        self.log = open(log_path, "a", buffering=1)
        self.uds = uds
        self.conns = 0

    def record(self, conn: int, direction: str, data: bytes = b"") -> None:
        self.log.write(json.dumps({"conn": conn, "dir": direction, "t": time.monotonic(),
                                   "data": base64.b64encode(data).decode()}) + "\n")

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.conns += 1
        conn = self.conns
        try:
            app_reader, app_writer = await asyncio.open_unix_connection(self.uds)
        except OSError:
            writer.close()
            return

        async def pump(src, dst, direction):
            try:
                while data := await src.read(65536):
                    self.record(conn, direction, data)
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, ssl.SSLError, OSError):
                pass
            finally:
                with contextlib.suppress(Exception):
                    if dst.can_write_eof():
                        dst.write_eof()
                    else:
                        dst.close()

        await asyncio.gather(pump(reader, app_writer, "request"), pump(app_reader, writer, "response"))
        self.record(conn, "close")
        for w in (writer, app_writer):
            with contextlib.suppress(Exception):
                w.close()


async def serve(port: int, log_path: str, tls: tuple[str, str] | None) -> None:
    import uvicorn

    with tempfile.TemporaryDirectory(prefix="ebpftool-llm-") as d:
        uds = os.path.join(d, "app.sock")
        config = uvicorn.Config(build_app(), uds=uds, log_level="warning", lifespan="on")
        server = uvicorn.Server(config)
        app_task = asyncio.create_task(server.serve())
        while not server.started:
            if app_task.done():
                await app_task           # it failed to start: say why
                return
            await asyncio.sleep(0.01)
        context = None
        if tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
        tap = Tap(log_path, uds)
        front = await asyncio.start_server(tap.handle, "127.0.0.1", port, ssl=context)
        print(f"ready {port}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        front.close()
        server.should_exit = True
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(app_task, 5)


@contextlib.contextmanager
def running(port: int, log_path: str, tls: tuple[str, str] | None = None, ready_timeout: float = 30.0):
    """Runs the servers as their own process; yields its pid once it listens on port."""
    root = Path(__file__).resolve().parents[2]
    args = [sys.executable, "-m", "tests.servers.llm_apis", str(port), str(log_path)]
    if tls:
        args += ["--tls", *tls]
    # stderr to a file, not a pipe nobody reads while the servers run: a full pipe would block them.
    errors = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen(args, cwd=root, stdout=subprocess.PIPE, stderr=errors, text=True)
    try:
        line = _read_line(proc, ready_timeout)
        if not line.startswith("ready"):
            proc.kill()
            proc.wait()
            errors.seek(0)
            raise RuntimeError(f"llm_apis did not start: {line!r} {errors.read()[-4000:]}")
        yield proc.pid
    finally:
        errors.close()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _read_line(proc: subprocess.Popen, timeout: float) -> str:
    """The process's first line of output, or "" if it exits or says nothing within timeout."""
    import selectors
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    try:
        return proc.stdout.readline() if sel.select(timeout) else ""
    finally:
        sel.close()


def read_log(path: str | os.PathLike) -> list[dict]:
    """The log's records, data decoded to bytes."""
    out = []
    for line in Path(path).read_text().splitlines():
        rec = json.loads(line)
        rec["data"] = base64.b64decode(rec["data"])
        out.append(rec)
    return out


def exchanges(records: list[dict]) -> list[dict]:
    """The log as one entry a connection: {"conn", "request": [(t, bytes)...], "response": [...]}, in the
    order the connections opened."""
    by_conn: dict[int, dict] = {}
    for rec in records:
        entry = by_conn.setdefault(rec["conn"], {"conn": rec["conn"], "request": [], "response": [],
                                                 "closed": False})
        if rec["dir"] == "close":
            entry["closed"] = True
        else:
            entry[rec["dir"]].append((rec["t"], rec["data"]))
    return [by_conn[k] for k in sorted(by_conn)]


def main(argv: list[str]) -> None:
    port, log_path = int(argv[0]), argv[1]
    tls = (argv[3], argv[4]) if len(argv) >= 5 and argv[2] == "--tls" else None
    asyncio.run(serve(port, log_path, tls))


if __name__ == "__main__":
    main(sys.argv[1:])
