"""Which LLM API call (or MCP tool call) a request is, from its first bytes: method, path, Host, a few
header names and the first bytes of its JSON body, whatever the host.

Pure functions fed bytes (no BPF). Header values other than Host are never read; the body is read only
for `model`, `stream`, and JSON-RPC's `jsonrpc`, `id`, `method` and `params.name`; nothing else of a
request (keys, prompts) is returned.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl

from ebpftool.tracers.agents.jsonscan import scalars
from ebpftool.tracers.inference.parsers import MAX_PATH, clean_path

# The API shapes recognised: each is answered in its own format (answers.py).
OPENAI_CHAT = "openai.chat_completions"
OPENAI_COMPLETIONS = "openai.completions"
OPENAI_RESPONSES = "openai.responses"
OPENAI_EMBEDDINGS = "openai.embeddings"
ANTHROPIC_MESSAGES = "anthropic.messages"
GEMINI_GENERATE = "gemini.generate_content"
GEMINI_EMBED = "gemini.embed_content"
OLLAMA_CHAT = "ollama.chat"
OLLAMA_GENERATE = "ollama.generate"
OLLAMA_EMBED = "ollama.embed"
MCP = "mcp"
APIS = (OPENAI_CHAT, OPENAI_COMPLETIONS, OPENAI_RESPONSES, OPENAI_EMBEDDINGS, ANTHROPIC_MESSAGES,
        GEMINI_GENERATE, GEMINI_EMBED, OLLAMA_CHAT, OLLAMA_GENERATE, OLLAMA_EMBED, MCP)

# gen_ai.provider.name: the conventions' well-known values, and ebpftool's for Ollama (the conventions
# allow a custom value where none applies).
OPENAI, ANTHROPIC, GCP_GEMINI, GCP_GEN_AI, GCP_VERTEX_AI, OLLAMA = (
    "openai", "anthropic", "gcp.gemini", "gcp.gen_ai", "gcp.vertex_ai", "ollama")

# gen_ai.operation.name (well-known values)
CHAT, TEXT_COMPLETION, EMBEDDINGS, GENERATE_CONTENT, EXECUTE_TOOL = (
    "chat", "text_completion", "embeddings", "generate_content", "execute_tool")

# The provider a host names, whatever the API shape it speaks (an OpenAI-compatible endpoint of Gemini
# is still Gemini). Matched as the host or a suffix after a dot. Other hosts (vLLM, a gateway, a local
# server) get the shape's default: the conventions use the provider name as the telemetry's "flavor".
HOST_PROVIDERS = (
    ("api.openai.com", OPENAI),
    ("openai.azure.com", "azure.ai.openai"),
    ("cognitiveservices.azure.com", "azure.ai.openai"),
    ("services.ai.azure.com", "azure.ai.inference"),
    ("api.anthropic.com", ANTHROPIC),
    ("generativelanguage.googleapis.com", GCP_GEMINI),
    ("aiplatform.googleapis.com", GCP_VERTEX_AI),
    ("api.groq.com", "groq"),
    ("api.deepseek.com", "deepseek"),
    ("api.mistral.ai", "mistral_ai"),
    ("api.x.ai", "x_ai"),
    ("api.perplexity.ai", "perplexity"),
    ("api.moonshot.ai", "moonshot_ai"),
    ("api.moonshot.cn", "moonshot_ai"),
    ("api.cohere.com", "cohere"),
    ("api.cohere.ai", "cohere"),
)
DEFAULT_PROVIDER = {OPENAI_CHAT: OPENAI, OPENAI_COMPLETIONS: OPENAI, OPENAI_RESPONSES: OPENAI,
                    OPENAI_EMBEDDINGS: OPENAI, ANTHROPIC_MESSAGES: ANTHROPIC, GEMINI_GENERATE: GCP_GEN_AI,
                    GEMINI_EMBED: GCP_GEN_AI, OLLAMA_CHAT: OLLAMA, OLLAMA_GENERATE: OLLAMA, OLLAMA_EMBED: OLLAMA}
OPERATION = {OPENAI_CHAT: CHAT, OPENAI_COMPLETIONS: TEXT_COMPLETION, OPENAI_RESPONSES: CHAT,
             OPENAI_EMBEDDINGS: EMBEDDINGS, ANTHROPIC_MESSAGES: CHAT, GEMINI_GENERATE: GENERATE_CONTENT,
             GEMINI_EMBED: EMBEDDINGS, OLLAMA_CHAT: CHAT, OLLAMA_GENERATE: TEXT_COMPLETION,
             OLLAMA_EMBED: EMBEDDINGS}

MAX_NAME = 128          # a model, host or tool name longer than this is cut (an attribute, not a log line)
_REQUEST_LINE = re.compile(rb"^([A-Z]{1,16}) (\S{1,8192}) HTTP/1\.[01]\r?\n")
_HEADER = re.compile(rb"^([!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}):[ \t]*([^\r\n]*)\r?$")
_GEMINI_PATH = re.compile(r"/models/([^/:]{1,256}):(generateContent|streamGenerateContent|embedContent|"
                          r"batchEmbedContents)$")
_SAFE = re.compile(r"[^\x21-\x7e]")
_BODY_FIELDS = {("model",), ("stream",), ("jsonrpc",), ("id",), ("method",), ("params", "name")}


@dataclass(frozen=True)
class Call:
    """What a request says of itself: only names and flags that may leave the node."""
    api: str                      # one of APIS: how its answer is read
    provider: str | None          # gen_ai.provider.name (None for MCP: it names no model provider)
    operation: str | None         # gen_ai.operation.name (None for an MCP method other than tools/call)
    path: str                     # url.path, no query
    host: str | None = None       # server.address, from Host (no port)
    request_model: str | None = None   # gen_ai.request.model, where the captured bytes hold it
    stream: bool = False          # the client asked for a streamed answer
    sse: bool = False             # ... as Server-Sent Events (Gemini: only with ?alt=sse)
    mcp_method: str | None = None      # mcp.method.name
    tool_name: str | None = None       # gen_ai.tool.name (MCP tools/call)
    jsonrpc_id: str | None = None      # the JSON-RPC id, to find its answer in a stream (never exported)


def safe_name(value: object) -> str | None:
    """A name as an attribute: printable ASCII without spaces, bounded; None for anything not a string."""
    if not isinstance(value, str) or not value:
        return None
    return _SAFE.sub("_", value)[:MAX_NAME]


def host_name(value: bytes) -> str | None:
    """server.address from a Host header's value: the name or address without its port."""
    text = value.decode("latin-1").strip()
    if text.startswith("["):                   # [v6]:port
        text = text[1:].split("]", 1)[0]
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    return safe_name(text.lower())


