"""`ebpftool trace`, `record`/`replay`, config files, `demo`, and a real metrics store (VictoriaMetrics)."""
from __future__ import annotations

import http.client
import json
import os
import re
import subprocess
import sys
import time

import pytest

from ebpftool import demo
from ebpftool import semconv as sc
from ebpftool.core.tracer import DEFAULT_SPAN_RATE
from tests.conftest import ROOT, EbpftoolProcess, run_ebpftool
from tests.netns import ADDR_A, ADDR_B, TwoZones
from tests.servers.nginx import free_port
from tests.kernel_state import kernel_ids, orphans_still_loaded, perf_attachments, uprobe_events

pytestmark = pytest.mark.bpf
from tests.victoria import VictoriaMetrics

CUDART = "/usr/local/cuda/lib64/libcudart.so.13"
CUDA_CALLS = r"""
import ctypes, sys
lib = ctypes.CDLL(sys.argv[1])
for _ in range(int(sys.argv[2])):
    lib.cudaDeviceSynchronize()
"""


def chat(port: int, n: int, secret: str = "sk-TRACE-SECRET") -> None:
    for _ in range(n):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        c.request("POST", "/v1/chat/completions?token=Q" + secret,
                  json.dumps({"model": "m-test", "stream": True, "messages": [{"role": "user", "content": "hi"}]}),
                  {"Content-Type": "application/json", "Authorization": f"Bearer {secret}"})
        assert c.getresponse().read()
        c.close()


def cuda_calls(n: int) -> None:
    subprocess.run([sys.executable, "-c", CUDA_CALLS, CUDART, str(n)], check=True)


def test_trace_delivers_all_three_tracers_to_one_collector(grpc_receiver, streaming_server):
    tracer = EbpftoolProcess(
        ["trace", "--port", str(streaming_server), "--net-spans", "--lib", CUDART, "--sample-calls", "1",
         "--otlp-endpoint", grpc_receiver.endpoint, "--otlp-protocol", "grpc", "--interval", "1", "--no-ui",
         "--duration", "10", "--service-name", "trace-test"],
        ready_count=3,  # one "probes attached" line per tracer
    ).start(timeout=90)
    chat(streaming_server, 4)
    cuda_calls(25)
    assert tracer.wait(60) == 0, tracer.stderr
    r = grpc_receiver
    http_spans = [s for s in r.spans() if s.attributes.get(sc.HTTP_REQUEST_METHOD) == "POST"]
    assert len(http_spans) == 4
    assert r.spans("tcp connection"), "net: no connection span"
    gpu_spans = r.spans("cudaDeviceSynchronize")
    assert len(gpu_spans) == 25
    assert {s.resource[sc.SERVICE_NAME] for s in r.spans()} == {"trace-test"}
    (dur,) = [p for p in r.latest(sc.HTTP_SERVER_REQUEST_DURATION) if p.attributes.get(sc.SERVER_PORT) == streaming_server]
    assert dur.count == 4
    assert r.latest(sc.EBPFTOOL_NETWORK_FLOW_IO)
    calls = [p for p in r.latest(sc.EBPFTOOL_GPU_CALLS) if p.attributes.get(sc.EBPFTOOL_GPU_FUNCTION) == "cudaDeviceSynchronize"]
    assert sum(p.value for p in calls) == 25
    assert "Traceback" not in tracer.stderr


