"""Bounded series: short-lived processes' series end once exported, and no metric holds more than --max-series.

Many short-lived client processes (bash, writing exactly PAYLOAD bytes over /dev/tcp to a server on
loopback) run while `ebpftool net` serves Prometheus and records every snapshot to a file.
"""
from __future__ import annotations

import json
import re
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from ebpftool import semconv as sc
from ebpftool.export.series import FOLDED_METRIC
from tests.conftest import EbpftoolProcess
from tests.victoria import free_port

pytestmark = pytest.mark.timeout(300)

PAYLOAD = 1000
CLIENTS = 300


class SinkServer:
    """Accepts connections on loopback, reads each to EOF and closes it."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=512)
        self.port = self.sock.getsockname()[1]
        self.received = 0
        self.closed = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            n = 0
            with conn:
                try:
                    while d := conn.recv(65536):
                        n += len(d)
                except OSError:
                    pass
            with self._lock:
                self.received += n
                self.closed += 1

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)   # wakes the accept() of the serving thread
        except OSError:
            pass
        self._thread.join(timeout=30)
        self.sock.close()


def churn(port: int, n: int) -> list[int]:
    """n short-lived processes, a few at a time, each sending PAYLOAD bytes; their pids."""
    script = f'exec 3<>/dev/tcp/127.0.0.1/{port} && printf "%{PAYLOAD}s" "" >&3 && exec 3>&-'
    pids, running = [], []
    for _ in range(n):
        p = subprocess.Popen(["bash", "-c", script])
        pids.append(p.pid)
        running.append(p)
        if len(running) >= 8:
            assert running.pop(0).wait(timeout=30) == 0
    for p in running:
        assert p.wait(timeout=30) == 0
    return pids


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return r.read().decode()


def series_of(text: str, pids: set[int]) -> list[str]:
    return [line for line in text.splitlines()
            if not line.startswith("#") and any(f'process_pid="{p}"' in line for p in pids)]


def wait_for(condition, timeout: float, what: str, extra=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}: {condition()}, {extra() if extra else ''}")


def snapshots(path: Path) -> list[list[dict]]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [r["points"] for r in rows if r.get("type") == "metrics"]


def transmitted(point: dict) -> bool:
    return point["name"] == sc.EBPFTOOL_NETWORK_FLOW_IO and point["attributes"].get(sc.NETWORK_IO_DIRECTION) == "transmit"


def summary_figure(text: str, label: str) -> int:
    """The value of the summary table's row whose figure is label."""
    for line in text.splitlines():
        cells = [c.strip() for c in line.split("│")]
        if len(cells) == 5 and cells[2] == label:
            return int(cells[3])
    raise AssertionError(f"no summary row {label!r} in:\n{text}")


def own_bytes(path: Path, pids: set[int]) -> dict[int, float]:
    """Per client, the bytes it sent as exported in its own series (the highest value of any snapshot)."""
    sent: dict[int, float] = {}
    for points in snapshots(path):
        for p in points:
            pid = p["attributes"].get(sc.PROCESS_PID)
            if pid in pids and transmitted(p):
                sent[pid] = max(sent.get(pid, 0), p["value"])
    return sent


@pytest.mark.bpf
def test_short_lived_processes_series_retire_after_their_final_export_and_bytes_stay_counted(tmp_path):
    server = SinkServer()
    prom = free_port()
    record = tmp_path / "rec.jsonl"
    args = ["net", "--interval", "1", "--no-ui", "--prometheus-port", str(prom), "--record", str(record)]
    try:
        with EbpftoolProcess(args) as proc:
            pids = set(churn(server.port, CLIENTS))
            wait_for(lambda: server.closed >= CLIENTS, 30, "the server to see every connection close", lambda: (server.closed, server.received))
            assert server.received == CLIENTS * PAYLOAD
            # Every client's bytes are exported in its own series (nobody has scraped yet) ...
            wait_for(lambda: sum(own_bytes(record, pids).values()) == CLIENTS * PAYLOAD, 60,
                     "every client's bytes in a snapshot")
            # ... and, as long as no scrape has read them, the series stay, however many intervals pass ...
            seen = len(snapshots(record))
            wait_for(lambda: len(snapshots(record)) >= seen + 4, 60, "four more snapshots")
            latest = {p["attributes"].get(sc.PROCESS_PID) for p in snapshots(record)[-1] if transmitted(p)}
            assert pids <= latest, f"{len(pids - latest)} series ended before any scrape read them"
            # ... the first scrape has every one of them ...
            served = {int(m) for m in re.findall(r'process_pid="(\d+)"', scrape(prom))}
            assert pids <= served
            # ... then, the processes gone and scraped, their series end: the endpoint holds none of them.
            wait_for(lambda: not series_of(scrape(prom), pids), 60, "the gone processes' series to retire")
            text = scrape(prom)
            assert proc.stop() == 0, proc.stderr
    finally:
        server.close()
    assert "Traceback" not in proc.stderr
    # Every byte the clients sent was exported in their own series before they retired.
    sent = own_bytes(record, pids)
    assert set(sent) == pids, f"{len(pids - set(sent))} clients never exported"
    assert sum(sent.values()) == CLIENTS * PAYLOAD
    assert 'otel_metric_overflow' not in text   # far below the default bound: nothing folded
    assert summary_figure(proc.stdout, "process series retired (process gone)") >= CLIENTS
    # The summary's totals keep the retired processes' bytes.
    assert summary_figure(proc.stdout, "bytes sent") >= CLIENTS * PAYLOAD


