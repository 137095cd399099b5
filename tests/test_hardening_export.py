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
import select
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

from ebpftool import semconv as sc
from ebpftool.export.model import SpanKind, SpanRecord, counter
from ebpftool.export.otel import build_resource
from ebpftool.export.pipeline import Telemetry
from ebpftool.export.sinks import PROMETHEUS_MAX_CONNECTIONS, jsonl_sink, otlp_sink
from tests.conftest import ROOT, EbpftoolProcess, run_ebpftool
from tests.kernel_state import TCP_LISTEN, tcp_sockets
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


def summary_json(path) -> dict:
    """The figures --summary-json wrote (every one, also those at 0, which the table sums up in one line)."""
    return json.loads(Path(path).read_text())


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
    return {s.address for s in tcp_sockets(port) if s.state == TCP_LISTEN}


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


@pytest.mark.bpf
def test_a_black_hole_collector_does_not_hold_the_exit_of_a_real_run(tmp_path):
    """`net --spans` under connection churn, exporting to a collector that never answers: the run
    ends at --duration plus the --flush-timeout given, and the summary accounts for every span."""
    hole = BlackHole()
    churn = ConnectionChurn()
    try:
        args = ["net", "--spans", "--otlp-endpoint", hole.endpoint, "--otlp-protocol", "grpc", "--interval", "0.5",
                "--duration", "4", "--flush-timeout", "1", "--no-ui", "--summary-json", str(tmp_path / "s.json")]
        proc = EbpftoolProcess(args).start()
        rc = proc.wait(timeout=120)
    finally:
        churn.close()
        hole.stop()
    assert rc == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "within the flush time of 1s" in proc.stderr, proc.stderr  # the bound given is the one used
    doc = summary_json(tmp_path / "s.json")
    export, sink = doc["export"], doc["export_by_sink"]["otlp-grpc"]
    emitted = export["spans_emitted"]
    assert churn.made > 100 and emitted > 100, (churn.made, emitted)
    assert sink["spans_exported"] == 0
    assert emitted == sink["spans_exported"] + sink["spans_failed"] + export["spans_dropped_queue"] + \
        export["spans_unsent_at_exit"], doc
    assert sink["metric_exports_failed"] >= 1


# --- point 3: output files ------------------------------------------------------------------------
@pytest.mark.bpf
@pytest.mark.parametrize("option", ["--jsonl", "--record"])
def test_a_planted_symlink_is_refused_and_its_target_untouched(tmp_path, option):
    target = tmp_path / "precious"
    target.write_text("root's data\n")
    os.chmod(target, 0o644)
    link = plant_symlink(sticky_dir(tmp_path), "out", target)
    r = run_ebpftool(["net", "--duration", "1", "--no-ui", option, str(link)])
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [f"ebpftool: {link} already exists: give another path, or --overwrite to replace it"]
    assert "probes attached" not in r.stderr
    assert target.read_text() == "root's data\n" and stat.S_IMODE(target.stat().st_mode) == 0o644
    assert link.is_symlink()


@pytest.mark.bpf
def test_overwrite_replaces_a_symlink_or_a_file_never_its_target_and_files_are_0600(tmp_path):
    target = tmp_path / "precious"
    target.write_text("root's data\n")
    link = plant_symlink(sticky_dir(tmp_path), "out.jsonl", target)
    record = tmp_path / "run.rec"
    record.write_text('{"type": "header", "format": "ebpftool-recording/1", "time_ns": 1}\n{"type": "metrics"}\n')
    os.chmod(record, 0o644)
    old_umask = os.umask(0)  # the files must be 0600 whatever the umask
    try:
        r = run_ebpftool(["net", "--duration", "1", "--interval", "0.5", "--no-ui", "--jsonl", str(link),
                          "--record", str(record), "--overwrite"])
    finally:
        os.umask(old_umask)
    assert r.returncode == 0, r.stderr
    assert target.read_text() == "root's data\n"
    for path in (link, record):
        st = os.lstat(path)
        assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == 0, path
    assert json.loads(link.read_text().splitlines()[0])["type"] == "resource"
    rows = [json.loads(line) for line in record.read_text().splitlines()]
    assert [row["type"] for row in rows].count("header") == 1 and rows[0]["time_ns"] != 1  # a new file, one header


