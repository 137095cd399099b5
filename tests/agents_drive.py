"""The calls the agents' tests make against tests/servers/llm_apis.py, through the official clients, and
what each client said it got: the truth the parsers of ebpftool.tracers.agents are held to.

Each driver makes its calls one after another and returns one Expected per LLM call or MCP tool call, in
order, built only from what the client library returned or raised (for Gemini and Ollama, which have no
official client here, from the JSON the plain HTTP client decoded). Used live by
tests/test_agents_clients.py, and by `python -m tests.agents_drive DIR` to record the wire and the
expectations that tests/test_agents_parse.py replays (tests/fixtures/agents/).
"""
from __future__ import annotations

import asyncio
import json
import shutil
import ssl
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from ebpftool.tracers.agents.connection import ClientConnection, Exchange

# Secrets the clients send: API keys in headers, a prompt in the body. No parser output may hold them.
OPENAI_KEY = "sk-test-OPENAI-KEY-never-exported-4f1d"
ANTHROPIC_KEY = "sk-ant-test-ANTHROPIC-KEY-never-exported-9c2e"
GEMINI_KEY = "AIzaTEST-GEMINI-KEY-never-exported-77aa"
PROMPT = "SECRET-PROMPT-never-exported: summarise the quarterly numbers"
SECRETS = (OPENAI_KEY, ANTHROPIC_KEY, GEMINI_KEY, PROMPT, "SECRET-PROMPT")
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "agents"


@dataclass
class Expected:
    name: str                       # what the step did, for messages
    api: str
    provider: str | None
    operation: str | None
    request_model: str | None = None
    stream: bool = False
    status: int = 200
    response_model: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    chunks: int = 0
    finish_reason: str | None = None
    error_type: str | None = None
    mcp_method: str | None = None
    tool_name: str | None = None
    client_first_chunk: float | None = field(default=None, compare=False)   # time.monotonic() at the client


def _messages() -> list[dict]:
    return [{"role": "user", "content": PROMPT}]


# -- OpenAI ---------------------------------------------------------------------------------------------

