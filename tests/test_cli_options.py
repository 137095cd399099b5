"""The command line's options as declared (no BPF, no root): every tracing command offers the shared
options with their defaults, and what a user passes is what the command runs with."""
from __future__ import annotations

import dataclasses
import inspect

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from ebpftool.cli import app
from ebpftool.commands import demo as demo_command
from ebpftool.commands.common import CommonOptions, common_options
from ebpftool.commands.options import DEFAULT_FLUSH_TIMEOUT, SHARED_OPTIONS, Interval, parameter

TRACING = ("inference", "net", "gpu", "agents", "trace", "record", "demo")
COMMANDS = get_command(app).commands


def _params(command: str) -> dict:
    return {p.name: p for p in COMMANDS[command].params}


@pytest.mark.parametrize("command", TRACING)
def test_every_tracing_command_offers_every_shared_option_with_its_default(command):
    params = _params(command)
    for field in dataclasses.fields(CommonOptions):
        if command == "record" and field.name == "record":
            assert "record" not in params and params["path"].required   # `record FILE` is the file
            continue
        assert field.name in params, f"{command} lacks --{field.name.replace('_', '-')}"
        expected = DEFAULT_FLUSH_TIMEOUT if field.name == "flush_timeout" else field.default
        if command == "demo" and field.name in ("duration", "interval"):
            expected = {"duration": demo_command.DEMO_DURATION, "interval": demo_command.DEMO_INTERVAL}[field.name]
        assert params[field.name].default == expected, (command, field.name)


def test_record_and_trace_take_the_same_tracer_flags():
    trace, record = _params("trace"), _params("record")
    assert set(record) - {"path"} == set(trace) - {"record"}
    for name, p in record.items():
        if name != "path":
            assert (p.opts, p.default, p.help) == (trace[name].opts, trace[name].default, trace[name].help), name


@pytest.fixture
def demo_run(monkeypatch):
    """`ebpftool demo ARGS` up to the point where it would start tracing: returns the options it would trace with."""
    import ebpftool.demo

    seen: dict = {}

    class Workloads:
        workdir = "/nonexistent"

        def __init__(self, seconds):
            seen["seconds"] = seconds

        def start_server(self):
            return 1

        def start_traffic(self):
            pass

        def stop(self):
            pass

    monkeypatch.setattr(ebpftool.demo, "DemoWorkloads", Workloads)
    monkeypatch.setattr(ebpftool.demo, "find_cudart", lambda: None)
    monkeypatch.setattr(ebpftool.demo, "zones_file", lambda workdir: "zones.yaml")
    monkeypatch.setattr(demo_command, "net_tracer", lambda *a, **k: None)
    monkeypatch.setattr(demo_command, "execute", lambda make, common, **kw: seen.setdefault("common", common))

    def run(*args: str) -> CommonOptions:
        seen.clear()
        r = CliRunner().invoke(app, ["demo", *args])
        assert r.exit_code == 0, r.output
        return seen["common"]

    return run


def test_demo_runs_ten_seconds_with_one_second_exports_by_default(demo_run):
    common = demo_run()
    assert (common.duration, common.interval) == (10.0, 1.0)


@pytest.mark.parametrize("interval", ["5", "5.0", "2.5"])
def test_demo_uses_the_interval_given_even_the_other_commands_default(demo_run, interval):
    # It used to compare with the shared default by value: `--interval 5` became 1 s.
    assert demo_run("--interval", interval, "--duration", "3").interval == float(interval)
    assert demo_run("--interval", interval, "--duration", "3").duration == 3.0


def test_demo_takes_its_options_from_a_config_file_and_flags_override_it(demo_run, tmp_path):
    config = tmp_path / "demo.yaml"
    config.write_text("interval: 2.5\nzone: zone-a\nduration: 4\n")
    common = demo_run("--config", str(config), "--duration", "3")
    assert (common.interval, common.zone, common.duration, common.config) == (2.5, "zone-a", 3.0, str(config))


def test_a_command_gets_its_own_parameters_and_the_shared_ones_packed():
    @common_options(parameter("interval", Interval, 2.0), leave_out={"record"})
    def command(port: int = 80, *, common: CommonOptions):
        return port, common

    shared = [p.name for p in SHARED_OPTIONS if p.name != "record"]
    assert list(inspect.signature(command).parameters) == ["port", *shared]
    port, common = command(zone="a")
    assert (port, common.interval, common.zone, common.duration, common.record) == (80, 2.0, "a", None, None)


def test_a_shared_option_replaced_under_a_wrong_name_is_refused():
    with pytest.raises(ValueError, match="intervall"):
        common_options(parameter("intervall", Interval, 2.0))