@pytest.mark.bpf
def test_an_existing_file_is_refused_without_overwrite(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_text("kept\n")
    r = run_ebpftool(["net", "--duration", "1", "--no-ui", "--jsonl", str(path)])
    assert r.returncode == 1 and "already exists" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert path.read_text() == "kept\n"
    # A refused --record does not leave behind the --jsonl file made just before (a rerun would be refused).
    fresh = tmp_path / "fresh.jsonl"
    r = run_ebpftool(["net", "--duration", "1", "--no-ui", "--jsonl", str(fresh), "--record", str(path)])
    assert r.returncode == 1 and "already exists" in r.stderr and not fresh.exists(), r.stderr
    # Replaying into an existing file is refused the same way (replay shares the sinks).
    rec = tmp_path / "empty.rec"
    rec.write_text('{"type": "header", "format": "ebpftool-recording/1", "time_ns": 1}\n')
    r = run_ebpftool(["replay", str(rec), "--jsonl", str(path)])
    assert r.returncode == 1 and "already exists" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert path.read_text() == "kept\n"


@pytest.mark.bpf
def test_dev_full_is_one_sentence(tmp_path):
    for extra in ([], ["--overwrite"]):
        r = run_ebpftool(["net", "--duration", "1", "--no-ui", "--jsonl", "/dev/full", *extra])
        assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr
        assert "/dev/full" in r.stderr
    assert "not a regular file" in r.stderr  # --overwrite never replaces a device


@pytest.fixture
def small_disk():
    """A 32 KiB tmpfs: a disk that fills up."""
    d = Path(tempfile.mkdtemp(prefix="ebpftool-full-"))
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32k,mode=0755", "tmpfs", str(d)]).returncode != 0:
        d.rmdir()
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield d
    finally:
        subprocess.run(["umount", str(d)], check=True)
        d.rmdir()


def test_a_full_disk_is_one_sentence_and_counted_as_failed_exports(small_disk, tmp_path):
    # Room for a page of each file (tmpfs counts pages): every further write fails with ENOSPC.
    (small_disk / "filler").write_bytes(b"\0" * 24576)
    out, rec = small_disk / "out.jsonl", small_disk / "run.rec"
    churn = ConnectionChurn()
    try:
        r = run_ebpftool(["net", "--spans", "--duration", "3", "--interval", "0.2", "--no-ui", "--jsonl", str(out),
                          "--record", str(rec), "--summary-json", str(tmp_path / "s.json")])
    finally:
        churn.close()
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    full = [line for line in r.stderr.splitlines() if "No space left on device" in line]
    assert len(full) == 2, r.stderr  # one sentence for each file
    assert any(line.startswith(f"jsonl: cannot write {out}") for line in full)
    assert any(line.startswith(f"record: cannot write {rec}") for line in full)
    doc = summary_json(tmp_path / "s.json")
    export, sink = doc["export"], doc["export_by_sink"]["jsonl"]
    assert sink["metric_exports_failed"] >= 1
    assert export["record_writes_failed"] >= 1
    assert export["spans_emitted"] == (sink["spans_exported"] + sink["spans_failed"] + export["spans_dropped_queue"]
                                       + export["spans_unsent_at_exit"]), doc


def test_a_disk_full_from_the_start_is_one_sentence(small_disk):
    (small_disk / "filler").write_bytes(b"\0" * 32768)
    for option in ("--jsonl", "--record"):
        r = run_ebpftool(["net", "--duration", "1", "--no-ui", option, str(small_disk / f"out{option}")])
        assert r.returncode == 1, r.stderr
        assert r.stderr.strip().splitlines() == [
            f"ebpftool: cannot write {small_disk / f'out{option}'}: No space left on device; "
            "what could not be written is counted as failed"], r.stderr
        assert not (small_disk / f"out{option}").exists()


# --- point 4: the Prometheus endpoint -------------------------------------------------------------
@pytest.mark.bpf
def test_prometheus_endpoint_is_loopback_by_default_and_a_connection_flood_is_bounded(tmp_path):
    port = free_port()
    flood: list[socket.socket] = []
    with EbpftoolProcess(["net", "--prometheus-port", str(port), "--interval", "0.5", "--no-ui", "--summary-json",
                          str(tmp_path / "s.json")]) as proc:
        pid = proc.proc.pid
        assert listening_addresses(port) == {"127.0.0.1"}
        status, body = scrape(port)
        assert status == 200
        baseline = threads_of(pid)
        try:
            for _ in range(300):  # idle: connected, never a byte sent
                flood.append(socket.create_connection(("127.0.0.1", port), timeout=30))
            # Each is closed by the endpoint: at once when every slot is taken, else when its time runs out.
            # Meanwhile the process never has more threads than the bound allows.
            sel = selectors.DefaultSelector()
            for s in flood:
                s.setblocking(False)
                sel.register(s, selectors.EVENT_READ)
            open_left, most_threads = len(flood), baseline
            deadline = time.monotonic() + 90
            while open_left and time.monotonic() < deadline:
                most_threads = max(most_threads, threads_of(pid))
                for key, _ in sel.select(timeout=0.2):
                    try:
                        data = key.fileobj.recv(4096)
                    except ConnectionResetError:
                        data = b""
                    if not data:
                        sel.unregister(key.fileobj)
                        open_left -= 1
            assert open_left == 0, f"{open_left} idle connections still held open by the endpoint"
            assert most_threads <= baseline + PROMETHEUS_MAX_CONNECTIONS, (baseline, most_threads)
        finally:
            for s in flood:
                s.close()
        status, body = scrape(port)  # still answers
        assert status == 200 and "ebpftool" in body
        assert proc.stop() == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    figures = summary_json(tmp_path / "s.json")["prometheus"]
    refused, timed_out = figures["connections_refused"], figures["connections_timed_out"]
    assert refused > 0 and refused + timed_out == 300, (refused, timed_out)


@pytest.mark.bpf
def test_prometheus_address_from_the_config_file(tmp_path):
    port = free_port()
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"prometheus-port: {port}\nprometheus-address: 127.0.0.2\n")
    with EbpftoolProcess(["net", "--config", str(cfg), "--interval", "0.5", "--no-ui"]) as proc:
        assert listening_addresses(port) == {"127.0.0.2"}
        assert scrape(port, "127.0.0.2")[0] == 200
        assert proc.stop() == 0, proc.stderr
    r = run_ebpftool(["net", "--duration", "1", "--no-ui", "--prometheus-port", str(port), "--prometheus-address", "192.0.2.1"])
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr
    assert "cannot serve Prometheus metrics on 192.0.2.1" in r.stderr


