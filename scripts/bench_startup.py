#!/usr/bin/env python3
"""Start-up and stop of ebpftool as a user waits for them: wall clock, the whole process.

For each command (`trace`, `inference`, `net`, `gpu`) and each mode, a fresh `python -m ebpftool CMD ...` is
started and timed from just before it is spawned until its last "N probes attached" line (one per tracer:
three for `trace`), held for --hold seconds, sent SIGTERM, and timed until it has exited (its final export,
summary and every probe detached included). Its peak RSS is the kernel's (wait4's ru_maxrss).

Modes: `cold` empties the compile cache first (BCC compiles every program, and the cache is written),
`warm` runs right after with that cache (the same node and options, a second start), `off` runs with the
cache disabled (EBPFTOOL_BPF_CACHE=off), and with --baseline DIR `base` runs another checkout (say the code
before these changes, from `git archive`) in the same rounds. Rounds alternate over commands and
modes, so slow drifts of a shared machine fall on all of them; figures are medians with the range.

    sudo /opt/ebpftool/venv/bin/python scripts/bench_startup.py --rounds 5

The cache it uses is its own folder (--cache-dir), not the default one.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
READY_MARKER = "probes attached"
PORT = "18080"
COMMANDS = {
    "trace": (["trace", "--port", PORT], 3),     # args, how many tracers report their probes
    "inference": (["inference", "--port", PORT], 1),
    "net": (["net"], 1),
    "gpu": (["gpu"], 1),
}
MODES = ("cold", "warm", "off")


def run_once(args: list[str], tracers: int, env: dict[str, str], hold: float, timeout: float, tree: Path = ROOT) -> dict:
    """One start, hold and SIGTERM: seconds to every probe attached, seconds from SIGTERM to exit, peak RSS."""
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "ebpftool", *args, "--no-ui"], cwd=tree, env={**env, "PYTHONPATH": str(tree)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    ready = threading.Event()
    seen: list[tuple[float, str]] = []

    def read() -> None:
        for line in proc.stderr:
            seen.append((time.monotonic(), line.rstrip()))
            if sum(READY_MARKER in text for _t, text in seen) >= tracers:
                ready.set()
        ready.set()  # it ended before: the caller finds out

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    if not ready.wait(timeout) or sum(READY_MARKER in text for _t, text in seen) < tracers:
        proc.kill()
        proc.wait()
        tail = " / ".join(text for _t, text in seen[-4:])
        raise SystemExit(f"ebpftool {' '.join(args)} did not attach every tracer's probes: {tail}")
    attached = max(t for t, text in seen if READY_MARKER in text) - t0
    time.sleep(hold)  # traced for a moment, as a user's shortest look
    t_term = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _pid, status, usage = os.wait4(proc.pid, 0)
    stopped = time.monotonic() - t_term
    proc.returncode = os.waitstatus_to_exitcode(status)
    reader.join(5)
    if proc.returncode != 0:
        raise SystemExit(f"ebpftool {' '.join(args)} exited {proc.returncode}: "
                         + " / ".join(text for _t, text in seen[-4:]))
    return {"attached_s": attached, "stop_s": stopped, "peak_rss_mb": usage.ru_maxrss / 1024,
            "tracers": [text for _t, text in seen if READY_MARKER in text]}


def spread(values: list[float], fmt: str) -> str:
    med = statistics.median(values)
    if len(values) == 1:
        return format(med, fmt)
    return f"{format(med, fmt)} ({format(min(values), fmt)}–{format(max(values), fmt)})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--commands", default=",".join(COMMANDS), help="comma-separated, of " + ", ".join(COMMANDS))
    ap.add_argument("--modes", default="cold,warm", help="comma-separated, of " + ", ".join(MODES))
    ap.add_argument("--hold", type=float, default=1.0, help="seconds traced between attached and SIGTERM")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds a start may take")
    ap.add_argument("--cache-dir", default="/var/cache/ebpftool/bench-startup")
    ap.add_argument("--json", type=Path, help="write every run here")
    ap.add_argument("--baseline", type=Path,
                    help="another ebpftool checkout (e.g. `git archive` of an older commit) run in the same rounds, "
                         "as mode `base`: a before/after measured side by side")
    ap.add_argument("--baseline-modes", default="",
                    help="with --baseline: run it in these modes too (comma-separated, of " + ", ".join(MODES) +
                         "), as `base-MODE`, each just before the same mode of this tree, with a compile cache "
                         "of its own (--cache-dir + '-base'); without it, `base` runs once per round, cache as found")
    a = ap.parse_args()
    commands = [c.strip() for c in a.commands.split(",") if c.strip()]
    modes = [m.strip() for m in a.modes.split(",") if m.strip()]
    base_modes = [m.strip() for m in a.baseline_modes.split(",") if m.strip()]
    bad = [c for c in commands if c not in COMMANDS] + [m for m in modes + base_modes if m not in MODES]
    if bad:
        raise SystemExit(f"unknown command or mode: {', '.join(bad)}")
    if a.rounds < 1:
        raise SystemExit("--rounds must be 1 or more")
    if os.geteuid() != 0:
        raise SystemExit("run as root: ebpftool loads BPF programs")
    if "warm" in modes and "cold" in modes and modes.index("warm") < modes.index("cold"):
        modes.remove("warm")
        modes.insert(modes.index("cold") + 1, "warm")   # a warm start follows the cold one that filled the cache
    base_env = {**os.environ, "COLUMNS": "200"}
    if base_modes and a.baseline is None:
        raise SystemExit("--baseline-modes needs --baseline")
    if a.baseline is not None:
        if not (a.baseline / "ebpftool" / "__main__.py").is_file():
            raise SystemExit(f"--baseline {a.baseline}: not an ebpftool checkout")
        if base_modes:   # base-cold just before cold, base-warm just before warm, ...
            modes = [x for m in modes for x in ([f"base-{m}"] if m in base_modes else []) + [m]]
            modes = [f"base-{m}" for m in base_modes if f"base-{m}" not in modes] + modes
        else:
            modes.insert(0, "base")
    runs: list[dict] = []
    for r in range(a.rounds):
        for cmd in commands:
            args, tracers = COMMANDS[cmd]
            for mode in modes:
                is_base = mode.startswith("base")
                cache_dir = a.cache_dir + "-base" if mode.startswith("base-") else a.cache_dir
                if mode.removeprefix("base-") == "cold":
                    shutil.rmtree(cache_dir, ignore_errors=True)
                env = {**base_env, "EBPFTOOL_BPF_CACHE": "off" if mode.removeprefix("base-") == "off" else cache_dir}
                tree = a.baseline.resolve() if is_base else ROOT
                got = run_once(args, tracers, env, a.hold, a.timeout, tree)
                runs.append({"round": r, "command": cmd, "mode": mode, **got})
                print(f"round {r + 1} {cmd:9} {mode:4}: attached {got['attached_s']:.2f} s, stop {got['stop_s']:.2f} s, "
                      f"peak RSS {got['peak_rss_mb']:.0f} MB", file=sys.stderr, flush=True)
    if a.baseline is not None:
        print(f"\nbase: {a.baseline.resolve()}; the other modes: {ROOT}")
    print(f"\nebpftool start-up and stop, {a.rounds} alternating rounds, hold {a.hold:g} s, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average at the end "
          f"{os.getloadavg()[0]:.2f}; medians (min–max)\n")
    print("| command | mode | command start → all probes attached | SIGTERM → exit | peak RSS |")
    print("| --- | --- | --- | --- | --- |")
    for cmd in commands:
        for mode in modes:
            sel = [x for x in runs if x["command"] == cmd and x["mode"] == mode]
            print(f"| `{cmd}` | {mode} | {spread([x['attached_s'] for x in sel], '.2f')} s "
                  f"| {spread([x['stop_s'] for x in sel], '.2f')} s | {spread([x['peak_rss_mb'] for x in sel], '.0f')} MB |")
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps({"command": sys.argv, "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
