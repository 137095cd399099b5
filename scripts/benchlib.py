"""What the benchmark scripts share: ebpftool started as a user starts it, ready once attached; the
kernel's run statistics of BPF programs; and slices of one loaded run alternately without and with probes."""
from __future__ import annotations

import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Iterable, Iterator

ROOT = Path(__file__).resolve().parents[1]
READY_MARKER = "probes attached"
BPF_STATS_SYSCTL = Path("/proc/sys/kernel/bpf_stats_enabled")


def start_ebpftool(args: list[str], stdout=subprocess.PIPE) -> subprocess.Popen:
    """`python -m ebpftool ARGS` in the background; returns once its probes are attached.

    Its stderr is left open after the marker (the caller reads or drains it).
    """
    proc = subprocess.Popen([sys.executable, "-m", "ebpftool", *args], cwd=ROOT, stdout=stdout,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "COLUMNS": "200"})
    for line in proc.stderr:
        if READY_MARKER in line:
            return proc
    raise SystemExit(f"ebpftool {' '.join(args)} did not start (exit {proc.wait()})")


@contextlib.contextmanager
def bpf_stats_enabled() -> Iterator[None]:
    """kernel.bpf_stats_enabled on while inside (each program run is timed); its old value after."""
    old = BPF_STATS_SYSCTL.read_text().strip()
    BPF_STATS_SYSCTL.write_text("1")
    try:
        yield
    finally:
        BPF_STATS_SYSCTL.write_text(old)


def program_stats() -> dict[int, dict]:
    """Every loaded BPF program by id, as bpftool shows it (run_cnt / run_time_ns while stats are on)."""
    out = subprocess.run(["bpftool", "prog", "show", "-j"], capture_output=True, text=True).stdout
    return {p["id"]: p for p in json.loads(out or "[]")}


def programs_attached_by(pid: int) -> set[int]:
    """Ids of the programs that process pid attached (tracepoints, raw tracepoints, uprobes)."""
    out = subprocess.run(["bpftool", "perf", "show", "-j"], capture_output=True, text=True).stdout
    return {a["prog_id"] for a in json.loads(out or "[]") if a.get("pid") == pid}


def bpf_time_during(pid: int, load: Callable[[], int]) -> dict[str, dict]:
    """Runs `load` (it returns the requests it made) with kernel.bpf_stats_enabled; for each program that
    process pid attached and that ran: runs per request, ns per run and ns per request (each run also pays
    bpf_stats' own two clock reads, ~60 ns)."""
    ids = programs_attached_by(pid)
    with bpf_stats_enabled():
        before = program_stats()
        requests = load()
        after = program_stats()
    costs = {}
    for prog_id in ids & before.keys() & after.keys():
        runs = after[prog_id].get("run_cnt", 0) - before[prog_id].get("run_cnt", 0)
        if runs > 0:
            ns = after[prog_id].get("run_time_ns", 0) - before[prog_id].get("run_time_ns", 0)
            costs[after[prog_id]["name"]] = {"runs_per_request": runs / requests, "ns_per_run": ns / runs,
                                             "ns_per_request": ns / requests}
    return costs


# -- with and without, alternating within one loaded run ----------------------------------------------------
SETTLE_S = 0.02  # after attaching or detaching: let the CPU that was inside a probe leave it


def switch_hooks(prog, raw_tracepoints: Iterable[str], btf_hooks: Iterable[tuple[str, str]], on: bool) -> None:
    """Attach (on) or detach the per-request hooks of a loaded ebpftool.core.bpf.BpfProgram: BCC's
    raw_tracepoint__<tp> programs and the tp_btf programs given as (tracepoint, function); the programs
    stay loaded."""
    for tp in raw_tracepoints:
        if on:
            prog.bpf.attach_raw_tracepoint(tp=tp, fn_name=f"raw_tracepoint__{tp}")
        else:
            prog.bpf.detach_raw_tracepoint(tp=tp)
    for tracepoint, function in btf_hooks:
        if on:
            prog.attach_btf_tracepoint(tracepoint, function)
        else:
            prog.detach_btf_tracepoint(function)


@contextlib.contextmanager
def without_arrival_hook(active: bool = True) -> Iterator[None]:
    """While active, the inference tracer loads as on a kernel without the sk_data_ready tracepoint: no arrival
    hook (ARRIVAL_HOOK 0), requests start at their read. To tell what the arrivals cost."""
    from ebpftool.core.bpf import BpfProgram
    from ebpftool.tracers.inference.plans import ARRIVAL_TRACEPOINT

    exists = BpfProgram.tracepoint_exists
    if active:
        BpfProgram.tracepoint_exists = staticmethod(lambda tp: tp != ARRIVAL_TRACEPOINT and exists(tp))
    try:
        yield
    finally:
        BpfProgram.tracepoint_exists = staticmethod(exists)


