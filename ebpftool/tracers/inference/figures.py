"""The inference tracer's figures for people: the live view's rows per server and the exit summary (ebpftool.ui
draws them)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from ebpftool.core.histograms import Histogram, merged, quantile
from ebpftool import semconv as sc


@dataclass(frozen=True)
class ServerRow:
    """One inference server (its port, and its Pod or container) over the last interval. Percentiles come from
    the interval's share of the kernel histograms (interpolated within a bucket); None: no request then."""

    port: int
    workload: str                    # the Pod's UID or the container's id, shortened; "-" outside containers
    requests_per_second: float
    error_ratio: float | None        # 5xx answers and requests closed without one, of the interval's requests
    duration_p50: float | None       # seconds
    duration_p95: float | None
    duration_p99: float | None
    ttft_p50: float | None
    ttft_p99: float | None
    tpot_p50: float | None
    tokens_per_second: float
    concurrency: float = 0.0         # requests in flight on average: their durations summed over the interval
    streams: int = 0                 # generative-AI requests and streamed answers under way at the last export
    model: str = ""                  # the model its latest sampled span named ("": none seen)
    process: str = ""                # the executable its latest sampled span named ("": none seen)


@dataclass
class InferenceView:
    request_rate: float                       # requests per second over the last interval
    servers: list[ServerRow] = field(default_factory=list)


@dataclass
class _ServerTotals:
    """A server's cumulative figures at one export: what the next interval subtracts."""

    requests: Histogram | None = None
    busy: float = 0.0                        # the requests' durations summed (seconds)
    errors: int = 0
    ttft: Histogram | None = None
    tpot: Histogram | None = None
    tokens: float = 0.0


def workload(attributes) -> str:
    return attributes.get(sc.K8S_POD_UID, "")[:8] or attributes.get(sc.CONTAINER_ID, "")[:12] or "-"


def _since(now: Histogram | None, before: Histogram | None) -> Histogram | None:
    """The counts added since `before` (the smallest and largest values are the run's: a wider bracket)."""
    if now is None or before is None:
        return now
    return Histogram(now.bounds, [a - b for a, b in zip(now.counts, before.counts)], now.minimum, now.maximum)


MODELS_KEPT = 256  # servers whose model and process are remembered


class ServerRates:
    """Per server, the figures of each interval from the cumulative metric points of successive exports; the
    model from the spans (the kernel's metrics are not keyed by model)."""

    def __init__(self) -> None:
        self._before: dict[tuple[int, str], _ServerTotals] = {}
        self._models: dict[tuple[int, str], str] = {}
        self._processes: dict[tuple[int, str], str] = {}
        self.streams: dict[tuple[int, str], int] = {}   # (port, workload) -> streams under way (the tracer's)

    def saw_span(self, attributes) -> None:
        """Remember the model a server's span named (the answer's, else the request's) and its process."""
        key = (attributes.get(sc.SERVER_PORT, 0), workload(attributes))
        model = attributes.get(sc.GEN_AI_RESPONSE_MODEL) or attributes.get(sc.GEN_AI_REQUEST_MODEL)
        for known, value in ((self._models, model), (self._processes, attributes.get(sc.PROCESS_EXECUTABLE_NAME))):
            if value:
                known.pop(key, None)
                known[key] = str(value)
                if len(known) > MODELS_KEPT:
                    known.pop(next(iter(known)))

    def rows(self, points: Iterable, seconds: float) -> list[ServerRow]:
        """The servers' rows over the `seconds` since the previous call (busiest first); the first call
        covers the run so far."""
        totals: dict[tuple[int, str], dict[str, list]] = {}
        for p in points:
            if p.name in _SERVER_METRICS:
                key = (p.attributes.get(sc.SERVER_PORT, 0), workload(p.attributes))
                totals.setdefault(key, {}).setdefault(p.name, []).append(p)
        for key in self.streams:  # a server whose first requests are still under way
            totals.setdefault(key, {})
        out, seen = [], {}
        for key, by_name in totals.items():
            http = by_name.get(sc.HTTP_SERVER_REQUEST_DURATION, [])
            now = _ServerTotals(merged(http), sum(p.sum for p in http),
                                sum(p.count for p in http if sc.ERROR_TYPE in p.attributes),
                                merged(by_name.get(sc.GEN_AI_SERVER_TIME_TO_FIRST_TOKEN, [])),
                                merged(by_name.get(sc.GEN_AI_SERVER_TIME_PER_OUTPUT_TOKEN, [])),
                                sum(p.value for p in by_name.get(sc.EBPFTOOL_GEN_AI_OUTPUT_TOKENS, [])))
            seen[key] = now
            before = self._before.get(key, _ServerTotals())
            requests, ttft = _since(now.requests, before.requests), _since(now.ttft, before.ttft)
            n = requests.count if requests else 0
            per_second = 1 / seconds if seconds > 0 else 0.0
            out.append(ServerRow(
                key[0], key[1], n * per_second, (now.errors - before.errors) / n if n else None,
                quantile(0.5, requests), quantile(0.95, requests), quantile(0.99, requests), quantile(0.5, ttft),
                quantile(0.99, ttft), quantile(0.5, _since(now.tpot, before.tpot)),
                (now.tokens - before.tokens) * per_second, (now.busy - before.busy) * per_second,
                self.streams.get(key, 0), self._models.get(key, ""), self._processes.get(key, "")))
        self._before = seen
        return sorted(out, key=lambda r: -r.requests_per_second)


_SERVER_METRICS = {sc.HTTP_SERVER_REQUEST_DURATION, sc.GEN_AI_SERVER_TIME_TO_FIRST_TOKEN,
                   sc.GEN_AI_SERVER_TIME_PER_OUTPUT_TOKEN, sc.EBPFTOOL_GEN_AI_OUTPUT_TOKENS}


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
    concurrency: float = 0.0                  # requests in flight on average (durations summed over the run's time)


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
        output_tokens=tokens, tokens_per_second=tokens / seconds if seconds > 0 else 0.0,
        concurrency=sum(p.sum for p in http) / seconds if seconds > 0 else 0.0)


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
    connections_tls_unknown: int | None = None  # TLS with data that no hooked library decrypted
    connections_h2: int | None = None         # began with HTTP/2's client preface
    h2_streams: int | None = None             # HTTP/2 streams (and gRPC calls) measured
    h2_connections_lost: int | None = None    # HTTP/2 connections whose records were lost, or given up
    h2_streams_lost: int | None = None        # streams open on those connections when they were given up
    h2_streams_kernel: int | None = None      # streams of connections whose records were lost, measured in the kernel
    h2_directions_unwalked: int | None = None  # connection directions whose frames were no longer found
    switches_unread: int | None = None         # 101s written before their program loaded (None: none)
    spans_sent: int | None = None
    headline: InferenceHeadline | None = None  # None before the first export
