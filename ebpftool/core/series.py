"""How many series a tracer may export, and when the series of a gone process may end.

The bound itself is applied by the export layer (ebpftool.export.series.SeriesLimiter), which the
runner asks its telemetry for, one per tracer.
"""
from __future__ import annotations

import time

DEFAULT_MAX_SERIES = 2000


# --- when a gone process's series may end ------------------------------------------------------------
RETIRE_MAX_WAIT_S = 300.0   # with a Prometheus endpoint nobody scrapes, gone series still end after this


class Scrapes:
    """Counts the scrapes of the Prometheus endpoint: a pulled series must be read before it ends."""

    def __init__(self) -> None:
        self.count = 0

    def wrap(self, snapshot):
        def counted():
            data = snapshot()
            self.count += 1
            return data
        return counted


class Retirement:
    """Which gone keys (pids, flow groups) may end now. Call update() once per collect with the keys found
    gone at this collect: a key may end once it was gone at two collects in a row (both exported its final
    values) and, when a Prometheus endpoint serves the metrics, once a scrape came after those exports
    (or RETIRE_MAX_WAIT_S passed): a series that ends before it was scraped would lose its last counts."""

    def __init__(self) -> None:
        self.scrapes: Scrapes | None = None
        self._gone: dict = {}   # key -> [collects seen gone, scrapes at the second, monotonic time first seen]

    def update(self, gone_now: set, now: float | None = None) -> set:
        now = time.monotonic() if now is None else now
        for k in [k for k in self._gone if k not in gone_now]:
            del self._gone[k]
        retire = set()
        for k in gone_now:
            e = self._gone.setdefault(k, [0, None, now])
            e[0] += 1
            if e[0] == 2 and self.scrapes is not None:
                e[1] = self.scrapes.count
            if e[0] < 2:
                continue
            if self.scrapes is None or (e[0] > 2 and self.scrapes.count > e[1]) or now - e[2] >= RETIRE_MAX_WAIT_S:
                retire.add(k)
        for k in retire:
            del self._gone[k]
        return retire
