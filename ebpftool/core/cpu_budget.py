"""A CPU budget for ebpftool itself: while its own CPU is over a share of one core, spans are thinned.

The metrics are computed in the kernel (and, for HTTP/2, from records that are not spans) and stay exact;
what costs user space per request is the span (decoding, enrichment, the OpenTelemetry SDK and exporters).
So when the process's CPU time over the last window passes --max-cpu, every tracer's span budget is divided by
the power of two at or above the overuse (twice the share: halved; 30 times: 1/32; the kernel's span_shift
map: spans are due that much farther apart; user-space budgets the same), again each window it stays over,
down to 1/2^MAX_SHIFT of --span-rate; once the process uses less than half its share, the budget doubles
back, a window at a time. Spans not sent count as ebpftool.spans.unsampled, as the
budget's other refusals do.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence

DEFAULT_MAX_CPU_PERCENT = 25.0   # of one core
WINDOW_S = 1.0                   # how long the process's CPU is averaged before the budget moves
MAX_SHIFT = 10                   # the span budget is divided by at most 2**10
# The first window begins this long after the tracers started: start-up's own work (the rare paths' programs
# verified in the background) is not the tracing's CPU.
SETTLE_S = 2.0


class ThinsSpans(Protocol):
    def set_span_shift(self, shift: int) -> None: ...


@dataclass
class CpuBudget:
    """Decides, once per window, how far spans are thinned (see the module's docstring)."""

    share: float                                     # of one core (0.25: 25%); 0 or less: no budget
    process_time: Callable[[], float] = time.process_time
    wall_time: Callable[[], float] = time.monotonic
    on_change: Callable[[int, float], None] | None = None   # (new shift, the CPU share that moved it)
    shift: int = 0
    max_shift_seen: int = 0
    _since: tuple[float, float] | None = field(default=None, repr=False)
    _started: float | None = field(default=None, repr=False)

    def check(self, tracers: Sequence[ThinsSpans]) -> None:
        """Called often (the run loop's turns): moves the budget at most once per window."""
        if self.share <= 0:
            return
        now = (self.wall_time(), self.process_time())
        if self._since is None:   # not settled yet: the first window starts SETTLE_S after the first look
            if self._started is None:
                self._started = now[0]
            if now[0] - self._started >= SETTLE_S:
                self._since = now
            return
        wall = now[0] - self._since[0]
        if wall < WINDOW_S:
            return
        used = (now[1] - self._since[1]) / wall
        self._since = now
        shift = self.shift
        if used > self.share:
            shift = min(MAX_SHIFT, shift + max(1, math.ceil(math.log2(used / self.share))))
        elif used < self.share / 2 and shift > 0:
            shift -= 1
        if shift != self.shift:
            self.shift = shift
            self.max_shift_seen = max(self.max_shift_seen, shift)
            for t in tracers:
                t.set_span_shift(shift)
            if self.on_change:
                self.on_change(shift, used)
