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
import stat
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


# Reading: a recording is streamed line by line, each line bounded, and every record checked against the
# types Recorder writes before it reaches the pipeline (a wrong type would fail in the export thread).
MAX_LINE_BYTES = 64 << 20   # one metric snapshot is one line: at most --max-series series per metric
_INT64 = (-(1 << 63), (1 << 63) - 1)
_UINT64 = (0, (1 << 64) - 1)
_SPAN_FIELDS = {"name", "start_ns", "end_ns", "kind", "attributes", "events", "error", "status_message"}
_POINT_FIELDS = {"name", "kind", "unit", "description", "attributes", "value", "count", "sum", "min", "max",
                 "bucket_counts", "bounds"}


class Refused(ValueError):
    """One record that is not what Recorder writes; the message says why."""


class Refusals:
    """What a replay refused: per kind ("spans", "metric points", ...), how many and the first reason."""

    def __init__(self) -> None:
        self.kinds: dict[str, list] = {}   # kind -> [count, first line number, first reason]

    def add(self, kind: str, line: int, reason: str, n: int = 1) -> None:
        entry = self.kinds.setdefault(kind, [0, line, reason])
        entry[0] += n

    def total(self) -> int:
        return sum(e[0] for e in self.kinds.values())

    def lines(self) -> list[str]:
        return [f"{count} {kind} refused (first at line {line}: {reason})"
                for kind, (count, line, reason) in self.kinds.items()]


def _is_int(v, lo_hi=_INT64) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and lo_hi[0] <= v <= lo_hi[1]


def _is_number(v) -> bool:
    return (_is_int(v) or isinstance(v, float)) and not (isinstance(v, float) and v != v)


def _attributes(v, what: str) -> dict:
    """An OpenTelemetry attribute map: string keys; str, bool, int64, float or a list of one of these."""
    if not isinstance(v, dict):
        raise Refused(f"{what}s must be a mapping, not {type(v).__name__}")
    for k, x in v.items():
        if isinstance(x, list):
            kinds = {type(e) for e in x}
            if len(kinds) > 1 or not all(isinstance(e, (str, bool, float)) or _is_int(e) for e in x):
                raise Refused(f"{what} {k!r} must be a list of values of one type (text, bool, int or float)")
        elif not (isinstance(x, (str, bool, float)) or _is_int(x)):
            raise Refused(f"{what} {k!r} must be text, bool, a 64-bit int or a float, not {type(x).__name__}")
    return v


def _fields(row: dict, allowed: set[str], required: set[str], what: str) -> None:
    unknown = set(row) - allowed
    if unknown:
        raise Refused(f"{what} has unknown field(s) {', '.join(sorted(map(str, unknown)))}")
    missing = required - set(row)
    if missing:
        raise Refused(f"{what} lacks {', '.join(sorted(missing))}")


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise Refused(message)


def span_of(row: dict) -> SpanRecord:
    """A recorded span ({"type": "span", ...} less its type), checked field by field."""
    _fields(row, _SPAN_FIELDS, {"name", "start_ns", "end_ns"}, "span")
    _check(isinstance(row["name"], str), "span name must be text")
    _check(_is_int(row["start_ns"], _UINT64) and _is_int(row["end_ns"], _UINT64),
           "span start_ns and end_ns must be integers from 0 to 2^64-1")
    try:
        kind = SpanKind(row.get("kind", SpanKind.INTERNAL.value))
    except ValueError:
        raise Refused(f"span kind must be one of {', '.join(k.value for k in SpanKind)}") from None
    events = row.get("events", [])
    _check(isinstance(events, list), "span events must be a list")
    evs = []
    for e in events:
        _check(isinstance(e, dict) and set(e) <= {"name", "time_ns", "attributes"} and {"name", "time_ns"} <= set(e),
               "a span event must be a mapping of name, time_ns and attributes")
        _check(isinstance(e["name"], str) and _is_int(e["time_ns"], _UINT64),
               "a span event's name must be text and its time_ns an integer from 0 to 2^64-1")
        evs.append(SpanEvent(e["name"], e["time_ns"], _attributes(e.get("attributes", {}), "event attribute")))
    error, message = row.get("error", False), row.get("status_message", "")
    _check(isinstance(error, bool), "span error must be true or false")
    _check(isinstance(message, str), "span status_message must be text")
    return SpanRecord(row["name"], row["start_ns"], row["end_ns"], kind,
                      _attributes(row.get("attributes", {}), "span attribute"), evs, error, message)


