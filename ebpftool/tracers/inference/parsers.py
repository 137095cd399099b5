"""Parsing the bytes the inference tracer captured: HTTP/1.x request heads, JSON body fields and the
usage in a response's last bytes, from bounded and possibly truncated prefixes (the kernel itself
reads the status and counts Server-Sent Events).

Pure functions fed bytes (no BPF): they never raise on garbage, and they return
only what may leave the node. Header values, bodies and query strings are read
here to find the few fields exported (method, path without its query,
model, stream flag, token usage) and are never returned.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache

METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "CONNECT", "TRACE")
OTHER_METHOD = "_OTHER"  # the conventions' value for a method outside the known set
MAX_PATH = 256           # longer paths are cut (a span attribute, not a log line)

_REQUEST_LINE = re.compile(rb"^([A-Z]{1,16}) (\S{1,8192}) HTTP/(\d)\.(\d)\r?\n")
_LINE_START = re.compile(rb"^([A-Z]{1,16}) ([\x21-\x7e]{1,8192})")
_HEADER_END = re.compile(rb"\r?\n\r?\n")
# A JSON string value: quotes and escapes inside are allowed, a cut-off string is not matched.
_JSON_STR = rb'"((?:[^"\\\x00-\x1f]|\\.){1,256})"'
_MODEL = re.compile(rb'"model"\s*:\s*' + _JSON_STR)
_STREAM = re.compile(rb'"stream"\s*:\s*(true|false)')
_USAGE_FIELD = re.compile(rb'"(prompt_tokens|completion_tokens|input_tokens|output_tokens)"\s*:\s*(\d{1,12})')
_SAFE_PATH = re.compile(r"[^\x21-\x7e]")
_ID_SEGMENT = re.compile(r"^(?:\d+|[0-9a-fA-F]{8,}|[0-9a-fA-F-]{32,36})$")

# Path prefixes of generative-AI endpoints -> gen_ai.operation.name (the kernel's OP_* classes agree).
GEN_AI_PATHS = (
    ("/v1/chat/completions", "chat"),
    ("/v1/completions", "text_completion"),
    ("/v1/embeddings", "embeddings"),
    ("/generate", "text_completion"),
    ("/completion", "text_completion"),
    ("/api/chat", "chat"),
    ("/api/generate", "text_completion"),
    ("/api/embed", "embeddings"),
)


@dataclass
class Request:
    method: str
    path: str
    version: str
    model: str | None = None
    stream: bool | None = None


@dataclass
class Usage:
    input_tokens: int | None = None
    output_tokens: int | None = None
    model: str | None = None


def clean_path(target: str) -> str:
    """url.path: the target without query string or fragment, printable ASCII, bounded."""
    if "://" in target:  # absolute-form (a proxy request): keep the path part
        target = "/" + target.split("://", 1)[1].partition("/")[2]
    path = target.split("?", 1)[0].split("#", 1)[0]
    if not path.startswith("/"):
        return "/"   # asterisk-form (OPTIONS *), authority-form (CONNECT host:443) or not a target: no path
    return _SAFE_PATH.sub("_", path)[:MAX_PATH]


@lru_cache(maxsize=4096)  # a server's few paths, span after span
def path_template(path: str) -> str:
    """A low-cardinality stand-in for the route (unknown from bytes): ids become {id}."""
    return "/".join("{id}" if _ID_SEGMENT.match(seg) else seg for seg in path.split("/"))


def parse_request(data: bytes) -> Request | None:
    """The request line of a request's first bytes, plus model/stream from a JSON body in them."""
    try:
        m = _REQUEST_LINE.match(data)
        if not m:
            return None
        method = m.group(1).decode("ascii")
        if method not in METHODS:
            method = OTHER_METHOD
        path = clean_path(m.group(2).decode("latin-1"))
        req = Request(method, path, f"{m.group(3).decode()}.{m.group(4).decode()}")
        fill_body_fields(req, data)
        return req
    except Exception:  # bytes from the wire: never let them crash the tracer
        return None


def request_line_start(data: bytes) -> tuple[str, str] | None:
    """(method, target) of a request's first bytes, the target possibly cut where the bytes end (the kernel
    keeps a request's first LINE_MAX bytes); None when they do not begin a request line."""
    m = _LINE_START.match(data)
    if not m:
        return None
    method = m.group(1).decode("ascii")
    return (method if method in METHODS else OTHER_METHOD), m.group(2).decode("latin-1")


def fill_body_fields(req: Request, data: bytes) -> None:
    """model and stream from JSON bytes (a body, or a part of one), where they lie in the capture."""
    try:
        if req.model is None:
            m = _MODEL.search(data)
            if m:
                req.model = _json_string(m.group(1))
        if req.stream is None:
            s = _STREAM.search(data)
            if s:
                req.stream = s.group(1) == b"true"
    except Exception:
        pass


def after_head(data: bytes) -> bytes:
    """The bytes after an HTTP response head at the start of data (all of data if it holds no head)."""
    if not data.startswith(b"HTTP/"):
        return data
    end = _HEADER_END.search(data)
    return data[end.end():] if end else b""


def parse_usage(data: bytes) -> Usage:
    """Token usage from the last bytes of a response: an SSE usage chunk or a JSON body's `usage`."""
    usage = Usage()
    try:
        idx = data.rfind(b'"usage"')
        if idx >= 0:
            for name, value in _USAGE_FIELD.findall(data[idx:]):
                n = int(value)
                if name in (b"prompt_tokens", b"input_tokens") and usage.input_tokens is None:
                    usage.input_tokens = n
                elif name in (b"completion_tokens", b"output_tokens") and usage.output_tokens is None:
                    usage.output_tokens = n
        m = None
        for m in _MODEL.finditer(data):
            pass
        if m is not None:
            usage.model = _json_string(m.group(1))
    except Exception:
        pass
    return usage


# Paths matched whole (no query): the Responses API's and Anthropic's Messages API's (under them,
# /v1/responses/ID and /v1/messages/count_tokens generate nothing).
GEN_AI_EXACT_PATHS = (("/v1/responses", "chat"), ("/v1/messages", "chat"))


def operation_name(path: str, streamed: bool) -> str | None:
    """gen_ai.operation.name for a request path; `generate_content` for a stream on another path."""
    bare = path.split("?", 1)[0]
    for whole, op in GEN_AI_EXACT_PATHS:
        if bare == whole:
            return op
    for prefix, op in GEN_AI_PATHS:
        if path.startswith(prefix):
            return op
    if path.startswith("/v2/models/") and "/gen" in path[11:]:
        return "text_completion"  # Triton's generate extension
    return "generate_content" if streamed else None


def _json_string(raw: bytes) -> str | None:
    try:
        value = json.loads(b'"' + raw + b'"')
    except ValueError:
        return None
    return _SAFE_PATH.sub("_", value)[:MAX_PATH] if isinstance(value, str) else None


def model_name(raw: bytes) -> str | None:
    """A model name as the kernel found it between the quotes of `"model":"..."` (no escapes), made safe
    as the parsed ones are."""
    return _json_string(raw)
