"""The net tracer's figures for people: bytes per zone pair for the live view, and the exit summary
(ebpftool.ui draws them)."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from ebpftool.core.histograms import Histogram, quantile


@dataclass
class PairView:
    """What one zone pair (source -> destination) sent: cumulative, and its rate over the last interval."""

    inter_zone: bool = False
    total: int = 0
    rate: float = 0.0
    cost: float = 0.0
    retransmits: int = 0
    processes: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # process name -> bytes sent
    rtt_p50: float | None = None    # seconds, the last interval's RTT samples (None: none then)
    rtt_p99: float | None = None

    @property
    def cost_per_hour(self) -> float:
        """USD per hour at the last interval's rate (the pair's price per byte: its cost over its bytes)."""
        return self.cost / self.total * self.rate * 3600 if self.total else 0.0


@dataclass(frozen=True)
class ZonePairRow:
    source: str
    destination: str
    pair: PairView
    top_processes: list[tuple[str, int]]     # (name, bytes sent), most first, at most three


@dataclass
class NetView:
    rows: list[ZonePairRow] = field(default_factory=list)   # most bytes first


def rtt_histogram(hist, bounds) -> Histogram:
    """A kernel RTT histogram (ebpftool.core.bpf.HistSum, in ns) in seconds, for quantile()."""
    return Histogram(tuple(bounds), list(hist.buckets), hist.minimum / 1e9, hist.maximum / 1e9)


def rtt_since(now: Histogram, before: Histogram | None) -> Histogram:
    """The samples added since `before` (the smallest and largest values are the run's: a wider bracket)."""
    if before is None:
        return now
    return Histogram(now.bounds, [a - b for a, b in zip(now.counts, before.counts)], now.minimum, now.maximum)


@dataclass(frozen=True)
class PairSummary:
    """One zone pair over the whole run (the exit summary's headline, --summary-json)."""

    source: str
    destination: str
    inter_zone: bool
    bytes_sent: int
    cost_usd: float
    retransmits: int
    rtt_p50: float | None           # seconds, every RTT sample of the run; None: none
    rtt_p99: float | None
    top_processes: list[tuple[str, int]]   # (name, bytes sent), most first, at most three

    @classmethod
    def of(cls, source: str, destination: str, pv: PairView, rtt: Histogram | None) -> "PairSummary":
        return cls(source, destination, pv.inter_zone, pv.total, pv.cost, pv.retransmits, quantile(0.5, rtt),
                   quantile(0.99, rtt), top_processes(pv))


def top_processes(pv: PairView, n: int = 3) -> list[tuple[str, int]]:
    return [(name, b) for name, b in sorted(pv.processes.items(), key=lambda kv: kv[1], reverse=True) if b][:n]


@dataclass
class NetSummary:
    io_hooks: str                      # the plan in use, or "-"
    bytes_sent: int
    bytes_sent_across_zones: int
    cross_zone_cost_usd: float
    zone_pairs: int
    series_retired: int                # process series retired because their process was gone
    bytes_lost: int                    # kernel maps full
    map_full: dict[str, int]           # kernel map -> events that found it full
    connection_spans_sent: int | None = None   # with --spans
    pairs: list[PairSummary] = field(default_factory=list)   # most bytes first