def drive_openai(base: str, ca: str) -> list[Expected]:
    import openai

    client = openai.OpenAI(base_url=f"{base}/v1", api_key=OPENAI_KEY, max_retries=0, timeout=30,
                           http_client=openai.DefaultHttpxClient(verify=ssl.create_default_context(cafile=ca)))
    out: list[Expected] = []
    chat = dict(api="openai.chat_completions", provider="openai", operation="chat")

    r = client.chat.completions.create(model="gpt-4o", messages=_messages())
    out.append(Expected("chat", **chat, request_model="gpt-4o", response_model=r.model,
                        input_tokens=r.usage.prompt_tokens, output_tokens=r.usage.completion_tokens,
                        finish_reason=r.choices[0].finish_reason))

    for include_usage in (False, True):
        extra = {"stream_options": {"include_usage": True}} if include_usage else {}
        chunks, first = [], None
        for ch in client.chat.completions.create(model="gpt-4o-mini", messages=_messages(), max_tokens=7,
                                                 stream=True, **extra):
            if ch.choices and ch.choices[0].delta.content and first is None:
                first = time.monotonic()
            chunks.append(ch)
        usage = chunks[-1].usage if include_usage else None
        out.append(Expected(f"chat stream usage={include_usage}", **chat, request_model="gpt-4o-mini", stream=True,
                            response_model=chunks[0].model,
                            input_tokens=usage.prompt_tokens if usage else None,
                            output_tokens=usage.completion_tokens if usage else None,
                            chunks=sum(1 for ch in chunks if ch.choices and ch.choices[0].delta.content),
                            finish_reason=next(ch.choices[0].finish_reason for ch in chunks
                                               if ch.choices and ch.choices[0].finish_reason),
                            client_first_chunk=first))

    # An agent's turn: the model answers with a tool call, its arguments streamed in fragments.
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "The weather in a city",
                                               "parameters": {"type": "object",
                                                              "properties": {"city": {"type": "string"}}}}}]
    chunks = list(client.chat.completions.create(model="gpt-4.1-mini", messages=_messages(), tools=tools,
                                                 stream=True, stream_options={"include_usage": True}))
    calls = [tc for ch in chunks if ch.choices for tc in ch.choices[0].delta.tool_calls or ()]
    assert calls[0].function.name == "get_weather" and "".join(tc.function.arguments for tc in calls) == \
        '{"city": "Paris"}'
    out.append(Expected("chat stream tool call", **chat, request_model="gpt-4.1-mini", stream=True,
                        response_model=chunks[0].model, input_tokens=chunks[-1].usage.prompt_tokens,
                        output_tokens=chunks[-1].usage.completion_tokens,
                        chunks=sum(1 for ch in chunks if ch.choices and (ch.choices[0].delta.content
                                                                         or ch.choices[0].delta.tool_calls)),
                        finish_reason=next(ch.choices[0].finish_reason for ch in chunks
                                           if ch.choices and ch.choices[0].finish_reason)))

    comp = dict(api="openai.completions", provider="openai", operation="text_completion")
    r = client.completions.create(model="gpt-3.5-turbo-instruct", prompt=PROMPT, max_tokens=3)
    out.append(Expected("completions", **comp, request_model="gpt-3.5-turbo-instruct", response_model=r.model,
                        input_tokens=r.usage.prompt_tokens, output_tokens=r.usage.completion_tokens,
                        finish_reason=r.choices[0].finish_reason))
    chunks = list(client.completions.create(model="gpt-3.5-turbo-instruct", prompt=PROMPT, stream=True,
                                            stream_options={"include_usage": True}))
    out.append(Expected("completions stream", **comp, request_model="gpt-3.5-turbo-instruct", stream=True,
                        response_model=chunks[0].model, input_tokens=chunks[-1].usage.prompt_tokens,
                        output_tokens=chunks[-1].usage.completion_tokens,
                        chunks=sum(1 for ch in chunks if ch.choices and ch.choices[0].text),
                        finish_reason=next(ch.choices[0].finish_reason for ch in chunks
                                           if ch.choices and ch.choices[0].finish_reason)))

    resp = dict(api="openai.responses", provider="openai", operation="chat")
    r = client.responses.create(model="gpt-4.1", input=PROMPT, max_output_tokens=4)
    out.append(Expected("responses", **resp, request_model="gpt-4.1", response_model=r.model,
                        input_tokens=r.usage.input_tokens, output_tokens=r.usage.output_tokens,
                        finish_reason=r.incomplete_details.reason if r.incomplete_details else r.status))
    events, first = [], None
    for ev in client.responses.create(model="gpt-4.1", input=PROMPT, stream=True):
        if ev.type == "response.output_text.delta" and first is None:
            first = time.monotonic()
        events.append(ev)
    final = events[-1].response
    out.append(Expected("responses stream", **resp, request_model="gpt-4.1", stream=True, response_model=final.model,
                        input_tokens=final.usage.input_tokens, output_tokens=final.usage.output_tokens,
                        chunks=sum(1 for ev in events if ev.type == "response.output_text.delta"),
                        finish_reason=final.status, client_first_chunk=first))

    events = list(client.responses.create(model="midstream-error", input=PROMPT, stream=True))
    failed = events[-1].response
    assert events[-1].type == "response.failed"
    out.append(Expected("responses stream failed", **resp, request_model="midstream-error", stream=True,
                        response_model=failed.model,
                        chunks=sum(1 for ev in events if ev.type == "response.output_text.delta"),
                        finish_reason=failed.status, error_type=failed.error.code))

    emb = dict(api="openai.embeddings", provider="openai", operation="embeddings")
    for fmt in ("float", None):          # the client asks for base64 when not told
        kwargs = {"encoding_format": fmt} if fmt else {}
        r = client.embeddings.create(model="text-embedding-3-small", input=[PROMPT, "two"], **kwargs)
        assert len(r.data) == 2 and len(r.data[0].embedding) == 8
        out.append(Expected(f"embeddings {fmt or 'base64'}", **emb, request_model="text-embedding-3-small",
                            response_model=r.model, input_tokens=r.usage.prompt_tokens))

    for model, error in (("rate-limited", openai.RateLimitError), ("bad-request", openai.BadRequestError),
                         ("server-error", openai.InternalServerError)):
        try:
            client.chat.completions.create(model=model, messages=_messages())
            raise AssertionError(f"{model}: no error")
        except error as exc:
            body = exc.body if isinstance(exc.body, dict) else {}
            out.append(Expected(f"chat {model}", **chat, request_model=model, status=exc.status_code,
                                error_type="rate_limited" if exc.status_code == 429 else body.get("type")))
    chunks = []
    try:
        for ch in client.chat.completions.create(model="midstream-error", messages=_messages(), stream=True):
            chunks.append(ch)
        raise AssertionError("midstream-error: no error")
    except openai.APIError as exc:
        body = exc.body if isinstance(exc.body, dict) else {}
        out.append(Expected("chat midstream error", **chat, request_model="midstream-error", stream=True,
                            response_model=chunks[0].model if chunks else None,
                            chunks=sum(1 for ch in chunks if ch.choices and ch.choices[0].delta.content),
                            error_type=body.get("type")))
    client.close()
    return out


