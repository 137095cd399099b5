"""`ebpftool gpu`: CUDA runtime/driver calls and NVIDIA device ioctls, as OpenTelemetry."""

from typing import Annotated, List, Optional

import typer

from ebpftool.commands.common import CommonOptions, common_options, execute
from ebpftool.commands.options import finite
from ebpftool.tracers.gpu import DEFAULT_IOCTL_PREFIX, DEFAULT_SPAN_THRESHOLD_S, GpuOptions, GpuTracer

Lib = Annotated[Optional[List[str]], typer.Option(
    "--lib", help="A CUDA library to trace (libcudart.so*, libcuda.so*, or any library exporting the traced "
                  "functions); repeatable. Added to those found by themselves.")]
Pid = Annotated[Optional[int], typer.Option("--pid", help="Trace only this process and its descendants.")]
SpanThreshold = Annotated[float, typer.Option(
    "--span-threshold", min=0.0, max=3600.0, callback=finite, help="Seconds a blocking call (synchronise, blocking copy) must last to become a span.")]
SampleCalls = Annotated[int, typer.Option(
    "--sample-calls", min=0, max=1_000_000_000, help="Also make a span of one call in N, whatever its duration (0: off).")]
Discover = Annotated[bool, typer.Option(
    "--discover/--no-discover", help="Find CUDA libraries in running processes and install paths (else only --lib).")]
IoctlPrefix = Annotated[str, typer.Option(
    "--ioctl-path-prefix", help="Device path prefix whose ioctls are counted (the NVIDIA device nodes).")]
LeakReport = Annotated[Optional[str], typer.Option(
    "--leak-report", help="Write the allocations never freed, per process, to this JSON file at exit.")]


@common_options()
def gpu(
    lib: Lib = None,
    pid: Pid = None,
    span_threshold: SpanThreshold = DEFAULT_SPAN_THRESHOLD_S,
    sample_calls: SampleCalls = 0,
    discover: Discover = True,
    ioctl_path_prefix: IoctlPrefix = DEFAULT_IOCTL_PREFIX,
    leak_report: LeakReport = None,
    *,
    common: CommonOptions,
) -> None:
    """Trace CUDA runtime and driver calls (uprobes) and NVIDIA device ioctls: calls, durations, bytes
    copied each way, kernel launches, outstanding device memory and leaks per process."""
    execute(lambda telemetry: [gpu_tracer(common, lib, pid, span_threshold, sample_calls, discover,
                                          ioctl_path_prefix, leak_report)(telemetry)], common)


def gpu_tracer(common: CommonOptions, lib, pid, span_threshold=DEFAULT_SPAN_THRESHOLD_S, sample_calls=0,
               discover=True, ioctl_path_prefix=DEFAULT_IOCTL_PREFIX, leak_report=None):
    """A factory of the tracer these flags describe (shared with `ebpftool trace`)."""
    base = common.tracer_options()
    opts = GpuOptions(
        span_rate=base.span_rate, ringbuf_pages=base.ringbuf_pages, libs=list(lib or []), pid=pid,
        span_threshold=span_threshold, sample_every=sample_calls, discover=discover,
        ioctl_prefix=ioctl_path_prefix, leak_report=leak_report,
    )
    return lambda telemetry: GpuTracer(telemetry, opts)


def register(app: typer.Typer) -> None:
    app.command(name="gpu")(gpu)
