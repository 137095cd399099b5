"""The inference tracer's figures for people: the live view's rows and the exit summary (ebpftool.ui draws them)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from ebpftool.core.histograms import merged, quantile
from ebpftool import semconv as sc


@dataclass(frozen=True)
class RequestRow:
    """One series of http.server.request.duration now."""

    port: int
    workload: str            # the Pod's UID or the container's id, shortened; "-" outside containers
    method: str
    status: int | None       # None: closed without a response
    requests: int
    mean_seconds: float


@dataclass
class InferenceView:
    request_rate: float                       # requests per second over the last interval
    rows: list[RequestRow] = field(default_factory=list)


@dataclass
class InferenceHeadline:
    """What a person asks first, over the whole run, from the exported metrics (quantiles interpolated within
    the kernel histograms' buckets, as Prometheus' histogram_quantile): every request, whatever the span
    budget."""

    seconds: float
    requests: int = 0
    errors: int = 0                           # 5xx answers and requests closed without an answer
    duration_p50: float | None = None         # seconds
    duration_p95: float | None = None
    duration_p99: float | None = None
    gen_ai_requests: int = 0
    ttft_p50: float | None = None
    ttft_p99: float | None = None
    tpot_p50: float | None = None
    output_tokens: int = 0
    tokens_per_second: float = 0.0


def headline(points: Iterable, seconds: float) -> InferenceHeadline:
    """The headline figures of the inference tracer's metric points (cumulative: the run so far)."""
    points = list(points)

    def named(name: str) -> list:
        return [p for p in points if p.name == name]

    http = named(sc.HTTP_SERVER_REQUEST_DURATION)
    durations = merged(http)
    ttft = merged(named(sc.GEN_AI_SERVER_TIME_TO_FIRST_TOKEN))
    tokens = int(sum(p.value for p in named(sc.EBPFTOOL_GEN_AI_OUTPUT_TOKENS)))
    return InferenceHeadline(
        seconds=seconds,
        requests=sum(p.count for p in http),
        errors=sum(p.count for p in http if sc.ERROR_TYPE in p.attributes),
        duration_p50=quantile(0.5, durations), duration_p95=quantile(0.95, durations),
        duration_p99=quantile(0.99, durations),
        gen_ai_requests=sum(p.count for p in named(sc.GEN_AI_SERVER_REQUEST_DURATION)),
        ttft_p50=quantile(0.5, ttft), ttft_p99=quantile(0.99, ttft),
        tpot_p50=quantile(0.5, merged(named(sc.GEN_AI_SERVER_TIME_PER_OUTPUT_TOKEN))),
        output_tokens=tokens, tokens_per_second=tokens / seconds if seconds > 0 else 0.0)


@dataclass
class InferenceSummary:
    hooks: str                                # socket | socket-raw | syscall, or "-" before start
    watches_ports: bool                       # the socket hooks watch ports, the syscall hooks sockets
    listeners_watched: int
    # The kernel's counts (None when no program was loaded).
    connections_accepted: int | None = None
    connections_seeded: int | None = None     # open at start, found (socket hooks)
    connections_untracked: int | None = None  # not followed: connection table full (socket hooks)
    requests: int | None = None
    requests_not_in_metrics: int | None = None
    requests_without_response: int | None = None
    connections_unparsed: int | None = None
    connections_tls: int | None = None        # began with a TLS handshake (socket hooks)
    tls_libraries: int | None = None          # libssl files with the TLS uprobes
    spans_sent: int | None = None
    headline: InferenceHeadline | None = None  # None before the first export
