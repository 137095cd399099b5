"""Hardening: ebpftool under load, faults and hostile traffic, as real processes on real servers.

- load: hundreds of concurrent connections and a long keep-alive stream; the tool's memory stays
  flat and every request is in the exported metrics (spans: exported or counted as not sent);
- faults: the OTLP collector down at start, gone mid-run and back; SIGTERM in a burst (final
  snapshot sent, nothing left in the kernel); a traced server killed mid-request (its kernel
  state is removed, the tracer goes on);
- secrets in traffic never reach exports, logs or record files; output files are 0600.

What is checked is what the test OTLP receiver decoded, what ebpftool wrote or printed, and what
the kernel still holds (bpftool, tracefs), never the tracer's internals.
"""
from __future__ import annotations

import http.client
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ebpftool import semconv as sc
from tests.conftest import ROOT, EbpftoolProcess
from tests.otlp_receiver import GrpcReceiver
from tests.kernel_state import (CONN_TABLE_PROBES, TCP_CLOSE_WAIT, TCP_ESTABLISHED, array_total, bpf_ids_held_by,
                                bpf_links_held_by, conn_pids, filter_bits, filter_slot, map_id_named, perf_attachments,
                                still_loaded, table_home, table_slots, uprobe_events, wait_for_server_sockets)
from tests.servers.nginx import free_port, nginx_server

pytestmark = [pytest.mark.bpf, pytest.mark.timeout(120)]

CUDART = "/usr/local/cuda/lib64/libcudart.so.13"
WRK_CONNECTIONS = 200


# --- helpers -------------------------------------------------------------------------------------
def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def histogram_count(receiver: GrpcReceiver, metric: str, port: int) -> int:
    return sum(p.count for p in receiver.latest(metric) if p.attributes.get(sc.SERVER_PORT) == port)


def counter_value(receiver: GrpcReceiver, metric: str, **attrs) -> float:
    return sum(p.value for p in receiver.latest(metric) if all(p.attributes.get(k) == v for k, v in attrs.items()))


def summary_figure(text: str, label: str) -> int:
    m = re.search(rf"{re.escape(label)}\s*│?\s*([\d,]+)", text)
    assert m, f"no '{label}' in the summary:\n{text}"
    return int(m.group(1).replace(",", ""))


def get(port: int, path: str = "/index.html", headers: dict | None = None) -> int:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", path, headers=headers or {})
    r = c.getresponse()
    r.read()
    c.close()
    return r.status


class StreamingServer:
    """tests/servers/streaming_server.py as a process (it can be killed)."""

    def __init__(self, tmp: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.servers.streaming_server", str(self.port),
                                      str(tmp / f"timings-{self.port}.jsonl")], cwd=ROOT, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "ready"

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait(10)


def stream_request(port: int, tokens: int, tpot_ms: float, headers: dict | None = None, extra: dict | None = None,
                   path: str = "/v1/chat/completions") -> bytes:
    body = json.dumps({"model": "m-hard", "stream": True, "max_tokens": tokens, "ttft_ms": 5, "tpot_ms": tpot_ms,
                       "messages": [{"role": "user", "content": "hi"}], **(extra or {})})
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    c.request("POST", path, body, {"Content-Type": "application/json", **(headers or {})})
    data = c.getresponse().read()
    c.close()
    return data


