"""Drives one run of the ebpftool image for scripts/test-image.sh and checks what arrived over OTLP.

    python scripts/image_check.py --out RESULT.json [--host-server | --server-addr IP:PORT]
        [--otlp-bind ADDR] [--otlp-port 4317] [--otlp-host ADDR] [--expect-container-id ID] [--requests N] -- TRACER COMMAND...

It starts a real OTLP gRPC receiver (tests/otlp_receiver.py's services, opentelemetry-proto), optionally an
OpenAI-compatible streaming server on the host (tests/servers/streaming_server.py) on a free port, then the
tracer command (the `podman run ...` of the ebpftool container; `{port}` and `{otlp}` in it are replaced by
the server's port and the receiver's endpoint). It sends a streamed request each second until a span arrives
(the tracer compiles and attaches first), then N more, waits for their spans and for a metrics export, stops
the tracer with SIGINT (podman passes it on: ebpftool flushes and exits), and writes what it decoded to RESULT.
Exit status 0 when spans of the N requests and inference metrics arrived (and container.id, when expected).
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent import futures
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc  # noqa: E402
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc  # noqa: E402

from tests.otlp_receiver import Receiver, _MetricsService, _TraceService  # noqa: E402


class Collector(Receiver):
    """The tests' OTLP gRPC receiver, on an address a container can reach (GrpcReceiver binds loopback)."""

    def __init__(self, bind: str, port: int = 0) -> None:
        super().__init__()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceService(self), self.server)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(_MetricsService(self), self.server)
        self.port = self.server.add_insecure_port(f"{bind}:{port}")
        self.server.start()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(host: str, port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"image_check: nothing listens on {host}:{port}")


def streamed_request(host: str, port: int, tokens: int = 6) -> None:
    body = json.dumps({"model": "image-check", "stream": True, "max_tokens": tokens, "ttft_ms": 20, "tpot_ms": 5,
                       "messages": [{"role": "user", "content": "hello"}]})
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        resp.read()
        if resp.status != 200:
            raise SystemExit(f"image_check: the server answered {resp.status}")
    finally:
        conn.close()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--host-server", action="store_true", help="start the streaming server on the host")
    ap.add_argument("--server-addr", help="IP:PORT of a server already running (a container's)")
    ap.add_argument("--otlp-bind", default="127.0.0.1")
    ap.add_argument("--otlp-port", type=int, default=4317, help="4317, the manifests' (and gRPC's) port: 0 for any")
    ap.add_argument("--otlp-host", default="127.0.0.1", help="the receiver's address as the tracer reaches it")
    ap.add_argument("--expect-container-id", default="")
    ap.add_argument("--requests", type=int, default=5)
    ap.add_argument("--attach-timeout", type=float, default=180.0)
    ap.add_argument("--log", default="")
    ap.add_argument("tracer", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    tracer_argv = a.tracer[1:] if a.tracer[:1] == ["--"] else a.tracer
    if not tracer_argv:
        ap.error("no tracer command after --")

    result: dict = {"ok": False, "problems": []}
    rx = Collector(a.otlp_bind, a.otlp_port)
    otlp = f"http://{a.otlp_host}:{rx.port}"
    server = None
    tmp = tempfile.mkdtemp(prefix="image-check-")
    if a.host_server:
        host, port = "127.0.0.1", free_port()
        server = subprocess.Popen([sys.executable, "-m", "tests.servers.streaming_server", str(port), f"{tmp}/timings.jsonl"],
                                  cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    else:
        host, port_s = a.server_addr.rsplit(":", 1)
        port = int(port_s)
    wait_listening(host, port)
    argv = [x.replace("{port}", str(port)).replace("{otlp}", otlp) for x in tracer_argv]
    result["tracer_command"] = argv
    log = open(a.log or f"{tmp}/tracer.log", "w")
    t0 = time.monotonic()
    tracer = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        # 1. until the tracer has attached: one request a second, until one of them comes back as a span
        while not rx.spans():
            if tracer.poll() is not None:
                result["problems"].append(f"the tracer exited ({tracer.returncode}) before any span arrived")
                return finish(a, result, rx)
            if time.monotonic() - t0 > a.attach_timeout:
                result["problems"].append(f"no span within {a.attach_timeout:.0f} s")
                return finish(a, result, rx)
            streamed_request(host, port)
            time.sleep(1.0)
        result["first_span_after_s"] = round(time.monotonic() - t0, 1)
        # 2. N requests, all traced
        before = len(rx.spans())
        for _ in range(a.requests):
            streamed_request(host, port)
        if not rx.wait_for(lambda: len(rx.spans()) - before >= a.requests, timeout=30):
            result["problems"].append(f"{len(rx.spans()) - before} spans of {a.requests} requests arrived")
        rx.wait_for(lambda: any(n.startswith(("gen_ai.", "http.server")) for n in rx.metric_names()), timeout=30)
    finally:
        # 3. stop: SIGINT to `podman run` (it passes signals on); ebpftool flushes its last export
        if tracer.poll() is None:
            tracer.send_signal(signal.SIGINT)
            try:
                result["tracer_exit"] = tracer.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(tracer.pid, signal.SIGKILL)
                result["tracer_exit"] = tracer.wait()
                result["problems"].append("the tracer did not stop within 60 s of SIGINT")
        else:
            result["tracer_exit"] = tracer.returncode
        log.close()
        if server:
            server.terminate()
            server.wait(timeout=10)
        rx.server.stop(0)
    return finish(a, result, rx, port)


def finish(a, result: dict, rx: Receiver, port: int | None = None) -> int:
    spans = rx.spans()
    result["spans"] = len(spans)
    result["span_names"] = sorted({s.name for s in spans})
    if spans:
        s = spans[-1]
        result["span_example"] = {"name": s.name, "attributes": s.attributes, "resource": s.resource}
    metrics = sorted(rx.metric_names())
    result["metrics"] = metrics
    result["metric_exports"] = rx.metric_requests
    if len(spans) < a.requests:
        result["problems"].append(f"only {len(spans)} spans")
    if not any(n.startswith(("gen_ai.", "http.server")) for n in metrics):
        result["problems"].append(f"no inference metric arrived (got {metrics})")
    if port is not None and spans and not any(s.attributes.get("server.port") == port for s in spans):
        result["problems"].append(f"no span has server.port {port}")
    if a.expect_container_id:
        ids = {s.attributes.get("container.id") or s.resource.get("container.id") for s in spans}
        result["container_ids_seen"] = sorted(i for i in ids if i)
        if a.expect_container_id not in ids:
            result["problems"].append(f"container.id {a.expect_container_id[:12]} not on the spans (saw {result['container_ids_seen']})")
    result["ok"] = not result["problems"]
    Path(a.out).write_text(json.dumps(result, indent=1, default=str) + "\n")
    print(json.dumps({k: result.get(k) for k in ("ok", "problems", "first_span_after_s", "spans", "span_names", "metrics",
                                                 "container_ids_seen", "tracer_exit") if k in result}, default=str))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