def provider_of_host(host: str | None) -> str | None:
    if not host:
        return None
    for suffix, provider in HOST_PROVIDERS:
        # regional endpoints: eu.api.openai.com, us-central1-aiplatform.googleapis.com
        if host == suffix or host.endswith("." + suffix) or host.endswith("-" + suffix):
            return provider
    if "bedrock" in host and host.endswith(".amazonaws.com"):
        return "aws.bedrock"
    return None


def _head(data: bytes) -> tuple[str, str, dict[str, bytes], bytes] | None:
    """(method, target, headers by lower-case name, the body's first bytes) of an HTTP/1.x request."""
    m = _REQUEST_LINE.match(data)
    if not m:
        return None
    end = data.find(b"\r\n\r\n", m.end() - 2)
    sep = 4
    if end < 0:
        end, sep = data.find(b"\n\n", m.end() - 1), 2
    head = data[m.end():end if end >= 0 else len(data)]
    headers: dict[str, bytes] = {}
    for line in head.split(b"\n"):
        h = _HEADER.match(line)
        if h:
            headers.setdefault(h.group(1).decode("ascii").lower(), h.group(2))
    body = data[end + sep:] if end >= 0 else b""
    return m.group(1).decode("ascii"), m.group(2).decode("latin-1"), headers, body


