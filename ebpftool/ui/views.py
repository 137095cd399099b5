"""Each tracer's figures as a rich table (live view) and as (figure, value) rows (exit summary)."""
from __future__ import annotations

from functools import singledispatch
from typing import Any

from rich import box
from rich.table import Table

from ebpftool.tracers.gpu.figures import GpuSummary, GpuView
from ebpftool.tracers.inference.figures import InferenceSummary, InferenceView
from ebpftool.tracers.net.figures import NetSummary, NetView
from ebpftool.ui.units import human_bytes, human_seconds


# --- live view ------------------------------------------------------------------------------------
WIDE = 120  # columns from which a view shows more figures (it fits 80)


def live_view(tracer, width: int = 80) -> Any:
    """The tracer's live table for a terminal this wide, or None when it shows none."""
    figures = tracer.figures()
    return None if figures is None else table_of(figures, width)


@singledispatch
def table_of(figures, width: int = 80) -> Any:
    raise TypeError(f"no view for {type(figures).__name__}")


@table_of.register
def _(v: InferenceView, width: int = 80) -> Table:
    wide = width >= WIDE
    table = Table(title=f"ebpftool inference: {v.request_rate:,.0f} requests/s", box=box.SIMPLE_HEAD,
                  caption="per server, last interval; TTFT, TPOT: p50; percentiles interpolated within the "
                          "histograms' buckets")
    columns = ["port", "pod / ctr", "req/s", "errors", "p50", *(["p95"] if wide else []), "p99", "TTFT",
               *(["TTFT p99"] if wide else []), "TPOT", "tok/s"]
    for col in columns:
        table.add_column(col, justify="right")
    for r in v.servers:
        t = [human_seconds(x, compact=True) for x in (r.duration_p50, r.duration_p95, r.duration_p99, r.ttft_p50,
                                                      r.ttft_p99, r.tpot_p50)]
        table.add_row(str(r.port), r.workload, f"{r.requests_per_second:,.1f}",
                      "-" if r.error_ratio is None else f"{r.error_ratio:.1%}", t[0], *([t[1]] if wide else []),
                      t[2], t[3], *([t[4]] if wide else []), t[5], f"{r.tokens_per_second:,.1f}")
    return table


HOURS_PER_MONTH = 730  # 365 * 24 / 12


@table_of.register
def _(v: NetView, width: int = 80) -> Table:
    wide = width >= WIDE
    table = Table(title="ebpftool net: bytes sent, by zone pair (source -> destination)",
                  caption="cost so far; $/hour at the last interval's rate" + ("; a month is 730 hours" if wide else ""))
    columns = [("zone pair", "left"), ("bytes/s", "right"), ("total", "right"), ("cost", "right"),
               ("$/hour", "right"), *([("$/month", "right")] if wide else []),
               ("top processes" if wide else "top process", "left"), ("retrans.", "right")]
    for col, justify in columns:
        table.add_column(col, justify=justify)
    for r in v.rows:
        pv = r.pair
        top = [(name, b) for name, b in r.top_processes if b][:3 if wide else 1]
        table.add_row(f"{r.source} -> {r.destination}", human_bytes(pv.rate) + "/s", human_bytes(pv.total),
                      f"${pv.cost:.6f}", f"{pv.cost_per_hour:.4f}",
                      *([f"{pv.cost_per_hour * HOURS_PER_MONTH:.2f}"] if wide else []),
                      ", ".join(f"{name} {human_bytes(b)}" if wide else name for name, b in top),
                      str(pv.retransmits))
    return table


@table_of.register
def _(v: GpuView, width: int = 80) -> Table:
    table = Table(title="ebpftool gpu: CUDA calls per process")
    for col in ("pid", "process", "calls/s", "time in sync", "H2D/s", "D2H/s", "outstanding"):
        table.add_column(col, justify="left" if col == "process" else "right")
    for row in v.rows:
        r = row.rates
        table.add_row(str(row.pid), row.executable, f"{r.calls:,.0f}", f"{100 * r.sync_seconds:.1f}%",
                      human_bytes(r.h2d), human_bytes(r.d2h), human_bytes(r.outstanding))
    return table


