#!/usr/bin/env python3
"""What `ebpftool inference` reported of gRPC calls against the wire and the client, for a run outside CI.

    python3 scripts/compare_grpc_wire.py --port P DIR/wire.pcap DIR/spans.jsonl [--client DIR/grpc_client.jsonl]
                                         [--json OUT] [--dropped N]

wire.pcap: tcpdump on lo of the gRPC port (nanosecond timestamps); spans.jsonl: `ebpftool inference --port P
--jsonl FILE` (spans and metric points); grpc_client.jsonl: scripts/drive_triton_grpc.py's log of its calls.

The truth: each TCP connection of the capture reassembled by sequence number (tests/wire.py), its two
directions fed, run by run in the order they were on the wire with the time of the segment that first carried
each run, to ebpftool's own HTTP/2 parser (http2.Connection: tested on RFC vectors and grpcio), so the frames,
HPACK, trailers and 5-byte message prefixes come from the wire's bytes, not from the kernel's records. Each
call on the wire starts at the segment holding its request HEADERS' first byte and ends at the one holding
its END_STREAM (trailers) or RST_STREAM; its status is the trailers' grpc-status, or the one gRPC's spec gives
the RST_STREAM's code (a client's CANCEL: CANCELLED), or, where the server's trailers crossed the client's reset
on the wire, the trailers' (the server wrote them before it read the reset). Spans are paired with calls by
client port and method, nearest in start and end.

Checked exactly: one span per call, method, status, messages per call; the metrics' latest points
(rpc.server.call.duration counts by method and status, ebpftool.rpc.server.responses_per_rpc sum,
ebpftool.rpc.server.time_to_first_message count); with --client, the client's statuses and responses against
the wire's and its times around them. Times (ms): span start vs the HEADERS' first byte, span end vs the
END_STREAM, duration, time to first message vs the wire's: median, p99 and worst of |error| and the median
signed error, per method. Exit 1 when anything exact differs, a time is outside max(1 ms, 2%) (start: 1 ms),
or the capture dropped packets.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchlib import jsonl_records, latest_metric_points  # noqa: E402
from ebpftool.tracers.inference import http2  # noqa: E402
from ebpftool.tracers.inference.h2_streams import asked_at, grpc_status_name  # noqa: E402
from tests import wire  # noqa: E402

MS = 1e6
# A call ended by RST_STREAM before its trailers: the status gRPC gives it, written here from the spec
# (grpc/doc/PROTOCOL-HTTP2.md, "Errors": CANCEL is the call's cancellation, REFUSED_STREAM unavailable, ...;
# STREAM_CLOSED has none), not taken from ebpftool.
SPEC_RST_STREAM = {7: "UNAVAILABLE", 8: "CANCELLED", 11: "RESOURCE_EXHAUSTED", 12: "PERMISSION_DENIED"}


def status_on_wire(s: http2.H2Stream) -> str:
    if s.grpc_status is None and s.end_reason == "rst_stream" and s.rst_error is not None:
        if s.rst_error in SPEC_RST_STREAM:
            return SPEC_RST_STREAM[s.rst_error]
        if s.rst_error <= 12 and s.rst_error != 5:
            return "INTERNAL"
    return grpc_status_name(s.grpc_status)
CALL_DURATION = "rpc.server.call.duration"
PER_RPC = "ebpftool.rpc.server.responses_per_rpc"
TTFM = "ebpftool.rpc.server.time_to_first_message"


@dataclass
class Call:
    client_port: int
    stream_id: int
    method: str
    status: str
    messages: int
    messages_lost: bool
    start: int            # ns, the segment holding the first byte of the request's HEADERS
    first: int | None     # the segment holding the first response message's first byte
    end: int | None       # the segment holding the END_STREAM (trailers), RST_STREAM or GOAWAY
    end_reason: str | None
    response_start: int | None = None   # the segment holding the first byte of the response's HEADERS
    asked: int | None = None   # when it asked for its first answer (h2_streams.asked_at: time to first message's start)

    def describe(self) -> str:
        return f"{self.method.rsplit('/', 1)[-1]} port {self.client_port} stream {self.stream_id}"


class WireConnection(http2.Connection):
    """http2.Connection that also keeps the trailers a server sent on a stream the client had already reset:
    a race (a deadline: the client's RST_STREAM and the server's DEADLINE_EXCEEDED cross on the wire). The
    server wrote them before it read the reset, so for the server the call ended with them."""

    def __init__(self) -> None:
        super().__init__()
        self.reset: dict[int, http2.H2Stream] = {}     # stream id -> a call the client's RST_STREAM ended
        self.late: dict[int, tuple[int, int]] = {}    # stream id -> (grpc-status, time) of trailers after it
        self._fields: list = []
        decode = self.decoders[http2.SERVER].decode

        def keep(block: bytes, wanted=None) -> list:
            self._fields = decode(block, wanted)
            return self._fields
        self.decoders[http2.SERVER].decode = keep

    def _finish(self, s, ts, reason, done) -> None:
        if reason == "rst_stream" and s.rst_by == http2.CLIENT:
            self.reset[s.stream_id] = s
        super()._finish(s, ts, reason, done)

    def _header_block(self, sender, block, end_ts, done) -> None:
        super()._header_block(sender, block, end_ts, done)
        if sender == http2.SERVER and block.stream_id in self.reset and block.end_stream:
            status = dict(self._fields).get(b"grpc-status")
            if status is not None and status.isdigit():
                self.late[block.stream_id] = (int(status), end_ts)


def wire_calls(pcap: bytes, port: int) -> tuple[list[Call], list[str]]:
    """The gRPC calls of every connection to port in the capture, and what could not be decoded."""
    calls, problems = [], []
    for c in wire.connections(wire.segments(pcap), port):
        pieces = [(ts, 0, http2.CLIENT, c.up.data[a:b]) for a, b, ts in c.up.runs()]
        pieces += [(ts, 1, http2.SERVER, c.down.data[a:b]) for a, b, ts in c.down.runs()]
        if c.up.gap or c.down.gap:
            problems.append(f"connection from port {c.client[1]}: bytes missing from the capture")
        h2 = WireConnection()
        ended: list[http2.H2Stream] = []
        try:
            for ts, _, sender, data in sorted(pieces, key=lambda p: (p[0], p[1])):
                ended += h2.feed(sender, data, ts)
        except http2.H2Error as e:
            problems.append(f"connection from port {c.client[1]}: not HTTP/2 this parser follows ({e})")
        ended += [s for s in h2.close() if s.request_start_ns is not None]
        for s in ended:
            if s.request_start_ns is None or not s.grpc:
                continue
            status, end, reason = status_on_wire(s), s.end_ns, s.end_reason
            if s.stream_id in h2.late:
                code, end = h2.late[s.stream_id]
                status, reason = grpc_status_name(code), "trailers_after_reset"
            calls.append(Call(c.client[1], s.stream_id, s.path.lstrip("/") if s.path else "?", status,
                              s.response_messages, s.messages_lost, s.request_start_ns, s.first_message_ns,
                              end, reason, s.response_start_ns, asked_at(s)))
    calls.sort(key=lambda x: (x.start, x.client_port, x.stream_id))
    return calls, problems


def latest_points(recs: list[dict], port: int) -> dict[str, list[dict]]:
    """metric name -> its latest point per attribute set, for the port (cumulative: the last is the total)."""
    return latest_metric_points(recs, lambda r: r.get("attributes", {}).get("server.port") == port)


def pair(calls: list[Call], spans: list[dict]) -> tuple[list[tuple[Call, dict | None]], list[dict]]:
    """Each call with the span of its client port and method nearest in start and end (calls at once on one
    connection may begin in one read: their spans then start at the same time)."""
    free: dict[int, list[dict]] = defaultdict(list)
    for s in sorted(spans, key=lambda s: s["start_time_unix_nano"]):
        free[s["attributes"].get("client.port")].append(s)
    out = []
    for x in calls:
        mine = [s for s in free.get(x.client_port, []) if s["attributes"].get("rpc.method") == x.method] \
            or free.get(x.client_port, [])
        best = min(mine, key=lambda s: abs(s["start_time_unix_nano"] - x.start)
                   + abs(s["end_time_unix_nano"] - (x.end or x.start)), default=None)
        if best is not None:
            free[x.client_port].remove(best)
        out.append((x, best))
    return out, [s for ss in free.values() for s in ss]


def inside(x: Call, r: dict, until_end: bool = True) -> bool:
    """The wire's call began, sent its first message and ended within what the client saw of it."""
    return (r["start"] <= x.start and (not until_end or (x.end is not None and x.end <= r["end"]))
            and (r["first"] is None or x.first is None or x.first <= r["first"]))


