#!/usr/bin/env python3
"""Writes deploy/grafana/ebpftool-dashboard.json: a Grafana dashboard over the Prometheus / VictoriaMetrics
names ebpftool exports (docs/telemetry.md), for inference servers, zones and GPUs, and the tool's own health.

    python3 scripts/grafana_dashboard.py            # rewrite the JSON
    python3 scripts/grafana_dashboard.py --check    # exit 1 if the JSON is not what this script writes

Every panel's queries are run against a real VictoriaMetrics fed by `ebpftool demo` in
tests/test_dashboard.py. A rate or ratio that may have no series (no error, no retransmit yet) is written
`... or (<a series that exists> * 0)` so that it shows 0 instead of "no data".
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "deploy" / "grafana" / "ebpftool-dashboard.json"
RATE = "$__rate_interval"
SEL = 'instance=~"$node"'
SERVER = f'{SEL},server_port=~"$server"'
ZONE = f'{SEL},source_cloud_availability_zone=~"$zone"'

HTTP = "http_server_request_duration_seconds"
TTFT = "gen_ai_server_time_to_first_token_seconds"
TPOT = "gen_ai_server_time_per_output_token_seconds"
PAIR = "source_cloud_availability_zone, destination_cloud_availability_zone"
PROCESS = "process_pid, process_executable_name"
MODEL = "gen_ai_response_model"   # the model the answers name (bpf/inference/model.bpf.h)


def quantiles(metric: str, selector: str, by: str, qs=(0.5, 0.95, 0.99)) -> list[tuple[str, str]]:
    return [(f"histogram_quantile({q}, sum by (le, {by}) (rate({metric}_bucket{{{selector}}}[{RATE}])))",
             f"p{round(q * 100)} " + " ".join(f"{{{{{label.strip()}}}}}" for label in by.split(","))) for q in qs]


# (section, [(title, unit, [(query, legend)])])
SECTIONS = [
    ("Inference servers", [
        ("Requests per second", "reqps", [
            (f"sum by (server_port) (rate({HTTP}_count{{{SERVER}}}[{RATE}]))", "{{server_port}}")]),
        ("Error ratio (5xx, no answer)", "percentunit", [
            (f'(sum by (server_port) (rate({HTTP}_count{{{SERVER},error_type!=""}}[{RATE}])) '
             f"or (sum by (server_port) (rate({HTTP}_count{{{SERVER}}}[{RATE}])) * 0)) "
             f"/ sum by (server_port) (rate({HTTP}_count{{{SERVER}}}[{RATE}]))", "{{server_port}}")]),
        ("Request duration", "s", quantiles(HTTP, SERVER, "server_port")),
        ("Time to first token", "s", quantiles(TTFT, SERVER, f"server_port, {MODEL}", (0.5, 0.99))),
        ("Time per output token", "s", quantiles(TPOT, SERVER, f"server_port, {MODEL}", (0.5, 0.99))),
        ("Output tokens per second, by server and model", "short", [
            (f"sum by (server_port, {MODEL}) "
             f"(rate(ebpftool_gen_ai_server_output_tokens_total{{{SERVER}}}[{RATE}]))",
             "{{server_port}} {{gen_ai_response_model}}")]),
    ]),
    ("Network across zones", [
        ("Bytes sent per second, by zone pair", "Bps", [
            (f'sum by ({PAIR}) (rate(ebpftool_network_flow_io_bytes_total{{{ZONE},network_io_direction="transmit"}}'
             f"[{RATE}]))", "{{source_cloud_availability_zone}} -> {{destination_cloud_availability_zone}}")]),
        ("Cross-zone cost per hour (USD)", "currencyUSD", [
            (f"sum by ({PAIR}) (rate(ebpftool_network_cross_zone_cost_usd_total{{{ZONE}}}[{RATE}])) * 3600",
             "{{source_cloud_availability_zone}} -> {{destination_cloud_availability_zone}}")]),
        ("Top processes by bytes sent", "Bps", [
            (f'topk(10, sum by ({PROCESS}) (rate(ebpftool_network_flow_io_bytes_total{{{ZONE},'
             f'network_io_direction="transmit"}}[{RATE}])))', "{{process_executable_name}} {{process_pid}}")]),
        ("Retransmitted segments per second", "short", [
            (f"sum by ({PAIR}) (rate(ebpftool_network_tcp_retransmits_total{{{ZONE}}}[{RATE}])) "
             f"or (sum by ({PAIR}) (rate(ebpftool_network_tcp_segments_total{{{ZONE}}}[{RATE}])) * 0)",
             "{{source_cloud_availability_zone}} -> {{destination_cloud_availability_zone}}")]),
        ("TCP round-trip time", "s", quantiles("ebpftool_network_tcp_rtt_seconds", ZONE, PAIR, (0.5, 0.99))),
    ]),
    ("GPU (CUDA)", [
        ("CUDA calls per second, by process", "short", [
            (f"sum by ({PROCESS}) (rate(ebpftool_gpu_cuda_calls_total{{{SEL}}}[{RATE}]))",
             "{{process_executable_name}} {{process_pid}}")]),
        ("Share of time in synchronisation", "percentunit", [
            (f'sum by ({PROCESS}) (rate(ebpftool_gpu_cuda_call_duration_seconds_sum{{{SEL},'
             f'ebpftool_gpu_cuda_function=~".*Synchronize"}}[{RATE}]))', "{{process_executable_name}} {{process_pid}}")]),
        ("Copies per second, by direction", "Bps", [
            (f"sum by (ebpftool_gpu_cuda_memcpy_direction) (rate(ebpftool_gpu_cuda_memcpy_bytes_total{{{SEL}}}[{RATE}]))",
             "{{ebpftool_gpu_cuda_memcpy_direction}}")]),
        ("Device memory requested per second", "Bps", [
            (f"sum by ({PROCESS}) (rate(ebpftool_gpu_cuda_memory_requested_bytes_total{{{SEL}}}[{RATE}]))",
             "{{process_executable_name}} {{process_pid}}")]),
        ("Device memory held", "bytes", [
            (f"sum by ({PROCESS}) (ebpftool_gpu_cuda_memory_outstanding_bytes{{{SEL}}})",
             "{{process_executable_name}} {{process_pid}}")]),
    ]),
    ("ebpftool itself", [
        ("Events lost, spans not sampled, spans dropped (per second)", "short", [
            (f"sum by (ebpftool_tracer) (rate(ebpftool_events_lost_total{{{SEL}}}[{RATE}]))", "lost {{ebpftool_tracer}}"),
            (f"sum by (ebpftool_tracer) (rate(ebpftool_spans_unsampled_total{{{SEL}}}[{RATE}]))",
             "unsampled {{ebpftool_tracer}}"),
            (f"sum(rate(ebpftool_spans_dropped_total{{{SEL}}}[{RATE}]))", "dropped in the queue")]),
        ("Kernel maps full (per second)", "short", [
            (f"sum by (ebpftool_map) (rate(ebpftool_network_map_full_total{{{SEL}}}[{RATE}]))", "net {{ebpftool_map}}"),
            (f"sum(rate(ebpftool_http_server_metrics_dropped_total{{{SEL}}}[{RATE}]))", "inference metrics")]),
        ("Telemetry sent (bytes per second)", "Bps", [
            (f"sum by (ebpftool_sink, ebpftool_signal) (rate(ebpftool_export_bytes_total{{{SEL}}}[{RATE}]))",
             "{{ebpftool_sink}} {{ebpftool_signal}}")]),
        ("Export failures (per second)", "short", [
            (f"sum by (ebpftool_sink, ebpftool_signal) (rate(ebpftool_export_failures_total{{{SEL}}}[{RATE}]))",
             "{{ebpftool_sink}} {{ebpftool_signal}}")]),
    ]),
]

VARIABLES = [  # (name, label, query)
    ("node", "node", "label_values(ebpftool_events_lost_total, instance)"),
    ("server", "server port", f"label_values({HTTP}_count, server_port)"),
    ("zone", "source zone", "label_values(ebpftool_network_flow_io_bytes_total, source_cloud_availability_zone)"),
]


def dashboard() -> dict:
    panels, y, panel_id = [], 0, 1
    for section, rows in SECTIONS:
        panels.append({"id": panel_id, "type": "row", "title": section, "collapsed": False,
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
        panel_id, y = panel_id + 1, y + 1
        for i, (title, unit, targets) in enumerate(rows):
            panels.append({
                "id": panel_id, "type": "timeseries", "title": title,
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                "gridPos": {"h": 8, "w": 8, "x": 8 * (i % 3), "y": y + 8 * (i // 3)},
                "targets": [{"refId": chr(ord("A") + k), "expr": expr, "legendFormat": legend,
                             "datasource": {"type": "prometheus", "uid": "${datasource}"}}
                            for k, (expr, legend) in enumerate(targets)]})
            panel_id += 1
        y += 8 * ((len(rows) + 2) // 3)
    templating = [{"name": "datasource", "type": "datasource", "query": "prometheus", "label": "data source"}]
    templating += [{"name": name, "label": label, "type": "query", "query": query, "refresh": 2,
                    "datasource": {"type": "prometheus", "uid": "${datasource}"}, "includeAll": True,
                    "multi": True, "allValue": ".*", "current": {"text": "All", "value": "$__all"}}
                   for name, label, query in VARIABLES]
    return {"title": "ebpftool", "uid": "ebpftool", "schemaVersion": 39, "version": 1, "editable": True,
            "tags": ["ebpftool", "ebpf", "inference", "gpu", "network"], "time": {"from": "now-1h", "to": "now"},
            "refresh": "30s", "templating": {"list": templating}, "panels": panels}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the JSON is not up to date")
    text = json.dumps(dashboard(), indent=2) + "\n"
    if parser.parse_args().check:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT} is not what {Path(__file__).name} writes: run it", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
