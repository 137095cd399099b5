"""Hardening, the input side: hostile config, zone and recording files and out-of-range options are one
sentence and a non-zero exit, never a traceback or a hang; a stop request during start-up stops it.

Everything runs ebpftool as a real process (run_ebpftool / EbpftoolProcess); a hang would end in the
subprocess timeout, which fails the test."""
from __future__ import annotations

import json
import os
import re
import signal
import threading

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


def test_yaml_alias_bomb_in_zone_file_is_refused_at_once(tmp_path):
    path = tmp_path / "zones.yaml"
    path.write_text(alias_bomb("zones"))
    r = run_ebpftool(["net", "--zones", str(path), "--duration", "0.1", "--no-ui"], timeout=60)
    assert r.returncode == 1
    one_sentence(r, f"the zone file {path} uses a YAML alias")


# --- point 6: deep nesting ------------------------------------------------------------------------
@pytest.mark.parametrize("option, key, rc, what", [("--config", "comm", 2, "config file"),
                                                    ("--zones", "zones", 1, "the zone file")])
def test_deeply_nested_yaml_is_one_sentence(tmp_path, option, key, rc, what):
    path = tmp_path / "deep.yaml"
    path.write_text(f"{key}: " + "[" * 20000 + "]" * 20000 + "\n")
    r = run_ebpftool(["net", option, str(path), "--duration", "0.1", "--no-ui"], timeout=60)
    assert r.returncode == rc
    one_sentence(r, f"{what} {path} is nested deeper than 32 levels")


# --- point 8: unbounded reads of config and zone files ------------------------------------------------
@pytest.mark.parametrize("option, rc, what", [("--config", 2, "config file"), ("--zones", 1, "the zone file")])
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