# --- point 10 (part): counts that mislead ------------------------------------------------------------
@pytest.mark.bpf
def test_summary_gives_spans_per_sink_not_their_sum(tmp_path, grpc_receiver):
    out = tmp_path / "out.jsonl"
    churn = ConnectionChurn()
    try:
        r = run_ebpftool(["net", "--spans", "--duration", "3", "--interval", "0.5", "--no-ui", "--jsonl", str(out),
                          "--otlp-endpoint", grpc_receiver.endpoint, "--otlp-protocol", "grpc", "--flush-timeout", "30"])
    finally:
        churn.close()
    assert r.returncode == 0, r.stderr
    emitted = summary_figure(r.stdout, "spans emitted")
    to_otlp = summary_figure(r.stdout, "spans exported", "export to otlp-grpc")
    to_jsonl = summary_figure(r.stdout, "spans exported", "export to jsonl")
    in_file = sum(json.loads(line)["type"] == "span" for line in out.read_text().splitlines())
    assert emitted > 0 and to_otlp == len(grpc_receiver.spans()) == emitted and to_jsonl == in_file == emitted
    assert not re.search(r"export\s*│\s*spans exported", r.stdout)  # no sum over sinks


@pytest.mark.root
def test_doctor_without_privileges_says_privileges_are_missing():
    r = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                        sys.executable, "-m", "ebpftool", "doctor", "--json"],
                       cwd="/", capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr
    report = json.loads(r.stdout)
    checks = {c["name"]: c for c in report["checks"]}
    assert not checks["capabilities"]["ok"]
    assert "privileges missing (running as uid 65534" in checks["privileges"]["detail"]
    text = r.stdout + r.stderr
    assert "not mounted" not in text and "Failed to compile" not in text
    assert all(not t["can_run"] and "privileges missing" in t["detail"] for t in report["tracers"])


