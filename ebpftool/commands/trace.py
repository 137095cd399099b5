"""`ebpftool trace`: every tracer, one pipeline, one view, one shutdown."""
from typing import Annotated, List, Optional

import typer

from ebpftool.commands.common import CommonOptions, execute
from ebpftool.commands.agents import Prices, agents_tracer
from ebpftool.commands.gpu import Discover, IoctlPrefix, LeakReport, Lib, SampleCalls, SpanThreshold, gpu_tracer
from ebpftool.commands.inference import CaptureBytes, Comm, Hooks, MaxConnections, Port, inference_tracer
from ebpftool.commands.net import PricePerGb, TopFlows, ZonesFile, net_tracer
from ebpftool.commands.options import (DEFAULT_FLUSH_TIMEOUT, DEFAULT_INTERVAL, DEFAULT_MAX_CPU_PERCENT,
                                       DEFAULT_MAX_SERIES, DEFAULT_PROMETHEUS_ADDRESS, DEFAULT_SPAN_RATE, Config,
                                       Duration, FlushTimeout, Interval, JsonlPath, MaxCpu, MaxSeries, OtlpEndpoint,
                                       OtlpProtocol, Overwrite, PrometheusAddress, PrometheusPort, Record, Region,
                                       ServiceName, SpanRate, SummaryJson, Ui, Zone)
from ebpftool.tracers.gpu import DEFAULT_IOCTL_PREFIX, DEFAULT_SPAN_THRESHOLD_S
from ebpftool.tracers.inference import DEFAULT_CAPTURE_BYTES, DEFAULT_MAX_CONNECTIONS

# Where inference servers listen by default: vLLM, Ray Serve, Triton (8000), TGI (8080),
# Ollama (11434), SGLang (30000). Used by `trace` when no --port/--pid/--comm is given.
DEFAULT_INFERENCE_PORTS = (8000, 8080, 11434, 30000)
# The agents tracer in `trace`: off unless asked for. Its start-up is small (0.4-0.5 s), but it hooks every
# process's socket reads and writes and every OpenSSL call on the node, which the other tracers do not (see
# docs/agents.md, "In `ebpftool trace`").
AGENTS_BY_DEFAULT = False

InferenceOn = Annotated[bool, typer.Option("--inference/--no-inference", help="Trace HTTP inference requests.")]
NetOn = Annotated[bool, typer.Option("--net/--no-net", help="Trace network flows by zone pair.")]
GpuOn = Annotated[bool, typer.Option("--gpu/--no-gpu", help="Trace CUDA calls and NVIDIA ioctls.")]
AgentsOn = Annotated[bool, typer.Option("--agents/--no-agents", help="Trace the LLM API and MCP calls every process "
                                                                      "makes (client side; `ebpftool agents`).")]
InferencePid = Annotated[Optional[List[int]], typer.Option(
    "--pid", help="inference: watch the sockets this process (and its children) accepts; repeatable.")]
GpuPid = Annotated[Optional[int], typer.Option("--gpu-pid", help="gpu: trace only this process and its descendants.")]
NetSpans = Annotated[bool, typer.Option("--net-spans/--no-net-spans", help="net: a span per TCP connection.")]


def trace(
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
    record: Record = None,
    config: Config = None,
    prometheus_address: PrometheusAddress = DEFAULT_PROMETHEUS_ADDRESS,
    overwrite: Overwrite = False,
    flush_timeout: FlushTimeout = DEFAULT_FLUSH_TIMEOUT,
    max_series: MaxSeries = DEFAULT_MAX_SERIES,
    max_cpu: MaxCpu = DEFAULT_MAX_CPU_PERCENT,
    summary_json: SummaryJson = None,
) -> None:
    """Run the inference, network and GPU tracers (and with --agents the agents tracer) together: one pipeline,
    one view, one shutdown.

    A tracer this kernel cannot run is reported and skipped; the others go on."""
    run_trace(CommonOptions.from_params(locals()), **trace_params(locals()))


def trace_params(params) -> dict:
    """The tracer flags of `trace` (and `record`) out of a command's parameters."""
    return {name: params[name] for name in TRACER_FLAGS}


TRACER_FLAGS = ("inference", "net", "gpu", "agents", "prices", "port", "pid", "comm", "capture_bytes", "hooks", "max_connections", "zones",
                "price_per_gb", "flows", "net_spans", "lib", "gpu_pid", "span_threshold", "sample_calls", "discover",
                "ioctl_path_prefix", "leak_report")


def run_trace(common: CommonOptions, *, inference, net, gpu, agents, prices, port, pid, comm, capture_bytes, hooks, max_connections,
              zones, price_per_gb, flows, net_spans, lib, gpu_pid, span_threshold, sample_calls, discover,
              ioctl_path_prefix, leak_report) -> None:
    """What `trace` and `record` do once their flags are read."""
    factories = []
    if inference:
        if not (port or pid or comm):
            port = list(DEFAULT_INFERENCE_PORTS)
        factories.append(inference_tracer(common, port, pid, comm, capture_bytes, hooks, max_connections))
    if net:
        factories.append(net_tracer(common, zones, price_per_gb, flows, net_spans))
    if gpu:
        factories.append(gpu_tracer(common, lib, gpu_pid, span_threshold, sample_calls, discover,
                                    ioctl_path_prefix, leak_report))
    if agents:
        factories.append(agents_tracer(common, prices=prices))
    if not factories:
        raise typer.BadParameter("every tracer is switched off: leave at least one of --inference, --net, --gpu, "
                                 "--agents")
    execute(lambda telemetry: [make(telemetry) for make in factories], common, skip_failed=True)


def register(app: typer.Typer) -> None:
    app.command()(trace)
