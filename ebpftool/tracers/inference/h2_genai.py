"""Generative-AI requests carried by HTTP/2 streams: their tokens, times, stated usage and model, read in user
space from the stream's DATA (HTTP/1's are read in the kernel: bpf/inference/sse.bpf.h and model.bpf.h).

Pure Python fed bytes, no BPF; it never raises on garbage and keeps no text: a bounded carry of the current
line's last bytes (for a pattern split between DATA frames), the model's first bytes while it is looked for,
and counts and times. What comes out: the model name (made safe as parsers does) and numbers.

The rules are sse.bpf.h's, so that one answer gives the same figures over HTTP/1 and HTTP/2:
- An event is a `data:` line (at a line start: the answer's first byte, or after a '\\n') other than
  `data: [DONE]` (`data:` then `[` or ` [`), and on Ollama's paths (ndjson) a line that begins with `{`.
- An event is a token unless it shows a mark of a chunk that carries no output text: `"role":"assistant",
  "content":""` (the role chunk: an empty content without the role is a token whose text the server held
  back, as vLLM sends it), `"text":""`, `"response":""`, `"output":""` (empty chunk; Ollama's final object),
  `"role":"assistant"}` (a role-only delta), `"delta":{}` (finish-only chunk), `"choices":[]` (usage-only
  chunk), `"special":true` (TGI's special tokens), `"stop":true` (llama.cpp's /completion, its last event),
  `"done":true` (Ollama's final object). A mark belongs to
  the last event begun before it (in its line, or a line after it that is not an event).
- An event whose `event:` line names one of the Responses API's events (`response.…`) or Anthropic's
  Messages API's (`message_…`, `content_…`, `ping`, `error`) is a token when that name ends in `delta`,
  `message_delta` excepted, whatever its data shows; other names change nothing.
- The stated output-token count is the last `"completion_tokens":N` (OpenAI), `"output_tokens":N`,
  `"generated_tokens":N` (TGI) or `"eval_count":N` (Ollama) seen; a request's output tokens are that count
  if the answer states one, else its token events (`output_tokens`).
- A token's time is when the bytes holding its line's first byte were written (HTTP/1: the write's).
- The model: the first `"model":"NAME"` or `"model_name":"NAME"` (Triton) in the answer's first 512 bytes.
Where the kernel's scan is bounded (the first 1,024 bytes of each write, 8 words with marks per write) this
reader is not: it reads every byte it is given.

What the kernel left out (a DATA frame's bytes between its first 512 and, from the server, its last 512:
`DataPiece.skipped`) is counted in `unseen_bytes`: events there are not counted, a usage stated there is not
read (one stated at an answer's end, in the last 512 bytes, is). An event whose line the gap cut
(`cut_events`) is not a token either: its
mark may lie in the bytes not seen (a proxy that writes the last token, the finish-only and the usage-only
chunks in one DATA frame cuts the usage-only one, whose `"choices":[]` then lies past the 512 bytes), so the
tokens counted are never more than the answer's, only fewer where bytes were not seen. The bytes after a gap
are read as beginning a line (as HTTP/1's kernel reads each write: servers write whole events).
"""
from __future__ import annotations

import re

from ebpftool.tracers.inference import parsers

MODEL_SCAN_MAX = 512       # bytes of an answer searched for its model (bpf/inference/model.bpf.h)
MODEL_NAME_MAX = 64        # inference.h MODEL_NAME_MAX: a longer name is not taken
LINE_CARRY = 64            # bytes of the current line kept across pieces: > the longest mark or count with its number
LINE_HEAD = 8              # bytes of a line that tell what it is (`data: [`)
REQUEST_CARRY = 320        # bytes of a request body kept across pieces while its "model" is looked for
COUNT_MAX = 0xFFFFFFFF     # the kernel's counts are u32

