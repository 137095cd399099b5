#!/usr/bin/env python3
"""What `ebpftool inference` reported against what the wire says, for a run outside the test suite.

    python3 scripts/compare_wire.py --port P DIR/wire.pcap DIR/spans.jsonl [--json OUT]

wire.pcap: a capture on lo of the server's port (`scripts/real_servers.py capture`); spans.jsonl: what
`ebpftool inference --port P --jsonl FILE` wrote. Each request on the wire is paired with its span by the
client's port and its place on the connection; the truth (tests/wire.py) is derived from the capture only.
Prints, per figure, how many requests were compared and the errors' median, p99 and worst (ms), and the
requests whose output tokens differ; exit 1 when a request has no span or a figure is outside
max(1 ms, 2%) at p99, as issue 20 asks.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests import wire  # noqa: E402

MS = 1e6


def spans_of(path: Path) -> list[dict]:
    out = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("type") == "span":
            out.append(rec)
    return out


def pair(exchanges: list[wire.Exchange], spans: list[dict]) -> list[tuple[wire.Exchange, dict | None]]:
    by_port: dict[int, list[dict]] = defaultdict(list)
    for s in sorted(spans, key=lambda s: s["start_time_unix_nano"]):
        by_port[s["attributes"].get("client.port")].append(s)
    out = []
    for x in exchanges:
        mine = by_port.get(x.client[1], [])
        out.append((x, mine[x.index] if x.index < len(mine) else None))
    return out


def figures(pairs) -> dict[str, list[tuple[float, float]]]:
    """figure -> [(ebpftool, wire)] in ms."""
    rows: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for x, s in pairs:
        if s is None:
            continue
        a = s["attributes"]
        rows["start"].append((s["start_time_unix_nano"] / MS, x.request_first_ns / MS))
        if x.duration_ns is not None:
            rows["duration"].append(((s["end_time_unix_nano"] - s["start_time_unix_nano"]) / MS, x.duration_ns / MS))
        if x.ttft_ns is not None and "ebpftool.gen_ai.time_to_first_token" in a:
            rows["time to first token"].append((a["ebpftool.gen_ai.time_to_first_token"] * 1e3, x.ttft_ns / MS))
        if x.tpot_ns is not None and "ebpftool.gen_ai.time_per_output_token" in a:
            rows["time per output token"].append((a["ebpftool.gen_ai.time_per_output_token"] * 1e3, x.tpot_ns / MS))
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("pcap", type=Path)
    ap.add_argument("spans", type=Path)
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    exchanges = wire.exchanges(args.pcap.read_bytes(), args.port)
    pairs = pair(exchanges, spans_of(args.spans))
    ok = True
    lost = [x for x, s in pairs if s is None]
    print(f"{len(exchanges)} requests on the wire, {len(exchanges) - len(lost)} with a span")
    ok &= not lost
    report = {"requests": len(exchanges), "without_span": len(lost), "figures": {}}
    for name, rows in figures(pairs).items():
        errs = sorted(abs(a - b) for a, b in rows)
        p99 = errs[min(len(errs) - 1, int(0.99 * len(errs)))]
        bad = [(a, b) for a, b in rows if name != "start" and abs(a - b) > max(1.0, 0.02 * abs(b))]
        bad += [(a, b) for a, b in rows if name == "start" and abs(a - b) > 1.0]
        ok &= not bad
        report["figures"][name] = {"n": len(rows), "median_ms": statistics.median(errs), "p99_ms": p99,
                                   "worst_ms": errs[-1], "outside": len(bad)}
        print(f"{name:24s} n={len(rows):3d}  |error| median {statistics.median(errs):.3f} ms  p99 {p99:.3f} ms  "
              f"worst {errs[-1]:.3f} ms  outside max(1 ms, 2%): {len(bad)}")
    tokens = [(x, s) for x, s in pairs if s is not None and x.expected_output_tokens is not None]
    wrong = [(f"{x.method} {x.path} port {x.client[1]}", s["attributes"].get("gen_ai.usage.output_tokens"),
              x.expected_output_tokens) for x, s in tokens
             if s["attributes"].get("gen_ai.usage.output_tokens") != x.expected_output_tokens]
    print(f"output tokens: {len(tokens) - len(wrong)}/{len(tokens)} exact" + (f"; wrong (ours, wire): {wrong[:5]}"
                                                                             if wrong else ""))
    report["tokens"] = {"compared": len(tokens), "wrong": len(wrong)}
    ok &= not wrong
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
