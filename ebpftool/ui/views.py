"""Each tracer's figures as a rich table (live view) and as (figure, value) rows (exit summary)."""
from __future__ import annotations

from functools import singledispatch
from typing import Any

from rich import box
from rich.cells import cell_len
from rich.table import Table
from rich.text import Text

from ebpftool.core.text import printable
from ebpftool.tracers.agents.figures import AgentsSummary, AgentsView
from ebpftool.tracers.gpu.figures import GpuSummary, GpuView
from ebpftool.tracers.inference.figures import InferenceSummary, InferenceView
from ebpftool.tracers.net.figures import NetSummary, NetView
from ebpftool.ui.units import human_bytes, human_seconds


# --- live view ------------------------------------------------------------------------------------
WIDE = 120  # columns from which a view shows more figures (it fits 80)
PERCENTILES_NOTE = "percentiles interpolated within histogram buckets"


def live_view(tracer, width: int = 80) -> Any:
    """The tracer's live table for a terminal this wide, or None when it shows none."""
    figures = tracer.figures()
    return None if figures is None else table_of(figures, width)


@singledispatch
def table_of(figures, width: int = 80) -> Any:
    raise TypeError(f"no view for {type(figures).__name__}")


MIN_TEXT = 6  # columns kept for a text column however narrow the terminal (or its header's, if wider)


def _table(title: str, caption: str, columns: list[tuple[str, str]], rows: list[list[str]], width: int) -> Table:
    """A view's table: one line per row. Figures (right-justified) keep their width; text columns (left-justified:
    names, zone pairs, models) share what is left and end in an ellipsis when it is not enough."""
    rows = [[printable(str(cell)) for cell in r] for r in rows]   # names come from anyone on the node (core/text.py)
    natural = [max([cell_len(name), *(cell_len(r[i]) for r in rows)]) for i, (name, _j) in enumerate(columns)]
    text = [i for i, (_n, justify) in enumerate(columns) if justify == "left"]
    gaps = 2 * len(columns) - 1  # a right padding per column, a blank between two
    left = width - gaps - sum(w for i, w in enumerate(natural) if i not in text)
    widths = dict(enumerate(natural))
    while text and sum(widths[i] for i in text) > left:  # the widest text column gives up a column at a time
        widest = max(text, key=lambda i: widths[i] - max(MIN_TEXT, cell_len(columns[i][0])))
        if widths[widest] <= max(MIN_TEXT, cell_len(columns[widest][0])):
            break  # every text column at its floor: its header's width
        widths[widest] -= 1
    table = Table(title=title, caption=caption, caption_justify="left", box=box.SIMPLE_HEAD, show_edge=False,
                  padding=(0, 1, 0, 0))
    for i, (name, justify) in enumerate(columns):
        table.add_column(name, justify=justify, no_wrap=True, overflow="ellipsis",
                         width=widths[i] if i in text else None, min_width=natural[i] if i not in text else None)
    for r in rows:
        table.add_row(*map(Text, r))   # drawn as they are: no markup read in them (ui/text.py)
    return table


def allocations(n: int) -> str:
    return f"{n:,} allocation" + ("" if n == 1 else "s")


def _rate(x: float) -> str:
    return f"{x:,.1f}" if x < 100 else f"{x:,.0f}"


@table_of.register
def _(v: InferenceView, width: int = 80) -> Table:
    wide = width >= WIDE
    models = any(r.model for r in v.servers)
    pods = any(r.workload != "-" for r in v.servers) and (wide or not models)  # narrow: one of the two
    processes = wide and any(r.process for r in v.servers)
    rows = []
    for r in v.servers:
        t = [human_seconds(x, compact=True) for x in (r.duration_p50, r.duration_p95, r.duration_p99, r.ttft_p50,
                                                      r.ttft_p99, r.tpot_p50)]
        rows.append([str(r.port), *([r.process or "-"] if processes else []), *([r.workload] if pods else []),
                     *([r.model or "-"] if models else []),
                     _rate(r.requests_per_second), "-" if r.error_ratio is None else f"{r.error_ratio:.1%}", t[0],
                     *([t[1]] if wide else []), t[2], t[3], *([t[4]] if wide else []), t[5],
                     _rate(r.tokens_per_second), str(r.streams), *([f"{r.concurrency:.1f}"] if wide else [])])
    return _table(f"ebpftool inference: {v.request_rate:,.0f} requests/s",
                   "per server, last interval; TTFT, TPOT: p50; streams: generative-AI requests under way now"
                   + ("; conc.: requests in flight on average" if wide else "") + "; " + PERCENTILES_NOTE, [
                       ("port", "right"), *([("process", "left")] if processes else []),
                       *([("pod / ctr", "left")] if pods else []),
                       *([("model", "left")] if models else []), ("req/s", "right"), ("errors", "right"),
                       ("p50", "right"), *([("p95", "right")] if wide else []), ("p99", "right"), ("TTFT", "right"),
                       *([("TTFT p99", "right")] if wide else []), ("TPOT", "right"), ("tok/s", "right"),
                       ("streams", "right"), *([("conc.", "right")] if wide else [])], rows, width)


