"""`ebpftool trace`: every tracer, one pipeline, one view, one shutdown."""
from typing import Annotated, Any, List, Optional

import typer

from ebpftool.commands.common import CommonOptions, common_options, execute
from ebpftool.commands.agents import Prices, agents_tracer
from ebpftool.commands.gpu import Discover, IoctlPrefix, LeakReport, Lib, SampleCalls, SpanThreshold, gpu_tracer
from ebpftool.commands.inference import CaptureBytes, Comm, Hooks, MaxConnections, Port, inference_tracer
from ebpftool.commands.net import PricePerGb, TopFlows, ZonesFile, net_tracer
from ebpftool.commands.options import packed_options, parameter
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


# The flags that choose and tune the tracers, shared by `trace` and `record`, in the order --help lists them.
TRACER_FLAGS = (
    parameter("inference", InferenceOn, True),
    parameter("net", NetOn, True),
    parameter("gpu", GpuOn, True),
    parameter("agents", AgentsOn, AGENTS_BY_DEFAULT),
    parameter("prices", Prices, None),
    parameter("port", Port, None),
    parameter("pid", InferencePid, None),
    parameter("comm", Comm, None),
    parameter("capture_bytes", CaptureBytes, DEFAULT_CAPTURE_BYTES),
    parameter("hooks", Hooks, "auto"),
    parameter("max_connections", MaxConnections, DEFAULT_MAX_CONNECTIONS),
    parameter("zones", ZonesFile, None),
    parameter("price_per_gb", PricePerGb, None),
    parameter("flows", TopFlows, 0),
    parameter("net_spans", NetSpans, False),
    parameter("lib", Lib, None),
    parameter("gpu_pid", GpuPid, None),
    parameter("span_threshold", SpanThreshold, DEFAULT_SPAN_THRESHOLD_S),
    parameter("sample_calls", SampleCalls, 0),
    parameter("discover", Discover, True),
    parameter("ioctl_path_prefix", IoctlPrefix, DEFAULT_IOCTL_PREFIX),
    parameter("leak_report", LeakReport, None),
)
# A command's keyword-only parameter `flags` becomes TRACER_FLAGS; it gets their values as a dict for run_trace.
tracer_flags = packed_options("flags", TRACER_FLAGS, dict)


@common_options()
@tracer_flags
def trace(*, flags: dict[str, Any], common: CommonOptions) -> None:
    """Run the inference, network and GPU tracers (and with --agents the agents tracer) together: one pipeline,
    one view, one shutdown.

    A tracer this kernel cannot run is reported and skipped; the others go on."""
    run_trace(common, **flags)


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
