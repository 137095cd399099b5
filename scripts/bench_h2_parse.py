#!/usr/bin/env python3
"""The HTTP/2 parser alone (user space, no BPF): what decoding a stream costs, on real bytes.

    sudo /opt/ebpftool/venv/bin/python scripts/bench_h2_parse.py [--streams 20000] [--runs 3] [--profile]

nginx (one worker, h2c with prior knowledge) answers `h2load -c 8 -m 10 -n STREAMS` while tcpdump captures
`lo`; the capture is reassembled per connection (tests/wire.py) and each connection's bytes, in the pieces the
segments carried, both directions in time order, are fed to `http2.Connection`, the parser the inference
tracer runs on what its kernel side sends. Reports microseconds per stream, alternating runs with and without
hpack.py's memo of decoded Huffman strings; --profile prints a cProfile of one run with it. Not part of the
test suite: its numbers depend on the machine.
"""
from __future__ import annotations

import argparse
import cProfile
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ebpftool.tracers.inference import hpack, http2  # noqa: E402
from tests import wire  # noqa: E402
from tests.servers.nginx import nginx_server  # noqa: E402


def capture(streams: int, pcap: Path) -> int:
    """h2load's streams to nginx captured into pcap; the server's port."""
    with nginx_server(http2=True) as port:
        cap = subprocess.Popen(["tcpdump", "-i", "lo", "-U", "-n", "-s", "0", "-B", "262144", "-w", str(pcap),
                                f"tcp port {port}"], stderr=subprocess.PIPE, text=True)
        for line in cap.stderr:
            if "listening on" in line:
                break
        out = subprocess.run(["h2load", "-c", "8", "-m", "10", "-n", str(streams),
                              f"http://127.0.0.1:{port}/index.html"], capture_output=True, text=True)
        settled(pcap)  # tcpdump lags under load: the last segments into the file before it stops
        cap.terminate()
        _, err = cap.communicate()
        if out.returncode or "\n0 packets dropped" not in "\n" + err:
            raise SystemExit(f"capture failed: h2load exit {out.returncode}; tcpdump: {err.strip()}")
    return port


def settled(path: Path, quiet_s: float = 1.0, limit_s: float = 60.0) -> None:
    """Returns once path has not grown for quiet_s (at most limit_s)."""
    size, since, deadline = -1, time.monotonic(), time.monotonic() + limit_s
    while time.monotonic() < deadline:
        now = path.stat().st_size if path.exists() else 0
        if now != size:
            size, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return
        time.sleep(0.1)


def pieces(c: wire.Connection) -> list[tuple[int, str, bytes]]:
    out = []
    for stream, sender in ((c.up, http2.CLIENT), (c.down, http2.SERVER)):
        for start, end, ts in stream.runs():
            out.append((ts, sender, stream.data[start:end]))
    return sorted(out, key=lambda p: p[0])


def parse(feeds: list[list[tuple[int, str, bytes]]]) -> int:
    streams = 0
    for feed in feeds:
        conn = http2.Connection()
        for ts, sender, data in feed:
            streams += len(conn.feed(sender, data, ts))
    return streams


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--streams", type=int, default=20000)
    ap.add_argument("--runs", type=int, default=3, help="pairs of runs, without and with the memo")
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        pcap = Path(tmp) / "h2.pcap"
        port = capture(args.streams, pcap)
        conns = wire.connections(wire.segments(pcap.read_bytes()), port)
    feeds = [pieces(c) for c in conns]
    print(f"{len(conns)} connections, {sum(len(c.up.data) + len(c.down.data) for c in conns):,} bytes")
    memo_key_max = hpack.HUFFMAN_MEMO_KEY_MAX
    for _ in range(args.runs):
        for memo in (False, True):
            hpack.HUFFMAN_MEMO_KEY_MAX = memo_key_max if memo else -1
            hpack._HUFFMAN_MEMO.clear()
            t = time.perf_counter()
            n = parse(feeds)
            dt = time.perf_counter() - t
            print(f"{'with' if memo else 'without'} the Huffman memo: {n} streams, {dt / n * 1e6:.1f} us per stream")
    hpack.HUFFMAN_MEMO_KEY_MAX = memo_key_max
    if args.profile:
        profile = cProfile.Profile()
        profile.runcall(parse, feeds)
        pstats.Stats(profile).sort_stats("tottime").print_stats(15)


if __name__ == "__main__":
    main()