HOURS_PER_MONTH = 730  # 365 * 24 / 12


@table_of.register
def _(v: NetView, width: int = 80) -> Table:
    wide = width >= WIDE
    rows = []
    for r in v.rows:
        pv = r.pair
        top = r.top_processes[:3 if wide else 1]
        rows.append([f"{r.source} -> {r.destination}", human_bytes(pv.rate) + "/s",
                     *([human_bytes(pv.total)] if wide else []),
                     f"{pv.cost:.6f}", f"{pv.cost_per_hour:.4f}",
                     *([f"{pv.cost_per_hour * HOURS_PER_MONTH:.2f}"] if wide else []),
                     human_seconds(pv.rtt_p50, compact=True),
                     *([human_seconds(pv.rtt_p99, compact=True)] if wide else []), str(pv.retransmits),
                     ", ".join(f"{name} {human_bytes(b)}" if wide else name for name, b in top) or "-"])
    return _table("ebpftool net: bytes sent, by zone pair (source -> destination)",
                   "last interval; cost so far; $/hour at the last interval's rate"
                   + ("; a month is 730 hours; " if wide else "; ") + "RTT smoothed, sampled; " + PERCENTILES_NOTE, [
                       ("zone pair", "left"), ("bytes/s", "right"), *([("total", "right")] if wide else []),
                       ("cost $", "right"),
                       ("$/hour", "right"), *([("$/month", "right")] if wide else []), ("RTT p50", "right"),
                       *([("RTT p99", "right")] if wide else []), ("retr.", "right"),
                       ("top processes" if wide else "process", "left")], rows, width)


@table_of.register
def _(v: GpuView, width: int = 80) -> Table:
    wide = width >= WIDE
    rows = []
    for row in v.rows:
        r = row.rates
        leaked = "-" if not row.leaked_allocations else (
            f"{allocations(row.leaked_allocations)}, {human_bytes(row.leaked_bytes)}" if wide
            else human_bytes(row.leaked_bytes))
        rows.append([str(row.pid), row.executable + (" (exited)" if row.exited and wide else ""), _rate(r.calls),
                     f"{r.errors / r.calls:.0%}" if r.calls else "-", f"{r.sync_seconds:.1%}", human_bytes(r.h2d), human_bytes(r.d2h), human_bytes(r.outstanding),
                     leaked])
    return _table("ebpftool gpu: CUDA calls per process",
                   "last interval; errors: calls that returned one; sync: share of time in blocking calls (all "
                   "threads); leaked: unfreed at exit", [
                       ("pid", "right"), ("process", "left"), ("calls/s", "right"), ("errors", "right"), ("sync", "right"),
                       ("H2D/s", "right"), ("D2H/s", "right"), ("outstanding", "right"), ("leaked", "right")],
                  rows, width)