def client_check(calls: list[Call], path: Path) -> dict:
    """Each call the client logged matched to the wire's call of its method that began within the client's
    wait: the status and responses the client got against the wire's, and the wire's times inside the client's."""
    client = sorted(jsonl_records(path), key=lambda r: r["start"])
    free = list(calls)
    wrong, unmatched, outside, ended = [], [], [], []
    for r in client:
        # Calls at once overlap (and their threads start in any order): among the wire's calls of the method
        # that began within the client's wait, prefer those whose first message and end came before the
        # client's, then the nearest in first message and end.
        near = [x for x in free if x.method == r["method"] and r["start"] <= x.start <= r["end"]]
        x = min(near, key=lambda x: (not inside(x, r), abs(r["end"] - (x.end or x.start))
                                     + abs((r["first"] or 0) - (x.first or 0))), default=None)
        if x is None:
            unmatched.append(f"{r['kind']} {r['method']} at {r['start']}")
            continue
        free.remove(x)
        if r.get("client_ended"):   # cancelled or past its deadline: the client's status is its own
            ended.append((r["kind"], (r["status"], r["responses"]), (x.status, x.messages, x.end_reason)))
        elif (r["status"], r["responses"]) != (x.status, x.messages):
            wrong.append((r["kind"], (r["status"], r["responses"]), (x.status, x.messages)))
        if not inside(x, r, until_end=not r.get("client_ended")):   # the client stops waiting at its deadline
            outside.append((r["kind"], x.describe()))
    print(f"client: {len(client)} calls logged, {len(client) - len(unmatched)} found on the wire, "
          f"{len(free)} wire calls the client did not log; status and responses: {len(wrong)} differ"
          + (f" (kind, client's, wire's) {wrong[:5]}" if wrong else "")
          + f"; wire times outside the client's wait: {len(outside)}" + (f" {outside[:3]}" if outside else ""))
    if ended:
        print(f"  ended by the client (kind, client's status and responses, wire's and how it ended): {ended}")
    return {"logged": len(client), "unmatched": unmatched, "wire_not_logged": [x.describe() for x in free],
            "wrong": wrong, "times_outside": outside, "client_ended": ended}


