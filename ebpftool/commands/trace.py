"""`ebpftool trace` (every tracer, one pipeline), `record`, `config example` and `demo`."""
from __future__ import annotations

import inspect
from typing import Annotated, List, Optional

import typer

from ebpftool.commands.common import CommonOptions, console, execute, out, with_common_options
from ebpftool.commands.gpu import Discover, IoctlPrefix, LeakReport, Lib, SampleCalls, SpanThreshold, gpu_tracer
from ebpftool.commands.inference import CaptureBytes, Comm, Hooks, MaxConnections, Port, inference_tracer
from ebpftool.commands.net import PricePerGb, TopFlows, ZonesFile, net_tracer
from ebpftool.tracers.gpu import DEFAULT_IOCTL_PREFIX, DEFAULT_SPAN_THRESHOLD_S
from ebpftool.tracers.inference import DEFAULT_CAPTURE_BYTES, DEFAULT_MAX_CONNECTIONS

# Where inference servers listen by default: vLLM, Ray Serve, Triton (8000), TGI (8080),
# Ollama (11434), SGLang (30000). Used by `trace` when no --port/--pid/--comm is given.
DEFAULT_INFERENCE_PORTS = (8000, 8080, 11434, 30000)

InferenceOn = Annotated[bool, typer.Option("--inference/--no-inference", help="Trace HTTP inference requests.")]
NetOn = Annotated[bool, typer.Option("--net/--no-net", help="Trace network flows by zone pair.")]
GpuOn = Annotated[bool, typer.Option("--gpu/--no-gpu", help="Trace CUDA calls and NVIDIA ioctls.")]
InferencePid = Annotated[Optional[List[int]], typer.Option(
    "--pid", help="inference: watch the sockets this process (and its children) accepts; repeatable.")]
GpuPid = Annotated[Optional[int], typer.Option("--gpu-pid", help="gpu: trace only this process and its descendants.")]
NetSpans = Annotated[bool, typer.Option("--net-spans/--no-net-spans", help="net: a span per TCP connection.")]


@with_common_options
def trace(
    inference: InferenceOn = True,
    net: NetOn = True,
    gpu: GpuOn = True,
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
    common: CommonOptions,
) -> None:
    """Run the inference, network and GPU tracers together: one pipeline, one view, one shutdown.

    A tracer this kernel cannot run is reported and skipped; the others go on."""
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
    if not factories:
        raise typer.BadParameter("every tracer is switched off: leave at least one of --inference, --net, --gpu")
    execute(lambda telemetry: [make(telemetry) for make in factories], common, skip_failed=True)


def _record_command():
    """`record FILE [trace options]`: trace, saving what is exported for `ebpftool replay`."""
    sig = inspect.signature(trace)
    path = inspect.Parameter("path", inspect.Parameter.KEYWORD_ONLY, annotation=Annotated[
        str, typer.Argument(help="File to write (mode 0600): spans and metric snapshots as JSON lines.")])

    def record(**kwargs):
        kwargs["record"] = kwargs.pop("path")
        return trace(**kwargs)

    record.__doc__ = "Trace like `trace` and save spans and metric snapshots to FILE, for `ebpftool replay`."
    record.__signature__ = sig.replace(parameters=[path] + [p for p in sig.parameters.values() if p.name != "record"])
    return record


config_app = typer.Typer(help="Config files.", no_args_is_help=True)


@config_app.command("example")
def config_example() -> None:
    """Print a commented config file with every flag of `trace` (use it with --config FILE)."""
    from typer.main import get_command

    from ebpftool.config import example_config

    single = typer.Typer()
    single.command()(trace)
    out.print(example_config(get_command(single).params), markup=False, highlight=False, soft_wrap=True)


@with_common_options
def demo(*, common: CommonOptions) -> None:
    """Trace a demo workload for a few seconds: a streaming OpenAI-compatible server and its client, two
    network namespaces as zones with traffic between them, and a process calling the real CUDA runtime.
    Everything it starts is removed at the end."""
    from ebpftool.demo import DemoWorkloads, find_cudart, zones_file

    if common.duration is None:
        common.duration = 10.0
    if common.interval == 5.0:
        common.interval = 1.0
    workloads = DemoWorkloads(seconds=common.duration)
    try:
        port = workloads.start_server()
        cudart = find_cudart()
        factories = [
            inference_tracer(common, [port], None, None),
            net_tracer(common, str(zones_file(workloads.workdir)), None, 0, False),
            gpu_tracer(common, [cudart] if cudart else None, None, discover=cudart is None),
        ]
        console.print(f"demo: streaming server on 127.0.0.1:{port}, zones demo-a/demo-b, "
                      f"CUDA runtime {cudart or 'not found'}; tracing for {common.duration:g}s")
        execute(lambda telemetry: [make(telemetry) for make in factories], common, skip_failed=True,
                after_start=workloads.start_traffic)
    finally:
        workloads.stop()


def register(app: typer.Typer) -> None:
    app.command()(trace)
    app.command(name="record")(_record_command())
    app.add_typer(config_app, name="config")
    app.command()(demo)
