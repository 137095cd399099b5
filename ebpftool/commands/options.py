"""The options every tracing command shares, declared once as Typer `Annotated` types and, with their
defaults, as the parameters SHARED_OPTIONS.

A command takes them through `packed_options` (commands/common.py: `@common_options()`), which adds them to
the signature Typer reads: what `--help` shows is what that signature says.
"""
from __future__ import annotations

import functools
import inspect
import math
from typing import Annotated, Any, Callable, Optional, Sequence

import typer

from ebpftool.core.cpu_budget import DEFAULT_MAX_CPU_PERCENT
from ebpftool.core.series import DEFAULT_MAX_SERIES
from ebpftool.core.tracer import DEFAULT_SPAN_RATE, SPAN_BURST_SECONDS
from ebpftool.errors import EbpftoolError
from ebpftool.export.pipeline import EXIT_FLUSH_SECONDS
from ebpftool.export.sinks import DEFAULT_PROMETHEUS_ADDRESS

__all__ = [
    "DEFAULT_FLUSH_TIMEOUT", "DEFAULT_INTERVAL", "DEFAULT_MAX_CPU_PERCENT", "DEFAULT_MAX_SERIES",
    "DEFAULT_PROMETHEUS_ADDRESS", "DEFAULT_SPAN_RATE", "MAX_SPAN_RATE", "SHARED_OPTIONS", "Config", "Duration",
    "FlushTimeout", "Interval", "JsonlPath", "MaxCpu", "MaxSeries", "OtlpEndpoint", "OtlpProtocol", "Overwrite",
    "PrometheusAddress", "PrometheusPort", "Record", "Region", "ServiceName", "SpanRate", "SummaryJson", "Ui", "Zone",
    "finite", "packed_options", "parameter",
]

DEFAULT_INTERVAL = 5.0                   # seconds between metric exports and view refreshes
DEFAULT_FLUSH_TIMEOUT = EXIT_FLUSH_SECONDS
MAX_SPAN_RATE = 10_000_000   # spans per second: the kernel's budget is compiled in (bpf/common.bpf.h)


def finite(value: float | None) -> float | None:
    """An option callback: click's float ranges let nan and inf through."""
    if value is not None and not math.isfinite(value):
        raise typer.BadParameter(f"{value} is not a finite number")
    return value


def _apply_config(ctx: typer.Context, value: Optional[str]) -> Optional[str]:
    """--config FILE: its keys become the defaults of this command's flags (so flags override it)."""
    if value:
        from ebpftool.config import check_keys, load_config_file

        try:
            data = load_config_file(value)
            check_keys(value, data, {p.name for p in ctx.command.params})
        except EbpftoolError as exc:
            raise typer.BadParameter(str(exc)) from exc
        ctx.default_map = {**(ctx.default_map or {}), **data}
    return value


