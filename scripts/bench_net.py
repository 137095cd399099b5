#!/usr/bin/env python3
"""Cost and accuracy of `ebpftool net`: iperf3 over loopback with and without the tracer.

    sudo /opt/ebpftool/venv/bin/python scripts/bench_net.py [--rounds 7] [--seconds 3] [--json out.json]

For each workload (iperf3's default 128 KiB writes, and 1 KiB writes: 128
times more sends per byte, the tracer's worst case per byte), runs alternate
without/with rounds and reports median throughput and the ratio. In every traced round the bytes `ebpftool net` exported for the
iperf3 client are compared with what iperf3 says it sent (its control
connection's few hundred bytes included in ours, so a tiny excess is expected).

    sudo /opt/ebpftool/venv/bin/python scripts/bench_net.py --slices 120 [--slice 0.5] [--length 1K]

With --slices, one workload (iperf3's -l: 1K by default), measured as scripts/bench_inference.py measures nginx: iperf3 runs
for the whole time while the net tracer, loaded once in this process as `ebpftool net` loads it, has its
per-I/O hooks (the raw tracepoints: bytes sent, bytes received, tcp_probe) detached and attached again every
--slice seconds; each slice's throughput is the loopback interface's byte count, and each slice with the
hooks is compared with the one just before without them (benchlib.alternating_slices): adjacent slices
share the machine's drifts, which separate rounds of a few seconds do not (their ratios spread by +-10%
on this VM). The tracer's user-space work is per interval, not per I/O, so it is not what this hides.
Not part of the test suite: its numbers depend on the machine.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchlib import TracerThread, alternating_slices, start_ebpftool, switch_hooks  # noqa: E402
from ebpftool.commands.common import CommonOptions, build_telemetry  # noqa: E402
from ebpftool.commands.net import net_tracer  # noqa: E402

PY = sys.executable
PORT = 5299
WORKLOADS = {"bulk (128 KiB writes)": [], "small (1 KiB writes)": ["-l", "1K"]}


def iperf3(seconds: float, extra: list[str]) -> tuple[float, int, int]:
    """(bits per second received, bytes sent, client pid) of one iperf3 run over loopback."""
    proc = subprocess.Popen(["iperf3", "-c", "127.0.0.1", "-p", str(PORT), "-t", str(seconds), "-J", *extra],
                            stdout=subprocess.PIPE, text=True)
    out, _ = proc.communicate(timeout=seconds + 30)
    end = json.loads(out)["end"]
    return end["sum_received"]["bits_per_second"], int(end["sum_sent"]["bytes"]), proc.pid


class Tracer:
    """`ebpftool net` in the background, exporting to a JSON-lines file."""

    def __init__(self) -> None:
        self.jsonl = Path(tempfile.mkstemp(prefix="bench-net-", suffix=".jsonl")[1])
        self.proc = start_ebpftool(["net", "--no-ui", "--interval", "1", "--jsonl", str(self.jsonl), "--overwrite"],
                                   stdout=subprocess.DEVNULL)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.stderr.read()
        self.proc.wait(60)

    def sent_by(self, pid: int) -> int:
        """Bytes transmitted by pid in the last export (cumulative counters: the last point is the total)."""
        latest: dict[tuple, float] = {}
        for line in self.jsonl.read_text().splitlines():
            rec = json.loads(line)
            a = rec.get("attributes", {})
            if (rec.get("name") == "ebpftool.network.flow.io" and a.get("process.pid") == pid
                    and a.get("network.io.direction") == "transmit"):
                latest[tuple(sorted((k, str(v)) for k, v in a.items()))] = rec["value"]
        self.jsonl.unlink()
        return int(sum(latest.values()))


def bench(rounds: int, seconds: float) -> dict:
    server = subprocess.Popen(["iperf3", "-s", "-p", str(PORT)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    results = {}
    try:
        for name, extra in WORKLOADS.items():
            base, traced, errors = [], [], []
            for _ in range(rounds):
                base.append(iperf3(seconds, extra)[0])
                tracer = Tracer()
                try:
                    bps, sent, pid = iperf3(seconds, extra)
                finally:
                    tracer.stop()
                traced.append(bps)
                errors.append((tracer.sent_by(pid) - sent) / sent)
            b, t = statistics.median(base), statistics.median(traced)
            results[name] = {
                "rounds": rounds, "seconds": seconds,
                "without_gbit_s": [round(x / 1e9, 3) for x in base],
                "with_gbit_s": [round(x / 1e9, 3) for x in traced],
                "median_without_gbit_s": round(b / 1e9, 3), "median_with_gbit_s": round(t / 1e9, 3),
                "ratio": round(t / b, 4),
                "byte_count_error_max": max(errors, key=abs),
            }
    finally:
        server.terminate()
        server.wait()
    return results


class InProcessNet(TracerThread):
    """`ebpftool net --interval 1` as the command builds it (no exporter), in a thread of this process, its
    per-I/O hooks switchable."""

    def __init__(self) -> None:
        common = CommonOptions(interval=1.0)
        telemetry, _ = build_telemetry(common)
        super().__init__(net_tracer(common, None, None)(telemetry), telemetry)
        self.raw = [p.split(":", 1)[1] for p in self.tracer.prog.probes if p.startswith("raw_tracepoint:")]
        if not self.raw:
            raise SystemExit("this benchmark switches the raw tracepoints, which this kernel does not offer")

    def switch(self, on: bool) -> None:
        switch_hooks(self.tracer.prog, self.raw, (), on)


def loopback_bytes() -> int:
    return int(Path("/sys/class/net/lo/statistics/tx_bytes").read_text())


def slices(seconds: float, slice_s: float, length: str) -> dict:
    """iperf3 with writes of `length` throughout; the tracer's per-I/O hooks off and on, slice by slice."""
    server = subprocess.Popen(["iperf3", "-s", "-p", str(PORT)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    tracer = None
    try:
        tracer = InProcessNet()
        time.sleep(0.5)
        load = subprocess.Popen(["iperf3", "-c", "127.0.0.1", "-p", str(PORT), "-t", str(seconds + 4), "-l", length],
                                stdout=subprocess.DEVNULL)
        try:
            time.sleep(1.5)   # connected and running
            cpu0, t0 = tracer.cpu_seconds(), time.monotonic()
            result = alternating_slices(tracer.attach, loopback_bytes, seconds, slice_s)
            result["tracer_cpu_cores"] = (tracer.cpu_seconds() - cpu0) / (time.monotonic() - t0)
            result["hooks"] = tracer.raw
        finally:
            load.terminate()
            load.wait(30)
        return result
    finally:
        if tracer is not None:
            tracer.stop()
        server.terminate()
        server.wait()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--quick", action="store_true", help="2 rounds of 2 s (a smoke run, not for the docs)")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--slices", type=float, metavar="SECONDS",
                    help="instead: the 1 KiB workload for this long, the hooks switched slice by slice")
    ap.add_argument("--slice", type=float, default=0.5, help="with --slices: seconds per slice")
    ap.add_argument("--length", default="1K", help="with --slices: iperf3's write length (-l), e.g. 1K or 128K")
    opts = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_net.py loads BPF programs: run it as root", file=sys.stderr)
        return 1
    if opts.slices:
        r = slices(opts.slices, opts.slice, opts.length)
        print(f"iperf3 -l {opts.length} for {opts.slices:g}s, the net tracer's hooks ({', '.join(r['hooks'])}) switched every "
              f"{opts.slice:g}s: {len(r['pairs'])} pairs, with/without median {r['ratio_median']:.3f}, mean "
              f"{r['ratio_mean']:.3f} +- {r['ratio_sem']:.3f} (standard error); without "
              f"{r['without_rps_median'] * 8 / 1e9:.2f} Gbit/s on lo; tracer threads {r['tracer_cpu_cores']:.1%} of a core")
        if opts.json:
            Path(opts.json).write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), **r}, indent=2))
        return 0
    rounds, seconds = (2, 2.0) if opts.quick else (opts.rounds, opts.seconds)
    results = bench(rounds, seconds)
    summary = {name: {"throughput_ratio": r["ratio"], "median_without_gbit_s": r["median_without_gbit_s"],
                      "median_with_gbit_s": r["median_with_gbit_s"], "byte_count_error_max": r["byte_count_error_max"]}
               for name, r in results.items()}
    out = {"date": time.strftime("%Y-%m-%d"), "machine": f"{os.cpu_count()} cores, {os.uname().release}",
           "summary": summary, "workloads": results}
    print(f"{'workload':<24} {'without Gb/s':>13} {'with Gb/s':>10} {'ratio':>7} {'byte error':>11}")
    for name, s in summary.items():
        print(f"{name:<24} {s['median_without_gbit_s']:>13.3f} {s['median_with_gbit_s']:>10.3f} "
              f"{s['throughput_ratio']:>7.1%} {s['byte_count_error_max']:>11.4%}")
    if opts.json:
        Path(opts.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