@table_of.register
def _(v: AgentsView, width: int = 80) -> Table:
    rows = [[r.process, _rate(r.calls_per_second), str(r.errors),
             *(human_seconds(x, compact=True) for x in (r.duration_p50, r.duration_p99, r.ttfc_p50)),
             _rate(r.tokens_per_second), f"${r.cost_per_hour:,.2f}"] for r in v.rows]
    return _table(f"ebpftool agents: {v.call_rate:,.1f} LLM calls/s",
                  "per calling process, calls of the last minute; TTFC: time to first chunk of streamed calls, "
                  "p50; cost/h: at that rate, from the price table", [
                      ("process", "left"), ("calls/s", "right"), ("errors", "right"), ("p50", "right"),
                      ("p99", "right"), ("TTFC", "right"), ("tok/s", "right"), ("cost/h", "right")], rows, width)


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
        ("connections in TLS no hooked library read", s.connections_tls_unknown),
        ("connections in HTTP/2", s.connections_h2),
        ("HTTP/2 streams and gRPC calls measured", s.h2_streams),
        ("HTTP/2 connections given up (records lost, bytes unparsed)", s.h2_connections_lost),
        ("HTTP/2 streams open then (not measured)", s.h2_streams_lost),
        ("HTTP/2 streams measured in the kernel after", s.h2_streams_kernel),
        ("HTTP/2 directions whose frames were lost", s.h2_directions_unwalked),
        ("101s before their program loaded (h2c Upgrade not followed)", s.switches_unread),
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
    rows.append(("requests in flight on average", f"{h.concurrency:.2f}"))
    return rows


PAIRS_SHOWN = 3  # zone pairs in the net headline (--summary-json has them all)


@summary_rows.register
def _(s: NetSummary) -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = [
        ("bytes sent across zones", s.bytes_sent_across_zones),
        ("est. cross-zone cost (USD, sent)", s.cross_zone_cost_usd),
    ]
    for p in [p for p in s.pairs if p.bytes_sent][:PAIRS_SHOWN]:
        pair = f"{p.source} -> {p.destination}"
        rows += [(f"sent {pair} (cost)", f"{human_bytes(p.bytes_sent)} (${p.cost_usd:.6f})"),
                 (f"RTT p50 / p99 {pair}", f"{human_seconds(p.rtt_p50)} / {human_seconds(p.rtt_p99)}")]
    rows.append(("TCP retransmits", sum(p.retransmits for p in s.pairs)))
    top: dict[str, int] = {}
    for p in s.pairs:
        for name, b in p.top_processes:
            top[name] = top.get(name, 0) + b
    if top:
        name, b = max(top.items(), key=lambda kv: kv[1])
        rows.append(("top process (bytes sent)", f"{name} ({human_bytes(b)})"))
    rows += [
        ("bytes sent", s.bytes_sent),
        ("zone pairs", s.zone_pairs),
        ("byte and RTT hooks", s.io_hooks),
        ("process series retired (process gone)", s.series_retired),
        ("bytes lost (kernel maps full)", s.bytes_lost),
        *((f"{name} map full (events)", n) for name, n in s.map_full.items()),
    ]
    if s.connection_spans_sent is not None:
        rows.append(("connection spans sent", s.connection_spans_sent))
    return rows


@summary_rows.register
def _(s: GpuSummary) -> list[tuple[str, Any]]:
    k, h = s.kernel, s.headline
    rows: list[tuple[str, Any]] = []
    if k is not None and h is not None:
        rows += [
            ("calls", k.calls),
            ("calls with an error", k.calls_with_error),
            ("calls per second", f"{h.calls_per_second:,.1f}"),
            ("time in blocking calls (share)", f"{human_seconds(h.sync_seconds)} ({h.sync_share:.1%})"),
            ("copied host to device / to host",
             f"{human_bytes(h.bytes_host_to_device)} / {human_bytes(h.bytes_device_to_host)}"),
            ("outstanding at the end", human_bytes(h.outstanding_bytes)),
            ("leaked (exited processes)", f"{allocations(h.leaked_allocations)}, {human_bytes(h.leaked_bytes)}"),
        ]
    rows += [("libraries traced", s.libraries_traced), ("functions probed", s.functions_probed)]
    if k is None:
        return rows
    rows += [
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


@summary_rows.register
def _(s: AgentsSummary) -> list[tuple[str, Any]]:
    return [("LLM calls", s.calls), ("LLM calls with an error", s.calls_failed), ("MCP requests", s.mcp_requests),
            ("input / output tokens", f"{s.input_tokens:,} / {s.output_tokens:,}"),
            ("estimated cost (price table)", f"${s.cost_usd:,.4f}"), ("hooks", s.hooks),
            ("libssl files traced", s.libraries_traced),
            ("Go executables traced (crypto/tls)", s.go_executables_traced if not s.go_tls_refused
             else f"none: {s.go_tls_refused}"),
            ("connections let go (no LLM or MCP call)", s.connections_let_go),
            ("calls given up: events lost", s.calls_lost),
            ("bytes not copied (over the copy bounds)", s.bytes_not_copied)]