def jsonl_records(path: Path) -> list[dict]:
    """The records of an `ebpftool --jsonl` file (a line that is not JSON, e.g. one cut short, is skipped)."""
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def latest_metric_points(recs: Iterable[dict], keep: Callable[[dict], bool]) -> dict[str, list[dict]]:
    """Metric name -> its latest point per attribute set, among the metric records keep() accepts (`--jsonl`
    writes one point per series and interval; for a cumulative metric the latest is the total)."""
    latest: dict[tuple, dict] = {}
    for r in recs:
        if r.get("type") == "metric" and keep(r):
            key = (r["name"], json.dumps(r.get("attributes", {}), sort_keys=True))
            if key not in latest or r.get("time_unix_nano", 0) >= latest[key].get("time_unix_nano", 0):
                latest[key] = r
    out: dict[str, list[dict]] = {}
    for (name, _), r in latest.items():
        out.setdefault(name, []).append(r)
    return out


def nginx_requests(port: int) -> int:
    """Requests nginx has handled so far (its stub_status page, served at /nginx_status by the test config)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(b"GET /nginx_status HTTP/1.0\r\n\r\n")
        reply = b""
        while chunk := conn.recv(4096):
            reply += chunk
    # "Active connections: N\nserver accepts handled requests\n A H R\n..."
    return int(reply.split(b"\r\n\r\n", 1)[1].splitlines()[2].split()[2])


def alternating_slices(attach: Callable[[bool], None], count: Callable[[], int], seconds: float,
                       slice_s: float) -> dict:
    """Under a load that runs throughout, slices of slice_s seconds alternately without and with the probes
    (attach(False) / attach(True); they are attached when called, and are again on return), each with-slice
    paired with the without-slice before it: requests/s of each slice (count() is the server's running
    total) and the with/without ratio of each pair. Pairs of adjacent slices cancel the
    machine's slow drifts, which rounds of separate runs (a process started and stopped each time) do not."""
    rows = []
    attached = True
    end = time.monotonic() + seconds
    pair: dict[str, float] = {}
    while time.monotonic() < end:
        attached = not attached
        attach(attached)
        time.sleep(SETTLE_S)
        n0, t0 = count(), time.monotonic()
        time.sleep(slice_s)
        n1, t1 = count(), time.monotonic()
        pair["with" if attached else "without"] = (n1 - n0) / (t1 - t0)
        if attached:
            rows.append({**pair, "ratio": pair["with"] / pair["without"]})
    attach(True)
    ratios = [r["ratio"] for r in rows]
    return {"pairs": rows, "ratio_median": statistics.median(ratios), "ratio_mean": statistics.mean(ratios),
            "ratio_sem": statistics.stdev(ratios) / len(ratios) ** 0.5,
            "without_rps_median": statistics.median(r["without"] for r in rows),
            "with_rps_median": statistics.median(r["with"] for r in rows)}


def cpu_seconds(pid: int, stat: str | None = None) -> float:
    """User + system CPU seconds of process pid (or of the task whose stat file is given)."""
    fields = Path(stat or f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class TracerThread:
    """A tracer as its command builds it, run by the command's runner loop in a thread of this process, so
    that a benchmark can detach and attach its per-event hooks in milliseconds (the program compiled and
    loaded once): attach(on), for which a subclass says how (switch). Returns once its probes are attached."""

    def __init__(self, tracer, telemetry, interval: float = 1.0) -> None:
        from ebpftool.core.runner import StopFlag  # the scripts put the tree on sys.path before this runs

        self.tracer = tracer
        self._stop = StopFlag()
        self._started = threading.Event()
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(telemetry, interval), name="tracer", daemon=True)
        self._thread.start()
        self._started.wait(120)
        if self._failure or not self._started.is_set():
            raise SystemExit(f"the {tracer.name} tracer did not start: {self._failure}")
        self._attached = True

    def attach(self, on: bool) -> None:
        """The per-event hooks in place (on) or not; the rest of the tracer goes on either way."""
        if on != self._attached:
            self.switch(on)
            self._attached = on

    def switch(self, on: bool) -> None:
        raise NotImplementedError

    def _run(self, telemetry, interval: float) -> None:
        from ebpftool.core.runner import run

        try:
            run([self.tracer], telemetry, duration=None, interval=interval, stop=self._stop,
                on_start=lambda *_: self._started.set())
        except BaseException as exc:  # reported by __init__ or stop()
            self._failure = exc
            self._started.set()

    def cpu_seconds(self) -> float:
        """CPU time of this process's threads but the main one (which only switches the hooks and counts):
        the tracer's polling loop and its export thread."""
        main = threading.main_thread().native_id
        total = 0.0
        for tid in os.listdir("/proc/self/task"):
            if int(tid) != main:
                with contextlib.suppress(FileNotFoundError):
                    total += cpu_seconds(int(tid), f"/proc/self/task/{tid}/stat")
        return total

    def stop(self) -> None:
        self._stop.set("benchmark over")
        self._thread.join(60)
        if self._failure:
            raise SystemExit(f"the {self.tracer.name} tracer failed: {self._failure}")
