"""The kernel's tick rate, found two independent ways (the net tracer's RTT sampling is kept in jiffies)."""
from __future__ import annotations

import gzip
import os

import pytest

from ebpftool.core.clock import KNOWN_HZ, hz_from_config, hz_from_timer_list, kernel_hz


@pytest.mark.skipif(not os.access("/proc/config.gz", os.R_OK) or not os.access("/proc/timer_list", os.R_OK),
                    reason="needs both /proc/config.gz and /proc/timer_list readable (timer_list: root only)")
def test_configured_hz_agrees_with_jiffies_measured_against_the_clock():
    assert hz_from_config() in KNOWN_HZ
    assert hz_from_timer_list(wait=0.2) == hz_from_config() == kernel_hz()


def test_missing_or_odd_sources_give_none(tmp_path):
    assert hz_from_config(str(tmp_path / "absent.gz")) is None
    no_hz = tmp_path / "config.gz"
    with gzip.open(no_hz, "wt") as f:
        f.write("CONFIG_FOO=y\n")
    assert hz_from_config(str(no_hz)) is None
    (tmp_path / "timer_list").write_text("nothing useful\n")
    assert hz_from_timer_list(str(tmp_path / "timer_list"), wait=0) is None
    assert hz_from_timer_list(str(tmp_path / "absent"), wait=0) is None
