"""`ebpftool demo`: trace a demo workload that it starts and removes."""
from typing import Annotated, Optional

import typer

from ebpftool.commands.common import CommonOptions, console, execute
from ebpftool.commands.gpu import gpu_tracer
from ebpftool.commands.inference import inference_tracer
from ebpftool.commands.net import net_tracer
from ebpftool.commands.options import (Config, DEFAULT_FLUSH_TIMEOUT, DEFAULT_MAX_CPU_PERCENT, DEFAULT_MAX_SERIES,
                                       DEFAULT_PROMETHEUS_ADDRESS, DEFAULT_SPAN_RATE, FlushTimeout, Interval,
                                       JsonlPath, MaxCpu, MaxSeries, OtlpEndpoint, OtlpProtocol, Overwrite,
                                       PrometheusAddress, PrometheusPort, Record, Region, ServiceName, SpanRate,
                                       SummaryJson, Ui, Zone, finite)

DEMO_DURATION = 10.0   # seconds: a few exports, then everything the demo started is removed
DEMO_INTERVAL = 1.0    # seconds: a short demo shows several refreshes

DemoDuration = Annotated[Optional[float], typer.Option(
    "--duration", "-d", min=0.1, max=10 * 365 * 86400, callback=finite, help="Stop after this many seconds.")]


def demo(
    *,
    duration: DemoDuration = DEMO_DURATION,
    interval: Interval = DEMO_INTERVAL,
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
    """Trace a demo workload for a few seconds: a streaming OpenAI-compatible server and its client, two
    network namespaces as zones with traffic between them, and a process calling the real CUDA runtime.
    Everything it starts is removed at the end."""
    from ebpftool.demo import DemoWorkloads, find_cudart, zones_file

    common = CommonOptions.from_params(locals())
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