NDJSON_PATHS = ("/api/chat", "/api/generate")   # Ollama: its answers are JSON lines (classify_path's OP_NDJSON)
SSE_CONTENT_TYPE = b"text/event-stream"
STREAM_OPERATION = "generate_content"   # an answer of events on another path (parsers.operation_name, streamed)

_MARKS = (b'oices":[]', b'oices": []', b'ssistant","content":""', b'ssistant", "content": ""', b'"text":""',
          b'"text": ""', b'sponse":""',
          b'output":""', b'"delta":{}', b'delta": {}', b'"done":t', b'"stop":t', b'pecial":t',
          b'ssistant"}')
_MARK = re.compile(b"|".join(re.escape(m) for m in _MARKS))
# the names whose events a name decides (sse.bpf.h's known_event_name): by their first 8 bytes, or whole
_EVENT_NAME_STARTS = (b"response", b"message_", b"content_")
_EVENT_NAMES = (b"ping", b"ping\r", b"error", b"error\r")
# what every mark holds (the kernel's triggers, sse.bpf.h): most token lines hold none, and skip the regex
_MARK_HINTS = (b'""', b"[]", b"{}", b'":t', b't"}')
# a count's number: one optional space, then up to 10 digits (longer: the first 10, as the kernel reads them)
_OUTPUT_COUNT = re.compile(rb'(?:mpletion_tokens|enerated_tokens|"output_tokens|"eval_count)": ?(\d{1,10})')
_INPUT_COUNT = re.compile(rb'(?:"prompt_tokens|"input_tokens)": ?(\d{1,10})')
_MODEL_KEY = re.compile(rb'"model":|"model_name":"')
# a name and its closing quote within MODEL_NAME_MAX bytes, no escape or control byte (model.bpf.h)
_MODEL_NAME = re.compile(rb'[^"\\\x00-\x1f]{1,%d}"' % (MODEL_NAME_MAX - 1))
_MODEL_NAME_SO_FAR = re.compile(rb'[^"\\\x00-\x1f]{0,%d}' % (MODEL_NAME_MAX - 1))


def operation(method: str | None, path: str | None) -> str | None:
    """gen_ai.operation.name of a request from its :path, as HTTP/1's is from its request line (the kernel's
    classify_path, parsers.operation_name); None for a request that is not a generative-AI one. The method
    does not matter, as over HTTP/1."""
    if not path:
        return None
    return parsers.operation_name(path, False)


def is_known_event_line(line: bytes) -> bool:
    """Whether a whole line (its '\n' left out) is an `event:` line naming one of the Responses API's or
    Anthropic's events (sse.bpf.h's known_event_name)."""
    def known(name: bytes) -> bool:
        return name[:8] in _EVENT_NAME_STARTS or name in _EVENT_NAMES
    return line.startswith(b"event:") and (known(line[6:]) or (line[6:7] == b" " and known(line[7:])))


def is_ndjson(path: str | None) -> bool:
    """Whether answers on this path are JSON lines (Ollama's), whose objects are events."""
    return bool(path) and path.startswith(NDJSON_PATHS)


def _number(window: bytes, m: re.Match, line_ended: bool) -> int | None:
    """A count's number, if it ends inside the bytes (else it may go on in the next piece)."""
    if m.end() == len(window) and not line_ended:
        return None
    return min(int(m.group(1)), COUNT_MAX)


