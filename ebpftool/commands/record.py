"""`ebpftool record FILE`: trace like `trace`, saving what is exported for `ebpftool replay`."""
from typing import Annotated

import typer

from ebpftool.commands.common import CommonOptions
from ebpftool.commands.gpu import Discover, IoctlPrefix, LeakReport, Lib, SampleCalls, SpanThreshold
from ebpftool.commands.inference import CaptureBytes, Comm, Hooks, MaxConnections, Port
from ebpftool.commands.net import PricePerGb, TopFlows, ZonesFile
from ebpftool.commands.options import (DEFAULT_FLUSH_TIMEOUT, DEFAULT_INTERVAL, DEFAULT_MAX_CPU_PERCENT,
                                       DEFAULT_MAX_SERIES, DEFAULT_PROMETHEUS_ADDRESS, DEFAULT_SPAN_RATE, Config,
                                       Duration, FlushTimeout, Interval, JsonlPath, MaxCpu, MaxSeries, OtlpEndpoint,
                                       OtlpProtocol, Overwrite, PrometheusAddress, PrometheusPort, Region,
                                       ServiceName, SpanRate, SummaryJson, Ui, Zone)
from ebpftool.commands.agents import Prices
from ebpftool.commands.trace import (AGENTS_BY_DEFAULT, AgentsOn, GpuOn, GpuPid, InferenceOn, InferencePid, NetOn,
                                     NetSpans, run_trace, trace_params)
from ebpftool.tracers.gpu import DEFAULT_IOCTL_PREFIX, DEFAULT_SPAN_THRESHOLD_S
from ebpftool.tracers.inference import DEFAULT_CAPTURE_BYTES, DEFAULT_MAX_CONNECTIONS

Path = Annotated[str, typer.Argument(help="File to write (mode 0600): spans and metric snapshots as JSON lines.")]


def record(
    path: Path,
    inference: InferenceOn = True,
    net: NetOn = True,
    gpu: GpuOn = True,
    agents: AgentsOn = AGENTS_BY_DEFAULT,
    prices: Prices = None,
    port: Port = None,
    pid: InferencePid = None,
    comm: Comm = None,
    capture_bytes: CaptureBytes = DEFAULT_CAPTURE_BYTES,
    hooks: Hooks = "auto",
    max_connections: MaxConnections = DEFAULT_MAX_CONNECTIONS,
    zones: ZonesFile = None,
    price_per_gb: PricePerGb = None,
    flows: TopFlows = 0,
    net_spans: NetSpans = False,
    lib: Lib = None,
    gpu_pid: GpuPid = None,
    span_threshold: SpanThreshold = DEFAULT_SPAN_THRESHOLD_S,
    sample_calls: SampleCalls = 0,
    discover: Discover = True,
    ioctl_path_prefix: IoctlPrefix = DEFAULT_IOCTL_PREFIX,
    leak_report: LeakReport = None,
    *,
    duration: Duration = None,
    interval: Interval = DEFAULT_INTERVAL,
    otlp_endpoint: OtlpEndpoint = None,
    otlp_protocol: OtlpProtocol = None,
    jsonl: JsonlPath = None,
    prometheus_port: PrometheusPort = None,
    service_name: ServiceName = None,
    zone: Zone = None,
    region: Region = None,
    span_rate: SpanRate = DEFAULT_SPAN_RATE,
    ui: Ui = None,
    config: Config = None,
    prometheus_address: PrometheusAddress = DEFAULT_PROMETHEUS_ADDRESS,
    overwrite: Overwrite = False,
    flush_timeout: FlushTimeout = DEFAULT_FLUSH_TIMEOUT,
    max_series: MaxSeries = DEFAULT_MAX_SERIES,
    max_cpu: MaxCpu = DEFAULT_MAX_CPU_PERCENT,
    summary_json: SummaryJson = None,
) -> None:
    """Trace like `trace` and save spans and metric snapshots to FILE, for `ebpftool replay`."""
    common = CommonOptions.from_params(locals())
    common.record = path
    run_trace(common, **trace_params(locals()))


def register(app: typer.Typer) -> None:
    app.command()(record)
