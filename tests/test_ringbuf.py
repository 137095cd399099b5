"""ebpftool.core.ringbuf against a real ring buffer: every record, in order, byte for byte, wrapping around
the buffer's end at every offset, discarded records skipped, a handler's failure counted."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from ebpftool.core.bpf import BpfProgram
from ebpftool.core.ringbuf import RingBufferReader

FIXTURE = str(Path(__file__).parent / "bpf" / "ringbuf_probe.bpf.c")
DISCARD_EVERY = 7


def record_size(i: int) -> int:
    return 8 + (i * 37) % 300


def expected(i: int) -> bytes:
    return i.to_bytes(4, "little") + bytes((i + k) & 0xFF for k in range(4, record_size(i)))


@pytest.fixture
def probe():
    prog = BpfProgram(FIXTURE, defines={"TARGET_PID": os.getpid()}).load()
    try:
        yield prog
    finally:
        prog.close()


@pytest.mark.bpf
def test_every_record_in_order_byte_for_byte_across_the_buffer_end(probe):
    table = probe["records"]
    assert table.max_entries == 4096  # one page: records of 8-307 bytes wrap around its end at every offset
    got: list[bytes] = []
    reader = RingBufferReader(table.map_fd, table.max_entries, got.append)
    try:
        calls = 3000  # ~90 times round the buffer
        for _ in range(calls):
            os.getppid()
            reader.consume()
    finally:
        reader.close()
    assert probe["refused"][0].value == 0
    want = [expected(i) for i in range(calls) if i % DISCARD_EVERY != DISCARD_EVERY - 1]
    assert len(got) == len(want)
    assert got == want


@pytest.mark.bpf
def test_records_read_in_bursts_and_through_the_program(probe):
    got: list[int] = []
    probe.open_ring_buffer("records", lambda data: got.append(int.from_bytes(data[:4], "little")))
    for burst in range(200):
        for _ in range(burst % 5):  # up to four records wait in the buffer (at most 4 x 315 bytes: it never fills)
            os.getppid()
        probe.poll(0)
    calls = sum(b % 5 for b in range(200))
    assert got == [i for i in range(calls) if i % DISCARD_EVERY != DISCARD_EVERY - 1]


@pytest.mark.bpf
def test_a_record_the_handler_cannot_take_is_counted_and_the_rest_delivered(probe):
    got: list[int] = []

    def handler(data: bytes) -> None:
        i = int.from_bytes(data[:4], "little")
        if i % 10 == 3:
            raise ValueError("a bad record")
        got.append(i)

    probe.open_ring_buffer("records", handler)
    for _ in range(100):
        os.getppid()
        probe.consume()
    kept = [i for i in range(100) if i % DISCARD_EVERY != DISCARD_EVERY - 1]
    assert got == [i for i in kept if i % 10 != 3]
    assert probe.failed_records == len([i for i in kept if i % 10 == 3])
