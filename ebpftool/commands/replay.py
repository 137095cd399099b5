"""`ebpftool replay FILE`: re-export a recording through the same pipeline (no BPF, no root needed)."""
from __future__ import annotations

from typing import Annotated

import typer

from ebpftool.commands.common import CommonOptions, build_telemetry, console, out
from ebpftool.commands.options import JsonlPath, OtlpEndpoint, OtlpProtocol, ServiceName
from ebpftool.errors import EbpftoolError
from ebpftool.export.model import SpanRecord
from ebpftool.record import Refusals, read_recording
from ebpftool.ui.text import markup_safe


def replay(
    path: Annotated[str, typer.Argument(help="A file written by `ebpftool record` or `--record`.")],
    otlp_endpoint: OtlpEndpoint = None,
    otlp_protocol: OtlpProtocol = None,
    jsonl: JsonlPath = None,
    service_name: ServiceName = None,
) -> None:
    """Send a recording's spans and metric snapshots to OTLP / a JSON-lines file.

    Records that are not what `--record` writes are refused, counted and reported; exit code 1 when
    the file is not a recording or nothing in it could be replayed."""
    refused = Refusals()
    items = read_recording(path, refused)  # the file and its header are checked here; records stream
    telemetry, _ = build_telemetry(CommonOptions(otlp_endpoint=otlp_endpoint, otlp_protocol=otlp_protocol,
                                                 jsonl=jsonl, service_name=service_name))
    spans = snapshots = 0
    try:
        for item in items:
            if isinstance(item, SpanRecord):
                telemetry.emit_span(item)
                spans += 1
            else:
                telemetry.export_metrics(item)  # cumulative snapshots: the last one carries the totals
                snapshots += 1
    finally:
        telemetry.shutdown()
    c = telemetry.counters()
    for line in refused.lines():
        console.print(f"[yellow]replay:[/] {markup_safe(line)}", highlight=False)
    if not spans and not snapshots:
        why = f" ({refused.total()} records refused)" if refused.total() else ""
        raise EbpftoolError(f"nothing to replay in {path}: no valid span or metric snapshot{why}")
    out.print(f"replayed {spans} spans and {snapshots} metric snapshots from {path} "
              f"({c['spans_exported']} spans exported, {c['spans_failed'] + c['spans_dropped_queue'] + c.get('spans_unsent_at_exit', 0)} dropped)")


def register(app: typer.Typer) -> None:
    app.command()(replay)
