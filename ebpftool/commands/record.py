"""`ebpftool record FILE`: trace like `trace`, saving what is exported for `ebpftool replay`."""
from typing import Annotated, Any

import typer

from ebpftool.commands.common import CommonOptions, common_options
from ebpftool.commands.trace import run_trace, tracer_flags

Path = Annotated[str, typer.Argument(help="File to write (mode 0600): spans and metric snapshots as JSON lines.")]


@common_options(leave_out={"record"})   # PATH is the file it records to
@tracer_flags
def record(path: Path, *, flags: dict[str, Any], common: CommonOptions) -> None:
    """Trace like `trace` and save spans and metric snapshots to FILE, for `ebpftool replay`."""
    common.record = path
    run_trace(common, **flags)


def register(app: typer.Typer) -> None:
    app.command()(record)
