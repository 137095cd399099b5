"""The net tracer's figures for people: bytes per zone pair for the live view, and the exit summary
(ebpftool.ui draws them)."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field


@dataclass
class PairView:
    """What one zone pair (source -> destination) sent: cumulative, and its rate over the last interval."""

    inter_zone: bool = False
    total: int = 0
    rate: float = 0.0
    cost: float = 0.0
    retransmits: int = 0
    processes: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # process name -> bytes sent

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
