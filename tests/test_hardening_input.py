"""Hardening, the input side: hostile config, zone and recording files and out-of-range options are one
sentence and a non-zero exit, never a traceback or a hang; a stop request during start-up stops it.

Everything runs ebpftool as a real process (run_ebpftool / EbpftoolProcess); a hang would end in the
subprocess timeout, which fails the test."""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from typing import Callable

import pytest

from tests.conftest import EbpftoolProcess, run_ebpftool
from tests.kernel_state import bpf_ids_held_by, perf_attachments, still_loaded, uprobe_events

pytestmark = pytest.mark.timeout(300)

HEADER = json.dumps({"type": "header", "format": "ebpftool-recording/1", "time_ns": 1})
SPAN = {"type": "span", "name": "GET /x", "start_ns": 1_700_000_000_000_000_000, "end_ns": 1_700_000_000_100_000_000,
        "kind": "server", "attributes": {"http.request.method": "GET", "http.response.status_code": 200},
        "events": [], "error": False, "status_message": ""}
POINT = {"name": "ebpftool.test.count", "kind": "counter", "unit": "1", "description": "d", "attributes": {"k": "v"},
         "value": 3, "count": 0, "sum": 0.0, "min": 0.0, "max": 0.0, "bucket_counts": [], "bounds": []}


def one_sentence(result, *phrases: str) -> str:
    """Failed with one message (Typer's usage box or ebpftool's line), no traceback; returns it unwrapped."""
    assert result.returncode != 0, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout, result.stderr
    text = " ".join(re.sub(r"[│╭╮╰╯─]", " ", result.stderr).split())
    for phrase in phrases:
        assert phrase in text, text
    return text


def alias_bomb(key: str) -> str:
    """A 'billion laughs': ten levels of nine aliases each, 9^9 strings once expanded, under key."""
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, 10):
        lines.append(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]")
    lines.append(f"{key}: *l9")
    return "\n".join(lines) + "\n"


# --- point 5: YAML alias bombs ----------------------------------------------------------------------
@pytest.mark.parametrize("key", ["comm", "service-name", "zone", "port"])
def test_yaml_alias_bomb_in_config_is_refused_at_once(tmp_path, key):
    path = tmp_path / "bomb.yaml"
    path.write_text(alias_bomb(key))
    r = run_ebpftool(["trace", "--config", str(path), "--duration", "0.1", "--no-ui"], timeout=60)
    assert r.returncode == 2
    one_sentence(r, f"config file {path} uses a YAML alias")


@pytest.mark.root
def test_yaml_alias_bomb_in_zone_file_is_refused_at_once(tmp_path):
    path = tmp_path / "zones.yaml"
    path.write_text(alias_bomb("zones"))
    r = run_ebpftool(["net", "--zones", str(path), "--duration", "0.1", "--no-ui"], timeout=60)
    assert r.returncode == 1
    one_sentence(r, f"the zone file {path} uses a YAML alias")


# --- point 6: deep nesting ------------------------------------------------------------------------
@pytest.mark.parametrize("option, key, rc, what", [
    ("--config", "comm", 2, "config file"),
    pytest.param("--zones", "zones", 1, "the zone file", marks=pytest.mark.root)])  # read once privileges are checked
def test_deeply_nested_yaml_is_one_sentence(tmp_path, option, key, rc, what):
    path = tmp_path / "deep.yaml"
    path.write_text(f"{key}: " + "[" * 20000 + "]" * 20000 + "\n")
    r = run_ebpftool(["net", option, str(path), "--duration", "0.1", "--no-ui"], timeout=60)
    assert r.returncode == rc
    one_sentence(r, f"{what} {path} is nested deeper than 32 levels")


# --- point 8: unbounded reads of config and zone files ------------------------------------------------
@pytest.mark.parametrize("option, rc, what", [
    ("--config", 2, "config file"),
    pytest.param("--zones", 1, "the zone file", marks=pytest.mark.root)])  # read once privileges are checked
