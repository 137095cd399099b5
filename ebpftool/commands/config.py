"""`ebpftool config example`: a commented config file with every flag of `trace`."""
import typer

from ebpftool.commands.common import out

config_app = typer.Typer(help="Config files.", no_args_is_help=True)


@config_app.command("example")
def config_example() -> None:
    """Print a commented config file with every flag of `trace` (use it with --config FILE)."""
    from typer.main import get_command

    from ebpftool.commands.trace import trace
    from ebpftool.config import example_config

    single = typer.Typer()
    single.command()(trace)
    out.print(example_config(get_command(single).params), markup=False, highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.add_typer(config_app, name="config")
