"""What an LLM API (or MCP server) answered, read from the answer's bytes fed in pieces cut anywhere,
each with the time it was read: status, response model, tokens, finish reason, error type, and for a
stream the content chunks' count and times.

Pure (no BPF). The answer's text is read only to tell whether an event carries output; no text, id or
header value is kept. One AnswerReader per call, built from the Call its request was (calls.py):

    reader = AnswerReader(call)
    for piece, t in pieces:
        reader.feed(piece, t)
    answer = reader.finish()      # also when the connection closed mid-answer

Formats: Server-Sent Events (OpenAI chat/completions/responses, Anthropic messages, Gemini with
alt=sse, MCP), newline-delimited JSON (Ollama), a streamed JSON array (Gemini without alt=sse) and one
JSON document (every API not streamed, and error bodies).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from ebpftool.tracers.agents import calls as c
from ebpftool.tracers.agents.http1 import ResponseStream

RATE_LIMITED = "rate_limited"   # error.type of an HTTP 429, whatever the provider's body says
TOOL_ERROR = "tool_error"       # error.type of an MCP tool result with isError (the conventions' value)
OTHER_ERROR = "_OTHER"          # error.type of an error the answer gives no low-cardinality name for
MAX_EVENT = 1 << 20             # an SSE event or JSON line longer than this is skipped, not parsed
MAX_JSON_BODY = 4 << 20         # a JSON answer longer than this is read for its usage by pattern only
MAX_CHUNK_GAPS = 4096           # the gaps between content chunks kept for time per output chunk
_ERROR_TYPE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
_USAGE_PATTERN = re.compile(
    rb'"(prompt_tokens|completion_tokens|input_tokens|output_tokens|promptTokenCount|candidatesTokenCount|'
    rb'prompt_eval_count|eval_count)"\s*:\s*(\d{1,12})')


# An answer to a request that is no call we know (a GET, an MCP session's DELETE): read for its framing
# only, so that the answers after it on the connection are found.
UNRECOGNISED = c.Call("http", None, None, "/")


@dataclass
class Answer:
    status: int | None = None             # http.response.status_code
    streamed: bool = False                # it came as a stream (SSE, JSON lines, a JSON array)
    response_model: str | None = None     # gen_ai.response.model
    input_tokens: int | None = None       # gen_ai.usage.input_tokens (cached ones included)
    output_tokens: int | None = None      # gen_ai.usage.output_tokens (reasoning/thinking included)
    cache_read_tokens: int | None = None  # of the input, read from the provider's prompt cache
    cache_creation_tokens: int | None = None   # of the input, written to it (Anthropic)
    chunks: int = 0                       # stream events that carried output (text, tool call, reasoning)
    first_chunk_time: float | None = None  # the time passed with the piece holding the first of them
    last_chunk_time: float | None = None
    chunk_gaps: list[float] = field(default_factory=list)  # seconds between consecutive content chunks
    finish_reason: str | None = None      # gen_ai.response.finish_reasons[0], as the provider names it
    error_type: str | None = None         # error.type; None when the call succeeded
    rpc_status_code: str | None = None    # MCP: the JSON-RPC error code (rpc.response.status_code)
    result_time: float | None = None      # MCP: when the JSON-RPC answer came (its HTTP stream may go on)
    complete: bool = False                # its end was seen (length, last chunk, the stream's last event)

    @property
    def output_tokens_or_chunks(self) -> int | None:
        """The output tokens the answer reported, else (a stream without usage) its content chunks."""
        if self.output_tokens is not None:
            return self.output_tokens
        return self.chunks if self.streamed else None


def error_name(value: object) -> str | None:
    """A provider's error type or code as error.type: low-cardinality words only, else None."""
    if isinstance(value, bool) or value is None:
        return None
    text = str(value)
    return text if _ERROR_TYPE.match(text) else None


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _nonempty(value: object) -> bool:
    return bool(value) and (isinstance(value, (str, list, dict)))