def figures(pairs) -> dict[tuple[str, str], list[tuple[float, float | None]]]:
    """(figure, method) -> [(ebpftool minus the wire, the wire's own figure or None for start)] in ms; the
    bound of each is max(1 ms, 2% of the wire's figure; for the end, of the wire's duration), start 1 ms."""
    rows: dict[tuple[str, str], list[tuple[float, float | None]]] = defaultdict(list)
    for x, s in pairs:
        if s is None:
            continue
        m = x.method.rsplit("/", 1)[-1]
        start, end = s["start_time_unix_nano"], s["end_time_unix_nano"]
        rows["start", m].append(((start - x.start) / MS, None))
        if x.end is not None:
            rows["end", m].append(((end - x.end) / MS, (x.end - x.start) / MS))
            rows["duration", m].append((((end - start) - (x.end - x.start)) / MS, (x.end - x.start) / MS))
        ttfm = s["attributes"].get(TTFM)
        if x.first is not None and ttfm is not None:
            rows["time to first message", m].append((ttfm * 1e3 - (x.first - x.asked) / MS, (x.first - x.asked) / MS))
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, required=True, help="the gRPC port traced and captured")
    ap.add_argument("pcap", type=Path)
    ap.add_argument("spans", type=Path)
    ap.add_argument("--client", type=Path, help="grpc_client.jsonl of scripts/drive_triton_grpc.py")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("--dropped", type=int, default=0, help="packets tcpdump says the kernel dropped (exit 1)")
    args = ap.parse_args()
    for f in (args.pcap, args.spans, args.client):
        if f is not None and not f.is_file():
            sys.exit(f"compare_grpc_wire: {f} is not a file")
    try:
        calls, problems = wire_calls(args.pcap.read_bytes(), args.port)
    except ValueError as e:
        sys.exit(f"compare_grpc_wire: {args.pcap} is not a capture this reads ({e})")
    recs = jsonl_records(args.spans)
    spans = [r for r in recs if r.get("type") == "span" and r["attributes"].get("rpc.system.name") == "grpc"
             and r["attributes"].get("server.port") == args.port]
    ok = not args.dropped and not problems
    if args.dropped:
        print(f"the capture dropped {args.dropped} packets (tcpdump): the wire's truth is incomplete")
    for p in problems:
        print(p)
    pairs, extra = pair(calls, spans)
    lost = [x for x, s in pairs if s is None]
    print(f"{len(calls)} gRPC calls on the wire on {len({x.client_port for x in calls})} connections "
          f"({dict(Counter(x.method.rsplit('/', 1)[-1] for x in calls))}), {len(calls) - len(lost)} with a span; "
          f"{len(spans)} spans, {len(extra)} for no call" + (f"; no span for {[x.describe() for x in lost[:5]]}" if lost else ""))
    ok &= not lost and not extra
    wrong = []
    for x, s in pairs:
        if s is None:
            continue
        a = s["attributes"]
        ours = (a.get("rpc.method"), a.get("rpc.response.status_code"), a.get("ebpftool.rpc.response_messages"))
        if ours != (x.method, x.status, x.messages):
            wrong.append((x.describe(), ours, (x.method, x.status, x.messages)))
    print(f"method, status, messages per call: {len(pairs) - len(lost) - len(wrong)}/{len(pairs) - len(lost)} exact"
          + (f"; wrong (call, ebpftool's, wire's): {wrong[:6]}" if wrong else ""))
    ok &= not wrong
    report: dict = {"capture_dropped": args.dropped, "problems": problems, "calls": len(calls), "spans": len(spans),
                    "without_span": [x.describe() for x in lost], "spans_for_no_call": len(extra),
                    "wrong": wrong, "by_method_status": {}, "figures": {}}
    # Metrics: the latest cumulative points against every call on the wire.
    points = latest_points(recs, args.port)
    counted = {(p["attributes"].get("rpc.method"), p["attributes"].get("rpc.response.status_code")): p["count"]
               for p in points.get(CALL_DURATION, [])}
    expected = Counter((x.method, x.status) for x in calls)
    per_rpc = sum(p["sum"] for p in points.get(PER_RPC, []))
    per_rpc_wire = sum(x.messages for x in calls if not x.messages_lost)
    ttfm_n = sum(p["count"] for p in points.get(TTFM, []))
    ttfm_wire = sum(1 for x in calls if x.first is not None)
    print(f"{CALL_DURATION} counts by (method, status): " + ", ".join(
        f"{m.rsplit('/', 1)[-1]} {st}: ebpftool {counted.get((m, st), 0)} wire {n}" for (m, st), n in sorted(expected.items()))
        + ("" if set(counted) <= set(expected) else f"; ebpftool only: {set(counted) - set(expected)}"))
    print(f"{PER_RPC} sum: ebpftool {per_rpc:g}, wire {per_rpc_wire}; {TTFM} count: ebpftool {ttfm_n}, wire {ttfm_wire}")
    ok &= counted == dict(expected) and per_rpc == per_rpc_wire and ttfm_n == ttfm_wire
    report["metrics"] = {"call_duration_counts": {f"{m} {st}": n for (m, st), n in counted.items()},
                         "wire_counts": {f"{m} {st}": n for (m, st), n in expected.items()},
                         "responses_per_rpc_sum": per_rpc, "wire_messages": per_rpc_wire,
                         "ttfm_count": ttfm_n, "wire_calls_with_a_message": ttfm_wire}
    for (name, method), rows in sorted(figures(pairs).items()):
        errs = [e for e, _ in rows]
        abs_errs = sorted(abs(e) for e in errs)
        p99 = abs_errs[min(len(abs_errs) - 1, int(0.99 * len(abs_errs)))]
        bad = [e for e, truth in rows if abs(e) > max(1.0, 0.02 * (truth or 0))]
        ok &= not bad
        row = {"n": len(errs), "median_ms": statistics.median(abs_errs), "p99_ms": p99, "worst_ms": abs_errs[-1],
               "signed_median_ms": statistics.median(errs), "outside": len(bad)}
        report["figures"][f"{name} {method}"] = row
        print(f"{name:22s} {method:16s} n={len(errs):3d}  |error| median {row['median_ms']:.3f} ms  p99 {p99:.3f} ms"
              f"  worst {row['worst_ms']:.3f} ms  signed median {row['signed_median_ms']:+.3f} ms  outside: {len(bad)}")
    if args.client:
        c = client_check(calls, args.client)
        report["client"] = c
        ok &= not (c["unmatched"] or c["wire_not_logged"] or c["wrong"] or c["times_outside"])
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    print("agrees" if ok else "DIFFERS")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
