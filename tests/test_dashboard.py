"""The Grafana dashboard (deploy/grafana/ebpftool-dashboard.json, written by scripts/grafana_dashboard.py):
every panel's query, run against a real VictoriaMetrics scraping `ebpftool demo` (a streaming inference
server and its client, traffic between two zones, a process calling the real CUDA runtime), returns
series with the labels its legend names."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT, EbpftoolProcess
from tests.otlp_receiver import GrpcReceiver
from tests.servers.nginx import free_port
from tests.victoria import VictoriaMetrics

DASHBOARD = ROOT / "deploy" / "grafana" / "ebpftool-dashboard.json"
# Panels that cannot have data on a machine without a GPU driver (every cudaMalloc fails, so no memory is
# ever held): their queries must still parse and run.
NEEDS_A_GPU = {"Device memory held"}


def panels() -> list[dict]:
    return [p for p in json.loads(DASHBOARD.read_text())["panels"] if p["type"] != "row"]


def test_the_dashboard_is_what_its_script_writes():
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "grafana_dashboard.py"), "--check"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_the_variables_and_every_query_use_exported_names_only():
    doc = json.loads(DASHBOARD.read_text())
    assert [v["name"] for v in doc["templating"]["list"]] == ["datasource", "node", "server", "zone"]
    for p in panels():
        assert p["targets"], p["title"]
        for t in p["targets"]:
            for metric in re.findall(r"\b((?:ebpftool|http|gen_ai)_[a-z_]+)\{", t["expr"]):
                assert re.fullmatch(r"[a-z_]+_(total|bucket|sum|count|seconds|bytes)", metric), (p["title"], metric)


def _concrete(expr: str) -> str:
    """The query as Grafana sends it with every variable at All."""
    return expr.replace('=~"$node"', '=~".*"').replace('=~"$server"', '=~".*"').replace('=~"$zone"', '=~".*"') \
               .replace("$__rate_interval", "1m")


@pytest.mark.bpf
def test_every_panel_shows_data_from_a_real_victoriametrics(tmp_path):
    receiver = GrpcReceiver()
    prom_port = free_port()
    vm = VictoriaMetrics(prom_port)
    demo = EbpftoolProcess(["demo", "--duration", "120", "--interval", "1", "--no-ui", "--prometheus-port",
                            str(prom_port), "--otlp-endpoint", receiver.endpoint, "--otlp-protocol", "grpc"],
                           ready_count=3)
    try:
        demo.start(timeout=180)
        # rates need two scrapes of each series: wait until the slowest to appear (the zones' bytes) has them
        assert vm.wait_query('sum(rate(ebpftool_network_flow_io_bytes_total{network_flow_inter_zone="true"}[1m]))',
                             lambda res: res and float(res[0]["value"][1]) > 0, timeout=90)
        empty, missing_labels = [], []
        for p in panels():
            for t in p["targets"]:
                if p["title"] in NEEDS_A_GPU:
                    vm.query(_concrete(t["expr"]))  # runs: parses and names what exists
                    continue
                result = vm.wait_query(_concrete(t["expr"]), lambda res: bool(res), timeout=30)
                if not result:
                    empty.append((p["title"], t["expr"]))
                    continue
                wanted = set(re.findall(r"\{\{(\w+)\}\}", t["legendFormat"]))
                if not any(wanted <= set(s["metric"]) for s in result):
                    missing_labels.append((p["title"], wanted, [s["metric"] for s in result][:2]))
        assert not empty, f"panels without data: {empty}"
        assert not missing_labels, f"series without the legend's labels: {missing_labels}"
        for name, _label, query in [(v["name"], v.get("label"), v["query"]) for v in
                                    json.loads(DASHBOARD.read_text())["templating"]["list"] if v["type"] == "query"]:
            metric, label = re.fullmatch(r"label_values\((\w+), (\w+)\)", query).groups()
            assert vm.query(f"count by ({label}) ({metric})"), f"variable {name}: no {label} on {metric}"
    finally:
        if demo.proc is not None and demo.proc.poll() is None:
            demo.stop()
        vm.stop()
        receiver.stop()
