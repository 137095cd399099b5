#!/usr/bin/env python3
"""Cost and accuracy of `ebpftool inference`, measured side by side in one run.

    sudo /opt/ebpftool/venv/bin/python scripts/bench_inference.py [--rounds 20] [--quick] [--json out.json]
                                                                 [--server nginx|streaming]

Overhead: nginx (one worker) serving a small file on loopback under `wrk -t1 -c32`, rounds alternating
without and with `ebpftool inference --port P` attached; requests/s ratio (median of rounds), the
tracer's CPU during the loaded runs, and the requests its kernel maps counted against wrk's count.
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
from typing import Iterator

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.servers.nginx import free_port, nginx_server, wait_listening  # noqa: E402
from benchlib import bpf_time_during, start_ebpftool  # noqa: E402  (scripts/ is on sys.path)

PY = sys.executable
CLK_TCK = os.sysconf("SC_CLK_TCK")


# wrk's script for --server streaming: a streamed chat completion, tokens written as fast as the server can
STREAM_TOKENS = 16
STREAM_SCRIPT = """
wrk.method = "POST"
wrk.path = "/v1/chat/completions"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model": "bench", "messages": [{"role": "user", "content": "hi"}], "stream": true, ' ..
           '"max_tokens": %d, "ttft_ms": 0, "tpot_ms": 0}'
""" % STREAM_TOKENS


def wrk(port: int, seconds: float, script: str | None = None) -> dict:
    cmd = ["wrk", "-t1", "-c32", f"-d{seconds:g}s", f"http://127.0.0.1:{port}/index.html"]
    if script:
        cmd[1:1] = ["-s", script]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    return {"rps": rps, "requests": total}


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


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


@contextlib.contextmanager
def streaming_server(timings: Path) -> Iterator[int]:
    """The streaming test server on a free port, logging its own timings to `timings`."""
    port = free_port()
    server = subprocess.Popen([PY, "-m", "tests.servers.streaming_server", str(port), str(timings)], cwd=ROOT,
                              stdout=subprocess.DEVNULL)
    try:
        wait_listening(port)
        yield port
    finally:
        server.terminate()
        server.wait(10)


def overhead(rounds: int, seconds: float, workers: int = 1, server: str = "nginx") -> dict:
    rows = []
    with contextlib.ExitStack() as stack:
        if server == "streaming":
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ebpftool-bench-stream-")))
            script = work / "stream.lua"
            script.write_text(STREAM_SCRIPT)
            port = stack.enter_context(streaming_server(work / "timings.jsonl"))
        else:
            script = None
            port = stack.enter_context(nginx_server(workers=workers))
        load = lambda seconds: wrk(port, seconds, str(script) if script else None)  # noqa: E731
        load(1)  # warm-up
        for i in range(rounds):
            base = load(seconds)
            tracer = Tracer(["--port", str(port)])
            time.sleep(0.5)
            cpu0 = cpu_seconds(tracer.proc.pid)
            t0 = time.monotonic()
            traced = load(seconds)
            cpu = (cpu_seconds(tracer.proc.pid) - cpu0) / (time.monotonic() - t0)
            out = tracer.stop()
            counted = summary_figure(out, "requests measured")
            rows.append({"round": i, "baseline_rps": base["rps"], "traced_rps": traced["rps"],
                         "ratio": traced["rps"] / base["rps"], "tracer_cpu_cores": cpu,
                         "wrk_requests": traced["requests"], "kernel_counted": counted})
            print(f"  round {i}: {base['rps']:,.0f} -> {traced['rps']:,.0f} req/s ({traced['rps'] / base['rps']:.3f}), "
                  f"tracer CPU {cpu * 100:.1f}% of a core, counted {counted} / wrk {traced['requests']}", flush=True)
        # One more traced run with kernel.bpf_stats_enabled: firmer than requests/s where a server's own time
        # per request is large or noisy.
        tracer = Tracer(["--port", str(port)])
        try:
            time.sleep(0.5)
            programs = bpf_time_during(tracer.proc.pid, lambda: load(seconds)["requests"])
        finally:
            tracer.stop()
    return {
        "rounds": rows,
        "bpf_time": {"programs": programs, "ns_per_request": sum(p["ns_per_request"] for p in programs.values())},
        "baseline_rps_median": statistics.median(r["baseline_rps"] for r in rows),
        "traced_rps_median": statistics.median(r["traced_rps"] for r in rows),
        "ratio_median": statistics.median(r["ratio"] for r in rows),
        "ratio_min": min(r["ratio"] for r in rows),
        "ratio_max": max(r["ratio"] for r in rows),
        "tracer_cpu_cores_median": statistics.median(r["tracer_cpu_cores"] for r in rows),
    }


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
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--requests", type=int, default=60, help="streamed requests for the accuracy part")
    ap.add_argument("--workers", type=int, default=1,
                    help="nginx workers: 1 (default) makes nginx's core the bottleneck, the worst case for the "
                         "tracer, whose work runs there; 2 shares both cores with wrk")
    ap.add_argument("--server", choices=("nginx", "streaming"), default="nginx",
                    help="the load: nginx serving a small file (default, the worst case), or the streaming "
                         f"OpenAI-compatible test server answering streamed chat completions of {STREAM_TOKENS} tokens")
    ap.add_argument("--skip-accuracy", action="store_true", help="only the overhead part")
    ap.add_argument("--quick", action="store_true", help="3 rounds of 2 s, 20 streamed requests")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.seconds, args.requests = 3, 2.0, 20
    server = f"nginx ({args.workers} worker(s))" if args.server == "nginx" else \
        f"the streaming test server ({STREAM_TOKENS}-token streamed chat completions)"
    print(f"overhead: {server} under wrk -t1 -c32, {args.rounds} rounds of {args.seconds:g}s, alternating", flush=True)
    result = {"overhead": overhead(args.rounds, args.seconds, args.workers, args.server), "server": args.server,
              "nginx_workers": args.workers}
    if not args.skip_accuracy:
        print(f"accuracy: {args.requests} streamed chat completions (openai client)", flush=True)
        result["accuracy"] = accuracy(args.requests)
    o, a = result["overhead"], result.get("accuracy")
    print()
    print("| figure | value |")
    print("| --- | --- |")
    print(f"| {args.server} req/s without tracer (median) | {o['baseline_rps_median']:,.0f} |")
    print(f"| {args.server} req/s with tracer (median) | {o['traced_rps_median']:,.0f} |")
    print(f"| ratio with/without (median, min-max) | {o['ratio_median']:.3f} ({o['ratio_min']:.3f}-{o['ratio_max']:.3f}) |")
    print(f"| tracer process CPU under load (median) | {o['tracer_cpu_cores_median'] * 100:.1f}% of a core |")
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
