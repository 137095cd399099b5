"""Hardening, the export side (issue 21, points 2, 3, 4 and part of 10).

- a slow collector still receives metric snapshots under span load, and every span and snapshot is
  accounted for at exit; a black-hole collector does not hold the exit past --flush-timeout;
- output files (--jsonl, --record) are created new, 0600, never through a planted symlink, never
  appended to; --overwrite replaces; a full disk is one sentence and counted failures;
- the Prometheus endpoint listens on loopback by default (--prometheus-address), and a flood of idle
  connections grows no threads past its bound and does not stop it answering;
- the summary gives spans per sink; doctor without privileges says privileges are missing.

What is checked is what a real OTLP receiver decoded, what ebpftool wrote or printed, and what the
kernel shows of the ebpftool process (/proc), never the tracer's internals.
"""
from __future__ import annotations

import http.client
import json
import os
import re
import selectors
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from ebpftool.export import semconv as sc
from ebpftool.export.model import SpanKind, SpanRecord, counter
from ebpftool.export.otel import build_resource
from ebpftool.export.pipeline import Telemetry
from ebpftool.export.sinks import otlp_sink
from tests.conftest import ROOT, EbpftoolProcess, run_ebpftool
from tests.otlp_receiver import BlackHole, GrpcReceiver

pytestmark = pytest.mark.timeout(180)

NOBODY = 65534


# --- helpers -------------------------------------------------------------------------------------
def _span(i: int) -> SpanRecord:
    now = time.time_ns()
    return SpanRecord(name=f"GET /load/{i}", start_ns=now - 1_000_000, end_ns=now, kind=SpanKind.SERVER,
                      attributes={sc.HTTP_REQUEST_METHOD: "GET"})


def _snapshot(n: int):
    return [counter("ebpftool.test.snapshots", "{snapshot}", "snapshots handed to the pipeline", n)]


def assert_every_span_and_snapshot_accounted(t: Telemetry) -> None:
    """Per sink: emitted == exported + failed + dropped (queue full) + unsent at exit, and every metric
    snapshot handed over was exported, failed or superseded by a newer one."""
    c = t.counters()
    for sink in t.sinks:
        st = sink.span_stats
        assert c["spans_emitted"] == st.exported + st.failed + c["spans_dropped_queue"] + c["spans_unsent_at_exit"], \
            (sink.name, c, st)
        m = sink.metric_stats
        assert c["metric_snapshots"] == m.exported + m.failed_batches + c["metric_snapshots_superseded"], (sink.name, c, m)