Duration = Annotated[Optional[float], typer.Option("--duration", "-d", min=0.1, max=10 * 365 * 86400, callback=finite, help="Stop after this many seconds (default: until Ctrl-C / SIGTERM).")]
Interval = Annotated[float, typer.Option("--interval", "-i", min=0.1, max=86400, callback=finite, help="Seconds between metric exports and view refreshes.")]
OtlpEndpoint = Annotated[Optional[str], typer.Option("--otlp-endpoint", help="OTLP collector URL (default: $OTEL_EXPORTER_OTLP_ENDPOINT).")]
OtlpProtocol = Annotated[Optional[str], typer.Option("--otlp-protocol", help="grpc or http/protobuf (default: $OTEL_EXPORTER_OTLP_PROTOCOL, else by port).")]
JsonlPath = Annotated[Optional[str], typer.Option("--jsonl", help="Also write spans and metric points as JSON lines to this file (mode 0600).")]
PrometheusPort = Annotated[Optional[int], typer.Option("--prometheus-port", min=0, max=65535, help="Serve Prometheus metrics on this port.")]
PrometheusAddress = Annotated[str, typer.Option("--prometheus-address", help="Address the Prometheus endpoint listens on (0.0.0.0 or :: for every interface).")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace an existing --jsonl / --record file (without it, an existing file is refused).")]
FlushTimeout = Annotated[float, typer.Option("--flush-timeout", min=0, help="Most seconds spent at exit sending what is still queued; the rest is counted as not sent.")]
ServiceName = Annotated[Optional[str], typer.Option("--service-name", help="service.name resource attribute (default: ebpftool).")]
Zone = Annotated[Optional[str], typer.Option("--zone", help="This node's availability zone (default: $EBPFTOOL_ZONE).")]
Region = Annotated[Optional[str], typer.Option("--region", help="This node's cloud region (default: $EBPFTOOL_REGION).")]
SpanRate = Annotated[int, typer.Option("--span-rate", min=0, max=MAX_SPAN_RATE, help=f"Most spans per second sent from the kernel, with bursts of up to {SPAN_BURST_SECONDS} seconds' worth; the rest are counted, metrics stay exact.")]
MaxCpu = Annotated[float, typer.Option(
    "--max-cpu", min=0, max=100_000,
    help="ebpftool's own CPU, in percent of one core, above which it sends fewer spans (halved each second "
         "it stays over; counted as unsampled); metrics stay exact. 0: no limit.")]
MaxSeries = Annotated[int, typer.Option(
    "--max-series", min=2, max=1_000_000,
    help="Most series per metric and tracer; further attribute sets (e.g. more processes) are folded into one "
         "overflow series, otel.metric.overflow=true, and counted.")]
Record = Annotated[Optional[str], typer.Option("--record", help="Also save spans and metric snapshots to this file for `ebpftool replay` (mode 0600).")]
Config = Annotated[Optional[str], typer.Option("--config", "-c", is_eager=True, callback=_apply_config,
                                               help="YAML file holding any of these flags (flags override it).")]
SummaryJson = Annotated[Optional[str], typer.Option("--summary-json", help="Also write the exit summary's figures to this file as JSON (mode 0600), for scripts.")]
Ui = Annotated[Optional[bool], typer.Option("--ui/--no-ui", help="Live terminal view (default: on when stdout is a terminal).")]


def parameter(name: str, annotation: Any, default: Any) -> inspect.Parameter:
    """A command's option as a keyword-only parameter: Typer reads the option from `annotation`, its default from
    `default`."""
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default)


# The shared options in the order `--help` lists them, after a command's own.
SHARED_OPTIONS = (
    parameter("duration", Duration, None),
    parameter("interval", Interval, DEFAULT_INTERVAL),
    parameter("otlp_endpoint", OtlpEndpoint, None),
    parameter("otlp_protocol", OtlpProtocol, None),
    parameter("jsonl", JsonlPath, None),
    parameter("prometheus_port", PrometheusPort, None),
    parameter("service_name", ServiceName, None),
    parameter("zone", Zone, None),
    parameter("region", Region, None),
    parameter("span_rate", SpanRate, DEFAULT_SPAN_RATE),
    parameter("ui", Ui, None),
    parameter("record", Record, None),
    parameter("config", Config, None),
    parameter("prometheus_address", PrometheusAddress, DEFAULT_PROMETHEUS_ADDRESS),
    parameter("overwrite", Overwrite, False),
    parameter("flush_timeout", FlushTimeout, DEFAULT_FLUSH_TIMEOUT),
    parameter("max_series", MaxSeries, DEFAULT_MAX_SERIES),
    parameter("max_cpu", MaxCpu, DEFAULT_MAX_CPU_PERCENT),
    parameter("summary_json", SummaryJson, None),
)


def packed_options(name: str, options: Sequence[inspect.Parameter], pack: Callable[..., Any]):
    """A decorator: the command's parameter `name` stands for `options`, declared once for several commands.

    In the signature Typer builds the command from (`__signature__`, which inspect.signature honours), `name`
    is replaced by `options`, in its place; the command is then called with their values packed as
    `name=pack(**values)`. The decorated function takes the options as its signature says, defaults included,
    so it can also be called directly.
    """
    names = [option.name for option in options]

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        declared = inspect.signature(command, eval_str=True)  # Typer does not evaluate a __signature__'s strings
        own = list(declared.parameters.values())
        at = [p.name for p in own].index(name)
        signature = declared.replace(parameters=[*own[:at], *options, *own[at + 1:]])

        @functools.wraps(command)
        def call(*args: Any, **kwargs: Any) -> Any:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            values = bound.arguments
            packed = pack(**{n: values.pop(n) for n in names})
            return command(**values, **{name: packed})

        call.__signature__ = signature  # type: ignore[attr-defined]
        return call

    return decorate
