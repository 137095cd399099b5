#!/usr/bin/env python3
"""What `ebpftool agents` costs a Go program's TLS (its uprobes in crypto/tls), measured side by side.

    sudo /opt/ebpftool/venv/bin/python scripts/bench_go_tls.py [--rounds 5] [--trips 20000]

scripts/go_tls_echo (built here with Go) echoes 1 KiB over crypto/tls on loopback in one process: per round
trip, a Write and a Read on each side, so two entry probes on Write, two on Read and two at Read's `ret`.
Rounds alternate without and with `ebpftool agents` (its defaults, and with --no-go-tls), the tracer attached
to the executable through a waiting process of it; reported: microseconds per round trip, medians.
Not part of the test suite: its numbers depend on the machine.
"""
from __future__ import annotations

import argparse
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchlib import start_ebpftool  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--trips", type=int, default=20000)
    opts = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="ebpftool-go-tls-") as d:
        echo = Path(d) / "go_tls_echo"
        subprocess.run(["go", "build", "-o", str(echo), "."], cwd=ROOT / "scripts" / "go_tls_echo", check=True,
                       env={"HOME": d, "GOCACHE": f"{d}/cache", "GOFLAGS": "-mod=mod", "PATH": "/usr/bin:/bin"})
        holder = subprocess.Popen([str(echo), "wait"], stdin=subprocess.PIPE)
        results: dict[str, list[float]] = {"without": [], "agents": [], "agents --no-go-tls": []}
        try:
            for _ in range(opts.rounds):
                for variant in results:
                    tracer = None
                    if variant != "without":
                        tracer = start_ebpftool(variant.split() + ["--no-ui", "--interval", "1"],
                                                stdout=subprocess.DEVNULL)
                    try:
                        out = subprocess.run([str(echo), str(opts.trips)], capture_output=True, text=True, check=True)
                        results[variant].append(float(out.stdout))
                    finally:
                        if tracer is not None:
                            tracer.send_signal(signal.SIGINT)
                            tracer.stderr.read()
                            tracer.wait(60)
        finally:
            holder.kill()
            holder.wait()
    base = statistics.median(results["without"])
    for variant, values in results.items():
        m = statistics.median(values)
        print(f"{variant:<22} {m:8.2f} us per round trip (+{m - base:.2f}); rounds {', '.join(f'{v:.1f}' for v in values)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