def test_devices_fifos_and_large_files_are_refused_unread(tmp_path, option, rc, what):
    r = run_ebpftool(["net", option, "/dev/zero", "--duration", "0.1", "--no-ui"], timeout=60)
    assert r.returncode == rc
    one_sentence(r, f"{what} /dev/zero is not a regular file")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)   # nobody writes to it: reading it would block for ever
    r = run_ebpftool(["net", option, str(fifo), "--duration", "0.1", "--no-ui"], timeout=60)
    one_sentence(r, f"{what} {fifo} is not a regular file")
    big = tmp_path / "big.yaml"
    with open(big, "w") as f:
        f.write("# " + "x" * 100 + "\n")
        f.truncate(2 << 20)   # 2 MiB
    r = run_ebpftool(["net", option, str(big), "--duration", "0.1", "--no-ui"], timeout=60)
    one_sentence(r, f"{what} {big} is larger than 1 MiB")


# --- points 6, 7, 8: replay --------------------------------------------------------------------------
@pytest.mark.parametrize("content, phrase", [
    (b"", "is empty"),
    (b"\xff\xfe\x00\x81garbage\n", "is not an ebpftool recording"),
    (b"[1, 2]\n" + HEADER.encode() + b"\n", "is not an ebpftool recording"),
    (b"\"just a string\"\n", "is not an ebpftool recording"),
    ((HEADER + "\n" + "[" * 200000 + "]" * 200000 + "\n").encode(), "JSON nested too deeply"),
    ((HEADER + "\n").encode(), "nothing to replay"),
    ((HEADER + "\n" + "\xe9t\xe9\n").encode("latin-1"), "not UTF-8 text"),
])
def test_replay_of_what_is_not_a_recording_is_one_sentence(tmp_path, content, phrase):
    path = tmp_path / "rec.jsonl"
    path.write_bytes(content)
    r = run_ebpftool(["replay", str(path)], timeout=60)
    assert r.returncode == 1
    one_sentence(r, phrase)


def test_replay_of_devices_and_endless_lines_is_refused(tmp_path):
    one_sentence(run_ebpftool(["replay", "/dev/zero"], timeout=60), "recording /dev/zero is not a regular file")
    endless = tmp_path / "zeros.rec"
    with open(endless, "wb") as f:
        f.truncate(100 << 20)   # 100 MiB without a newline (sparse)
    one_sentence(run_ebpftool(["replay", str(endless)], timeout=60), "line 1 is longer than 64 MiB")


@pytest.mark.parametrize("bad, kind, reason", [
    ({**SPAN, "attributes": [1, 2]}, "spans", "span attributes must be a mapping"),
    ({**SPAN, "attributes": {"a": {"nested": 1}}}, "spans", "span attribute 'a' must be text"),
    ({**SPAN, "attributes": {"a": 1 << 70}}, "spans", "span attribute 'a' must be text"),
    ({**SPAN, "start_ns": "yesterday"}, "spans", "start_ns and end_ns must be integers"),
    ({**SPAN, "kind": "sideways"}, "spans", "span kind must be one of"),
    ({**SPAN, "events": [{"name": 1, "time_ns": 2}]}, "spans", "event's name must be text"),
    ({**SPAN, "error": "yes"}, "spans", "span error must be true or false"),
    ({**SPAN, "surprise": 1}, "spans", "unknown field(s) surprise"),
    ({"type": "metrics", "time_ns": 1, "points": [{**POINT, "value": "3"}]}, "metric points", "must be numbers"),
    ({"type": "metrics", "time_ns": 1, "points": [{**POINT, "kind": "histogram", "bucket_counts": [1], "bounds": [1.0]}]},
     "metric points", "one bucket count more than bounds"),
    ({"type": "metrics", "time_ns": 1, "points": {"a": 1}}, "metric snapshots", "needs a list of points"),
    ({"type": "surprise"}, "records of unknown type", "not a span"),
])
def test_replay_refuses_wrong_types_counts_them_and_exports_the_rest(tmp_path, grpc_receiver, bad, kind, reason):
    path = tmp_path / "rec.jsonl"
    good = {**SPAN, "name": "good span"}
    path.write_text("\n".join([HEADER, json.dumps(bad), json.dumps(good), json.dumps(bad)]) + "\n")
    r = run_ebpftool(["replay", str(path), "--otlp-endpoint", grpc_receiver.endpoint, "--otlp-protocol", "grpc"],
                     timeout=60)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr and "Exception in thread" not in r.stderr, r.stderr
    text = " ".join(r.stderr.split())
    assert f"replay: 2 {kind} refused (first at line 2: " in text and reason in text, text
    assert "replayed 1 spans" in r.stdout and "1 spans exported" in r.stdout, r.stdout
    assert [s.name for s in grpc_receiver.spans()] == ["good span"]
    # Nothing valid at all: refused, and a non-zero exit.
    path.write_text("\n".join([HEADER, json.dumps(bad)]) + "\n")
    r = run_ebpftool(["replay", str(path)], timeout=60)
    assert r.returncode == 1
    one_sentence(r, "nothing to replay", "1 records refused")