def test_a_tracer_the_kernel_refuses_is_skipped_and_the_others_run(grpc_receiver):
    """`trace` on a kernel that cannot run one tracer goes on with the others. A refusal is what start()
    raises (this kernel has every hook, so one tracer here raises as a kernel without its tracepoints
    would); the net tracer beside it is real and its metrics reach the receiver."""
    from ebpftool.commands.common import CommonOptions, execute
    from ebpftool.commands.net import net_tracer
    from ebpftool.core.tracer import Tracer
    from ebpftool.errors import EbpftoolError

    class Refused(Tracer):
        name = "refused"

        def start(self) -> None:
            raise EbpftoolError("this kernel lacks sock:sock_recv_length")

        def collect(self):
            return []

    common = CommonOptions(duration=2, interval=1, ui=False, otlp_endpoint=grpc_receiver.endpoint,
                           otlp_protocol="grpc")
    make_net = net_tracer(common, None, None)
    result = execute(lambda telemetry: [Refused(telemetry), make_net(telemetry)], common, skip_failed=True)
    assert result.skipped == {"refused": "this kernel lacks sock:sock_recv_length"}
    assert set(result.started) == {"net"} and result.probes["net"]
    assert grpc_receiver.wait_for(lambda: grpc_receiver.latest(sc.EBPFTOOL_NETWORK_FLOW_IO))
    # wrong options are the user's to mend: `trace` stops before loading anything (tests/test_cli.py)
    r = run_ebpftool(["trace", "--no-gpu", "--port", "70000", "--duration", "2", "--no-ui"])
    assert r.returncode == 1 and "probes attached" not in r.stderr
    assert r.stderr.strip().splitlines() == ["ebpftool: --port 70000: a TCP port is between 1 and 65535"]
    r = run_ebpftool(["trace", "--no-inference", "--no-net", "--no-gpu", "--duration", "1"])
    assert r.returncode == 2 and "every tracer is switched off" in r.stderr


def test_config_file_holds_flags_and_flags_override_it(tmp_path, grpc_receiver, streaming_server):
    cfg = tmp_path / "ebpftool.yaml"
    cfg.write_text("no_such_flag: 1\n")
    bad = run_ebpftool(["trace", "--config", str(cfg)])
    assert bad.returncode == 2 and "unknown keys: no_such_flag" in bad.stderr and "Traceback" not in bad.stderr
    cfg.write_text(
        f"net: false\ngpu: false\nport: [{streaming_server}]\nduration: 30\ninterval: 1\nui: false\n"
        f"otlp-endpoint: {grpc_receiver.endpoint}\notlp_protocol: grpc\nservice-name: from-config\n"
    )
    example = run_ebpftool(["config", "example"])
    assert example.returncode == 0 and f"#span-rate: {DEFAULT_SPAN_RATE}" in example.stdout and "#zones:" in example.stdout
    t0 = time.monotonic()
    proc = EbpftoolProcess(["trace", "--config", str(cfg), "--duration", "6", "--service-name", "from-flag"]).start()
    chat(streaming_server, 2)
    assert proc.wait(60) == 0, proc.stderr
    assert time.monotonic() - t0 < 25, "--duration on the command line must override the file's 30"
    assert "net:" not in proc.stderr and "gpu:" not in proc.stderr  # switched off by the file
    spans = grpc_receiver.spans()
    assert len([s for s in spans if s.attributes.get(sc.HTTP_REQUEST_METHOD) == "POST"]) == 2
    assert {s.resource[sc.SERVICE_NAME] for s in spans} == {"from-flag"}


def test_record_then_replay_through_the_same_pipeline(tmp_path, grpc_receiver, streaming_server):
    rec = tmp_path / "capture.rec"
    proc = EbpftoolProcess(["record", str(rec), "--no-net", "--no-gpu", "--port", str(streaming_server),
                            "--interval", "1", "--no-ui"]).start()
    chat(streaming_server, 3)
    assert proc.stop() == 0, proc.stderr  # the answers given end now and the last snapshot is recorded
    assert oct(os.stat(rec).st_mode & 0o777) == "0o600"
    text = rec.read_text()
    assert "sk-TRACE-SECRET" not in text and "token=" not in text
    r = run_ebpftool(["replay", str(rec), "--otlp-endpoint", grpc_receiver.endpoint, "--otlp-protocol", "grpc"])
    assert r.returncode == 0, r.stderr
    assert "replayed 3 spans" in r.stdout
    assert len(grpc_receiver.spans("POST")) == 3
    (dur,) = grpc_receiver.latest(sc.HTTP_SERVER_REQUEST_DURATION)
    assert dur.count == 3


def _cwd(pid: str) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return None