def point_of(p) -> MetricPoint:
    """A recorded metric point, checked field by field."""
    _check(isinstance(p, dict), "a metric point must be a mapping")
    _fields(p, _POINT_FIELDS, {"name", "kind"}, "metric point")
    try:
        kind = Kind(p["kind"])
    except (ValueError, TypeError):
        raise Refused(f"metric kind must be one of {', '.join(k.value for k in Kind)}") from None
    d = {**{f: "" for f in ("unit", "description")}, "attributes": {}, "value": 0, "count": 0, "sum": 0.0,
         "min": 0.0, "max": 0.0, "bucket_counts": [], "bounds": [], **p}
    _check(isinstance(d["name"], str) and d["name"] != "", "metric name must be non-empty text")
    _check(isinstance(d["unit"], str) and isinstance(d["description"], str), "metric unit and description must be text")
    _check(all(_is_number(d[f]) for f in ("value", "sum", "min", "max")),
           f"metric {d['name']}: value, sum, min and max must be numbers")
    _check(_is_int(d["count"], _UINT64), f"metric {d['name']}: count must be an integer >= 0")
    _check(isinstance(d["bucket_counts"], list) and all(_is_int(c, _UINT64) for c in d["bucket_counts"]),
           f"metric {d['name']}: bucket_counts must be a list of integers >= 0")
    _check(isinstance(d["bounds"], list) and all(_is_number(b) for b in d["bounds"]),
           f"metric {d['name']}: bounds must be a list of numbers")
    if kind is Kind.HISTOGRAM:
        _check(len(d["bucket_counts"]) == len(d["bounds"]) + 1,
               f"metric {d['name']}: a histogram needs one bucket count more than bounds")
        _check(all(a < b for a, b in zip(d["bounds"], d["bounds"][1:])), f"metric {d['name']}: bounds must increase")
    return MetricPoint(d["name"], kind, d["unit"], d["description"], _attributes(d["attributes"], "metric attribute"),
                       d["value"], d["count"], d["sum"], d["min"], d["max"], tuple(d["bucket_counts"]),
                       tuple(d["bounds"]))


def _lines(f, path: str) -> Iterator[tuple[int, bytes]]:
    n = 0
    while True:
        line = f.readline(MAX_LINE_BYTES + 1)
        if not line:
            return
        n += 1
        if len(line) > MAX_LINE_BYTES:
            raise EbpftoolError(f"recording {path}, line {n} is longer than {MAX_LINE_BYTES >> 20} MiB: "
                                "not an ebpftool recording")
        yield n, line


def _parse(line: bytes) -> object:
    try:
        return json.loads(line.decode("utf-8"))
    except UnicodeDecodeError:
        raise Refused("not UTF-8 text") from None
    except RecursionError:
        raise Refused("JSON nested too deeply") from None
    except ValueError as exc:
        raise Refused(f"not JSON ({exc})") from None


def read_recording(path: str, refused: Refusals | None = None) -> Iterator[SpanRecord | list[MetricPoint]]:
    """Spans and metric snapshots in recorded order, read line by line.

    The file and its header are checked now (one clear error if it is not a recording); records are
    read as the iterator is consumed. A record that is not what Recorder writes is counted in
    `refused` and skipped, or, without `refused`, is one clear error.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as exc:
        raise EbpftoolError(f"cannot read recording {path}: {exc.strerror}") from exc
    f = os.fdopen(fd, "rb")
    try:
        mode = os.fstat(fd).st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISFIFO(mode)):
            raise EbpftoolError(f"recording {path} is not a regular file")
        lines = _lines(f, path)
        first = next(lines, None)
        if first is None:
            raise EbpftoolError(f"recording {path} is empty")
        try:
            header = _parse(first[1])
        except Refused:
            header = None
        if not isinstance(header, dict) or header.get("type") != "header" or header.get("format") != FORMAT:
            raise EbpftoolError(f"{path} is not an ebpftool recording (its first line is not a {FORMAT} header)")
    except BaseException:
        f.close()
        raise
    return _records(f, lines, path, refused)


def _records(f, lines, path: str, refused: Refusals | None) -> Iterator[SpanRecord | list[MetricPoint]]:
    def refuse(kind: str, n: int, reason: str, count: int = 1) -> None:
        if refused is None:
            raise EbpftoolError(f"recording {path}, line {n}: {reason}")
        refused.add(kind, n, reason, count)

    with f:
        for n, line in lines:
            if not line.strip():
                continue
            try:
                row = _parse(line)
            except Refused as exc:
                refuse("unreadable lines", n, str(exc))
                continue
            kind = row.get("type") if isinstance(row, dict) else None
            if kind == "span":
                try:
                    yield span_of({k: v for k, v in row.items() if k != "type"})
                except Refused as exc:
                    refuse("spans", n, str(exc))
            elif kind == "metrics":
                raw = row.get("points")
                if not isinstance(raw, list) or not _is_int(row.get("time_ns", 0), _UINT64):
                    refuse("metric snapshots", n, "a metric snapshot needs a list of points and an integer time_ns")
                    continue
                points = []
                for p in raw:
                    try:
                        points.append(point_of(p))
                    except Refused as exc:
                        refuse("metric points", n, str(exc))
                if points or not raw:   # a snapshot of nothing but refused points is not replayed
                    yield points
            elif kind == "header" and row.get("format") == FORMAT:
                continue   # a second recording appended to the first: its records follow
            else:
                refuse("records of unknown type", n, "not a span, metric snapshot or header")