def test_replay_streams_a_recording_line_by_line(tmp_path, grpc_receiver):
    """The first span is exported while the rest of the recording has not been written yet (a FIFO)."""
    fifo = tmp_path / "rec.fifo"
    os.mkfifo(fifo)
    result = {}
    t = threading.Thread(target=lambda: result.update(r=run_ebpftool(
        ["replay", str(fifo), "--otlp-endpoint", grpc_receiver.endpoint, "--otlp-protocol", "grpc"], timeout=120)))
    t.start()
    with open(fifo, "w") as w:
        w.write(HEADER + "\n" + json.dumps({**SPAN, "name": "first"}) + "\n")
        w.flush()
        assert grpc_receiver.wait_for(lambda: grpc_receiver.spans("first"), timeout=60), \
            "the first span was not exported before the recording ended"
        w.write(json.dumps({**SPAN, "name": "second"}) + "\n")
    t.join()
    assert result["r"].returncode == 0, result["r"].stderr
    assert grpc_receiver.wait_for(lambda: grpc_receiver.spans("second"))


# --- point 6: options -------------------------------------------------------------------------------
@pytest.mark.parametrize("args, phrase", [
    (["net", "--span-rate", "99999999999999999999"], "--span-rate"),
    (["net", "--interval", "nan"], "--interval"),
    (["net", "--duration", "inf"], "--duration"),
    (["gpu", "--span-threshold", "1e30"], "--span-threshold"),
    (["gpu", "--sample-calls", "99999999999999999999"], "--sample-calls"),
    (["net", "--price-per-gb", "nan"], "--price-per-gb"),
    (["net", "--max-series", "1"], "--max-series"),
])
def test_out_of_range_numbers_are_refused_before_anything_is_compiled(args, phrase):
    r = run_ebpftool([*args, "--no-ui"], timeout=60)
    assert r.returncode == 2
    text = one_sentence(r, "Invalid value for", phrase)
    assert "error:" not in text and "probes attached" not in text   # no clang, no tracer


@pytest.mark.root
def test_an_otlp_endpoint_urllib_cannot_parse_is_one_sentence(tmp_path):
    r = run_ebpftool(["net", "--otlp-endpoint", "http://[::1", "--duration", "0.1", "--no-ui"], timeout=60)
    assert r.returncode == 1
    one_sentence(r, "OTLP endpoint 'http://[::1' is not a URL")
    path = tmp_path / "rec.jsonl"
    path.write_text(HEADER + "\n" + json.dumps(SPAN) + "\n")
    r = run_ebpftool(["replay", str(path)], env={"OTEL_EXPORTER_OTLP_ENDPOINT": "http://[::1"}, timeout=60)
    assert r.returncode == 1
    one_sentence(r, "OTLP endpoint 'http://[::1' is not a URL")


# --- point 9: SIGTERM during start-up --------------------------------------------------------------
@pytest.mark.bpf
def test_sigterm_during_start_up_starts_no_further_tracer_and_leaves_nothing_attached():
    """`trace` starts its tracers one after the other (each a BCC compile). SIGTERM as soon as the first
    has attached: the compile in progress may finish, no tracer after it starts, every probe is detached,
    and the exit is the normal one for SIGTERM (0, with the summary)."""
    # Without the compile cache, so that every tracer compiles (seconds) and the signal lands in a start.
    proc = EbpftoolProcess(["trace", "--no-ui", "--interval", "60"],
                           env={"EBPFTOOL_BPF_CACHE": "off"}).start()   # ready: the first "probes attached"
    pid = proc.proc.pid
    progs, maps = bpf_ids_held_by(pid)
    assert progs
    rc = proc.stop(signal.SIGTERM)
    assert rc == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    started = re.findall(r"^(\w+): \d+ probes attached", proc.stderr, re.M)
    not_started = re.findall(r"^(\w+) not started: SIGTERM arrived during start-up", proc.stderr, re.M)
    assert not_started, proc.stderr
    assert set(started) | set(not_started) | set(re.findall(r"^(\w+) skipped", proc.stderr, re.M)) == \
        {"inference", "net", "gpu"}
    assert not set(started) & set(not_started)
    assert "stopped by SIGTERM" in proc.stdout
    # The programs it held then are gone with everything it attached; no uprobe event of it is left.
    assert not still_loaded(progs, "prog")
    assert not [x for x in perf_attachments() if x.get("pid") == pid]
    assert f"_bcc_{pid}" not in uprobe_events()


