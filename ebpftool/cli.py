"""The `ebpftool` command line: thin Typer commands over plain functions.

EbpftoolError (a problem the user can act on) becomes one red sentence and
exit code 1 here, at the boundary; nothing below prints tracebacks for it.
"""
from __future__ import annotations

import inspect
import json
import sys
from typing import Annotated

import typer
from rich.table import Table

from ebpftool import __version__
from ebpftool.commands.common import console, out
from ebpftool.errors import EbpftoolError
from ebpftool.ui.text import markup_safe, plain

app = typer.Typer(
    name="ebpftool",
    help="eBPF observability for AI-infrastructure nodes: GPU driver calls, cross-zone network flows and "
    "inference request latency, exported as OpenTelemetry.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        out.print(f"ebpftool {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")] = False,
) -> None:
    pass


@app.command()
def doctor(
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Probe the kernel (by loading tiny programs) and say what each tracer will use."""
    from ebpftool.doctor import probe_kernel

    report = probe_kernel()
    if as_json:
        out.print_json(json.dumps(report.to_dict()))
    else:
        table = Table(title=f"ebpftool doctor: Linux {report.kernel}")
        table.add_column("check")
        table.add_column("state")
        table.add_column("detail")
        for c in report.checks:
            table.add_row(c.name, "[green]yes[/]" if c.ok else "[red]no[/]", plain(c.detail))
        out.print(table)
        tracers = Table(title="tracers")
        tracers.add_column("tracer")
        tracers.add_column("can run")
        tracers.add_column("attach method")
        tracers.add_column("detail")
        for t in report.tracers:
            tracers.add_row(t.tracer, "[green]yes[/]" if t.can_run else "[red]no[/]", plain(t.method), plain(t.detail))
        out.print(tracers)
    if not report.ok:
        raise typer.Exit(1)


def _register_commands() -> None:
    """Each command lives in ebpftool/commands/<command>.py with a register(app); `doctor` is above."""
    from ebpftool.commands import agents, config, demo, gpu, inference, net, record, replay, trace

    for module in (inference, net, gpu, agents, trace, record, config, demo, replay):
        module.register(app)
    # Typer's command list keeps a docstring's line breaks in rich mode (its own page joins them), so the
    # list would wrap each command's summary twice: give it the first paragraph as one line.
    for command in app.registered_commands:
        doc = command.help or (command.callback.__doc__ if command.callback else None)
        if doc and not command.short_help:
            command.short_help = " ".join(inspect.cleandoc(doc).split("\n\n")[0].split())


_register_commands()


def main() -> None:
    # Typer (standalone) handles usage errors itself: one message, exit code 2.
    try:
        app(prog_name="ebpftool")
    except EbpftoolError as exc:
        console.print(f"[bold red]ebpftool:[/] {markup_safe(str(exc))}", highlight=False)
        sys.exit(1)


if __name__ == "__main__":
    main()
