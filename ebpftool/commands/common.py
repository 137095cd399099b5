"""What every tracing command shares once its flags are read, the decorator that gives a command those flags,
and the one function that runs tracers for a command.

Commands stay thin: they turn flags into tracer options and call execute(). The flags themselves are
declared in commands/options.py.
"""
from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable, Collection, Sequence

from rich.console import Console, Group
from rich.live import Live
from rich.status import Status
from rich.table import Table

from ebpftool.commands.options import (DEFAULT_INTERVAL, DEFAULT_MAX_CPU_PERCENT, DEFAULT_MAX_SERIES,
                                       DEFAULT_PROMETHEUS_ADDRESS, DEFAULT_SPAN_RATE, SHARED_OPTIONS, packed_options)
from ebpftool.core.privileges import require_privileges
from ebpftool.core.runner import RunResult, StopFlag, run
from ebpftool.core.series import Retirement, Scrapes
from ebpftool.core.tracer import Tracer, TracerOptions
from ebpftool.errors import EbpftoolError
from ebpftool.export.otel import build_resource
from ebpftool.export.pipeline import Telemetry
from ebpftool.export.sinks import PrometheusEndpoint, create_private, jsonl_sink, otlp_sink, resolve_otlp
from ebpftool.ui import live_view, summary_rows
from ebpftool.ui.text import markup_safe, plain

console = Console(stderr=True)
out = Console()


@dataclass
class CommonOptions:
    duration: float | None = None
    interval: float = DEFAULT_INTERVAL
    otlp_endpoint: str | None = None
    otlp_protocol: str | None = None
    jsonl: str | None = None
    prometheus_port: int | None = None
    service_name: str | None = None
    zone: str | None = None
    region: str | None = None
    span_rate: int = DEFAULT_SPAN_RATE
    ui: bool | None = None
    record: str | None = None
    config: str | None = None
    prometheus_address: str = DEFAULT_PROMETHEUS_ADDRESS
    overwrite: bool = False
    flush_timeout: float | None = None  # None: the pipeline's default (replay); tracing commands: --flush-timeout
    max_series: int = DEFAULT_MAX_SERIES
    max_cpu: float = DEFAULT_MAX_CPU_PERCENT   # percent of one core (--max-cpu)
    summary_json: str | None = None  # also write the exit summary's figures there

    def tracer_options(self) -> TracerOptions:
        return TracerOptions(span_rate=self.span_rate)


def common_options(*replaced: inspect.Parameter, leave_out: Collection[str] = ()):
    """A decorator for a tracing command: its keyword-only parameter `common: CommonOptions` becomes the shared
    options (options.SHARED_OPTIONS) on its command line, and it is called with them packed in `common`.

    `replaced`: shared options this command declares otherwise, by name (demo's --duration); `leave_out`: those
    it does not offer (record's --record: its PATH argument is the recording)."""
    by_name = {p.name: p for p in replaced}
    unknown = set(by_name) - {p.name for p in SHARED_OPTIONS}
    if unknown:   # a misspelt name would leave the shared option as it is, silently
        raise ValueError(f"not shared options: {', '.join(sorted(unknown))}")
    options = [by_name.get(p.name, p) for p in SHARED_OPTIONS if p.name not in leave_out]
    return packed_options("common", options, CommonOptions)


def build_telemetry(opts: CommonOptions, scrapes: Scrapes | None = None) -> tuple[Telemetry, PrometheusEndpoint | None]:
    resource = build_resource(opts.service_name, opts.zone, opts.region)
    sinks = []
    try:
        otlp = resolve_otlp(opts.otlp_endpoint, opts.otlp_protocol)
    except ValueError as exc:  # what urllib cannot parse at all, e.g. http://[::1
        endpoint = opts.otlp_endpoint or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "")
        raise EbpftoolError(f"OTLP endpoint '{endpoint}' is not a URL like http://collector:4317 ({exc})") from None
    if otlp:
        sinks.append(otlp_sink(*otlp))
    created: list[str] = []  # output files this call made: removed again if the command cannot start

    def undo() -> None:
        for sink in sinks:
            if sink.spans is not None:
                sink.spans.shutdown()
        for path in created:
            with contextlib.suppress(OSError):
                os.unlink(path)

    recorder = None
    try:
        if opts.jsonl:
            sinks.append(jsonl_sink(opts.jsonl, resource.attributes, overwrite=opts.overwrite))
            created.append(opts.jsonl)
        if opts.record:
            from ebpftool.record import Recorder

            recorder = Recorder(opts.record, overwrite=opts.overwrite)
            created.append(opts.record)
    except EbpftoolError:
        undo()
        raise
    extra = {} if opts.flush_timeout is None else {"flush_timeout": opts.flush_timeout}
    telemetry = Telemetry(resource, sinks, recorder, report=lambda msg: console.print(f"[yellow]{markup_safe(msg)}[/]"),
                          **extra)
    prom = None
    if opts.prometheus_port is not None:
        try:
            snapshot = lambda: telemetry.latest_metrics  # noqa: E731
            prom = PrometheusEndpoint(opts.prometheus_port, scrapes.wrap(snapshot) if scrapes else snapshot,
                                      host=opts.prometheus_address)
        except EbpftoolError:
            telemetry.shutdown()
            undo()
            raise
    return telemetry, prom


