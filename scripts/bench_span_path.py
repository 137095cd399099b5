#!/usr/bin/env python3
"""What one span costs the tracer's process, step by step, on records the kernel really sent.

    sudo /opt/ebpftool/venv/bin/python scripts/bench_span_path.py [--spans 5000] [--repeat 5]

First the inference tracer runs in this process, as `ebpftool inference --port P` builds it, while wrk loads
nginx (one worker, small file), with a span budget high enough that --spans requests' ring-buffer records
are kept as the kernel sent them. Then each step of a span's way out runs over those records, alone, timed by
the CPU time of the thread that runs it (time.thread_time: what the step costs the process, whatever else the
machine does), the best of --repeat passes:
  record -> span      the tracer's callback: the records decoded, the captures joined and parsed (SpanRecord)
  span -> SDK span    ebpftool.export.pipeline.to_readable_span (the OpenTelemetry SDK's ReadableSpan)
  jsonl               the JSONL sink's export, batches of the pipeline's size, into a file
  otlp encode (SDK)   the SDK's encoding of a batch into the OTLP protobuf request, serialized
  otlp encode         the same request written by ebpftool.export.otlp_spans (what the exporters send)
  otlp-http, -grpc    the sink's export to a real receiver (tests/otlp_receiver.py, in this process: its
                      own decoding runs in its threads, not counted), bytes counted as the pipeline does
Figures in microseconds per span. Not part of the test suite.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_inference import InProcessTracer, start_wrk  # noqa: E402
from tests.otlp_receiver import GrpcReceiver, HttpReceiver  # noqa: E402
from tests.servers.nginx import nginx_server  # noqa: E402
from ebpftool.export.otel import build_resource  # noqa: E402
from ebpftool.export.pipeline import SPAN_BATCH_SIZE, to_readable_span  # noqa: E402
from ebpftool.export.otlp_spans import serialized_spans  # noqa: E402
from ebpftool.export.sinks import jsonl_sink, otlp_sink  # noqa: E402
from ebpftool.tracers.inference.tracer import InferenceTracer  # noqa: E402


class Collect:
    """Stands in for the pipeline where the tracer hands its spans over."""

    def __init__(self) -> None:
        self.spans = []

    def emit_span(self, span) -> None:
        self.spans.append(span)


def capture(spans: int) -> tuple[InferenceTracer, list[bytes]]:
    """The tracer after a loaded run, and the ring-buffer records of its first `spans` requests."""
    records: list[bytes] = []
    ends = [0]
    callback = InferenceTracer._on_event

    def keep(self, data: bytes) -> None:
        if ends[0] < spans:
            records.append(bytes(data))
            ends[0] += int.from_bytes(data[:4], "little") == keep.request_kind
        callback(self, data)

    from ebpftool.tracers.inference.records import H
    keep.request_kind = H["EVENT_REQUEST"]
    InferenceTracer._on_event = keep
    try:
        with nginx_server(workers=1) as port:
            tracer = InProcessTracer(port, span_rate=1_000_000)
            deadline = time.monotonic() + 60
            while ends[0] < spans and time.monotonic() < deadline:
                start_wrk(port, 1).wait()
            tracer.stop()
    finally:
        InferenceTracer._on_event = callback
    if ends[0] < spans:
        raise SystemExit(f"only {ends[0]} requests' records in 60 s")
    return tracer.tracer, records


def timed(step, repeat: int) -> float:
    """The least thread CPU time of `repeat` runs of step(), in seconds."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.thread_time()
        step()
        best = min(best, time.thread_time() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--spans", type=int, default=5000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    tracer, records = capture(args.spans)
    collect = Collect()
    tracer.telemetry = collect

    def to_records() -> None:
        collect.spans.clear()
        tracer._pending.clear()
        for data in records:
            tracer._on_event(data)

    rows = [("record -> span", timed(to_records, args.repeat))]
    spans = list(collect.spans)
    n = len(spans)
    resource = build_resource(None, None, None)
    rows.append(("span -> SDK span", timed(lambda: [to_readable_span(s, resource) for s in spans], args.repeat)))
    sdk = [to_readable_span(s, resource) for s in spans]
    batches = [sdk[i:i + SPAN_BATCH_SIZE] for i in range(0, n, SPAN_BATCH_SIZE)]

    def export_all(sink) -> None:
        for batch in batches:
            sink.spans.export(batch)
            if sink.span_bytes:
                sink.span_bytes(batch)

    with tempfile.TemporaryDirectory() as tmp:
        jsonl = jsonl_sink(os.path.join(tmp, "spans.jsonl"), resource.attributes)
        rows.append(("jsonl", timed(lambda: export_all(jsonl), args.repeat)))
        jsonl.spans.shutdown()
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    rows.append(("otlp encode (SDK)", timed(lambda: [encode_spans(b).SerializePartialToString() for b in batches], args.repeat)))
    rows.append(("otlp encode", timed(lambda: [serialized_spans(b) for b in batches], args.repeat)))
    for name, receiver_type, protocol in (("otlp-http", HttpReceiver, "http/protobuf"), ("otlp-grpc", GrpcReceiver, "grpc")):
        receiver = receiver_type()
        sink = otlp_sink(receiver.endpoint, protocol)
        try:
            rows.append((name, timed(lambda: export_all(sink), args.repeat)))
        finally:
            sink.spans.shutdown()
            receiver.stop()
    print(f"{n} spans from {len(records)} ring-buffer records; CPU time per span, best of {args.repeat}:")
    for name, seconds in rows:
        print(f"  {name:18s} {seconds / n * 1e6:7.2f} us")


if __name__ == "__main__":
    main()
