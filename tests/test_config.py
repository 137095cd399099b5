"""Config and recording files: bad input is one clear error, never an exception escaping."""
from __future__ import annotations

import os
from typing import Annotated, List, Optional

import pytest
import typer
from typer.main import get_command
from hypothesis import HealthCheck, given, settings, strategies as st

from ebpftool.config import check_keys, example_config, load_config_file
from ebpftool.errors import EbpftoolError
from ebpftool.export.model import SpanKind, SpanRecord, counter, histogram
from ebpftool.record import Recorder, read_recording


def test_config_keys_accept_dashes_and_reject_unknown(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("span-rate: 50\ninterval: 2\n")
    data = load_config_file(str(path))
    assert data == {"span_rate": 50, "interval": 2}
    check_keys(str(path), data, {"span_rate", "interval"})
    with pytest.raises(EbpftoolError, match="unknown keys: interval"):
        check_keys(str(path), data, {"span_rate"})


@pytest.mark.parametrize("text, message", [
    ("- a\n- b\n", "must be a mapping"),
    ("a: [1, 2\n", "not valid YAML at line"),
    ("\x00\x01", "not valid YAML"),
])
def test_bad_config_files_say_what_is_wrong(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(EbpftoolError, match=message):
        load_config_file(str(path))


def test_unreadable_config_file(tmp_path):
    with pytest.raises(EbpftoolError, match="cannot read config file"):
        load_config_file(str(tmp_path / "missing.yaml"))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=300))
def test_config_loader_fuzz(tmp_path, data):
    path = tmp_path / "fuzz.yaml"
    path.write_bytes(data)
    try:
        result = load_config_file(str(path))
    except EbpftoolError:
        return
    assert isinstance(result, dict)


def test_recording_round_trip_and_private_file(tmp_path):
    path = tmp_path / "rec.jsonl"
    rec = Recorder(str(path))
    span = SpanRecord("GET /x", 1, 2, SpanKind.SERVER, {"http.request.method": "GET"})
    rec.on_span(span)
    points = [counter("a.b", "1", "d", 3, {"k": "v"}),
              histogram("a.h", "s", "d", {}, count=1, total=0.1, minimum=0.1, maximum=0.1, bucket_counts=[1, 0], bounds=[0.5])]
    rec.on_metrics(points)
    rec.close()
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    items = list(read_recording(str(path)))
    assert items[0] == span
    assert items[1] == points


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.text(max_size=80), max_size=5))
def test_recording_reader_fuzz(tmp_path, lines):
    path = tmp_path / "fuzz.rec"
    path.write_text('{"type": "header", "format": "ebpftool-recording/1"}\n' + "\n".join(lines))
    try:
        list(read_recording(str(path)))
    except EbpftoolError:
        pass


def test_example_config_lists_every_option():
    app = typer.Typer()

    @app.command()
    def cmd(span_rate: Annotated[int, typer.Option(help="Spans per second.")] = 1000,
            port: Annotated[Optional[List[int]], typer.Option(help="Ports.")] = None):
        pass

    text = example_config(get_command(app).params)
    assert "# Spans per second.\n#span-rate: 1000" in text
    assert "# Ports.\n#port:" in text