# --- exit summary ---------------------------------------------------------------------------------
@singledispatch
def summary_rows(summary) -> list[tuple[str, Any]]:
    """(figure, value) rows of a tracer's exit summary, in the order shown."""
    if summary is None:
        return []
    raise TypeError(f"no summary rows for {type(summary).__name__}")


@summary_rows.register
def _(s: InferenceSummary) -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = headline_rows(s.headline) + [
        ("hooks", s.hooks),
        ("listening ports watched" if s.watches_ports else "listening sockets watched", s.listeners_watched)]
    optional = [
        ("connections accepted", s.connections_accepted),
        ("connections open at start, found", s.connections_seeded),
        ("connections not followed (table full)", s.connections_untracked),
        ("requests measured", s.requests),
        ("requests left out of metrics (maps full)", s.requests_not_in_metrics),
        ("requests closed without a response", s.requests_without_response),
        ("connections not HTTP/1.x (unparsed)", s.connections_unparsed),
        ("connections in TLS", s.connections_tls),
        ("TLS libraries hooked", s.tls_libraries),
        ("spans sent", s.spans_sent),
    ]
    return rows + [(k, v) for k, v in optional if v is not None]


def headline_rows(h) -> list[tuple[str, Any]]:
    """The inference headline (figures.InferenceHeadline) first: what a person asks of a run."""
    if h is None:
        return []
    rows: list[tuple[str, Any]] = [
        ("requests (errors: 5xx, no answer)", f"{h.requests:,} ({h.errors:,}, "
                                              f"{h.errors / h.requests if h.requests else 0:.1%})"),
        ("duration p50 / p95 / p99", " / ".join(human_seconds(v) for v in (h.duration_p50, h.duration_p95,
                                                                            h.duration_p99)))]
    if h.gen_ai_requests:
        rows += [("time to first token p50 / p99", f"{human_seconds(h.ttft_p50)} / {human_seconds(h.ttft_p99)}"),
                 ("time per output token p50", human_seconds(h.tpot_p50)),
                 ("output tokens (per second)", f"{h.output_tokens:,} ({h.tokens_per_second:,.1f}/s)")]
    return rows


@summary_rows.register
def _(s: NetSummary) -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = [
        ("byte and RTT hooks", s.io_hooks),
        ("bytes sent", s.bytes_sent),
        ("bytes sent across zones", s.bytes_sent_across_zones),
        ("est. cross-zone cost (USD, sent)", s.cross_zone_cost_usd),
        ("zone pairs", s.zone_pairs),
        ("process series retired (process gone)", s.series_retired),
        ("bytes lost (kernel maps full)", s.bytes_lost),
        *((f"{name} map full (events)", n) for name, n in s.map_full.items()),
    ]
    if s.connection_spans_sent is not None:
        rows.append(("connection spans sent", s.connection_spans_sent))
    return rows


@summary_rows.register
def _(s: GpuSummary) -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = [("libraries traced", s.libraries_traced), ("functions probed", s.functions_probed)]
    k = s.kernel
    if k is None:
        return rows
    rows += [
        ("calls", k.calls),
        ("calls with an error", k.calls_with_error),
        ("bytes host to device", k.bytes_host_to_device),
        ("bytes device to host", k.bytes_device_to_host),
        ("unfreed allocations", k.unfreed_allocations),
        ("unfreed bytes", k.unfreed_bytes),
        *((f"unfreed by pid {u.pid} ({u.executable}, {'exited' if u.exited else 'running'})",
           f"{u.allocations} allocations, {u.bytes} B") for u in k.unfreed_by),
        ("unmatched returns", k.unmatched_returns),
        ("calls nested too deep (not measured)", k.calls_too_deep),
        ("allocations not remembered (map full)", k.allocations_not_remembered),
        ("calls not in the histograms (map full)", k.calls_not_in_histograms),
        ("allocations at a remembered address", k.allocations_at_remembered_address),
    ]
    return rows