def test_a_span_or_snapshot_that_cannot_be_converted_fails_alone_and_is_counted():
    """Wrong types (as a bad recording can hold) never kill the export threads: counted, said once."""
    receiver = GrpcReceiver()
    said: list[str] = []
    try:
        telemetry = Telemetry(build_resource(environ={}), [otlp_sink(receiver.endpoint, "grpc")], report=said.append)
        bad = _span(0)
        bad.events = [1, 2]  # not SpanEvents
        for rec in (_span(1), bad, _span(2), bad):
            telemetry.emit_span(rec)
        telemetry.export_metrics([object()])  # not a MetricPoint
        telemetry.shutdown()
        assert {s.name for s in receiver.spans()} == {"GET /load/1", "GET /load/2"}
        c = telemetry.counters()
        assert (c["spans_exported"], c["spans_failed"]) == (2, 2)
        assert c["metric_exports_failed"] == 1
        assert len(said) == 2 and any("a span could not be exported" in m for m in said), said
    finally:
        receiver.stop()


def test_a_slowloris_client_is_closed_when_its_time_runs_out_not_kept_by_trickled_bytes():
    """A client sending a byte every 0.2 s never trips a per-read timeout; the endpoint's deadline is over
    the whole request, so it is closed anyway (and counted), and the endpoint answers others meanwhile."""
    from ebpftool.export.sinks import PrometheusEndpoint

    endpoint = PrometheusEndpoint(0, lambda: None, connection_seconds=2)
    try:
        s = socket.create_connection(("127.0.0.1", endpoint.port), timeout=10)
        s.sendall(b"GET /metrics HTTP/1.1\r\n")
        trickle = b"X-Slow: " + b"a" * 10_000
        closed = False
        deadline = time.monotonic() + 60  # trickled at this pace, the header alone would take 2,000 s
        for byte in trickle:
            if time.monotonic() > deadline:
                break
            try:
                s.sendall(bytes([byte]))
            except OSError:
                closed = True
                break
            r, _, _ = select.select([s], [], [], 0.2)  # the trickle's pace, or the server closing
            if r:
                try:
                    closed = s.recv(1024) == b""
                except OSError:
                    closed = True
                if closed:
                    break
        s.close()
        assert closed, "the endpoint kept a trickling client past its deadline"
        assert endpoint.timed_out == 1
        status, _ = scrape(endpoint.port)
        assert status == 200
    finally:
        endpoint.close()


@pytest.mark.bpf
def test_the_null_device_is_written_not_refused():
    """--jsonl /dev/null (measuring what the export itself costs) runs: the null device is written to, never
    replaced or refused as an existing file, and stays the null device."""
    r = run_ebpftool(["net", "--duration", "1", "--no-ui", "--jsonl", "/dev/null", "--summary-json", "/dev/null"])
    assert r.returncode == 0, r.stderr
    st = os.stat("/dev/null")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3)