# -- Anthropic ------------------------------------------------------------------------------------------

def _anthropic_input(usage) -> int:
    """What the API billed as input: its input_tokens leave out the prompt cache's reads and writes."""
    return usage.input_tokens + (usage.cache_read_input_tokens or 0) + (usage.cache_creation_input_tokens or 0)


def drive_anthropic(base: str, ca: str) -> list[Expected]:
    import anthropic

    client = anthropic.Anthropic(base_url=base, api_key=ANTHROPIC_KEY, max_retries=0, timeout=30,
                                 http_client=anthropic.DefaultHttpxClient(
                                     verify=ssl.create_default_context(cafile=ca)))
    msg = dict(api="anthropic.messages", provider="anthropic", operation="chat")
    out: list[Expected] = []
    m = client.messages.create(model="claude-sonnet-4-5", max_tokens=4, messages=_messages())
    out.append(Expected("messages", **msg, request_model="claude-sonnet-4-5", response_model=m.model,
                        input_tokens=_anthropic_input(m.usage), output_tokens=m.usage.output_tokens,
                        finish_reason=m.stop_reason))
    deltas, first = 0, None
    with client.messages.stream(model="claude-haiku-4-5", max_tokens=50, system="be brief",
                                messages=_messages()) as stream:
        for ev in stream:
            if ev.type == "content_block_delta" and ev.delta.type == "text_delta" and ev.delta.text:
                deltas += 1
                first = first or time.monotonic()
        final = stream.get_final_message()
    out.append(Expected("messages stream", **msg, request_model="claude-haiku-4-5", stream=True,
                        response_model=final.model, input_tokens=_anthropic_input(final.usage),
                        output_tokens=final.usage.output_tokens, chunks=deltas, finish_reason=final.stop_reason,
                        client_first_chunk=first))
    for model in ("rate-limited", "overloaded", "bad-request"):
        try:
            client.messages.create(model=model, max_tokens=4, messages=_messages())
            raise AssertionError(f"{model}: no error")
        except anthropic.APIStatusError as exc:
            kind = (exc.body or {}).get("error", {}).get("type")
            out.append(Expected(f"messages {model}", **msg, request_model=model, status=exc.status_code,
                                error_type="rate_limited" if exc.status_code == 429 else kind))
    deltas = 0
    try:
        for ev in client.messages.create(model="midstream-error", max_tokens=9, messages=_messages(), stream=True):
            if ev.type == "content_block_delta":
                deltas += 1
            if ev.type == "message_start":
                start = ev.message
        raise AssertionError("midstream-error: no error")
    except anthropic.APIStatusError as exc:
        kind = (exc.body or {}).get("error", {}).get("type")
        out.append(Expected("messages midstream error", **msg, request_model="midstream-error", stream=True,
                            response_model=start.model, input_tokens=_anthropic_input(start.usage),
                            output_tokens=start.usage.output_tokens, chunks=deltas, error_type=kind))
    client.close()
    return out


# -- MCP --------------------------------------------------------------------------------------------------

def drive_mcp(base: str, ca: str) -> list[Expected]:
    """The mcp package's client, in the protocol it negotiates by default and in the legacy handshake
    (initialize, answers as Server-Sent Events on a session)."""
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    async def run(mode: str) -> list[Expected]:
        out = []
        async with httpx2.AsyncClient(verify=ssl.create_default_context(cafile=ca)) as http:
            async with Client(streamable_http_client(f"{base}/mcp", http_client=http), mode=mode) as client:
                tools = await client.list_tools()
                assert {t.name for t in tools.tools} == {"add", "fail"}
                for name, args in (("add", {"a": 2, "b": 40}), ("fail", {"reason": PROMPT})):
                    r = await client.call_tool(name, args)
                    if name == "add":
                        assert r.structured_content == {"result": 42}, r
                    out.append(Expected(f"mcp {mode} {name}", api="mcp", provider=None, operation="execute_tool",
                                        mcp_method="tools/call", tool_name=name,
                                        error_type="tool_error" if r.is_error else None))
        return out

    return asyncio.run(run("auto")) + asyncio.run(run("legacy"))