def api_of(method: str, path: str, headers: dict[str, bytes]) -> str | None:
    """The API shape a POST's path names (any prefix before it: /openai/v1/..., a gateway's route)."""
    if method != "POST":
        return None
    if path.endswith("/chat/completions"):
        return OPENAI_CHAT
    if path.endswith("/completions"):
        return OPENAI_COMPLETIONS
    if path.endswith("/responses"):
        return OPENAI_RESPONSES
    if path.endswith("/embeddings") and not path.endswith("/api/embeddings"):
        return OPENAI_EMBEDDINGS
    # Anthropic's path; another prefix counts where the client names its API version (the header's
    # name only: its value is not read).
    if path.endswith("/v1/messages") or (path.endswith("/messages") and "anthropic-version" in headers):
        return ANTHROPIC_MESSAGES
    g = _GEMINI_PATH.search(path)
    if g:
        return GEMINI_EMBED if "mbed" in g.group(2) else GEMINI_GENERATE
    if path.endswith("/api/chat"):
        return OLLAMA_CHAT
    if path.endswith("/api/generate"):
        return OLLAMA_GENERATE
    if path.endswith("/api/embed") or path.endswith("/api/embeddings"):
        return OLLAMA_EMBED
    return None


def recognise(data: bytes) -> Call | None:
    """The call a request's first bytes make, or None when they are not an LLM API or MCP request."""
    try:
        head = _head(data)
        if head is None:
            return None
        method, target, headers, body = head
        path = clean_path(target)
        host = host_name(headers["host"]) if "host" in headers else None
        if body and not body.lstrip().startswith((b"{", b"[")):
            return None                        # the shapes recognised all send JSON
        fields = scalars(body, _BODY_FIELDS) if body else {}
        api = api_of(method, path, headers)
        if api is None:
            return _mcp(method, path, host, fields)
        query = dict(parse_qsl(target.partition("?")[2])) if "?" in target else {}
        model = safe_name(fields.get(("model",)))
        stream = fields.get(("stream",)) is True
        sse = stream
        if api in (GEMINI_GENERATE, GEMINI_EMBED):
            g = _GEMINI_PATH.search(path)
            model = safe_name(g.group(1)) if g else model
            stream = g is not None and g.group(2) == "streamGenerateContent"
            sse = stream and query.get("alt") == "sse"
        elif api in (OLLAMA_CHAT, OLLAMA_GENERATE):
            stream = fields.get(("stream",)) is not False   # Ollama streams unless told not to
            sse = False                                     # ... as newline-delimited JSON
        elif api in (OPENAI_EMBEDDINGS, OLLAMA_EMBED):
            stream = sse = False
        provider = provider_of_host(host) or DEFAULT_PROVIDER[api]
        return Call(api, provider, OPERATION[api], path[:MAX_PATH], host, model, stream, sse)
    except Exception:  # bytes from the wire: never let them crash the tracer
        return None


def _mcp(method: str, path: str, host: str | None, fields: dict) -> Call | None:
    """An MCP message over streamable HTTP: a JSON-RPC 2.0 request or notification POSTed to any path."""
    rpc_method = fields.get(("method",))
    if method != "POST" or fields.get(("jsonrpc",)) != "2.0" or not isinstance(rpc_method, str):
        return None
    tool = safe_name(fields.get(("params", "name"))) if rpc_method == "tools/call" else None
    rid = fields.get(("id",))
    return Call(MCP, None, EXECUTE_TOOL if rpc_method == "tools/call" else None, path[:MAX_PATH], host,
                mcp_method=safe_name(rpc_method), tool_name=tool,
                jsonrpc_id=None if rid is None or isinstance(rid, bool) else str(rid)[:MAX_NAME])
