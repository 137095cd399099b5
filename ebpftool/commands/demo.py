"""`ebpftool demo`: trace a demo workload that it starts and removes."""
from typing import Annotated, Optional

import typer

from ebpftool.commands.common import CommonOptions, common_options, console, execute
from ebpftool.commands.gpu import gpu_tracer
from ebpftool.commands.inference import inference_tracer
from ebpftool.commands.net import net_tracer
from ebpftool.commands.options import Interval, finite, parameter

DEMO_DURATION = 10.0   # seconds: a few exports, then everything the demo started is removed
DEMO_INTERVAL = 1.0    # seconds: a short demo shows several refreshes

DemoDuration = Annotated[Optional[float], typer.Option(
    "--duration", "-d", min=0.1, max=10 * 365 * 86400, callback=finite, help="Stop after this many seconds.")]


@common_options(parameter("duration", DemoDuration, DEMO_DURATION), parameter("interval", Interval, DEMO_INTERVAL))
def demo(*, common: CommonOptions) -> None:
    """Trace a demo workload for a few seconds: a streaming OpenAI-compatible server and its client, two
    network namespaces as zones with traffic between them, and a process calling the real CUDA runtime.
    Everything it starts is removed at the end."""
    from ebpftool.demo import DemoWorkloads, find_cudart, zones_file

    if common.duration is None:  # `duration: null` in a --config file
        common.duration = DEMO_DURATION
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
    app.command()(demo)
