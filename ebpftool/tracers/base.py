"""What the three BPF tracers share on top of ebpftool.core.tracer.Tracer: their drop counters as metrics."""
from __future__ import annotations

from ebpftool.core.tracer import Tracer
from ebpftool import semconv as sc
from ebpftool.export.model import MetricPoint, counter


class BpfTracer(Tracer):
    def drop_metrics(self) -> list[MetricPoint]:
        d = self.drops()
        attrs = {sc.EBPFTOOL_TRACER: self.name}
        return [
            counter(sc.EBPFTOOL_EVENTS_LOST, "{event}", "Events lost in the kernel because the ring buffer was full",
                    d["events_lost"], attrs),
            counter(sc.EBPFTOOL_SPANS_UNSAMPLED, "{span}", "Spans not sent because the in-kernel span budget was spent "
                    "(metrics still count them)", d["spans_unsampled"], attrs),
        ]