# -- Gemini and Ollama: no official client here; a plain HTTP client and the JSON it decoded ---------------

def drive_gemini(base: str, ca: str) -> list[Expected]:
    import httpx2

    out: list[Expected] = []
    gen = dict(api="gemini.generate_content", provider="gcp.gen_ai", operation="generate_content")
    body = {"contents": [{"role": "user", "parts": [{"text": PROMPT}]}], "generationConfig": {"maxOutputTokens": 3}}
    with httpx2.Client(base_url=base, verify=ssl.create_default_context(cafile=ca), timeout=30,
                       headers={"x-goog-api-key": GEMINI_KEY}) as http:
        def expect(name, model, docs, stream, status=200):
            last = docs[-1] if docs else {}
            usage = last.get("usageMetadata", {})
            texts = [d for d in docs if any(p.get("text") for c in d.get("candidates", ())
                                            for p in c.get("content", {}).get("parts", ()))]
            reasons = [c["finishReason"] for d in docs for c in d.get("candidates", ()) if c.get("finishReason")]
            return Expected(name, **gen, request_model=model, stream=stream, status=status,
                            response_model=last.get("modelVersion"), input_tokens=usage.get("promptTokenCount"),
                            output_tokens=usage.get("candidatesTokenCount"), chunks=len(texts) if stream else 0,
                            finish_reason=reasons[-1] if reasons else None)

        r = http.post("/v1beta/models/gemini-2.5-flash:generateContent", json=body)
        out.append(expect("gemini", "gemini-2.5-flash", [r.json()], False))
        with http.stream("POST", "/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse",
                         json={"contents": body["contents"]}) as r:
            docs = [json.loads(line[5:]) for line in r.iter_lines() if line.startswith("data:")]
        out.append(expect("gemini stream sse", "gemini-2.5-pro", docs, True))
        r = http.post("/v1beta/models/gemini-2.5-flash-lite:streamGenerateContent", json=body)
        out.append(expect("gemini stream array", "gemini-2.5-flash-lite", r.json(), True))
        r = http.post("/v1beta/models/rate-limited:generateContent", json=body)
        out.append(Expected("gemini 429", **gen, request_model="rate-limited", status=r.status_code,
                            error_type="rate_limited"))
        r = http.post("/v1beta/models/bad-request:generateContent", json=body)
        out.append(Expected("gemini 400", **gen, request_model="bad-request", status=r.status_code,
                            error_type=r.json()["error"]["status"]))
    return out


def drive_ollama(base: str, ca: str) -> list[Expected]:
    import httpx2

    out: list[Expected] = []
    with httpx2.Client(base_url=base, verify=ssl.create_default_context(cafile=ca), timeout=30) as http:
        def lines(path, body):
            with http.stream("POST", path, json=body) as r:
                return r.status_code, [json.loads(line) for line in r.iter_lines() if line.strip()]

        for path, op, key in (("/api/chat", "chat", "messages"), ("/api/generate", "text_completion", "prompt")):
            api = "ollama." + path.rsplit("/", 1)[1]
            value = _messages() if key == "messages" else PROMPT
            status, docs = lines(path, {"model": "llama3.2", key: value, "options": {"num_predict": 4}})
            last = docs[-1]
            texts = [d for d in docs if not d["done"] and (d.get("message", {}).get("content") or d.get("response"))]
            out.append(Expected(f"ollama {path} stream", api=api, provider="ollama", operation=op,
                                request_model="llama3.2", stream=True, response_model=last["model"],
                                input_tokens=last["prompt_eval_count"], output_tokens=last["eval_count"],
                                chunks=len(texts), finish_reason=last["done_reason"]))
        r = http.post("/api/chat", json={"model": "qwen3", "messages": _messages(), "stream": False}).json()
        out.append(Expected("ollama chat", api="ollama.chat", provider="ollama", operation="chat",
                            request_model="qwen3", response_model=r["model"], input_tokens=r["prompt_eval_count"],
                            output_tokens=r["eval_count"], finish_reason=r["done_reason"]))
        r = http.post("/api/embed", json={"model": "nomic-embed-text", "input": [PROMPT, "two"]}).json()
        out.append(Expected("ollama embed", api="ollama.embed", provider="ollama", operation="embeddings",
                            request_model="nomic-embed-text", response_model=r["model"],
                            input_tokens=r["prompt_eval_count"]))
        r = http.post("/api/chat", json={"model": "rate-limited", "messages": _messages()})
        out.append(Expected("ollama 404", api="ollama.chat", provider="ollama", operation="chat",
                            request_model="rate-limited", stream=True, status=r.status_code,
                            error_type=str(r.status_code)))
        status, docs = lines("/api/chat", {"model": "midstream-error", "messages": _messages()})
        out.append(Expected("ollama midstream error", api="ollama.chat", provider="ollama", operation="chat",
                            request_model="midstream-error", stream=True, response_model=docs[0]["model"],
                            chunks=sum(1 for d in docs if d.get("message", {}).get("content")),
                            error_type="_OTHER" if "error" in docs[-1] else None))
    return out