def test_demo_ends_by_itself_and_leaves_nothing_behind(tmp_path):
    before = kernel_ids("prog")
    figures = tmp_path / "summary.json"
    r = run_ebpftool(["demo", "--duration", "6", "--no-ui", "--summary-json", str(figures)], timeout=120)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    summary = r.stdout
    for figure in ("requests measured", "bytes sent across zones", "calls"):
        assert figure in summary
    # Figures in the summary are real: some requests, cross-zone bytes and CUDA calls were seen.
    rows = {line.split("│")[2].strip(): line.split("│")[3].strip() for line in summary.splitlines() if line.count("│") >= 4}
    assert int(rows["requests measured"]) > 0
    assert int(rows["bytes sent across zones"]) > 0
    assert int(rows["calls"]) > 0
    # The headline (--summary-json): the demo's streams are known (ebpftool/demo.py): each answer states
    # TOKENS_PER_ANSWER tokens, one written every TOKEN_INTERVAL_S or more.
    head = json.loads(figures.read_text())["tracers"]["inference"]["headline"]
    assert head["requests"] == int(rows["requests measured"]) == head["gen_ai_requests"] > 0
    assert head["errors"] == 0
    assert head["output_tokens"] == demo.TOKENS_PER_ANSWER * head["gen_ai_requests"]
    assert head["tokens_per_second"] == pytest.approx(head["output_tokens"] / head["seconds"])
    assert demo.TOKEN_INTERVAL_S <= head["tpot_p50"] and demo.TOKEN_INTERVAL_S <= head["ttft_p50"] <= head["ttft_p99"]
    assert head["duration_p50"] <= head["duration_p95"] <= head["duration_p99"]
    assert head["duration_p50"] >= demo.TOKENS_PER_ANSWER * demo.TOKEN_INTERVAL_S
    # One client asks one stream at a time: at most one request in flight, and every request lasts at least
    # TOKENS_PER_ANSWER token intervals.
    assert head["requests"] * demo.TOKENS_PER_ANSWER * demo.TOKEN_INTERVAL_S <= head["concurrency"] * head["seconds"]
    assert head["concurrency"] <= 1.0
    tracers = json.loads(figures.read_text())["tracers"]
    # The zone traffic: demo-a's client sends demo-b's server 16 x 64 KiB per connection, over TCP.
    pairs = {(p["source"], p["destination"]): p for p in tracers["net"]["pairs"]}
    across = pairs[("demo-a", "demo-b")]
    assert across["inter_zone"] and across["bytes_sent"] >= 16 * 65536
    assert across["bytes_sent"] == int(rows["bytes sent across zones"])
    assert across["cost_usd"] > 0 and across["top_processes"][0][0].startswith("python")
    assert 0 < across["rtt_p50"] <= across["rtt_p99"] < 1.0  # a veth pair: microseconds, but a busy host
    # The CUDA loop: its calls, per process, every one through the probes (and failing: no driver here).
    gpu = tracers["gpu"]
    assert gpu["headline"]["calls"] == gpu["kernel"]["calls"] == int(rows["calls"])
    assert gpu["headline"]["calls_per_second"] == pytest.approx(gpu["headline"]["calls"] / gpu["headline"]["seconds"])
    # process.executable.name: the base name of /proc/PID/exe (the demo's interpreter), not its comm
    assert [p["executable"] for p in gpu["headline"]["processes"]] == [os.path.basename(os.path.realpath(sys.executable))]
    assert gpu["headline"]["leaked_allocations"] == 0  # every cudaMalloc failed: nothing to leak
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert "ebt-demo" not in netns
    assert not orphans_still_loaded(before, "prog"), "demo left BPF programs loaded"
    leftover = [pid for pid in subprocess.run(["pgrep", "-f", "ebpftool.demo"], capture_output=True,
                                              text=True).stdout.split() if _cwd(pid) == str(ROOT)]
    assert not leftover, f"demo processes left: {leftover}"  # (a demo of another tree has its own cwd)
    assert not [a for a in perf_attachments() if a.get("fd_type") == "uprobe" and "libcudart" in a.get("filename", "")]
    assert "libcudart" not in uprobe_events()


