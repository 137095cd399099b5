#!/usr/bin/env python3
"""What `ebpftool inference` costs nginx as a user runs it, with and without its spans: nginx (1 worker, small
file) under `wrk -t1 -c32`, in alternating rounds: no tracer, then `ebpftool inference --port P --no-ui` as
its own process with its defaults (spans at 1,000/s, no exporter), with `--span-rate 0`, and with `--jsonl
FILE` (the spans written out). Ratio per round against the round's no-tracer run, median. Each tracer start
waits for "probes attached" (warm: the compile cache filled by the first). Not part of the test suite.

    sudo /opt/ebpftool/venv/bin/python scripts/bench_span_export.py ROUNDS SECONDS     # e.g. 6 4
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
from tests.servers.nginx import nginx_server
def start(port, extra):
    p = subprocess.Popen([sys.executable, "-m", "ebpftool", "inference", "--port", str(port), "--no-ui", *extra],
                         cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for line in p.stderr:
        if "probes attached" in line: return p
    raise SystemExit("did not start")
def wrk(port, s):
    out = subprocess.run(["wrk", "-t1", "-c32", f"-d{s}s", f"http://127.0.0.1:{port}/index.html"], capture_output=True, text=True).stdout
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
rounds, secs = int(sys.argv[1]), int(sys.argv[2])
configs = {"none": None, "defaults": [], "span-rate 0": ["--span-rate", "0"], "jsonl": ["--jsonl", os.path.join(tempfile.gettempdir(), "bench-span-export.jsonl"), "--overwrite"]}
res = {k: [] for k in configs}
with nginx_server() as port:
    for r in range(rounds):
        for name, extra in configs.items():
            p = None if extra is None else start(port, extra)
            time.sleep(0.5)
            res[name].append(wrk(port, secs))
            if p: p.terminate(); p.wait(30)
        print(r, {k: round(v[-1]) for k, v in res.items()}, flush=True)
for k in configs:
    if k == "none": continue
    ratios = [a / b for a, b in zip(res[k], res["none"])]
    print(f"{k}: median ratio vs none {statistics.median(ratios):.3f}  {[round(x, 3) for x in ratios]}")
