"""The inference tracer's figures for people: the live view's rows and the exit summary (ebpftool.ui draws them)."""
from __future__ import annotations

from dataclasses import dataclass, field


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