def summary_figure(text: str, label: str, row: str = "") -> int:
    """A figure of the summary table; `row` names the first column (e.g. 'export to jsonl')."""
    m = re.search(rf"{re.escape(row)}[^\n]*?{re.escape(label)}[^│\n]*│\s*([\d,]+)", text)
    assert m, f"no '{row} {label}' in the summary:\n{text}"
    return int(m.group(1).replace(",", ""))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ConnectionChurn:
    """Short TCP connections to a local listener, as fast as one thread makes them (a span each with net --spans)."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(512)
        self.port = self.listener.getsockname()[1]
        self.stop = threading.Event()
        self.made = 0
        self._threads = [threading.Thread(target=self._accept, daemon=True), threading.Thread(target=self._connect, daemon=True)]
        for t in self._threads:
            t.start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            conn.sendall(b"x")
            conn.close()

    def _connect(self) -> None:
        while not self.stop.is_set():
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
                    s.recv(1)
                self.made += 1
            except OSError:
                pass

    def close(self) -> None:
        self.stop.set()
        self._threads[1].join(10)
        try:
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()


def sticky_dir(tmp_path: Path) -> Path:
    """A world-writable sticky directory, as /tmp: where another user can plant a symlink."""
    d = tmp_path / "shared"
    d.mkdir()
    os.chmod(d, 0o1777)
    return d


def plant_symlink(directory: Path, name: str, target: Path) -> Path:
    link = directory / name
    link.symlink_to(target)
    os.lchown(link, NOBODY, NOBODY)
    return link


def threads_of(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def listening_addresses(port: int) -> set[str]:
    """Local addresses of the TCP sockets listening on port (from /proc/net/tcp and tcp6)."""
    found = set()
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        for line in Path(table).read_text().splitlines()[1:]:
            local, _remote, state = line.split()[1:4]
            addr, p = local.split(":")
            if int(p, 16) != port or state != "0A":  # 0A: LISTEN
                continue
            raw = bytes.fromhex(addr)
            # /proc prints each 32-bit word in host (little-endian) order
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            found.add(socket.inet_ntop(family, raw))
    return found


def scrape(port: int, host: str = "127.0.0.1") -> tuple[int, str]:
    c = http.client.HTTPConnection(host, port, timeout=30)
    c.request("GET", "/metrics")
    r = c.getresponse()
    body = r.read().decode()
    c.close()
    return r.status, body


# --- point 2: a slow collector, a black-hole collector ----------------------------------------------
def test_a_slow_collector_receives_metric_snapshots_under_span_load():
    """Spans arrive faster than a collector answering each export after 1 s can take (~2,000/s against
    512 per export): metric snapshots still reach it, and at exit every span and snapshot is counted."""
    receiver = GrpcReceiver(delay=1.0)
    telemetry = Telemetry(build_resource(environ={}), [otlp_sink(receiver.endpoint, "grpc")])
    stop = threading.Event()
    snapshots = [0]

    def span_load():
        i = 0
        while not stop.is_set():
            for _ in range(100):
                telemetry.emit_span(_span(i))
                i += 1
            stop.wait(0.05)  # the load's pace

    def metric_interval():
        while not stop.is_set():
            snapshots[0] += 1
            telemetry.export_metrics(_snapshot(snapshots[0]))
            stop.wait(0.25)  # the export interval

    workers = [threading.Thread(target=span_load), threading.Thread(target=metric_interval)]
    for w in workers:
        w.start()
    try:
        assert receiver.wait_for(lambda: receiver.metric_requests >= 3, timeout=40), \
            f"metric exports starved by spans: {receiver.metric_requests} received, {receiver.span_requests} span batches"
        assert receiver.span_requests >= 1  # the spans went too: both ran at once
    finally:
        stop.set()
        for w in workers:
            w.join(10)
    try:
        telemetry.shutdown(timeout=3)
        # The snapshot counter arrived as sent: cumulative, the newest received carries the count then.
        (pt,) = receiver.latest("ebpftool.test.snapshots")
        assert 1 <= pt.value <= snapshots[0]
        assert_every_span_and_snapshot_accounted(telemetry)
        c = telemetry.counters()
        assert c["spans_emitted"] > c["spans_exported"]  # the load was more than the collector took
    finally:
        receiver.stop()


def test_a_black_hole_collector_counts_what_is_in_flight_and_the_flush_time_is_the_one_given():
    hole = BlackHole()
    said: list[str] = []
    try:
        telemetry = Telemetry(build_resource(environ={}), [otlp_sink(hole.endpoint, "grpc")], flush_timeout=1.5,
                              report=said.append)
        for i in range(1500):
            telemetry.emit_span(_span(i))
        telemetry.export_metrics(_snapshot(1))
        # The first batch and the snapshot are in flight (the black hole never answers) before shutdown.
        deadline = time.monotonic() + 30
        while not (telemetry._span_pending and telemetry._metric_pending) and time.monotonic() < deadline:
            time.sleep(0.05)
        telemetry.export_metrics(_snapshot(2))  # the final snapshot, as the runner hands it over at exit
        telemetry.shutdown()  # returns: the test's own timeout would catch a hang
        c = telemetry.counters()
        assert c["spans_exported"] == 0
        assert c["spans_failed"] >= 512  # the batch in flight at exit is counted, not lost
        assert c["spans_failed"] + c["spans_unsent_at_exit"] == 1500
        assert c["metric_exports_failed"] == 2  # the one in flight and the final one, both undelivered
        assert_every_span_and_snapshot_accounted(telemetry)
        assert len(said) == 1 and "within the flush time of 1.5s" in said[0], said
    finally:
        hole.stop()