@pytest.mark.parametrize("columns", [80, 160])
def test_demo_live_view_fits_the_terminal_and_shows_every_tracer(columns):
    """The demo's last frame (a pipe gets the final one) at this width: no line longer, every row on one line,
    the model the client asks for, RTT per zone pair, the CUDA loop; wider terminals get more columns."""
    r = run_ebpftool(["demo", "--duration", "5", "--ui"], timeout=120, env={"COLUMNS": str(columns), "LINES": "100"})
    assert r.returncode == 0, r.stderr
    view = r.stdout.split("ebpftool summary")[0].splitlines()
    assert view and max(len(line) for line in view) <= columns
    assert any("ebpftool inference" in line for line in view)
    shown = "\n".join(view)
    inference = [line for line in view if "demo-llm" in line]  # the model, from the spans
    assert len(inference) == 1 and re.search(r"\d+ms", inference[0]), shown
    assert ("python" in inference[0]) == (columns >= 120), shown  # the server's process, from 120 columns
    zone = [line for line in view if line.startswith("demo-a -> demo-b")]
    assert len(zone) == 1 and re.search(r"\d+(\.\d+)?(µs|ms) ", zone[0]), shown  # RTT p50
    header = next(line for line in view if line.startswith("zone pair"))
    assert "RTT p50" in header and ("$/month" in header) == (columns >= 120) and ("RTT p99" in header) == (columns >= 120)
    assert any(line.split()[1].startswith("python") for line in view if line.strip()[:1].isdigit())  # the CUDA loop's row
    assert any("p95" in line and "TTFT p99" in line for line in view) == (columns >= 120)


def test_victoriametrics_scrapes_cross_zone_bytes_and_request_durations(tmp_path, streaming_server):
    zones = TwoZones.create()
    vm = None
    proc = None
    try:
        zfile = tmp_path / "zones.yaml"
        zfile.write_text(f"zones:\n  zone-a: [{ADDR_A}/32]\n  zone-b: [{ADDR_B}/32]\n")
        prom_port = free_port()
        vm = VictoriaMetrics(prom_port)
        proc = EbpftoolProcess(["trace", "--no-gpu", "--port", str(streaming_server), "--zones", str(zfile),
                                "--prometheus-port", str(prom_port), "--interval", "1", "--no-ui"],
                               ready_count=2).start()
        server = zones.popen(zones.ns_b, "import socket\ns=socket.socket();s.bind(('%s',7100));s.listen();"
                                         "c,_=s.accept()\nwhile c.recv(65536): pass\n" % ADDR_B)
        # the client retries its connect until the server listens
        client = zones.popen(zones.ns_a, "import socket,time\nfor i in range(50):\n  try:\n"
                                         "    c=socket.create_connection(('%s',7100));break\n"
                                         "  except OSError: time.sleep(0.1)\n"
                                         "c.sendall(b'x'*3000000);c.close()\n" % ADDR_B)
        assert client.wait(30) == 0
        server.wait(30)
        chat(streaming_server, 3)
        # The client has exited: its series ends once scraped (retired), so the query looks back over time.
        cross = vm.wait_query(
            'sum(max_over_time(ebpftool_network_flow_io_bytes_total{source_cloud_availability_zone="zone-a",'
            'destination_cloud_availability_zone="zone-b",network_io_direction="transmit"}[10m]))',
            lambda res: res and float(res[0]["value"][1]) >= 3_000_000)
        assert cross and 3_000_000 <= float(cross[0]["value"][1]) <= 3_030_000
        count = vm.wait_query(f'sum(http_server_request_duration_seconds_count{{server_port="{streaming_server}"}})',
                              lambda res: res and float(res[0]["value"][1]) == 3)
        assert count and float(count[0]["value"][1]) == 3
        buckets = vm.query(f'http_server_request_duration_seconds_bucket{{server_port="{streaming_server}",le="+Inf"}}')
        assert buckets
    finally:
        if proc is not None and proc.proc.poll() is None:
            proc.stop()
        if vm is not None:
            vm.stop()
        zones.remove()
