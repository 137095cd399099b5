"""The live view's tables and the summary's rows, fed figures (pure: no BPF): every row on one line at 80
columns and up, figures whole, text cut with an ellipsis; more columns from 120; headlines first."""
from __future__ import annotations

import pytest
from rich.console import Console

from ebpftool.tracers.gpu.figures import GpuHeadline, GpuKernelCounts, GpuSummary, GpuView, ProcessRates, ProcessRow
from ebpftool.tracers.inference.figures import InferenceView, ServerRow
from ebpftool.tracers.net.figures import NetSummary, NetView, PairSummary, PairView, ZonePairRow
from ebpftool.ui.views import summary_rows, table_of

LONG_MODEL = "meta-llama/Llama-3.1-8B-Instruct"


def inference() -> InferenceView:
    return InferenceView(126.6, [
        ServerRow(8000, "0123abcd", 123.4, 0.012, 1.23, 2.5, 3.5, 0.256, 0.305, 0.0209, 1237.9, 12.8, 17, LONG_MODEL, "vllm"),
        ServerRow(39553, "-", 3.2, None, None, None, None, None, None, None, 0.0, 0.0, 0, "")])


def net() -> NetView:
    busy = PairView(True, 104_900_000, 6_700_000.0, 0.001049, 0, {"python": 104_900_000}, 52e-6, 80e-6)
    quiet = PairView(True, 538_700, 3_200.0, 0.000005, 3, {"python": 500_000, "nginx": 38_700}, 20e-6, 1e-3)
    return NetView([ZonePairRow("demo-a", "demo-b", busy, [("python", 104_900_000)]),
                    ZonePairRow("us-east-1a", "us-east-1b", quiet, [("python", 500_000), ("nginx", 38_700)])])


def gpu() -> GpuView:
    return GpuView([ProcessRow(32504, "python3.11-with-a-long-name", ProcessRates(386, 0.031, 4_096_000, 2048, 1 << 30, 386)),
                    ProcessRow(4242, "cuda_workload", ProcessRates(), 2, 8000, True)])


def lines_of(view, width: int) -> list[str]:
    console = Console(width=width, record=True, color_system=None, file=open("/dev/null", "w"))
    console.print(table_of(view, width))
    return console.export_text().splitlines()


@pytest.mark.parametrize("width", [80, 100, 160])
@pytest.mark.parametrize("view, rows, figures", [
    (inference, 2, ["1,238", " 17", "1.23s", "20.9ms", "1.2%"]),
    (net, 2, ["6.7 MB/s", "0.001049", "52µs", "20µs", "0.2412"]),
    (gpu, 2, ["386", "100%", "3.1%", "4.1 MB", "2.0 kB", "1.1 GB", "8.0 kB"]),
])
def test_each_row_is_one_line_within_the_width_with_its_figures_whole(view, rows, figures, width):
    lines = lines_of(view(), width)
    assert max(len(line) for line in lines) <= width
    rule = next(i for i, line in enumerate(lines) if set(line.strip()) == {"─"})
    body = lines[rule + 1: rule + 1 + rows]
    assert lines[rule + 1 + rows].startswith(("per server", "last interval"))  # the caption: no row wrapped
    text = "\n".join(body)
    for figure in figures:
        assert figure in text, (figure, text)


def test_narrow_views_cut_names_with_an_ellipsis_and_wide_ones_show_them_and_more():
    narrow, wide = "\n".join(lines_of(inference(), 80)), "\n".join(lines_of(inference(), 160))
    assert LONG_MODEL not in narrow and "meta-llama/" in narrow and "…" in narrow
    assert LONG_MODEL in wide and "0123abcd" in wide and "p95" in wide and "TTFT p99" in wide
    assert "streams" in narrow and "conc." not in narrow and "12.8" in wide
    assert "vllm" in wide and "vllm" not in narrow  # the process: from 120 columns
    narrow, wide = "\n".join(lines_of(net(), 80)), "\n".join(lines_of(net(), 160))
    assert "RTT p50" in narrow and "$/month" not in narrow and "RTT p99" not in narrow
    assert "$/month" in wide and "RTT p99" in wide and "python 500.0 kB, nginx 38.7 kB" in wide
    assert "cuda_workload (exited)" in "\n".join(lines_of(gpu(), 160))
    assert "2 allocations, 8.0 kB" in "\n".join(lines_of(gpu(), 160))


def test_the_net_and_gpu_summaries_begin_with_their_headline():
    pair = PairSummary("demo-a", "demo-b", True, 104_857_600, 0.001049, 2, 47.5e-6, 76.4e-6, [("python", 104_857_600)])
    rows = dict(summary_rows(NetSummary("raw tracepoints", 105_000_000, 104_857_600, 0.001049, 2, 0, 0, {},
                                        pairs=[pair])))
    labels = list(rows)
    assert labels.index("sent demo-a -> demo-b (cost)") < labels.index("byte and RTT hooks")
    assert rows["RTT p50 / p99 demo-a -> demo-b"] == "47.5 µs / 76.4 µs"
    assert rows["TCP retransmits"] == 2 and rows["top process (bytes sent)"] == "python (104.9 MB)"
    kernel = GpuKernelCounts(11, 0, 12288, 2000, 1, 2000, [], 0, 0, 0, 0, 0)
    head = GpuHeadline(10.0, 11, 1.1, 0.1, 0.01, 12288, 2000, 3000, 1, 2000)
    rows = dict(summary_rows(GpuSummary(1, 19, kernel, head)))
    labels = list(rows)
    assert labels.index("time in blocking calls (share)") < labels.index("libraries traced")
    assert rows["time in blocking calls (share)"] == "100 ms (1.0%)"
    assert rows["copied host to device / to host"] == "12.3 kB / 2.0 kB"
    assert rows["leaked (exited processes)"] == "1 allocation, 2.0 kB"