# --- names from anyone on the node, on the terminal ------------------------------------------------
HOSTILE_PATH = "x[/]\x1b[2Jy"   # a stray rich closing tag, and the escape sequence that clears a terminal
HOSTILE_NAME = "x[bold]\x1b[2Jy"   # a file name holds no "/": rich markup that styles, and the escape

SENDER = """
import socket, sys
server = socket.create_server(("127.0.0.1", 0))
client = socket.create_connection(server.getsockname())
peer, _ = server.accept()
peer.setblocking(False)
print("sending", flush=True)
while True:
    client.sendall(b"x" * 65536)
    try:
        while peer.recv(1 << 20):
            pass
    except BlockingIOError:
        pass
"""


@contextlib.contextmanager
def sending_as(exe: bytes | str):
    """This Python copied to exe (a name chosen by whoever runs it), sending bytes over loopback until the end."""
    shutil.copy(os.path.realpath(sys.executable), exe)
    sender = subprocess.Popen([exe, "-c", SENDER], stdout=subprocess.PIPE, text=True)
    try:
        assert sender.stdout.readline().strip() == "sending"
        yield
    finally:
        sender.kill()
        sender.wait(10)


def traced_under(grpc_receiver, name: str) -> Callable[[], bool]:
    """Whether the net tracer's latest export has a series of the process with this executable name."""
    return lambda: any(p.attributes.get("process.executable.name") == name
                       for p in grpc_receiver.latest("ebpftool.network.flow.io"))


NET_TO_RECEIVER = ["net", "--no-ui", "--interval", "1", "--otlp-protocol", "grpc", "--otlp-endpoint"]


def test_a_bad_path_is_one_sentence_whatever_it_holds(tmp_path):
    """A path quoting rich markup and an escape sequence: the message shows both as text, never a traceback."""
    path = tmp_path / HOSTILE_PATH
    result = run_ebpftool(["net", "--zones", str(path), "--duration", "1", "--no-ui"])
    one_sentence(result, "cannot read the zone file")
    assert "\x1b" not in result.stderr and f"{tmp_path}/x[/]\\x1b[2Jy" in result.stderr, result.stderr


@pytest.mark.bpf
def test_a_process_named_with_markup_and_escapes_is_shown_as_text(tmp_path, grpc_receiver):
    """Anyone names their executables: one called x[bold]<ESC>[2Jy sends bytes while `ebpftool net` traces.
    Its name is in the summary as text (before: rich took [bold] as a style and the escape sequence reached
    the terminal; a name with a stray closing tag, as a process can give itself with prctl, ended the
    summary in a traceback)."""
    with sending_as(tmp_path / HOSTILE_NAME):
        with EbpftoolProcess([*NET_TO_RECEIVER, grpc_receiver.endpoint]) as proc:
            assert grpc_receiver.wait_for(traced_under(grpc_receiver, HOSTILE_NAME), timeout=60), proc.stderr
            assert proc.stop() == 0, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    assert "\x1b" not in proc.stdout
    assert "x[bold]\\x1b[2Jy" in proc.stdout, proc.stdout


@pytest.mark.bpf
def test_a_process_name_that_is_not_utf8_is_exported_with_the_byte_replaced(tmp_path, grpc_receiver):
    """An executable whose name holds a byte that is not UTF-8 sends bytes while `ebpftool net` exports OTLP:
    its series arrive named with U+FFFD in that byte's place, and every export succeeds (an unencodable name
    in one series would fail the whole export it is in)."""
    with sending_as(os.path.join(os.fsencode(tmp_path), b"ev\xffil")):
        with EbpftoolProcess([*NET_TO_RECEIVER, grpc_receiver.endpoint]) as proc:
            assert grpc_receiver.wait_for(traced_under(grpc_receiver, "ev\ufffdil"), timeout=60), proc.stderr
            assert proc.stop() == 0, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
