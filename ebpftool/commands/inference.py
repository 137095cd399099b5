"""`ebpftool inference`: HTTP requests an inference server answers, with time to first token, as OpenTelemetry."""

from typing import Annotated, List, Optional

import typer

from ebpftool.commands.common import CommonOptions, common_options, execute
from ebpftool.tracers.inference import DEFAULT_CAPTURE_BYTES, DEFAULT_MAX_CONNECTIONS, InferenceOptions, InferenceTracer

Port = Annotated[Optional[List[int]], typer.Option(
    "--port", "-p", help="A server's listening TCP port to watch; repeatable.")]
Pid = Annotated[Optional[List[int]], typer.Option(
    "--pid", help="Watch the sockets this process (and its children) accepts; repeatable.")]
Comm = Annotated[Optional[List[str]], typer.Option(
    "--comm", help="Watch processes with this name (as in /proc/PID/comm); repeatable.")]
CaptureBytes = Annotated[int, typer.Option(
    "--capture-bytes", help="Bytes of a sampled request's reads and response's writes copied to parse "
                            "path, model and usage (64-1024). Nothing captured is exported as is.")]
Hooks = Annotated[str, typer.Option(
    "--hooks", help="Where requests are seen: 'socket' (socket tracepoints: other syscalls cost nothing; "
                    "writes on the tcp_sendmsg_locked BTF tracepoint where the kernel allows it, the cheapest), "
                    "'socket-raw' (the socket tracepoints only), 'syscall' (read/write/accept syscall "
                    "tracepoints, any kernel) or 'auto' (socket where the kernel allows it).")]
MaxConnections = Annotated[int, typer.Option(
    "--max-connections", help="Slots of the connection table, a power of two allocated at start (448 bytes "
                              "each: 28 MiB at the default); keep open connections below about a quarter "
                              "of it. Connections that find no slot are counted as untracked.")]


@common_options()
def inference(
    port: Port = None,
    pid: Pid = None,
    comm: Comm = None,
    capture_bytes: CaptureBytes = DEFAULT_CAPTURE_BYTES,
    hooks: Hooks = "auto",
    max_connections: MaxConnections = DEFAULT_MAX_CONNECTIONS,
    *,
    common: CommonOptions,
) -> None:
    """Measure every request a server answers over HTTP/1.x, HTTP/2 or gRPC, in clear or TLS through
    OpenSSL (any language, unchanged): duration, status and, for generative-AI endpoints and streamed
    answers, tokens, time to first token and time per output token (gRPC: time to first message)."""
    execute(lambda telemetry: [inference_tracer(common, port, pid, comm, capture_bytes, hooks,
                                                max_connections)(telemetry)], common)


def inference_tracer(common: CommonOptions, port, pid, comm, capture_bytes: int = DEFAULT_CAPTURE_BYTES,
                     hooks: str = "auto", max_connections: int = DEFAULT_MAX_CONNECTIONS):
    """A factory of the tracer these flags describe (shared with `ebpftool trace`)."""
    base = common.tracer_options()
    opts = InferenceOptions(span_rate=base.span_rate, ringbuf_pages=base.ringbuf_pages, ports=list(port or []),
                            pids=list(pid or []), comms=list(comm or []), capture_bytes=capture_bytes,
                            hooks=hooks, max_connections=max_connections)
    return lambda telemetry: InferenceTracer(telemetry, opts)


def register(app: typer.Typer) -> None:
    app.command(name="inference")(inference)
