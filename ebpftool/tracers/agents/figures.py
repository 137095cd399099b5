"""The agents tracer's figures for people: the calling processes for the live view, and the exit summary
(ebpftool.ui draws them)."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class CallerRow:
    """One calling process over the last interval."""
    process: str                 # executable name and pid
    calls_per_second: float
    duration_p50: float | None
    duration_p99: float | None
    ttfc_p50: float | None       # streamed calls only
    tokens_per_second: float
    cost_per_hour: float
    errors: int                  # failed calls in the interval


@dataclass
class AgentsView:
    call_rate: float = 0.0
    rows: list[CallerRow] = field(default_factory=list)   # most calls first


@dataclass
class AgentsSummary:
    calls: int = 0
    calls_failed: int = 0
    mcp_requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    hooks: str = ""                  # the attach plan's name (plans.py)
    libraries_traced: int = 0
    go_executables_traced: int = 0   # Go executables with their crypto/tls probed
    go_tls_refused: str = ""         # why Go's TLS is not followed here (empty: it is)
    calls_lost: int = 0              # calls given up: an event of theirs was lost (ring buffer full)
    bytes_not_copied: int = 0        # bytes of calls beyond the kernel's copy bounds (their lengths were sent)
    connections_let_go: int = 0      # client connections whose requests were no LLM or MCP call
