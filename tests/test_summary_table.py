"""The exit summary's table: figures that count losses are one health line while they are all 0, and each
is shown when it is not (pure: a RunResult in, a rich table out)."""
from __future__ import annotations

from types import SimpleNamespace

from rich.console import Console

from ebpftool.commands.common import HEALTH_LINE, summary_table
from ebpftool.core.runner import RunResult


def text_of(table) -> str:
    console = Console(width=160, record=True)
    console.print(table)
    return console.export_text()


def run_result(lost: int = 0, dropped: int = 0) -> RunResult:
    return RunResult(started={"net": 0.5}, drops={"net": {"events_lost": lost, "spans_unsampled": 0}},
                     pipeline={"spans_emitted": 10, "spans_dropped_queue": dropped, "metric_snapshots": 3},
                     seconds=4.0, interrupted_by="duration")


def test_all_zero_losses_are_one_line():
    text = text_of(summary_table(run_result(), [SimpleNamespace(name="net")]))
    assert [line for line in text.splitlines() if HEALTH_LINE in line][0].rstrip(" │").endswith("none")
    for hidden in ("events lost", "spans unsampled", "spans dropped queue"):
        assert hidden not in text
    assert "spans emitted" in text and "metric snapshots" in text and "start-up" in text


def test_a_loss_is_shown_with_its_figure():
    text = text_of(summary_table(run_result(lost=7, dropped=2), [SimpleNamespace(name="net")]))
    assert [line for line in text.splitlines() if HEALTH_LINE in line][0].rstrip(" │").endswith("2 (above)")
    assert "events lost" in text and "spans dropped queue" in text and "spans unsampled" not in text
