"""A bound on the distinct values of one attribute (models, hosts): the first N keep their name, the
rest are `_OTHER`.

Why not export/series.py's SeriesLimiter: it bounds a metric's series as a whole and folds the excess
into one series without attributes ({"otel.metric.overflow": true}). Here one attribute is bounded and
the others (process, provider, operation) are kept, so a flood of model names from one agent still
shows which process and provider it came from. The SeriesLimiter still applies after this, as the last
guard. Like it, a name once admitted keeps its place for the tracer's life (a series never changes its
name: cumulative counters stay monotonic), so "top N" means the first N names seen; calls per name are
counted so the live view can rank them.
"""
from __future__ import annotations

OTHER = "_OTHER"
DEFAULT_MAX_MODELS = 50
DEFAULT_MAX_HOSTS = 50


class BoundedNames:
    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("the bound must be at least 1")
        self.limit = limit
        self.calls: dict[str, int] = {}       # admitted name (and OTHER) -> calls
        self.folded = 0                       # calls whose name became OTHER

    def __call__(self, name: str | None) -> str | None:
        """The name to export for this call's value (None stays None: the attribute is absent)."""
        if name is None:
            return None
        if name not in self.calls and (len(self.calls) - (OTHER in self.calls)) >= self.limit:
            name = OTHER
            self.folded += 1
        self.calls[name] = self.calls.get(name, 0) + 1
        return name

    def top(self, n: int) -> list[tuple[str, int]]:
        """The n names with the most calls, most first."""
        return sorted(self.calls.items(), key=lambda kv: (-kv[1], kv[0]))[:n]