def execute(make_tracers: Callable[[Telemetry], Sequence[Tracer]], opts: CommonOptions, *, skip_failed: bool = False,
            after_start: Callable[[], None] | None = None) -> RunResult:
    """Check privileges, build the pipeline, run the tracers, print the summary."""
    require_privileges()
    stop = StopFlag()
    stop.install()  # a stop request from here on ends the start-up too (see runner.start_tracers)
    try:
        return _execute(make_tracers, opts, stop, skip_failed=skip_failed, after_start=after_start)
    finally:
        stop.restore()


def _execute(make_tracers: Callable[[Telemetry], Sequence[Tracer]], opts: CommonOptions, stop: StopFlag, *,
             skip_failed: bool, after_start: Callable[[], None] | None) -> RunResult:
    summary_file = create_private(opts.summary_json, opts.overwrite) if opts.summary_json else None
    try:
        result, tracers, telemetry, prom = _run_and_report(make_tracers, opts, stop, skip_failed=skip_failed,
                                                           after_start=after_start)
    except BaseException:
        if summary_file is not None:  # nothing to say: no empty file left behind
            summary_file.close()
            os.unlink(opts.summary_json)
        raise
    if summary_file is not None:
        with summary_file:
            json.dump(summary_document(result, tracers, telemetry, prom), summary_file, indent=2)
            summary_file.write("\n")
    return result


def _run_and_report(make_tracers: Callable[[Telemetry], Sequence[Tracer]], opts: CommonOptions, stop: StopFlag, *,
                    skip_failed: bool, after_start: Callable[[], None] | None
                    ) -> tuple[RunResult, Sequence[Tracer], Telemetry, PrometheusEndpoint | None]:
    scrapes = Scrapes() if opts.prometheus_port is not None else None
    telemetry, prom = build_telemetry(opts, scrapes)
    tracers = make_tracers(telemetry)
    for t in tracers:   # a gone process's series end only once scraped (see core/series.Retirement)
        if isinstance(getattr(t, "retirement", None), Retirement):
            t.retirement.scrapes = scrapes
    live_ui = opts.ui if opts.ui is not None else sys.stdout.isatty()
    live: Live | None = None

    spinner: Status | None = None  # on a terminal, while a tracer compiles and attaches

    def end_spinner() -> None:
        nonlocal spinner
        if spinner is not None:
            spinner.stop()
            spinner = None

    def on_starting(t: Tracer) -> None:
        nonlocal spinner
        end_spinner()  # the previous tracer's, if it could not start
        if console.is_terminal:
            spinner = console.status(f"[bold]{t.name}[/]: compiling and attaching probes...")
            spinner.start()

    def on_start(t: Tracer, seconds: float) -> None:
        end_spinner()
        n = sum(len(p.probes) for p in t.programs)
        console.print(f"[green]{t.name}[/]: {n} probes attached in {seconds:.2f}s")

    def on_interval(running: Sequence[Tracer]) -> None:
        nonlocal live
        if not live_ui:
            return
        views = [v for v in (live_view(t, out.width) for t in running) if v is not None]
        if live is None:
            live = Live(Group(*views), console=out, auto_refresh=False)
            live.start()
        else:
            live.update(Group(*views), refresh=True)

    try:
        result = run(tracers, telemetry, duration=opts.duration, interval=opts.interval, skip_failed=skip_failed,
                     on_start=on_start, on_starting=on_starting, on_interval=on_interval,
                     after_start=after_start, stop=stop, max_series=opts.max_series,
                     max_cpu=opts.max_cpu / 100, on_cpu_budget=cpu_budget_moved(opts.max_cpu))
    finally:
        end_spinner()
        if live is not None:
            live.stop()
            if not out.is_terminal:
                out.line()  # Live ends its last frame with a newline only on a terminal
        if prom is not None:
            prom.close()
    if not telemetry.sinks and telemetry.recorder is None:
        result.pipeline = {}  # terminal only: no export figures to show
    for name, why in result.skipped.items():
        console.print(f"[yellow]{name} skipped[/]: {markup_safe(str(why))}")
    for name in result.not_started:
        console.print(f"[yellow]{name} not started[/]: {result.interrupted_by} arrived during start-up")
    out.print(summary_table(result, tracers, telemetry, prom))
    return result, tracers, telemetry, prom


# Spans are emitted once and delivered to each sink: the totals over sinks are not shown, each sink is.
_PER_SINK = {"spans_exported", "spans_failed", "metric_exports_failed", "export_bytes"}