class AnswerReader:
    def __init__(self, call: c.Call | None) -> None:
        self.call = call or UNRECOGNISED
        self.answer = Answer()
        self._http = ResponseStream()
        self._format: str | None = None      # sse | lines | array | json (None: not known yet)
        self._buf = b""                      # an SSE event or a JSON line not yet ended
        self._json = bytearray()             # a JSON answer (bounded)
        self._json_over = False
        self._json_tail = b""
        self._array = _ArraySplitter()
        self._now = 0.0
        self._rpc_done = False

    # -- feeding ------------------------------------------------------------------------------------
    def feed(self, data: bytes, t: float) -> None:
        """A piece of the answer as read, with the time it was read (seconds, any clock)."""
        self._now = t
        try:
            body = self._http.feed(data)
            if self._http.status is not None and self.answer.status is None:
                self._started()
            if body:
                self._body(body)
        except Exception:  # bytes from the wire: never let them crash the tracer
            pass

    @property
    def done(self) -> bool:
        """The answer's end was read (or its head could not be): feed no more; see leftover()."""
        return self._http.done or self._http.failed

    def leftover(self) -> bytes:
        """Bytes fed past this answer's end: the start of the next answer on the connection."""
        rest, self._http.leftover = self._http.leftover, b""
        return rest

    def finish(self, closed: bool = False) -> Answer:
        """The answer as far as it came. closed: the connection ended (a body without length ends)."""
        cut = False
        try:
            if closed:
                rest = self._http.end()
                if rest:
                    self._body(rest)
            # An event or line begun and never ended: the stream was cut, whatever the framing says (a
            # body that ends with the connection has no length to tell).
            cut = self._format in ("sse", "lines") and bool(self._buf.strip())
            self._flush()
        except Exception:
            pass
        a = self.answer
        a.complete = a.complete or (self._http.done and not self._http.failed and not cut)
        if a.status is not None and a.status >= 400:
            # The provider's error type where its body names one; else the status code (an untyped body,
            # Ollama's free text, says no more than the status does).
            typed = a.error_type not in (None, OTHER_ERROR)
            a.error_type = RATE_LIMITED if a.status == 429 else (a.error_type if typed else str(a.status))
        return a

    # -- the format ---------------------------------------------------------------------------------
    def _started(self) -> None:
        a = self.answer
        a.status = self._http.status
        ctype = self._http.content_type
        api = self.call.api
        if a.status is not None and a.status >= 400:
            self._format = "sse" if ctype == "text/event-stream" else "json"
        elif ctype == "text/event-stream":
            self._format = "sse"
        elif "ndjson" in ctype or "jsonl" in ctype:
            self._format = "lines"
        elif api == c.GEMINI_GENERATE and self.call.stream and not self.call.sse:
            self._format = "array"
        else:
            self._format = None               # decided on the first bytes
        a.streamed = self._format in ("sse", "lines", "array") and not (a.status or 0) >= 400

    def _body(self, data: bytes) -> None:
        if self._format is None:
            head = data.lstrip()
            if not head:
                return
            if head.startswith((b"data:", b"event:", b":")):
                self._format = "sse"
            elif self.call.api in (c.OLLAMA_CHAT, c.OLLAMA_GENERATE) and self.call.stream:
                self._format = "lines"
            else:
                self._format = "json"
            self.answer.streamed = self._format != "json" and not (self.answer.status or 0) >= 400
        if self._format == "sse":
            self._sse(data)
        elif self._format == "lines":
            self._lines(data)
        elif self._format == "array":
            for obj in self._array.feed(data):
                self._object(obj, None)
        elif self._format == "json":
            if len(self._json) + len(data) <= MAX_JSON_BODY and not self._json_over:
                self._json += data
            else:
                self._json_over = True
                self._json_tail = (self._json_tail + data)[-(64 << 10):]

    def _flush(self) -> None:
        if self._format == "sse" and self._buf.strip():
            self._sse(b"\n\n")
        elif self._format == "lines" and self._buf.strip():
            self._line(self._buf)
            self._buf = b""
        elif self._format == "json" and (self._json or self._json_over):
            self._whole()
            self._json = bytearray()

    # -- Server-Sent Events ---------------------------------------------------------------------------
    def _sse(self, data: bytes) -> None:
        self._buf += data
        while True:
            m = _EVENT_END.search(self._buf)
            if not m:
                if len(self._buf) > MAX_EVENT:
                    self._buf = b""
                return
            event, self._buf = self._buf[:m.start()], self._buf[m.end():]
            self._sse_event(event)

    def _sse_event(self, raw: bytes) -> None:
        name, data = None, []
        for line in raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n"):
            key, _, value = line.partition(b":")
            value = value[1:] if value.startswith(b" ") else value
            if key == b"event":
                name = value.decode("latin-1")
            elif key == b"data":
                data.append(value)
        if not data:
            return
        payload = b"\n".join(data)
        if payload.strip() == b"[DONE]":
            self.answer.complete = True
            return
        obj = _loads(payload)
        if obj is not None:
            self._object(obj, name)

    # -- JSON lines (Ollama) ----------------------------------------------------------------------------
    def _lines(self, data: bytes) -> None:
        self._buf += data
        *lines, self._buf = self._buf.split(b"\n")
        for line in lines:
            self._line(line)
        if len(self._buf) > MAX_EVENT:
            self._buf = b""

    def _line(self, line: bytes) -> None:
        if line.strip():
            obj = _loads(line)
            if obj is not None:
                self._object(obj, None)

    # -- one JSON document ---------------------------------------------------------------------------
    def _whole(self) -> None:
        obj = None if self._json_over else _loads(bytes(self._json))
        if obj is not None:
            self._object(obj, None)
            return
        # Too long (or cut): the usage fields by pattern, from its last bytes.
        tail = self._json_tail or bytes(self._json[-(64 << 10):])
        a = self.answer
        for name, value in _USAGE_PATTERN.findall(tail):
            n = int(value)
            if name in (b"prompt_tokens", b"input_tokens", b"promptTokenCount", b"prompt_eval_count"):
                a.input_tokens = n
            else:
                a.output_tokens = n

    # -- what an event or document says, by API --------------------------------------------------------
    def _object(self, obj: object, event: str | None) -> None:
        if isinstance(obj, list):            # a JSON array answer not streamed (Gemini, JSON-RPC batch)
            for item in obj[:10000]:
                self._object(item, event)
            return
        if not isinstance(obj, dict):
            return
        self._error_in(obj)
        api = self.call.api
        if api in (c.OPENAI_CHAT, c.OPENAI_COMPLETIONS, c.OPENAI_EMBEDDINGS):
            self._openai(obj)
        elif api == c.OPENAI_RESPONSES:
            self._responses(obj)
        elif api == c.ANTHROPIC_MESSAGES:
            self._anthropic(obj)
        elif api in (c.GEMINI_GENERATE, c.GEMINI_EMBED):
            self._gemini(obj)
        elif api in (c.OLLAMA_CHAT, c.OLLAMA_GENERATE, c.OLLAMA_EMBED):
            self._ollama(obj)
        elif api == c.MCP:
            self._mcp(obj)

    def _error_in(self, obj: dict) -> None:
        """A provider's error object, in an error answer or in a stream that had begun well."""
        err = obj.get("error")
        if obj.get("type") == "error" and isinstance(err, dict):        # Anthropic
            self._failed(err.get("type"))
        elif isinstance(err, dict) and "jsonrpc" not in obj:             # OpenAI, Gemini
            self._failed(err.get("type") or err.get("status") or err.get("code"))
        elif isinstance(err, str) and "jsonrpc" not in obj:              # Ollama: free text, not a type
            self._failed(None)

    def _failed(self, kind: object) -> None:
        if self.answer.error_type is None:
            self.answer.error_type = error_name(kind) or OTHER_ERROR

    def _model(self, value: object) -> None:
        if self.answer.response_model is None:
            self.answer.response_model = c.safe_name(value)

    def _chunk(self) -> None:
        a, t = self.answer, self._now
        if not a.streamed:
            return
        if a.first_chunk_time is None:
            a.first_chunk_time = t
        elif len(a.chunk_gaps) < MAX_CHUNK_GAPS:
            a.chunk_gaps.append(max(0.0, t - a.last_chunk_time))
        a.last_chunk_time = t
        a.chunks += 1

    def _finish(self, reason: object) -> None:
        if isinstance(reason, str) and reason:
            self.answer.finish_reason = c.safe_name(reason)

    def _openai(self, obj: dict) -> None:
        a = self.answer
        self._model(obj.get("model"))
        output = False
        for choice in obj.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta")
            if isinstance(delta, dict):        # chat: text, a tool call, a refusal, reasoning
                output = output or any(_nonempty(delta.get(k)) for k in
                                       ("content", "tool_calls", "function_call", "refusal", "reasoning_content",
                                        "reasoning"))
            elif a.streamed and _nonempty(choice.get("text")):   # completions
                output = True
            self._finish(choice.get("finish_reason"))
        if output:
            self._chunk()
        self._openai_usage(obj.get("usage"), "prompt_tokens", "completion_tokens", "prompt_tokens_details")

    def _openai_usage(self, usage: object, inp: str, out: str, details: str) -> None:
        """An OpenAI usage object, by the key names of its API (the cached input tokens are counted in the
        input there)."""
        if not isinstance(usage, dict):
            return
        a = self.answer
        a.input_tokens = _int(usage.get(inp))
        a.output_tokens = _int(usage.get(out))
        cached = usage.get(details)
        if isinstance(cached, dict):
            a.cache_read_tokens = _int(cached.get("cached_tokens"))

    def _responses(self, obj: dict) -> None:
        kind = obj.get("type")
        response = obj.get("response") if isinstance(obj.get("response"), dict) else None
        if kind is None and obj.get("object") == "response":      # not streamed: the response itself
            response = obj
        if isinstance(kind, str) and kind.endswith(".delta") and _nonempty(obj.get("delta")):
            self._chunk()
        elif kind == "error":
            self._failed(obj.get("code") or obj.get("type"))
        if response is None:
            return
        a = self.answer
        self._model(response.get("model"))
        if kind in ("response.completed", "response.incomplete", "response.failed") or kind is None:
            details = response.get("incomplete_details")
            reason = details.get("reason") if isinstance(details, dict) else None
            self._finish(reason or response.get("status"))
            if kind is not None:
                a.complete = True
            err = response.get("error")
            if isinstance(err, dict):
                self._failed(err.get("code") or err.get("type"))
        self._openai_usage(response.get("usage"), "input_tokens", "output_tokens", "input_tokens_details")

    def _anthropic(self, obj: dict) -> None:
        a = self.answer
        kind = obj.get("type")
        message = obj.get("message") if kind == "message_start" else obj if kind == "message" else None
        if isinstance(message, dict):
            self._model(message.get("model"))
            self._finish(message.get("stop_reason"))
            self._anthropic_usage(message.get("usage"))
        elif kind == "content_block_delta":
            delta = obj.get("delta")
            if isinstance(delta, dict) and any(_nonempty(delta.get(k)) for k in ("text", "partial_json", "thinking")):
                self._chunk()
        elif kind == "message_delta":
            delta = obj.get("delta")
            if isinstance(delta, dict):
                self._finish(delta.get("stop_reason"))
            self._anthropic_usage(obj.get("usage"))
        elif kind == "message_stop":
            a.complete = True

    def _anthropic_usage(self, usage: object) -> None:
        """Anthropic's input_tokens leaves out the tokens read from or written to the prompt cache: the
        input is their sum. A message_delta's counts are cumulative (output always, the rest where given)."""
        if not isinstance(usage, dict):
            return
        a = self.answer
        out = _int(usage.get("output_tokens"))
        if out is not None:
            a.output_tokens = out
        if "input_tokens" in usage:
            read = _int(usage.get("cache_read_input_tokens"))
            created = _int(usage.get("cache_creation_input_tokens"))
            plain = _int(usage.get("input_tokens"))
            if plain is not None:
                a.input_tokens = plain + (read or 0) + (created or 0)
                a.cache_read_tokens = read
                a.cache_creation_tokens = created

    def _gemini(self, obj: dict) -> None:
        a = self.answer
        self._model(obj.get("modelVersion"))
        output = False
        for cand in obj.get("candidates") or ():
            if not isinstance(cand, dict):
                continue
            content = cand.get("content")
            parts = content.get("parts") if isinstance(content, dict) else None
            for part in parts or ():
                if isinstance(part, dict) and (_nonempty(part.get("text")) or _nonempty(part.get("functionCall"))):
                    output = True
            self._finish(cand.get("finishReason"))
        if output:
            self._chunk()
        usage = obj.get("usageMetadata")
        if isinstance(usage, dict):             # cumulative in a stream: the last one counts
            a.input_tokens = _int(usage.get("promptTokenCount"))
            out = _int(usage.get("candidatesTokenCount"))
            thoughts = _int(usage.get("thoughtsTokenCount"))
            a.output_tokens = None if out is None and thoughts is None else (out or 0) + (thoughts or 0)
            a.cache_read_tokens = _int(usage.get("cachedContentTokenCount"))

    def _ollama(self, obj: dict) -> None:
        a = self.answer
        self._model(obj.get("model"))
        message = obj.get("message")
        if obj.get("done") is False:
            if (isinstance(message, dict) and any(_nonempty(message.get(k)) for k in ("content", "thinking", "tool_calls"))) \
                    or _nonempty(obj.get("response")) or _nonempty(obj.get("thinking")):
                self._chunk()
        elif obj.get("done") is True or "embeddings" in obj or "embedding" in obj:
            a.input_tokens = _int(obj.get("prompt_eval_count"))
            a.output_tokens = _int(obj.get("eval_count"))
            self._finish(obj.get("done_reason"))
            if obj.get("done") is True:
                a.complete = True

    def _mcp(self, obj: dict) -> None:
        """The JSON-RPC answer to the call's id (a stream may carry notifications and requests first)."""
        if obj.get("jsonrpc") != "2.0" or self._rpc_done:
            return
        rid = obj.get("id")
        if rid is None or ("result" not in obj and "error" not in obj):
            return
        if self.call.jsonrpc_id is not None and str(rid) != self.call.jsonrpc_id:
            return
        self._rpc_done = True
        self.answer.complete = True
        self.answer.result_time = self._now
        err = obj.get("error")
        if isinstance(err, dict):
            code = err.get("code")
            code = str(code) if isinstance(code, int) and not isinstance(code, bool) else None
            self.answer.rpc_status_code = code
            self.answer.error_type = code or OTHER_ERROR
        result = obj.get("result")
        if isinstance(result, dict) and result.get("isError") is True:
            self.answer.error_type = TOOL_ERROR


_EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")


def _loads(data: bytes) -> object:
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None


class _ArraySplitter:
    """The elements of a JSON array streamed in pieces (Gemini's streamGenerateContent without alt=sse):
    each complete top-level object inside the array, parsed, as soon as its closing brace came."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._depth = 0
        self._in_string = False
        self._escape = False

    def feed(self, data: bytes) -> list:
        out = []
        for b in data:
            if self._depth == 0:
                if b == 0x7B:                    # {
                    self._buf = bytearray(b"{")
                    self._depth = 1
                continue
            if len(self._buf) < MAX_EVENT:
                self._buf.append(b)
            if self._in_string:
                if self._escape:
                    self._escape = False
                elif b == 0x5C:                  # backslash
                    self._escape = True
                elif b == 0x22:
                    self._in_string = False
            elif b == 0x22:
                self._in_string = True
            elif b == 0x7B:
                self._depth += 1
            elif b == 0x7D:
                self._depth -= 1
                if self._depth == 0:
                    obj = _loads(bytes(self._buf))
                    if obj is not None:
                        out.append(obj)
        return out
