"""Every finished call (an Exchange of connection.py) into the metrics of docs/agents.md, exact for every
call whatever the span budget, and its CLIENT span's attributes.

Kept in user space: a call is parsed here anyway (tracer.py), and calls are rare (a few a second per agent),
so a Python histogram per series costs nothing that matters. Only names and numbers leave: models, hosts and
tool names bounded (bounds.BoundedNames), no header value but Host's name, no body.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from ebpftool import semconv as sc
from ebpftool.export.model import MetricPoint, counter, histogram
from ebpftool.tracers.agents import calls as c
from ebpftool.tracers.agents.answers import OTHER_ERROR
from ebpftool.tracers.agents.bounds import DEFAULT_MAX_HOSTS, DEFAULT_MAX_MODELS, BoundedNames
from ebpftool.tracers.agents.connection import Exchange
from ebpftool.tracers.agents.prices import PriceTable

NO_ANSWER = "no_answer"     # error.type of a call whose connection ended before any answer (ebpftool's own)
DURATION_HELP = "Duration of LLM API calls made by the node's processes, first request byte to last answer byte"
TOKENS_HELP = "Tokens an LLM API call used, from the answer's usage (a stream without usage: its content chunks)"
TTFC_HELP = "Streamed LLM API calls: time from the request's first byte to the answer's first content chunk"
TPOC_HELP = "Streamed LLM API calls: time between consecutive content chunks after the first"
MCP_HELP = "Duration of MCP requests (streamable HTTP) made by the node's processes, to their JSON-RPC answer"
COST_HELP = "Estimated cost of LLM API calls from the price table (priced models only)"
NO_USAGE_HELP = "LLM API calls whose answer gave no token usage (compressed, cut, or streamed without usage)"


@dataclass
class Series:
    """One histogram series: explicit bounds (upper bound inclusive), count, sum, min, max."""
    bounds: Sequence[float]
    counts: list[int] = field(default_factory=list)
    count: int = 0
    total: float = 0.0
    minimum: float = 0.0
    maximum: float = 0.0

    def add(self, value: float) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)
        if self.count == 0 or value < self.minimum:
            self.minimum = value
        self.maximum = max(self.maximum, value)
        self.count += 1
        self.total += value
        self.counts[bisect.bisect_left(self.bounds, value)] += 1


@dataclass(frozen=True)
class Process:
    pid: int
    executable: str
    workload: Mapping[str, str] = field(default_factory=dict)   # k8s.pod.uid, container.id where known

    def attributes(self) -> dict[str, Any]:
        return {sc.PROCESS_PID: self.pid, sc.PROCESS_EXECUTABLE_NAME: self.executable, **self.workload}


@dataclass
class Measured:
    """One call as measured: its metric attributes, and the figures its span carries."""
    exchange: Exchange
    attributes: dict[str, Any]
    cost: float | None
    error_type: str | None
    is_mcp: bool


_METRICS = {  # name -> (unit, description, bounds)
    sc.GEN_AI_CLIENT_OPERATION_DURATION: ("s", DURATION_HELP, sc.GEN_AI_CLIENT_DURATION_BUCKETS),
    sc.GEN_AI_CLIENT_TOKEN_USAGE: ("{token}", TOKENS_HELP, sc.GEN_AI_TOKEN_USAGE_BUCKETS),
    sc.GEN_AI_CLIENT_TIME_TO_FIRST_CHUNK: ("s", TTFC_HELP, sc.GEN_AI_CLIENT_CHUNK_BUCKETS),
    sc.GEN_AI_CLIENT_TIME_PER_OUTPUT_CHUNK: ("s", TPOC_HELP, sc.GEN_AI_CLIENT_CHUNK_BUCKETS),
    sc.MCP_CLIENT_OPERATION_DURATION: ("s", MCP_HELP, sc.MCP_CLIENT_OPERATION_DURATION_BUCKETS),
}


def _key(attrs: Mapping[str, Any]) -> tuple:
    return tuple(sorted(attrs.items()))


class CallMetrics:
    """The cumulative metrics of every call recorded so far."""

    def __init__(self, prices: PriceTable | None, max_models: int = DEFAULT_MAX_MODELS,
                 max_hosts: int = DEFAULT_MAX_HOSTS) -> None:
        self.prices = prices
        self.models = BoundedNames(max_models)
        self.hosts = BoundedNames(max_hosts)
        self.tools = BoundedNames(max_models)
        self._hist: dict[tuple[str, tuple], Series] = {}
        self._cost: dict[tuple, float] = {}
        self._no_usage: dict[tuple, int] = {}
        self.calls = 0
        self.calls_failed = 0
        self.mcp_calls = 0
        self.input_tokens = 0
        self.output_tokens = 0
        self.cost_usd = 0.0

    def _observe(self, name: str, attrs: Mapping[str, Any], value: float) -> None:
        key = (name, _key(attrs))
        s = self._hist.get(key)
        if s is None:
            s = self._hist[key] = Series(_METRICS[name][2])
        s.add(value)

    def record(self, ex: Exchange, process: Process, port: int) -> Measured | None:
        """Add one finished exchange; what was measured (None: no LLM or MCP call, or an MCP notification)."""
        call, a = ex.call, ex.answer
        if call is None:
            return None
        server = {sc.SERVER_ADDRESS: self.hosts(call.host) if call.host else None, sc.SERVER_PORT: port or None}
        base = {**process.attributes(), **{k: v for k, v in server.items() if v is not None}}
        if call.api == c.MCP:
            return self._record_mcp(ex, base)
        error = _error_type(ex)
        attrs = {**base, sc.GEN_AI_OPERATION_NAME: call.operation, sc.GEN_AI_PROVIDER_NAME: call.provider}
        request_model = self.models(call.request_model)
        response_model = self.models(a.response_model) if a is not None else None
        if request_model:
            attrs[sc.GEN_AI_REQUEST_MODEL] = request_model
        if response_model:
            attrs[sc.GEN_AI_RESPONSE_MODEL] = response_model
        duration_attrs = {**attrs, sc.ERROR_TYPE: error} if error else attrs
        self._observe(sc.GEN_AI_CLIENT_OPERATION_DURATION, duration_attrs, ex.duration)
        self.calls += 1
        self.calls_failed += error is not None
        cost = None
        if a is not None:
            # a stream without usage: its content chunks, unless it failed (what it cost is unknown then)
            output = a.output_tokens if a.output_tokens is not None or error else a.output_tokens_or_chunks
            if a.input_tokens is not None:
                self._observe(sc.GEN_AI_CLIENT_TOKEN_USAGE, {**attrs, sc.GEN_AI_TOKEN_TYPE: "input"}, a.input_tokens)
                self.input_tokens += a.input_tokens
            if output is not None:
                self._observe(sc.GEN_AI_CLIENT_TOKEN_USAGE, {**attrs, sc.GEN_AI_TOKEN_TYPE: "output"}, output)
                self.output_tokens += output
            if a.streamed and ex.time_to_first_chunk is not None:
                self._observe(sc.GEN_AI_CLIENT_TIME_TO_FIRST_CHUNK, attrs, ex.time_to_first_chunk)
                for gap in a.chunk_gaps:
                    self._observe(sc.GEN_AI_CLIENT_TIME_PER_OUTPUT_CHUNK, attrs, gap)
            if error is None and a.input_tokens is None and a.output_tokens is None:
                k = _key({**process.attributes(), sc.GEN_AI_OPERATION_NAME: call.operation,
                          sc.GEN_AI_PROVIDER_NAME: call.provider})
                self._no_usage[k] = self._no_usage.get(k, 0) + 1
            if self.prices is not None and (a.input_tokens is not None or a.output_tokens is not None):
                cost = self.prices.cost(call.provider, a.response_model or call.request_model, a.input_tokens,
                                        a.output_tokens, a.cache_read_tokens)
                if cost is not None:
                    k = _key({kk: v for kk, v in attrs.items() if kk != sc.GEN_AI_OPERATION_NAME})
                    self._cost[k] = self._cost.get(k, 0.0) + cost
                    self.cost_usd += cost
        return Measured(ex, duration_attrs, cost, error, False)

    def _record_mcp(self, ex: Exchange, base: dict[str, Any]) -> Measured | None:
        call, a = ex.call, ex.answer
        if call.jsonrpc_id is None:
            return None      # a notification: answered 202, nothing to time
        attrs = {**base, sc.MCP_METHOD_NAME: call.mcp_method}
        if call.tool_name:
            attrs[sc.GEN_AI_TOOL_NAME] = self.tools(call.tool_name)
        if call.operation:
            attrs[sc.GEN_AI_OPERATION_NAME] = call.operation
        error = _error_type(ex)
        if error:
            attrs[sc.ERROR_TYPE] = error
        if a is not None and a.rpc_status_code:
            attrs[sc.MCP_RPC_RESPONSE_STATUS_CODE] = a.rpc_status_code
        self._observe(sc.MCP_CLIENT_OPERATION_DURATION, attrs, ex.duration)
        self.mcp_calls += 1
        return Measured(ex, attrs, None, error, True)

    def points(self) -> list[MetricPoint]:
        out = []
        for (name, key), s in self._hist.items():
            unit, help_text, bounds = _METRICS[name]
            out.append(histogram(name, unit, help_text, dict(key), count=s.count, total=s.total, minimum=s.minimum,
                                 maximum=s.maximum, bucket_counts=s.counts, bounds=bounds))
        out += [counter(sc.EBPFTOOL_GEN_AI_CLIENT_COST, "{USD}", COST_HELP, v, dict(k)) for k, v in self._cost.items()]
        out += [counter(sc.EBPFTOOL_GEN_AI_CLIENT_CALLS_WITHOUT_USAGE, "{call}", NO_USAGE_HELP, v, dict(k))
                for k, v in self._no_usage.items()]
        return out

    def series(self, name: str) -> dict[tuple, Series]:
        """The histogram series of one metric, by their attributes (the live view's figures)."""
        return {key: s for (n, key), s in self._hist.items() if n == name}


def _error_type(ex: Exchange) -> str | None:
    a = ex.answer
    if a is None:
        return NO_ANSWER
    if a.error_type:
        return a.error_type
    if a.status is None:
        return NO_ANSWER
    return None if a.complete or a.result_time is not None else OTHER_ERROR


def span_attributes(m: Measured) -> dict[str, Any]:
    """The CLIENT span's attributes: the metric's, the usage, status, path (no query) and ebpftool's own."""
    ex, a, call = m.exchange, m.exchange.answer, m.exchange.call
    attrs = dict(m.attributes)
    attrs[sc.URL_PATH] = call.path
    if a is None:
        return attrs
    if a.status is not None:
        attrs[sc.HTTP_RESPONSE_STATUS_CODE] = a.status
    for key, value in ((sc.GEN_AI_USAGE_INPUT_TOKENS, a.input_tokens), (sc.GEN_AI_USAGE_OUTPUT_TOKENS, a.output_tokens),
                       (sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS, a.cache_read_tokens),
                       (sc.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS, a.cache_creation_tokens)):
        if value is not None:
            attrs[key] = value
    if a.finish_reason:
        attrs[sc.GEN_AI_RESPONSE_FINISH_REASONS] = [a.finish_reason]
    if a.streamed:
        attrs[sc.EBPFTOOL_GEN_AI_CLIENT_CHUNKS] = a.chunks
        if ex.time_to_first_chunk is not None:
            attrs[sc.EBPFTOOL_GEN_AI_CLIENT_TIME_TO_FIRST_CHUNK] = ex.time_to_first_chunk
    if m.cost is not None:
        attrs[sc.EBPFTOOL_GEN_AI_USAGE_COST] = m.cost
    return attrs


def span_name(m: Measured) -> str:
    call = m.exchange.call
    if m.is_mcp:
        return f"{call.mcp_method} {m.attributes.get(sc.GEN_AI_TOOL_NAME, '')}".strip()
    model = m.attributes.get(sc.GEN_AI_REQUEST_MODEL)
    return f"{call.operation} {model}" if model else str(call.operation)