class GenAiReader:
    """One stream's generative-AI request and answer: `request()` with the client's DATA, `response()` with the
    server's (in order, with the time of the bytes), `finish()` at the stream's end; then the figures."""

    __slots__ = ("operation", "ndjson", "request_model", "stream", "events", "tokens", "first_token_ns",
                 "last_token_ns", "stated_output_tokens", "stated_input_tokens", "response_model", "unseen_bytes",
                 "unseen_request_bytes", "cut_events", "_request_carry", "_model_window", "_model_done", "_head", "_kind",
                 "_line_ts", "_tail", "_open", "_open_ts", "_open_marked", "_finished", "_line_named", "_name",
                 "_open_name")

    def __init__(self, operation: str, ndjson: bool = False) -> None:
        self.operation = operation
        self.ndjson = ndjson
        self.request_model: str | None = None    # the request body's "model"
        self.stream: bool | None = None          # the request body's "stream"
        self.events = 0                          # events (tokens and marked ones)
        self.tokens = 0                          # token events
        self.first_token_ns: int | None = None
        self.last_token_ns: int | None = None
        self.stated_output_tokens: int | None = None
        self.stated_input_tokens: int | None = None
        self.response_model: str | None = None
        self.unseen_bytes = 0                    # answer bytes not seen (DATA past a frame's first 512 bytes)
        self.unseen_request_bytes = 0
        self.cut_events = 0                      # events whose line went on in bytes not seen: not counted
        self._request_carry = b""
        self._model_window = bytearray()
        self._model_done = False
        self._head = bytearray()                 # the current line's first bytes, until it is classified
        self._kind: bool | None = None           # the current line: an event (True), another line (False)
        self._line_ts = 0                        # time of the current line's first byte
        self._tail = b""                         # the current line's last bytes (LINE_CARRY)
        self._open = False                       # an event is open (begun, not yet counted)
        self._open_ts = 0
        self._open_marked = False
        self._finished = False
        self._line_named = False                 # the current line is an `event:` line
        self._name: bool | None = None           # an `event:` line since the last event: a token's name (True)
        self._open_name: bool | None = None      # the open event's name said a token (True), not (False), none

    # -- results ----------------------------------------------------------------------------------------
    @property
    def output_tokens(self) -> int:
        """The request's output tokens: the count its answer stated, else its token events."""
        return self.stated_output_tokens if self.stated_output_tokens is not None else self.tokens

    def result(self) -> tuple:
        return (self.operation, self.request_model, self.stream, self.events, self.tokens, self.first_token_ns,
                self.last_token_ns, self.stated_output_tokens, self.stated_input_tokens, self.response_model,
                self.unseen_bytes, self.unseen_request_bytes, self.cut_events)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GenAiReader) and self.result() == other.result()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"GenAiReader{self.result()!r}"

    # -- the request ------------------------------------------------------------------------------------
    def request(self, data: bytes, skipped: int = 0) -> None:
        """Request DATA: its "model" and "stream" (parsers.fill_body_fields), split between pieces or not."""
        try:
            if skipped > 0:
                self.unseen_request_bytes += skipped
            if not data or (self.request_model is not None and self.stream is not None):
                return
            window = self._request_carry + bytes(data)
            found = parsers.Request("", "", "", self.request_model, self.stream)
            parsers.fill_body_fields(found, window)
            self.request_model, self.stream = found.model, found.stream
            self._request_carry = window[-REQUEST_CARRY:] if not skipped else b""
        except Exception:  # bytes from the wire: never let them crash the tracer
            self._request_carry = b""

    # -- the answer ---------------------------------------------------------------------------------------
    def response(self, data: bytes, ts: int, skipped: int = 0) -> None:
        """Answer DATA sent at ts (the time of the bytes), then `skipped` bytes not seen."""
        if self._finished:
            return
        try:
            if data:
                data = bytes(data)
                if not self._model_done:
                    self._find_model(data)
                self._lines(data, ts)
            if skipped > 0:
                self.unseen_bytes += skipped
                if not self._model_done:
                    self._model_done = True   # the model's window went on in bytes not seen
                    self._model_window = bytearray()
                # an event whose line goes on in the bytes not seen is not known to be a token (its mark may
                # be there); the next bytes are read as a line's start
                if self._open and self._kind is not None and not self._open_marked and self._open_name is None:
                    self._open = False
                    self.cut_events += 1
                self._end_line()
        except Exception:  # never raise on the wire's bytes: what was counted stays
            self._end_line()

    def finish(self) -> None:
        """The answer ended: its last line (without '\\n') and its last event are counted. Idempotent."""
        if self._finished:
            return
        try:
            if self._kind is None and self._head:
                self._classify(line_ended=True)
            self._close_event()
        finally:
            self._finished = True
            self._head = bytearray()
            self._tail = b""
            self._model_window = bytearray()
            self._request_carry = b""

    # -- inside -------------------------------------------------------------------------------------------
    def _find_model(self, data: bytes) -> None:
        w = self._model_window
        w += data[:MODEL_SCAN_MAX - len(w)]
        full = len(w) >= MODEL_SCAN_MAX
        m = _MODEL_KEY.search(w)
        if m is None:
            if full:
                self._model_done = True
                self._model_window = bytearray()
            return
        at = m.end()
        if m.group() == b'"model":':
            while at < len(w) and at < m.end() + 2 and w[at:at + 1] == b" ":
                at += 1
            if at >= len(w):
                if full:
                    self._model_done = True
                return
            if w[at:at + 1] != b'"':
                self._model_done = True   # `"model":` not followed by a string: no model (as the kernel)
                self._model_window = bytearray()
                return
            at += 1
        name = _MODEL_NAME.match(w, at)
        if name is None:
            if not full and _MODEL_NAME_SO_FAR.fullmatch(w, at):
                return       # the name may go on in the next piece
            self._model_done = True
            self._model_window = bytearray()
            return
        self.response_model = parsers.model_name(name.group()[:-1])
        self._model_done = True
        self._model_window = bytearray()

    def _lines(self, data: bytes, ts: int) -> None:
        pos, n = 0, len(data)
        while pos < n:
            nl = data.find(b"\n", pos)
            end = n if nl < 0 else nl
            self._segment(data[pos:end], ts, nl >= 0)
            pos = end + 1

    def _segment(self, seg: bytes, ts: int, line_ended: bool) -> None:
        """Part of a line (all of it to its end when line_ended; the '\\n' left out)."""
        if self._kind is None:
            if not self._head:
                self._line_ts = ts
            self._head += seg[:LINE_HEAD - len(self._head)]
            if len(self._head) >= LINE_HEAD or line_ended:
                self._classify(line_ended)
        # a mark or count (never before a line's 9th byte) in the line's bytes so far
        window = self._tail + seg if self._tail else seg
        if self._open and not self._open_marked and any(h in window for h in _MARK_HINTS) and _MARK.search(window):
            self._open_marked = True
        if b'_tokens"' in window or b'_count"' in window:
            for m in _OUTPUT_COUNT.finditer(window):
                v = _number(window, m, line_ended)
                if v is not None:
                    self.stated_output_tokens = v
            for m in _INPUT_COUNT.finditer(window):
                v = _number(window, m, line_ended)
                if v is not None:
                    self.stated_input_tokens = v
        if line_ended:
            if self._line_named and is_known_event_line(window):
                name = window.rstrip(b"\r")
                self._name = name.endswith(b"delta") and not name.endswith(b"message_delta")
            self._end_line()
        else:
            self._tail = window[-LINE_CARRY:]

    def _classify(self, line_ended: bool) -> None:
        head = bytes(self._head)
        if head.startswith(b"data:"):
            event = not (head[5:6] == b"[" or head[5:7] == b" [")
        else:
            event = self.ndjson and head.startswith(b"{")
            self._line_named = head.startswith(b"event:")   # decided at its end (is_known_event_line)
        self._kind = event
        if event:
            self._close_event()
            self.events += 1
            self._open, self._open_ts, self._open_marked = True, self._line_ts, False
            self._open_name, self._name = self._name, None

    def _close_event(self) -> None:
        if not self._open:
            return
        self._open = False
        if self._open_name if self._open_name is not None else not self._open_marked:
            self.tokens += 1
            if self.first_token_ns is None:
                self.first_token_ns = self._open_ts
            self.last_token_ns = self._open_ts

    def _end_line(self) -> None:
        self._head = bytearray()
        self._kind = None
        self._tail = b""
        self._line_named = False