@pytest.mark.bpf
def test_series_past_max_series_fold_into_an_overflow_series_and_are_counted(tmp_path):
    server = SinkServer()
    prom = free_port()
    record = tmp_path / "rec.jsonl"
    cap = 10
    args = ["net", "--interval", "1", "--no-ui", "--prometheus-port", str(prom), "--record", str(record),
            "--max-series", str(cap)]
    n = 60
    try:
        with EbpftoolProcess(args) as proc:
            pids = set(churn(server.port, n))
            wait_for(lambda: (server.closed, server.received) if server.closed >= n else None, 30, "the server to see every connection close", lambda: (server.closed, server.received))
            # Wait until every client's bytes were exported: in its own series or in the overflow series.
            def complete():
                every = snapshots(record)
                if not every:
                    return None
                over = sum(p["value"] for p in every[-1] if p["name"] == sc.EBPFTOOL_NETWORK_FLOW_IO
                           and p["attributes"] == {"otel.metric.overflow": True})
                return every if sum(own_bytes(record, pids).values()) + over >= n * PAYLOAD else None
            every = wait_for(complete, 60, "snapshots accounting for every client's bytes")
            text = scrape(prom)
            assert proc.stop() == 0, proc.stderr
    finally:
        server.close()
    assert "Traceback" not in proc.stderr
    for points in every:   # no snapshot holds more than the bound, the overflow series included
        for metric in (sc.EBPFTOOL_NETWORK_FLOW_IO, sc.EBPFTOOL_NETWORK_TCP_SEGMENTS, sc.EBPFTOOL_NETWORK_TCP_CONNECTIONS):
            assert sum(p["name"] == metric for p in points) <= cap
    assert 'otel_metric_overflow="true"' in text
    # Clients that never had a series of their own were folded, and counted.
    unseen = n - len(own_bytes(record, pids))
    assert unseen > 0
    folded = {p["attributes"]["ebpftool.metric.name"]: p["value"] for p in every[-1] if p["name"] == FOLDED_METRIC}
    assert folded.get(sc.EBPFTOOL_NETWORK_FLOW_IO, 0) >= unseen
    assert summary_figure(proc.stdout, "series folded into overflow (--max-series)") >= unseen


def test_the_overflow_series_of_a_counter_never_goes_back_when_folded_series_retire():
    """The limiter alone: series folded into the overflow series keep their counts there after they retire,
    and a retired series' place is taken by a new one (the OpenTelemetry SDK's semantics, cumulative)."""
    from ebpftool.export.series import SeriesLimiter
    from ebpftool.export.model import counter

    lim = SeriesLimiter(3, "t")
    pts = lambda **v: [counter("m", "1", "d", n, {"pid": int(k[1:])}) for k, n in v.items()]  # noqa: E731
    overflow = lambda out: [p.value for p in out if p.attributes == {"otel.metric.overflow": True}]  # noqa: E731
    out = lim.apply(pts(p1=1, p2=2, p3=3, p4=4))
    assert [p.attributes["pid"] for p in out if "pid" in p.attributes] == [1, 2] and overflow(out) == [7]
    out = lim.apply(pts(p1=1, p3=5, p4=4))                # p2 retired: its place is free; p3, p4 stay folded
    assert overflow(out) == [9] and lim.folded() == 2
    out = lim.apply(pts(p1=1, p5=10))                     # p3, p4 retired: their counts stay in the overflow
    assert overflow(out) == [9] and [p.value for p in out if p.attributes.get("pid") == 5] == [10]
    out = lim.apply(pts(p1=1, p5=10, p6=6))
    assert overflow(out) == [15] and lim.folded() == 3 and len(out) == 3
    assert [p.value for p in lim.folded_points()] == [3]


# Opens the stand-in device, does one ioctl on it (ENOTTY on a regular file: the tracepoints count it
# all the same), exits.
IOCTL_ONCE = (
    "import fcntl, os, sys\n"
    "fd = os.open(sys.argv[1], os.O_RDWR)\n"
    "try:\n    fcntl.ioctl(fd, 0xc020462a)\nexcept OSError:\n    pass\n"
)


@pytest.mark.bpf
def test_gpu_series_of_exited_processes_end_once_scraped(tmp_path):
    """The GPU tracer's per-process series (here ioctl counts) of processes that exited end too."""
    import sys
    import tempfile

    devices = Path(tempfile.mkdtemp(prefix="gpu", dir="/tmp"))   # short: the prefix is compiled in
    (devices / "nvidia0").write_bytes(b"")
    prom = free_port()
    record = tmp_path / "rec.jsonl"
    args = ["gpu", "--no-discover", "--ioctl-path-prefix", f"{devices}/nvidia", "--interval", "1", "--no-ui",
            "--prometheus-port", str(prom), "--record", str(record)]
    n = 20
    try:
        with EbpftoolProcess(args) as proc:
            pids = set()
            for _ in range(n):
                p = subprocess.Popen([sys.executable, "-c", IOCTL_ONCE, str(devices / "nvidia0")])
                assert p.wait(timeout=30) == 0
                pids.add(p.pid)

            def counted():
                seen = {p["attributes"].get(sc.PROCESS_PID) for points in snapshots(record) for p in points
                        if p["name"] == sc.EBPFTOOL_GPU_IOCTLS and p["value"] >= 1}
                return pids <= seen
            wait_for(counted, 60, "every process's ioctl in a snapshot")
            wait_for(lambda: not series_of(scrape(prom), pids), 60, "the exited processes' series to end")
            assert proc.stop() == 0, proc.stderr
    finally:
        for f in devices.iterdir():
            f.unlink()
        devices.rmdir()
    assert "Traceback" not in proc.stderr
