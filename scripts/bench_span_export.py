#!/usr/bin/env python3
"""What `ebpftool inference` costs nginx as a user runs it, with and without its spans: nginx (1 worker, small
file) under `wrk -t1 -c32`, in alternating rounds: no tracer, then `ebpftool inference --port P --no-ui` as
its own process with its defaults (spans at 100/s, no exporter), with `--span-rate 0`, with `--jsonl FILE`
(the spans written out) and with `--otlp-endpoint` (OTLP over HTTP to a receiver in this process, which
decodes what it gets: tests/otlp_receiver.py). Ratio per round against the round's no-tracer run, median;
and the tracer process's CPU time during each run, per 1,000 spans where the spans are counted (the lines
written, the spans received). Each tracer start waits for "probes attached" (warm: the compile cache filled
by the first). Not part of the test suite.

    sudo /opt/ebpftool/venv/bin/python scripts/bench_span_export.py ROUNDS SECONDS [BASE_TREE]    # e.g. 6 4
    sudo /opt/ebpftool/venv/bin/python scripts/bench_span_export.py --watched-vs-unwatched ROUNDS SECONDS [CONFIGS]

With BASE_TREE (a checkout of another commit), its jsonl and otlp runs alternate with this tree's.
--watched-vs-unwatched measures as issue 25 first did: two identical nginx servers, the tracer (defaults, then
--otlp-endpoint, the same with --span-rate 1000 (the default before 2026-12-07), then --span-rate 0, then OTLP and
--span-rate 0 again with the tracer loaded as on a kernel without sk_data_ready: no arrivals) watching the first,
wrk alternating between them; the ratio of each round's pair (both servers pay the hooks' dispatch, only the
watched one the tracer's work). CONFIGS: a subset of those names, separated by semicolons.
"""
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "scripts"))
from benchlib import cpu_seconds
from tests.otlp_receiver import HttpReceiver
from tests.servers.nginx import nginx_server
JSONL = os.path.join(tempfile.gettempdir(), "bench-span-export.jsonl")
# `python -m ebpftool` as on a kernel without the sk_data_ready tracepoint: no arrival hook (requests start at their
# read), to tell what the arrivals cost as a user runs the tracer
WITHOUT_ARRIVALS = ["-c", "import sys; sys.path.insert(0, 'scripts'); from benchlib import without_arrival_hook\n"
                          "from ebpftool.cli import main\nwith without_arrival_hook(): main()"]
def start(port, extra, root=ROOT, launch=("-m", "ebpftool")):
    p = subprocess.Popen([sys.executable, *launch, "inference", "--port", str(port), "--no-ui", *extra],
                         cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for line in p.stderr:
        if "probes attached" in line: return p
    raise SystemExit("did not start")
def lines(path):
    try:
        with open(path, "rb") as f: return sum(1 for _ in f)
    except FileNotFoundError: return 0
def wrk(port, s):
    out = subprocess.run(["wrk", "-t1", "-c32", f"-d{s}s", f"http://127.0.0.1:{port}/index.html"], capture_output=True, text=True).stdout
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
def watched_vs_unwatched(rounds, secs, only=None):
    receiver = HttpReceiver()
    with nginx_server() as watched, nginx_server() as unwatched:
        for name, extra, launch in (
                ("defaults", [], None), ("otlp", ["--otlp-endpoint", receiver.endpoint], None),
                ("otlp, span-rate 1000", ["--otlp-endpoint", receiver.endpoint, "--span-rate", "1000"], None),
                ("span-rate 0", ["--span-rate", "0"], None),
                ("otlp, no arrival hook", ["--otlp-endpoint", receiver.endpoint], WITHOUT_ARRIVALS),
                ("span-rate 0, no arrival hook", ["--span-rate", "0"], WITHOUT_ARRIVALS)):
            if only and name not in only:
                continue
            p = start(watched, extra, launch=launch or ("-m", "ebpftool"))
            time.sleep(0.5)
            ratios = [wrk(watched, secs) / wrk(unwatched, secs) for _ in range(rounds)]
            p.terminate(); p.wait(30)
            print(f"{name}: watched / unwatched median {statistics.median(ratios):.3f}  {[round(x, 3) for x in ratios]}",
                  flush=True)
    receiver.stop()
if sys.argv[1] == "--watched-vs-unwatched":
    watched_vs_unwatched(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4].split(";") if len(sys.argv) > 4 else None)
    sys.exit(0)
rounds, secs = int(sys.argv[1]), int(sys.argv[2])
receiver = HttpReceiver()
configs = {"none": None, "defaults": [], "span-rate 0": ["--span-rate", "0"], "jsonl": ["--jsonl", JSONL, "--overwrite"],
           "otlp": ["--otlp-endpoint", receiver.endpoint]}
spans_of = {"jsonl": lambda: lines(JSONL), "otlp": lambda: len(receiver.spans(""))}
base = sys.argv[3] if len(sys.argv) > 3 else None
if base:
    configs.update({"jsonl@base": configs["jsonl"], "otlp@base": configs["otlp"]})
    spans_of.update({"jsonl@base": spans_of["jsonl"], "otlp@base": spans_of["otlp"]})
res = {k: [] for k in configs}
cpu = {k: [] for k in configs}  # (tracer CPU seconds, spans) during each run
with nginx_server() as port:
    for r in range(rounds):
        for name, extra in configs.items():
            p = None if extra is None else start(port, extra, base if name.endswith("@base") else ROOT)
            time.sleep(0.5)
            count = spans_of.get(name, lambda: 0)
            c0, n0 = (cpu_seconds(p.pid), count()) if p else (0, 0)
            res[name].append(wrk(port, secs))
            if p:
                cpu[name].append((cpu_seconds(p.pid) - c0, count() - n0))
                p.terminate(); p.wait(30)
        print(r, {k: round(v[-1]) for k, v in res.items()}, flush=True)
receiver.stop()
for k in configs:
    if k == "none": continue
    ratios = [a / b for a, b in zip(res[k], res["none"])]
    used = sum(c for c, _ in cpu[k]) / (rounds * secs)
    spans = sum(n for _, n in cpu[k])
    per = f", {1000 * sum(c for c, _ in cpu[k]) / spans * 1000:.0f} ms per 1,000 spans ({spans} spans)" if spans else ""
    print(f"{k}: median ratio vs none {statistics.median(ratios):.3f}  {[round(x, 3) for x in ratios]}; "
          f"tracer CPU {100 * used:.1f}% of a core{per}")
