#!/usr/bin/env python3
"""Cost and accuracy of `ebpftool inference`, measured side by side in one run.

    sudo /opt/ebpftool/venv/bin/python scripts/bench_inference.py [--seconds 120] [--slice 0.5] [--quick]
                                                                 [--server nginx|streaming] [--json out.json]

Overhead: nginx (one worker) serving a small file on loopback under `wrk -t1 -c32` for the whole run, with
the inference tracer loaded as `ebpftool inference --port P` loads it, in a thread of this process: its
per-request hooks (the socket tracepoints) are detached and attached again every --slice seconds, and each
slice's requests/s come from nginx's own count (stub_status). Ratio: with/without over adjacent pairs of
slices, median and mean with its standard error; also the CPU the tracer's threads used.
(Until 2026-11-23 this script started and stopped an `ebpftool inference` process per round of 2 s: rounds
swung by ±5-10% on this VM, so 20 of them gave the median ratio to about ±2.5%; adjacent half-second slices
of one run cancel most of that drift.)
With --server streaming, the load is the streaming OpenAI-compatible test server (Python) answering
streamed chat completions of STREAM_TOKENS tokens with no delay, under wrk POSTing them: every token is
a write the tracer follows and scans for `data:` events, as on an inference server.
Accuracy: the streaming OpenAI-compatible test server driven by the official `openai` client; per
request, request duration, time to first token and time per output token from the tracer's spans
against the server's own log (median and p99 of the absolute difference).
Not part of the test suite: it takes minutes and its numbers depend on the machine.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.servers.nginx import nginx_server  # noqa: E402
from tests.servers.streaming_server import running as streaming_server  # noqa: E402
from benchlib import (TracerThread, alternating_slices, bpf_time_during, cpu_seconds, nginx_requests,  # noqa: E402
                      start_ebpftool, switch_hooks)
from ebpftool.commands.common import CommonOptions, build_telemetry  # noqa: E402
from ebpftool.commands.inference import inference_tracer  # noqa: E402
from ebpftool.core.tracer import DEFAULT_SPAN_RATE  # noqa: E402
from ebpftool.tracers.inference import ARRIVAL_RAW_TRACEPOINT, SOCKET_RAW_TRACEPOINTS  # noqa: E402

PY = sys.executable


# wrk's script for --server streaming: a streamed chat completion, tokens written as fast as the server can
STREAM_TOKENS = 16
STREAM_SCRIPT = """
wrk.method = "POST"
wrk.path = "/v1/chat/completions"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model": "bench", "messages": [{"role": "user", "content": "hi"}], "stream": true, ' ..
           '"max_tokens": %d, "ttft_ms": 0, "tpot_ms": 0}'
