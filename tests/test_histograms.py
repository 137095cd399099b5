"""Quantiles of exported histograms: the estimate Prometheus' histogram_quantile makes, narrowed to the
values seen."""
from __future__ import annotations

import pytest

from ebpftool.core.histograms import Histogram, merged, quantile
from ebpftool.export.model import histogram


def test_a_quantile_is_interpolated_within_its_bucket():
    h = Histogram((0.1, 0.2, 0.4), [0, 10, 10, 0], minimum=0.12, maximum=0.35)
    assert quantile(0.5, h) == pytest.approx(0.2)     # the 10th of 20 values: the first bucket's top
    assert quantile(0.25, h) == pytest.approx(0.16)   # halfway into (0.12, 0.2]
    assert quantile(0.75, h) == pytest.approx(0.275)  # halfway into (0.2, 0.35]: narrowed to the largest seen
    assert quantile(0.99, h) <= 0.35


def test_the_overflow_bucket_ends_at_the_largest_value_and_one_value_is_itself():
    assert quantile(0.99, Histogram((1.0,), [0, 4], minimum=2.0, maximum=3.0)) == pytest.approx(2.99)
    assert quantile(0.5, Histogram((1.0, 2.0), [0, 1, 0], minimum=1.5, maximum=1.5)) == 1.5
    assert quantile(0.5, Histogram((1.0,), [0, 0])) is None
    assert quantile(0.5, None) is None


def test_points_merge_bucket_by_bucket():
    bounds = (0.1, 1.0)
    a = histogram("d", "s", "", {"p": 1}, count=2, total=0.3, minimum=0.05, maximum=0.25, bucket_counts=[1, 1, 0],
                  bounds=bounds)
    b = histogram("d", "s", "", {"p": 2}, count=1, total=2.0, minimum=2.0, maximum=2.0, bucket_counts=[0, 0, 1],
                  bounds=bounds)
    h = merged([a, b])
    assert h.counts == [1, 1, 1] and h.minimum == 0.05 and h.maximum == 2.0
    assert merged([]) is None
    with pytest.raises(ValueError):
        merged([a, histogram("d", "s", "", {}, count=1, total=1, minimum=1, maximum=1, bucket_counts=[1, 0],
                             bounds=(5.0,))])