def wrk(port: int, connections: int, seconds: int) -> subprocess.Popen:
    return subprocess.Popen(["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", f"http://127.0.0.1:{port}/index.html"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wrk_requests(output: str) -> int:
    m = re.search(r"(\d+) requests in", output)
    assert m, output
    return int(m.group(1))


# --- load ----------------------------------------------------------------------------------------
def test_many_connections_and_a_long_stream_memory_flat_every_request_counted(tmp_path, grpc_receiver):
    llm = StreamingServer(tmp_path)
    try:
        with nginx_server() as port:
            args = ["inference", "--port", str(port), "--port", str(llm.port), "--otlp-endpoint", grpc_receiver.endpoint,
                    "--otlp-protocol", "grpc", "--interval", "1", "--no-ui"]
            with EbpftoolProcess(args) as proc:
                pid = proc.proc.pid
                stream_tokens = 150
                streamed: list[bytes] = []
                stream = threading.Thread(target=lambda: streamed.append(stream_request(llm.port, stream_tokens, 40)))
                stream.start()  # one keep-alive stream over the whole load (~6 s)
                load = wrk(port, WRK_CONNECTIONS, 6)
                time.sleep(1.5)  # warm-up: compiled, maps filled, export threads running
                samples = []
                while load.poll() is None:
                    samples.append(rss_mb(pid))
                    time.sleep(0.25)
                output = load.communicate()[0]
                stream.join(60)
                done = wrk_requests(output)
                # The last export after the load (cumulative, so the newest one holds everything).
                assert grpc_receiver.wait_for(
                    lambda: histogram_count(grpc_receiver, sc.HTTP_SERVER_REQUEST_DURATION, port) >= done, timeout=15)
                assert proc.stop() == 0, proc.stderr
        summary = proc.stdout
    finally:
        llm.close()
    assert done > 5000, output  # the load was real (~100k requests/s on 2 cores untraced)
    assert len(samples) >= 10
    first, peak = samples[0], max(samples)
    assert peak < first + 30, f"RSS grew under load: {first:.0f} MB -> {peak:.0f} MB ({samples})"
    # Metrics are exact: every request wrk completed is counted; the only extra ones are those in
    # flight on its connections when it stopped (answered by nginx, never read by wrk).
    measured = histogram_count(grpc_receiver, sc.HTTP_SERVER_REQUEST_DURATION, port)
    assert done <= measured <= done + WRK_CONNECTIONS, (done, measured)
    assert summary_figure(summary, "connections accepted") >= WRK_CONNECTIONS
    # Spans: sent and exported, or counted (budget, full ring buffer, export queue).
    spans = len([s for s in grpc_receiver.spans() if s.attributes.get(sc.SERVER_PORT) == port])
    unsampled = counter_value(grpc_receiver, sc.EBPFTOOL_SPANS_UNSAMPLED, **{sc.EBPFTOOL_TRACER: "inference"})
    lost = counter_value(grpc_receiver, sc.EBPFTOOL_EVENTS_LOST, **{sc.EBPFTOOL_TRACER: "inference"})
    dropped = counter_value(grpc_receiver, sc.EBPFTOOL_SPANS_DROPPED)
    assert 0 < spans <= measured
    assert unsampled > 0  # the default budget (1000/s) is far below the load: the rest is counted
    assert measured <= spans + unsampled + lost + dropped, (measured, spans, unsampled, lost, dropped)
    # The long stream went through the load: every token counted, one duration.
    assert streamed and streamed[0].count(b"data:") == stream_tokens + 1  # + [DONE]
    tokens = counter_value(grpc_receiver, sc.EBPFTOOL_GEN_AI_OUTPUT_TOKENS, **{sc.SERVER_PORT: llm.port})
    assert tokens == stream_tokens
    assert histogram_count(grpc_receiver, sc.GEN_AI_SERVER_REQUEST_DURATION, llm.port) == 1


TABLE_SLOTS = 64  # --max-connections: the smallest table, so that connections collide and overflow it
TABLE_CLIENTS = 96
TABLE_LATER_CLIENTS = 40


def requests_on(clients: list[http.client.HTTPConnection], n: int) -> None:
    for c in clients:
        for _ in range(n):
            c.request("GET", "/index.html")
            c.getresponse().read()


def client_ports(clients: list[http.client.HTTPConnection]) -> list[int]:
    return [c.sock.getsockname()[1] for c in clients]


def handshake_ended(server_side) -> bool:
    """The server's end of a connection is established: the handshake's last state change, which the tracer's
    hook sees, is done (the server may have read and answered since, not closed)."""
    return server_side is not None and server_side.state in (TCP_ESTABLISHED, TCP_CLOSE_WAIT)


def server_closed(server_side) -> bool:
    """The server closed its end after the client's (or it is gone): the hook saw it leave, the table let it go."""
    return server_side is None or server_side.state not in (TCP_ESTABLISHED, TCP_CLOSE_WAIT)


def test_connection_table_collisions_overflow_and_reuse_are_followed_or_counted(grpc_receiver):
    """More connections than --max-connections slots: those that find a slot are measured exactly, wherever
    they lie from their home slot, also after slots before them in their probe chain were freed; the others
    are counted as untracked; freed slots are taken again; closing everything frees every slot."""
    with nginx_server() as port:
        args = ["inference", "--port", str(port), "--max-connections", str(TABLE_SLOTS), "--hooks", "socket",
                "--otlp-endpoint", grpc_receiver.endpoint, "--otlp-protocol", "grpc", "--interval", "1", "--no-ui"]
        with EbpftoolProcess(args) as proc:
            _, maps = bpf_ids_held_by(proc.proc.pid)
            clients = [http.client.HTTPConnection("127.0.0.1", port, timeout=10) for _ in range(TABLE_CLIENTS)]
            for c in clients:
                c.connect()  # all open at once: each takes a slot, or finds none
            ports = client_ports(clients)
            assert wait_for_server_sockets(port, ports, handshake_ended)
            first = table_slots(maps)
            # the filter's bits, which every socket operation reads, are set for the slots of watched sockets
            bits_first = (filter_bits(maps), {filter_slot(sk) for sk in first.values()})
            distance = [(slot - table_home(sk, TABLE_SLOTS)) % TABLE_SLOTS for slot, sk in first.items()]
            requests_on(clients, 3)
            # Half of them go: slots are freed inside other connections' probe chains.
            for c in clients[: TABLE_CLIENTS // 2]:
                c.close()
            assert wait_for_server_sockets(port, ports[: TABLE_CLIENTS // 2], server_closed)
            kept = table_slots(maps)
            bits_kept = (filter_bits(maps), {filter_slot(sk) for sk in kept.values()})
            free = set(range(TABLE_SLOTS)) - kept.keys()
            behind_a_gap = [slot for slot, sk in kept.items()
                            if any((table_home(sk, TABLE_SLOTS) + i) % TABLE_SLOTS in free
                                   for i in range((slot - table_home(sk, TABLE_SLOTS)) % TABLE_SLOTS))]
            requests_on(clients[TABLE_CLIENTS // 2:], 2)
            # New connections take the freed slots.
            later = [http.client.HTTPConnection("127.0.0.1", port, timeout=10) for _ in range(TABLE_LATER_CLIENTS)]
            for c in later:
                c.connect()
            assert wait_for_server_sockets(port, client_ports(later), handshake_ended)
            new_followed = len(table_slots(maps)) - len(kept)
            requests_on(later, 2)
            for c in clients[TABLE_CLIENTS // 2:] + later:
                c.close()
            want = 3 * len(first) + 2 * len(kept) + 2 * new_followed
            untracked = TABLE_CLIENTS - len(first) + TABLE_LATER_CLIENTS - new_followed
            assert grpc_receiver.wait_for(lambda: counter_value(
                grpc_receiver, sc.EBPFTOOL_HTTP_UNTRACKED_CONNECTIONS, **{sc.SERVER_PORT: port}) == untracked, timeout=10)
            assert grpc_receiver.wait_for(lambda: histogram_count(
                grpc_receiver, sc.HTTP_SERVER_REQUEST_DURATION, port) >= want, timeout=10)
            assert grpc_receiver.wait_for_exports_from_now(sc.HTTP_SERVER_REQUEST_DURATION)  # none counted twice since
            measured = histogram_count(grpc_receiver, sc.HTTP_SERVER_REQUEST_DURATION, port)
            left_used = array_total(map_id_named(maps, "conn_used"))
            left_filter = array_total(map_id_named(maps, "conn_filter"))
            left_bits = filter_bits(maps)
            assert proc.stop() == 0, proc.stderr
    assert len(first) <= TABLE_SLOTS < TABLE_CLIENTS
    assert all(0 <= d < CONN_TABLE_PROBES for d in distance), distance
    assert any(d > 0 for d in distance), "no connection lay off its home slot: the probing went untested"
    assert behind_a_gap, "no kept connection lay behind a freed slot of its chain: the lookup past it went untested"
    assert new_followed > 0, "no freed slot was taken again"
    assert measured == want, (measured, want, len(first), len(kept), new_followed)
    assert bits_first[0] == bits_first[1], bits_first  # (exactly: the tracer follows no other socket)
    assert bits_kept[0] == bits_kept[1], bits_kept  # the closed ones' bits cleared, but where a kept one shares the slot
    assert left_used == left_filter == 0 and not left_bits  # every slot freed, the counting filter back to zero
    assert summary_figure(proc.stdout, "connections not followed (table full)") == untracked


# --- faults: the collector -----------------------------------------------------------------------
def test_collector_down_at_start_then_gone_mid_run_and_back(tmp_path):
    """Tracing never stops; export resumes each time the collector is back; failures are counted."""
    collector_port = free_port()
    endpoint = f"http://127.0.0.1:{collector_port}"
    receivers: list[GrpcReceiver] = []

    def collector_up() -> GrpcReceiver:
        receivers.append(GrpcReceiver(collector_port))
        return receivers[-1]

    with nginx_server() as port:
        args = ["inference", "--port", str(port), "--otlp-endpoint", endpoint, "--otlp-protocol", "grpc",
                "--interval", "1", "--no-ui"]
        try:
            with EbpftoolProcess(args) as proc:
                for _ in range(20):  # traced while nothing listens
                    assert get(port) == 200
                # Longer than an export's 5 s of retries: the first span batch fails for good.
                time.sleep(6.5)
                assert proc.proc.poll() is None
                receiver = collector_up()
                assert receiver.wait_for(
                    lambda: histogram_count(receiver, sc.HTTP_SERVER_REQUEST_DURATION, port) >= 20, timeout=30), \
                    "export did not resume once the collector was up"
                assert receiver.wait_for(lambda: counter_value(receiver, sc.EBPFTOOL_EXPORT_FAILURES) > 0), \
                    "the failed exports are not counted"
                receiver.stop()  # the collector goes away mid-run ...
                for _ in range(30):
                    assert get(port) == 200
                time.sleep(2.5)
                assert proc.proc.poll() is None
                receiver = collector_up()  # ... and comes back on the same port
                assert receiver.wait_for(
                    lambda: histogram_count(receiver, sc.HTTP_SERVER_REQUEST_DURATION, port) >= 50, timeout=30), \
                    "export did not resume once the collector was back"
                for _ in range(5):
                    assert get(port) == 200
                assert receiver.wait_for(lambda: len(receiver.spans()) >= 5, timeout=15), "spans did not resume"
                assert proc.stop() == 0, proc.stderr
        finally:
            for r in receivers:
                r.stop()
    assert "Traceback" not in proc.stderr
    # Cumulative metrics lost nothing while the collector was away.
    assert histogram_count(receiver, sc.HTTP_SERVER_REQUEST_DURATION, port) == 55
    # Every span arrived or is counted as dropped (in the summary and the exported metric).
    arrived = sum(len(r.spans()) for r in receivers)
    dropped = counter_value(receiver, sc.EBPFTOOL_SPANS_DROPPED)
    assert summary_figure(proc.stdout, "spans failed") == dropped >= 20  # the first batch at least
    assert arrived + dropped == 55, (arrived, dropped)


# --- faults: SIGTERM in a burst ------------------------------------------------------------------
def _stop_mid_burst(args: list[str], start_burst, metric_seen) -> tuple[EbpftoolProcess, set[int], set[int], list[dict]]:
    """Run ebpftool with a long interval (so the only snapshot is the final one), SIGTERM it in a burst.
    Returns the process and the program ids, map ids and links (perf-event attachments and BPF links) it held
    while it ran."""
    proc = EbpftoolProcess(args).start()
    pid = proc.proc.pid
    burst = start_burst()
    try:
        time.sleep(1.5)
        progs, maps = bpf_ids_held_by(pid)
        # Uprobes are perf-event attachments (per probe) or BPF links (uprobe_multi): both are listed.
        links = [x for x in perf_attachments() if x["pid"] == pid] + bpf_links_held_by(pid)
        assert progs and maps and links
        assert proc.stop() == 0, proc.stderr
    finally:
        burst.kill()
        burst.wait()
    assert "Traceback" not in proc.stderr
    assert metric_seen(), "the final metric snapshot did not arrive"
    return proc, progs, maps, links


def test_sigterm_in_a_request_burst_flushes_and_leaves_nothing_in_the_kernel(grpc_receiver):
    with nginx_server() as port:
        args = ["inference", "--port", str(port), "--otlp-endpoint", grpc_receiver.endpoint, "--otlp-protocol", "grpc",
                "--interval", "60", "--no-ui"]
        proc, progs, maps, _ = _stop_mid_burst(
            args, lambda: wrk(port, 20, 30),
            lambda: histogram_count(grpc_receiver, sc.HTTP_SERVER_REQUEST_DURATION, port) > 1000)
    final = histogram_count(grpc_receiver, sc.HTTP_SERVER_REQUEST_DURATION, port)
    # The summary is read after that last snapshot, while wrk still ran: it can only be higher.
    assert 0 < final <= summary_figure(proc.stdout, "requests measured")
    assert not still_loaded(progs, "prog"), "programs of the stopped tracer are still loaded"
    assert not still_loaded(maps, "map"), "maps of the stopped tracer are still in the kernel"


def test_sigterm_in_a_cuda_call_burst_removes_every_uprobe(grpc_receiver):
    calls = "import ctypes, sys\nlib = ctypes.CDLL(sys.argv[1])\nwhile True:\n    lib.cudaDeviceSynchronize()\n"
    args = ["gpu", "--no-discover", "--lib", CUDART, "--otlp-endpoint", grpc_receiver.endpoint, "--otlp-protocol", "grpc",
            "--interval", "60", "--no-ui"]
    box: dict = {}

    def start_burst():
        p = subprocess.Popen([sys.executable, "-c", calls, CUDART])
        box["pid"] = p.pid
        return p

    def calls_seen() -> bool:
        return sum(p.value for p in grpc_receiver.latest(sc.EBPFTOOL_GPU_CALLS)
                   if p.attributes.get("process.pid") == box.get("pid")) > 100

    proc, progs, maps, links = _stop_mid_burst(args, start_burst, calls_seen)
    uprobe_types = ("uprobe", "uretprobe", "uprobe_multi", "uretprobe_multi")   # perf events, or BPF links
    uprobes = [x for x in links if x["prog_id"] in progs and x["fd_type"] in uprobe_types]
    assert uprobes, "the checks below would prove nothing: no uprobe of the tracer was seen attached"
    assert not progs & {x["prog_id"] for x in perf_attachments()}, "uprobes/tracepoints of the stopped tracer remain attached"
    link_ids = {x["link_id"] for x in links if "link_id" in x}
    assert not still_loaded(link_ids, "link"), "BPF links (uprobe_multi) of the stopped tracer remain"
    assert f"_bcc_{proc.proc.pid}" not in uprobe_events(), "uprobe_events entries of the stopped tracer remain"
    assert not still_loaded(progs, "prog")
    assert not still_loaded(maps, "map")


# --- faults: a traced server killed mid-request ---------------------------------------------------
@pytest.mark.parametrize("hooks", ["socket", "syscall"])
def test_killed_server_leaves_no_connection_state_and_tracing_goes_on(tmp_path, grpc_receiver, hooks):
    victim = StreamingServer(tmp_path)
    survivor = StreamingServer(tmp_path)
    open_streams: list[socket.socket] = []
    try:
        args = ["inference", "--port", str(victim.port), "--port", str(survivor.port),
                "--otlp-endpoint", grpc_receiver.endpoint, "--otlp-protocol", "grpc", "--interval", "1", "--no-ui",
                "--hooks", hooks]
        with EbpftoolProcess(args) as proc:
            _, maps = bpf_ids_held_by(proc.proc.pid)
            # Requests in the middle of their (slow) streams when the server dies.
            body = json.dumps({"model": "m", "stream": True, "max_tokens": 1000, "ttft_ms": 5, "tpot_ms": 100}).encode()
            for _ in range(8):
                s = socket.create_connection(("127.0.0.1", victim.port), timeout=10)
                s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                          b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
                assert s.recv(4096).startswith(b"HTTP/1.1 200")
                open_streams.append(s)
            dead = victim.proc.pid
            assert conn_pids(maps, hooks).count(dead) == 8  # the state the kill would strand
            victim.proc.kill()
            victim.proc.wait()
            # Within a few intervals the kernel holds nothing of the dead process.
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and dead in conn_pids(maps, hooks):
                time.sleep(0.5)
            left = conn_pids(maps, hooks).count(dead)
            assert left == 0, f"{left} connection entries of the killed pid {dead} left"
            # The tracer goes on: the other server is measured.
            assert stream_request(survivor.port, 3, 5).count(b"data:") == 4
            assert grpc_receiver.wait_for(
                lambda: histogram_count(grpc_receiver, sc.GEN_AI_SERVER_REQUEST_DURATION, survivor.port) == 1)
            if hooks == "socket":
                # The counting filter in front of conns counts exactly the entries left (none: every
                # connection is closed), so it never hides a watched socket nor grows with closed ones.
                assert array_total(map_id_named(maps, "conn_filter")) == len(conn_pids(maps, hooks)) == 0
                assert not filter_bits(maps)
            assert proc.proc.poll() is None
            assert proc.stop() == 0, proc.stderr
        assert "Traceback" not in proc.stderr
    finally:
        for s in open_streams:
            s.close()
        victim.close()
        survivor.close()


# --- secrets and file permissions ------------------------------------------------------------------
SECRETS = ("sk-LIVE-SECRET", "sk-BODY-SECRET", "QSECRET")


def test_secrets_never_reach_exports_logs_or_record_files_and_files_are_private(tmp_path, grpc_receiver):
    llm = StreamingServer(tmp_path)
    record, jsonl = tmp_path / "run.rec", tmp_path / "out.jsonl"
    old_umask = os.umask(0)  # the files must be private whatever the umask
    try:
        args = ["inference", "--port", str(llm.port), "--otlp-endpoint", grpc_receiver.endpoint, "--otlp-protocol", "grpc",
                "--interval", "1", "--no-ui", "--record", str(record), "--jsonl", str(jsonl), "--capture-bytes", "1024"]
        with EbpftoolProcess(args) as proc:
            os.umask(old_umask)
            for path in ("/v1/chat/completions?token=QSECRET", "/v1/completions?token=QSECRET"):
                data = stream_request(llm.port, 3, 5, headers={"Authorization": "Bearer sk-LIVE-SECRET"},
                                      extra={"api_key": "sk-BODY-SECRET"}, path=path)
                assert data.count(b"data:") == 4
            assert get(llm.port, "/missing?token=QSECRET", {"Authorization": "Bearer sk-LIVE-SECRET"}) == 404
            assert grpc_receiver.wait_for(lambda: len(grpc_receiver.spans()) >= 3)
            assert proc.stop() == 0, proc.stderr
    finally:
        os.umask(old_umask)
        llm.close()
    for path in (record, jsonl):
        assert oct(os.stat(path).st_mode & 0o777) == "0o600", path
    exported = repr(grpc_receiver.spans()) + repr([grpc_receiver.latest(m) for m in grpc_receiver.metric_names()])
    outputs = {"otlp": exported, "record": record.read_text(), "jsonl": jsonl.read_text(),
               "stdout": proc.stdout, "stderr": proc.stderr}
    # The checks look at the right data: the requests are there, with their model and paths.
    for name in ("otlp", "record", "jsonl"):
        assert "m-hard" in outputs[name] and "/v1/chat/completions" in outputs[name], name
    for name, text in outputs.items():
        for secret in SECRETS + ("Bearer", "api_key", "token="):
            assert secret not in text, f"{secret!r} found in {name}"
