"""The inference tracer's figures for people, from exported metric points: the exit summary's headline and
the live view's rows per server over each interval (pure functions, fed points)."""
from __future__ import annotations

import pytest

from ebpftool import semconv as sc
from ebpftool.export.model import counter, histogram
from ebpftool.tracers.inference.figures import ServerRates, headline

BOUNDS = (0.01, 0.1, 1.0)


def duration(port: int, counts: list[int], status: int = 200, pod: str = "", gen_ai: bool = False):
    attrs = {sc.SERVER_PORT: port, sc.HTTP_RESPONSE_STATUS_CODE: status}
    if pod:
        attrs[sc.K8S_POD_UID] = pod
    if status >= 500:
        attrs[sc.ERROR_TYPE] = str(status)
    name = sc.GEN_AI_SERVER_REQUEST_DURATION if gen_ai else sc.HTTP_SERVER_REQUEST_DURATION
    return histogram(name, "s", "", attrs, count=sum(counts), total=0.0, minimum=0.005, maximum=0.5,
                     bucket_counts=counts, bounds=BOUNDS)


def timed(name: str, port: int, counts: list[int]):
    return histogram(name, "s", "", {sc.SERVER_PORT: port}, count=sum(counts), total=0.0, minimum=0.02,
                     maximum=0.05, bucket_counts=counts, bounds=BOUNDS)


def tokens(port: int, n: int):
    return counter(sc.EBPFTOOL_GEN_AI_OUTPUT_TOKENS, "{token}", "", n, {sc.SERVER_PORT: port})


def test_each_interval_is_the_difference_of_two_exports_per_server():
    rates = ServerRates()
    first = [duration(8000, [0, 10, 0, 0]), duration(8000, [0, 0, 0, 0], status=503),
             duration(9000, [2, 0, 0, 0], pod="0123456789abcdef"), tokens(8000, 50)]
    rows = {r.port: r for r in rates.rows(first, seconds=10.0)}
    assert rows[8000].requests_per_second == pytest.approx(1.0) and rows[8000].error_ratio == 0
    assert rows[8000].tokens_per_second == pytest.approx(5.0)
    assert rows[9000].workload == "01234567"
    # the next export: 8000 answered 10 more, 5 of them with a 503, slower; 9000 answered nothing
    later = [duration(8000, [0, 15, 0, 0]), duration(8000, [0, 0, 5, 0], status=503),
             duration(9000, [2, 0, 0, 0], pod="0123456789abcdef"), tokens(8000, 80),
             timed(sc.GEN_AI_SERVER_TIME_TO_FIRST_TOKEN, 8000, [0, 4, 0, 0])]
    rows = {r.port: r for r in rates.rows(later, seconds=5.0)}
    busy, idle = rows[8000], rows[9000]
    assert busy.requests_per_second == pytest.approx(2.0) and busy.error_ratio == pytest.approx(0.5)
    assert 0.01 <= busy.duration_p50 <= 0.1 < busy.duration_p99 <= 0.5
    assert busy.tokens_per_second == pytest.approx(6.0) and 0.02 <= busy.ttft_p50 <= 0.05
    assert busy.tpot_p50 is None
    assert idle.requests_per_second == 0 and idle.error_ratio is None and idle.duration_p50 is None
    assert [r.port for r in rates.rows(later, seconds=5.0)] == [8000, 9000]  # busiest first (both 0 now)


def test_the_headline_covers_the_run_and_counts_errors():
    points = [duration(8000, [0, 15, 0, 0]), duration(8000, [0, 0, 5, 0], status=503),
              duration(8000, [0, 4, 0, 0], gen_ai=True), tokens(8000, 80),
              timed(sc.GEN_AI_SERVER_TIME_TO_FIRST_TOKEN, 8000, [0, 4, 0, 0])]
    h = headline(points, seconds=20.0)
    assert (h.requests, h.errors, h.gen_ai_requests, h.output_tokens) == (20, 5, 4, 80)
    assert h.tokens_per_second == pytest.approx(4.0)
    assert h.duration_p50 <= h.duration_p95 <= h.duration_p99 <= 0.5
    assert 0.02 <= h.ttft_p50 <= h.ttft_p99 <= 0.05 and h.tpot_p50 is None
    assert headline([], seconds=1.0).duration_p50 is None


def test_a_zone_pair_s_cost_per_hour_is_its_price_per_byte_at_the_interval_s_rate():
    from ebpftool.tracers.net.figures import PairView
    pv = PairView(inter_zone=True, total=2_000_000_000, rate=1_000_000.0, cost=0.02)  # $0.01 per GB
    assert pv.cost_per_hour == pytest.approx(0.01e-9 * 1e6 * 3600)
    assert PairView().cost_per_hour == 0.0


def test_a_server_s_model_comes_from_its_spans_and_its_concurrency_from_summed_durations():
    rates = ServerRates()
    busy = histogram(sc.HTTP_SERVER_REQUEST_DURATION, "s", "", {sc.SERVER_PORT: 8000}, count=4, total=6.0,
                     minimum=1.0, maximum=2.0, bucket_counts=[0, 0, 0, 4], bounds=BOUNDS)
    rates.saw_span({sc.SERVER_PORT: 8000, sc.GEN_AI_REQUEST_MODEL: "asked"})
    rates.saw_span({sc.SERVER_PORT: 8000, sc.GEN_AI_REQUEST_MODEL: "asked", sc.GEN_AI_RESPONSE_MODEL: "answered",
                    sc.PROCESS_EXECUTABLE_NAME: "vllm"})
    rates.saw_span({sc.SERVER_PORT: 9000})  # no model: nothing learnt
    row = rates.rows([busy], seconds=3.0)[0]
    assert (row.model, row.process) == ("answered", "vllm")
    assert row.concurrency == pytest.approx(2.0)  # 6 s of requests in 3 s: two in flight on average
    later = histogram(sc.HTTP_SERVER_REQUEST_DURATION, "s", "", {sc.SERVER_PORT: 8000}, count=5, total=7.5,
                      minimum=1.0, maximum=2.0, bucket_counts=[0, 0, 0, 5], bounds=BOUNDS)
    assert rates.rows([later], seconds=3.0)[0].concurrency == pytest.approx(0.5)
    assert headline([later], seconds=5.0).concurrency == pytest.approx(1.5)
