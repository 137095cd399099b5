"""`ebpftool agents`: the LLM API calls and MCP requests the node's processes make, with tokens, time to
first chunk and cost, as OpenTelemetry."""
from typing import Annotated, List, Optional

import typer

from ebpftool.commands.common import CommonOptions, common_options, execute

AgentPid = Annotated[Optional[List[int]], typer.Option(
    "--pid", help="Follow the calls of this process (and its children) only; repeatable (default: every process).")]
AgentComm = Annotated[Optional[List[str]], typer.Option(
    "--comm", help="Follow the calls of processes with this name (as in /proc/PID/comm); repeatable.")]
Prices = Annotated[Optional[str], typer.Option(
    "--prices", help="Price table (YAML) for the cost of each call (default: the shipped table, "
                     "ebpftool/tracers/agents/prices.yaml; copy and edit it).")]
Cleartext = Annotated[bool, typer.Option(
    "--cleartext/--no-cleartext", help="Also follow cleartext HTTP connections (a local Ollama or vLLM); "
                                       "--no-cleartext: TLS (OpenSSL's and Go's) only.")]
GoTls = Annotated[bool, typer.Option(
    "--go-tls/--no-go-tls", help="Also follow Go programs' own TLS (crypto/tls, uprobes in each Go executable): "
                                 "every TLS read and write of every Go process then pays them (a 1 KiB echo "
                                 "round trip, two reads and two writes: 17 -> 41 us here, "
                                 "scripts/bench_go_tls.py); --no-go-tls: OpenSSL's TLS only.")]
AgentHooks = Annotated[str, typer.Option(
    "--hooks", help="Where cleartext calls are seen: 'socket' (socket tracepoints: only socket reads and writes "
                    "pay, one lookup each; Linux 6.3+, x86-64), 'syscall' (connect/read/write syscall "
                    "tracepoints, any kernel: every read and write of the node pays about 0.2-0.35 us) or "
                    "'auto' (socket where the kernel allows it).")]


@common_options()
def agents(
    pid: AgentPid = None,
    comm: AgentComm = None,
    prices: Prices = None,
    cleartext: Cleartext = True,
    hooks: AgentHooks = "auto",
    go_tls: GoTls = True,
    *,
    common: CommonOptions,
) -> None:
    """Every LLM API call (OpenAI and compatible, Anthropic, Gemini, Ollama) and MCP request the node's
    processes make over HTTP/1 or HTTP/2 (TLS through OpenSSL or Go's crypto/tls, or cleartext): duration,
    tokens, time to first chunk, cost; no key, prompt or answer leaves the node."""
    make = agents_tracer(common, pid, comm, prices, cleartext, hooks, go_tls)   # a bad price table stops here
    execute(lambda telemetry: [make(telemetry)], common)


def agents_tracer(common: CommonOptions, pid=None, comm=None, prices: str | None = None, cleartext: bool = True,
                  hooks: str = "auto", go_tls: bool = True):
    """A factory of the tracer these flags describe (shared with `ebpftool trace`); reads the price table
    now (EbpftoolError, one sentence, for a bad one, as for bad --hooks)."""
    from ebpftool.errors import EbpftoolError
    from ebpftool.tracers.agents.plans import HOOKS
    from ebpftool.tracers.agents.prices import DEFAULT_PRICES, load_price_table
    from ebpftool.tracers.agents.tracer import AgentsOptions, AgentsTracer

    if hooks not in HOOKS:
        raise EbpftoolError(f"--hooks {hooks!r}: one of {', '.join(HOOKS)}")

    table = load_price_table(prices or DEFAULT_PRICES)
    base = common.tracer_options()
    opts = AgentsOptions(span_rate=base.span_rate, ringbuf_pages=base.ringbuf_pages, pids=list(pid or []),
                         comms=list(comm or []), prices=table, cleartext=cleartext, hooks=hooks, go_tls=go_tls)
    return lambda telemetry: AgentsTracer(telemetry, opts)


def register(app: typer.Typer) -> None:
    app.command(name="agents")(agents)