# -- reading a log back ----------------------------------------------------------------------------------

COMPARED = [f.name for f in fields(Expected) if f.compare and f.name != "name"]


def observed(ex: Exchange) -> dict:
    """An exchange as the parsers read it, in Expected's terms."""
    call, a = ex.call, ex.answer
    return {"api": call.api, "provider": call.provider, "operation": call.operation,
            "request_model": call.request_model, "stream": call.stream, "status": a and a.status,
            "response_model": a and a.response_model, "input_tokens": a and a.input_tokens,
            "output_tokens": a and a.output_tokens, "chunks": a.chunks if a else 0,
            "finish_reason": a and a.finish_reason, "error_type": a and a.error_type,
            "mcp_method": call.mcp_method, "tool_name": call.tool_name}


def expected_view(e: dict) -> dict:
    return {k: e[k] for k in COMPARED}


def replay(records: list[dict], pieces=None) -> list[Exchange]:
    """The calls in log records, read with the parsers as the tracer will read them: each connection's
    writes and reads in order, each record's data cut by pieces(record) (default: as read), each piece
    carrying its record's time. Only LLM calls and MCP tool calls, in the order they were made. A
    connection whose close is not in the records ends at its last record."""
    conns: dict[int, ClientConnection] = {}
    out: list[Exchange] = []
    for rec in records:
        cc = conns.setdefault(rec["conn"], ClientConnection())
        parts = pieces(rec) if pieces else [rec["data"]]
        if rec["dir"] == "request":
            for p in parts:
                cc.request(p, rec["t"])
        elif rec["dir"] == "response":
            for p in parts:
                out += cc.response(p, rec["t"])
        else:
            out += cc.close(rec["t"])
            del conns[rec["conn"]]
    # A connection still open when the log was read (its close not logged yet) ends with the log.
    last = {rec["conn"]: rec["t"] for rec in records}
    for conn, cc in conns.items():
        out += cc.close(last[conn])
    calls = [ex for ex in out if ex.call is not None and (ex.call.api != "mcp" or ex.call.mcp_method == "tools/call")]
    return sorted(calls, key=lambda ex: ex.start)


def records_between(records: list[dict], first: int, last: int) -> list[dict]:
    return [r for r in records if first <= r["conn"] <= last]


def last_conn(log: Path) -> int:
    """The highest connection number in a server log so far (0 for none)."""
    if not log.exists():
        return 0
    return max((json.loads(line)["conn"] for line in log.read_text().splitlines()), default=0)


DRIVERS = {"openai": drive_openai, "anthropic": drive_anthropic, "mcp": drive_mcp, "gemini": drive_gemini,
           "ollama": drive_ollama}


# -- recording the fixtures -------------------------------------------------------------------------------

def record(out_dir: Path = FIXTURES) -> None:
    """Runs the servers over TLS, drives every client, and writes the plaintext log (wire.jsonl) and what
    the clients got (expected.json) to out_dir."""
    from tests.servers import llm_apis
    from tests.servers.nginx import free_port

    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ebpftool-agents-") as d:
        certs = llm_apis.make_certificates(d)
        log = Path(d) / "wire.jsonl"
        port = free_port()
        expected = {}
        with llm_apis.running(port, str(log), tls=(certs["cert"], certs["key"])):
            for name, drive in DRIVERS.items():
                first = last_conn(log) + 1
                calls = [asdict(e) for e in drive(f"https://127.0.0.1:{port}", certs["ca"])]
                for e in calls:
                    e.pop("client_first_chunk", None)
                # each driver opens connections of its own, after the last driver's
                expected[name] = {"conns": [first, last_conn(log)], "calls": calls}
        shutil.copy(log, out_dir / "wire.jsonl")
    (out_dir / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")


if __name__ == "__main__":
    record(Path(sys.argv[1]) if len(sys.argv) > 1 else FIXTURES)
