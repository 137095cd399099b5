"""`record` and `replay`: the pipeline's inputs (spans and metric snapshots) saved as JSON lines.

What is recorded is what would be exported, after the tracers removed
secrets: no header values, bodies or query strings ever reach this file. The
file is created new (never appended to, never through a symlink), readable by
its owner only; a write that fails (a full disk) is said once and counted.
"""
from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from dataclasses import asdict
from typing import Iterator

from ebpftool.errors import EbpftoolError
from ebpftool.export.model import Kind, MetricPoint, SpanEvent, SpanKind, SpanRecord
from ebpftool.export.sinks import create_private, write_failure

FORMAT = "ebpftool-recording/1"


class Recorder:
    def __init__(self, path: str, overwrite: bool = False) -> None:
        self.path = path
        self.write_error: str | None = None
        self.writes_failed = 0  # spans and snapshots not recorded (after a failed write)
        self._file = create_private(path, overwrite)
        self._lock = threading.Lock()
        self._write({"type": "header", "format": FORMAT, "time_ns": time.time_ns()})
        if self.write_error:
            self.close()
            with contextlib.suppress(OSError):
                os.unlink(path)  # ours (just created): nothing of it is left behind
            raise EbpftoolError(self.write_error)

    def _write(self, obj: dict) -> None:
        with self._lock:
            if self._file.closed:
                return
            if self.write_error is not None:
                self.writes_failed += 1
                return
            try:
                self._file.write(json.dumps(obj, default=str) + "\n")
            except OSError as exc:  # a full disk: said once, counted, never raised into the tracing loop
                self.write_error = write_failure(self.path, exc)
                self.writes_failed += 1

    def on_span(self, rec: SpanRecord) -> None:
        d = asdict(rec)
        d["kind"] = rec.kind.value
        self._write({"type": "span", **d})

    def on_metrics(self, points: list[MetricPoint]) -> None:
        rows = []
        for p in points:
            d = asdict(p)
            d["kind"] = p.kind.value
            rows.append(d)
        self._write({"type": "metrics", "time_ns": time.time_ns(), "points": rows})

    def close(self) -> None:
        with self._lock:
            if self._file.closed:
                return
            try:
                self._file.close()
            except OSError as exc:
                self.write_error = self.write_error or write_failure(self.path, exc)


def read_recording(path: str) -> Iterator[SpanRecord | list[MetricPoint]]:
    """Yield spans and metric snapshots in recorded order; a bad file is one clear error."""
    try:
        f = open(path)
    except OSError as exc:
        raise EbpftoolError(f"cannot read recording {path}: {exc.strerror}") from exc
    with f:
        for n, line in enumerate(f, 1):
            try:
                row = json.loads(line)
                if n == 1:
                    if row.get("format") != FORMAT:
                        raise ValueError("not an ebpftool recording")
                    continue
                if row["type"] == "span":
                    row.pop("type")
                    row["kind"] = SpanKind(row["kind"])
                    row["events"] = [SpanEvent(**e) for e in row["events"]]
                    yield SpanRecord(**row)
                elif row["type"] == "metrics":
                    yield [MetricPoint(**{**p, "kind": Kind(p["kind"]), "bucket_counts": tuple(p["bucket_counts"]),
                                          "bounds": tuple(p["bounds"])}) for p in row["points"]]
            except (ValueError, KeyError, TypeError) as exc:
                raise EbpftoolError(f"recording {path}, line {n}: {exc}") from exc