# Figures that count something lost, refused, dropped or not measured: at 0 they are summed up in one health
# line instead of a row each (--summary-json keeps every figure).
HEALTH_FIGURES = ("events lost", "events unreadable", "spans unsampled", "map full", "maps full", "table full",
                  "not measured", "not remembered", "unmatched returns", "series folded", "spans dropped queue",
                  "spans unsent", "snapshots superseded", "failed", "connections refused", "connections timed out")
HEALTH_LINE = "health: losses, refusals, failures"
ALL_WELL = "none"


def cpu_budget_moved(max_cpu_percent: float) -> Callable[[int, float], None]:
    """What the user reads when --max-cpu thins spans, or lets them all through again."""
    def say(shift: int, used: float) -> None:
        at = f"1/{1 << shift} of --span-rate" if shift else "--span-rate again"
        console.print(f"[yellow]ebpftool used {used:.0%} of a core over the last second (--max-cpu "
                      f"{max_cpu_percent:g}%): spans now at {at}; metrics stay exact[/]")
    return say


def cpu_share(result: RunResult) -> str:
    """The tool's CPU while it traced, as a share of one core and per 1,000 spans it emitted."""
    text = f"{result.cpu_seconds / result.traced_seconds:.1%} of a core"
    spans = result.pipeline.get("spans_emitted", 0)
    if spans >= 1000:
        text += f" ({1000 * result.cpu_seconds / spans * 1000:.0f} ms per 1,000 spans)"
    return text


def is_health_figure(label: str) -> bool:
    return any(word in label for word in HEALTH_FIGURES)


def summary_table(result: RunResult, tracers: Sequence[Tracer], telemetry: Telemetry | None = None,
                  prom: PrometheusEndpoint | None = None) -> Table:
    table = Table(title=f"ebpftool summary ({result.seconds:.1f}s, stopped by {result.interrupted_by or 'error'})")
    table.add_column("tracer")
    table.add_column("figure")
    table.add_column("value", justify="right")
    rows: list[tuple[str, str, Any]] = []
    for t in tracers:
        if t.name not in result.started:
            continue
        rows.append((t.name, "start-up (compile + attach)", f"{result.started[t.name]:.2f}s"))
        rows += [(t.name, k, v) for k, v in summary_rows(result.summaries.get(t.name))]
        rows += [(t.name, k.replace("_", " "), v) for k, v in result.drops.get(t.name, {}).items()]
        if t.name in result.series_folded:
            rows.append((t.name, "series folded into overflow (--max-series)", result.series_folded[t.name]))
    if result.traced_seconds > 0:
        rows.append(("ebpftool", "CPU while tracing (all its threads)", cpu_share(result)))
    if result.span_shift_max:
        rows.append(("ebpftool", "spans thinned for --max-cpu, at most to", f"1/{1 << result.span_shift_max}"))
    rows += [("export", k.replace("_", " "), v) for k, v in result.pipeline.items()
             if telemetry is None or k not in _PER_SINK]
    if telemetry is not None and result.pipeline:
        rows += [(f"export to {sink}", k.replace("_", " "), v)
                 for sink, figures in telemetry.sink_counters().items() for k, v in figures.items()]
    if prom is not None:
        rows.append(("prometheus", f"connections refused (over {prom.max_connections} at once)", prom.refused))
        rows.append(("prometheus", f"connections timed out (after {prom.connection_seconds:g}s)", prom.timed_out))
    troubles = [r for r in rows if is_health_figure(r[1]) and r[2]]
    for who, label, value in rows:
        if not is_health_figure(label) or value:
            table.add_row(plain(who), plain(label), plain(_fmt(value)))   # labels name processes too
    table.add_row("ebpftool", HEALTH_LINE, ALL_WELL if not troubles else f"{len(troubles)} (above)")
    return table


def summary_document(result: RunResult, tracers: Sequence[Tracer], telemetry: Telemetry | None = None,
                     prom: PrometheusEndpoint | None = None) -> dict:
    """The summary table's figures for scripts (--summary-json), every one, 0 or not: per tracer its start-up,
    its summary's figures (the inference headline among them), its drops; then the export's counts."""
    doc: dict[str, Any] = {"seconds": result.seconds, "stopped_by": result.interrupted_by, "tracers": {}}
    for t in tracers:
        if t.name not in result.started:
            continue
        summary = result.summaries.get(t.name)
        doc["tracers"][t.name] = {
            "start_up_seconds": result.started[t.name],
            **(dataclasses.asdict(summary) if dataclasses.is_dataclass(summary) else {}),
            "drops": dict(result.drops.get(t.name, {})),
            "series_folded": result.series_folded.get(t.name, 0)}
    doc["spans_thinned_to"] = 1 / (1 << result.span_shift_max)   # of --span-rate at most, for --max-cpu
    doc["cpu_seconds"], doc["traced_seconds"] = result.cpu_seconds, result.traced_seconds
    doc["export"] = dict(result.pipeline)
    if telemetry is not None and result.pipeline:
        doc["export_by_sink"] = telemetry.sink_counters()
    if prom is not None:
        doc["prometheus"] = {"connections_refused": prom.refused, "connections_timed_out": prom.timed_out}
    return doc


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)