""" % STREAM_TOKENS


def wrk_command(port: int, seconds: float, script: str | None = None) -> list[str]:
    cmd = ["wrk", "-t1", "-c32", f"-d{seconds:g}s", f"http://127.0.0.1:{port}/index.html"]
    if script:
        cmd[1:1] = ["-s", script]
    return cmd


def start_wrk(port: int, seconds: float, script: str | None = None) -> subprocess.Popen:
    return subprocess.Popen(wrk_command(port, seconds, script), stdout=subprocess.DEVNULL)


def wrk(port: int, seconds: float, script: str | None = None) -> dict:
    out = subprocess.run(wrk_command(port, seconds, script), capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    return {"rps": rps, "requests": total}


class Tracer:
    """`ebpftool inference` as its own process, as a user runs it."""

    def __init__(self, args: list[str]) -> None:
        self.proc = start_ebpftool(["inference", *args, "--no-ui", "--interval", "1"])

    def stop(self) -> str:
        self.proc.terminate()
        out, _ = self.proc.communicate(timeout=60)
        return out


def summary_figure(text: str, name: str) -> int | None:
    m = re.search(rf"{re.escape(name)}\s*│\s*(\d+)", text)
    return int(m.group(1)) if m else None


class InProcessTracer(TracerThread):
    """`ebpftool inference --port P --interval 1` as the command builds it (the same options, program and
    runner loop; no exporter, as the command run without --otlp-endpoint), in a thread of this process, so
    that its per-request hooks can be detached and attached again in milliseconds: the program is compiled
    and loaded once, and the connections wrk opens are followed from their handshake."""

    def __init__(self, port: int, span_rate: int = DEFAULT_SPAN_RATE, hooks: str = "auto") -> None:
        common = CommonOptions(interval=1.0, span_rate=span_rate)
        telemetry, _ = build_telemetry(common)
        super().__init__(inference_tracer(common, [port], None, None, hooks=hooks)(telemetry), telemetry)
        if self.tracer.hooks != "socket":
            raise SystemExit("this benchmark toggles the socket hooks, which this kernel does not offer")

    def switch(self, on: bool) -> None:
        """The per-request hooks: the socket tracepoints and the arrival hook."""
        prog = self.tracer.prog
        raw = [tp for tp in (*SOCKET_RAW_TRACEPOINTS, ARRIVAL_RAW_TRACEPOINT) if f"raw_tracepoint:{tp}" in prog.probes]
        switch_hooks(prog, raw, self.tracer.btf_hooks, on)


def lines_in(path: Path) -> Callable[[], int]:
    """A running count of the lines appended to path (the streaming server logs a line per answer)."""
    state = {"offset": 0, "lines": 0}

    def count() -> int:
        with contextlib.suppress(FileNotFoundError), open(path, "rb") as f:
            f.seek(state["offset"])
            data = f.read()
            state["offset"] += len(data)
            state["lines"] += data.count(b"\n")
        return state["lines"]
    return count


def overhead(seconds: float, slice_s: float, workers: int = 1, server: str = "nginx", hooks: str = "auto") -> dict:
    """wrk loads the server for the whole run; the tracer, loaded before wrk connects, has its per-request
    hooks attached and detached every slice_s seconds (benchlib.alternating_slices)."""
    with contextlib.ExitStack() as stack:
        if server == "streaming":
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ebpftool-bench-stream-")))
            script = work / "stream.lua"
            script.write_text(STREAM_SCRIPT)
            port = stack.enter_context(streaming_server(work / "timings.jsonl"))
            count = lines_in(work / "timings.jsonl")
        else:
            script = None
            port = stack.enter_context(nginx_server(workers=workers))
            count = lambda: nginx_requests(port)  # noqa: E731
        tracer = InProcessTracer(port, hooks=hooks)
        try:
            load = start_wrk(port, seconds + 3, str(script) if script else None)
            time.sleep(1.5)  # wrk connected and running
            cpu0, t0 = tracer.cpu_seconds(), time.monotonic()
            result = alternating_slices(tracer.attach, count, seconds, slice_s)
            result["tracer_cpu_cores"] = (tracer.cpu_seconds() - cpu0) / (time.monotonic() - t0)
            result["hooks_used"] = tracer.tracer.summary().hooks
            load.wait()
            # One more loaded run with kernel.bpf_stats_enabled: the kernel's own time per request.
            programs = bpf_time_during(os.getpid(), lambda: wrk(port, 2.0, str(script) if script else None)["requests"])
            result["bpf_time"] = {"programs": programs,
                                  "ns_per_request": sum(p["ns_per_request"] for p in programs.values())}
        finally:
            tracer.stop()
    result["slice_s"], result["seconds"] = slice_s, seconds
    return result


def _p99(values: list[float]) -> float:
    v = sorted(values)
    return v[min(len(v) - 1, round(0.99 * (len(v) - 1)))]


def accuracy(requests: int) -> dict:
    import openai

    work = Path(tempfile.mkdtemp(prefix="ebpftool-bench-inference-"))
    timings, spans_file = work / "timings.jsonl", work / "spans.jsonl"
    with streaming_server(timings) as port:
        tracer = Tracer(["--port", str(port), "--jsonl", str(spans_file)])
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-bench", max_retries=0)
        for i in range(requests):
            ttft, tpot, n = 20 + 7 * (i % 9), 5 + 3 * (i % 5), 4 + i % 13
            for _ in client.chat.completions.create(
                    model="bench", messages=[{"role": "user", "content": "hi"}], stream=True, max_tokens=n,
                    extra_body={"ttft_ms": ttft, "tpot_ms": tpot}):
                pass
        client.close()
        time.sleep(1.5)
        tracer.stop()
    server_rows = [json.loads(line) for line in timings.read_text().splitlines()]
    spans = sorted((json.loads(line) for line in spans_file.read_text().splitlines()
                    if '"type": "span"' in line), key=lambda s: s["start_time_unix_nano"])
    spans = [s for s in spans if s["name"] == "POST /v1/chat/completions"]
    errors = {"duration": [], "ttft": [], "tpot": []}
    for srv, span in zip(server_rows, spans):
        a = span["attributes"]
        duration = (span["end_time_unix_nano"] - span["start_time_unix_nano"]) / 1e9
        errors["duration"].append(abs(duration - (srv["end"] - srv["read"])))
        errors["ttft"].append(abs(a["ebpftool.gen_ai.time_to_first_token"] - (srv["first_token"] - srv["read"])))
        if srv["tokens"] > 1:
            server_tpot = (srv["last_token"] - srv["first_token"]) / (srv["tokens"] - 1)
            errors["tpot"].append(abs(a["ebpftool.gen_ai.time_per_output_token"] - server_tpot))
    out = {"requests": requests, "server_logged": len(server_rows), "spans": len(spans)}
    for k, v in errors.items():
        out[f"{k}_abs_error_median_ms"] = statistics.median(v) * 1000
        out[f"{k}_abs_error_p99_ms"] = _p99(v) * 1000
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=120.0, help="length of the alternating run")
    ap.add_argument("--slice", type=float, default=0.5, help="seconds with, then without, the hooks")
    ap.add_argument("--requests", type=int, default=60, help="streamed requests for the accuracy part")
    ap.add_argument("--workers", type=int, default=1,
                    help="nginx workers: 1 (default) makes nginx's core the bottleneck, the worst case for the "
                         "tracer, whose work runs there; 2 shares both cores with wrk")
    ap.add_argument("--server", choices=("nginx", "streaming"), default="nginx",
                    help="the load: nginx serving a small file (default, the worst case), or the streaming "
                         f"OpenAI-compatible test server answering streamed chat completions of {STREAM_TOKENS} tokens")
    ap.add_argument("--hooks", choices=("auto", "socket", "socket-raw"), default="auto",
                    help="the tracer's --hooks (socket-raw: the send side on sock_send_length, as before the BTF hook)")
    ap.add_argument("--skip-accuracy", action="store_true", help="only the overhead part")
    ap.add_argument("--quick", action="store_true", help="20 s of alternating slices, 20 streamed requests")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    if args.quick:
        args.seconds, args.requests = 20.0, 20
    server = f"nginx ({args.workers} worker(s))" if args.server == "nginx" else \
        f"the streaming test server ({STREAM_TOKENS}-token streamed chat completions)"
    print(f"overhead: {server} under wrk -t1 -c32 for {args.seconds:g}s, the tracer's hooks attached and detached "
          f"every {args.slice:g}s", flush=True)
    result = {"overhead": overhead(args.seconds, args.slice, args.workers, args.server, args.hooks),
              "hooks": args.hooks, "server": args.server,
              "nginx_workers": args.workers}
    if not args.skip_accuracy:
        print(f"accuracy: {args.requests} streamed chat completions (openai client)", flush=True)
        result["accuracy"] = accuracy(args.requests)
    o, a = result["overhead"], result.get("accuracy")
    print()
    print("| figure | value |")
    print("| --- | --- |")
    print(f"| {args.server} req/s without tracer (median slice) | {o['without_rps_median']:,.0f} |")
    print(f"| {args.server} req/s with tracer (median slice) | {o['with_rps_median']:,.0f} |")
    print(f"| ratio with/without, {len(o['pairs'])} pairs of slices: median (mean ± standard error) | "
          f"{o['ratio_median']:.3f} ({o['ratio_mean']:.3f} ± {o['ratio_sem']:.3f}) |")
    print(f"| tracer hooks (its summary's) | {o['hooks_used']} |")
    print(f"| tracer's threads' CPU under load | {o['tracer_cpu_cores'] * 100:.1f}% of a core |")
    k = o["bpf_time"]
    runs = "; ".join(f"{name.removeprefix('raw_tracepoint__').removeprefix('tracepoint__')}: "
                     f"{p['runs_per_request']:.1f} runs of {p['ns_per_run']:,.0f} ns"
                     for name, p in sorted(k["programs"].items()) if p["ns_per_request"] >= 1)
    print(f"| BPF time per request (bpf_stats, one more traced run) | {k['ns_per_request']:,.0f} ns ({runs}) |")
    if a:
        print(f"| streamed requests / server-logged / spans | {a['requests']} / {a['server_logged']} / {a['spans']} |")
        for k in ("duration", "ttft", "tpot"):
            print(f"| {k} abs error vs server, median / p99 | {a[f'{k}_abs_error_median_ms']:.3f} ms / "
                  f"{a[f'{k}_abs_error_p99_ms']:.3f} ms |")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
