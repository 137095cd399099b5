"""A BPF ring buffer's records read from the map's own memory, as libbpf's consumer reads them.

BCC hands each record to Python through a ctypes callback, which takes the GIL back from the export
thread for every record and converts its arguments; here the consumer walks the shared pages in Python
and slices each record out: no C-to-Python transition per record. The layout is the kernel's
(kernel/bpf/ringbuf.c, include/uapi/linux/bpf.h): the consumer position in the first page (ours to
write), then the producer position's page and the data area, mapped twice in a row so that a record
that wraps around the end reads as one piece. Each record has an 8-byte header, its length with a busy
bit (still being written) and a discard bit, and takes its length plus the header rounded up to 8.
Reads are plain loads, which x86's ordering keeps in order (the producer position, then the header, then
the record), as libbpf's acquire loads do elsewhere: on other machines the records go through BCC's
callback instead (MAPPED_READS_SAFE).
"""
from __future__ import annotations

import logging
import mmap
import platform
import select
import struct
from typing import Callable

log = logging.getLogger(__name__)

MAPPED_READS_SAFE = platform.machine() in ("x86_64", "AMD64", "i686", "i386")
BUSY_BIT = 1 << 31
DISCARD_BIT = 1 << 30
HEADER_SIZE = 8
_u64 = struct.Struct("<Q")
_u32 = struct.Struct("<I")


class RingBufferReader:
    """The records of one ring buffer map (its fd and data size) to on_event(bytes), in order."""

    def __init__(self, map_fd: int, data_size: int, on_event: Callable[[bytes], None]) -> None:
        if not MAPPED_READS_SAFE:
            raise OSError(f"plain loads are not ordered on {platform.machine()}")
        if data_size <= 0 or data_size & (data_size - 1):
            raise ValueError(f"a ring buffer's size is a power of 2, not {data_size}")
        page = mmap.PAGESIZE
        self.fd = map_fd
        self.on_event = on_event
        self.failed_records = 0  # records whose handler raised (counted, said once)
        self._mask = data_size - 1
        self._page = page
        self._consumer = mmap.mmap(map_fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        try:
            self._producer = mmap.mmap(map_fd, page + 2 * data_size, mmap.MAP_SHARED, mmap.PROT_READ, offset=page)
        except BaseException:
            self._consumer.close()
            raise

    def consume(self) -> int:
        """Hand over every complete record; the number handed over."""
        consumer, producer, mask, page = self._consumer, self._producer, self._mask, self._page
        on_event, u32, u64 = self.on_event, _u32.unpack_from, _u64.unpack_from
        pos = u64(consumer, 0)[0]
        count = 0
        while True:
            end = u64(producer, 0)[0]
            if pos >= end:
                return count
            while pos < end:
                at = page + (pos & mask)
                header = u32(producer, at)[0]
                if header & BUSY_BIT:
                    return count  # reserved, not yet submitted: records after it wait for it
                length = header & ~(BUSY_BIT | DISCARD_BIT)
                if not header & DISCARD_BIT:
                    try:
                        on_event(producer[at + HEADER_SIZE:at + HEADER_SIZE + length])
                    except Exception as exc:  # a record the handler cannot take must not stop the others
                        self.failed_records += 1
                        if self.failed_records == 1:
                            log.warning("a ring-buffer record could not be handled (%s: %s); such records are "
                                        "counted and skipped", type(exc).__name__, exc)
                    count += 1
                pos += (length + HEADER_SIZE + 7) & ~7
                _u64.pack_into(consumer, 0, pos)  # its space is the kernel's again

    def close(self) -> None:
        self._producer.close()
        self._consumer.close()


class RingBufferSet:
    """The ring buffers of one program, waited on together (the kernel wakes the map's fd on a record
    submitted with a wakeup)."""

    def __init__(self) -> None:
        self.readers: list[RingBufferReader] = []
        self._epoll = select.epoll()

    def add(self, reader: RingBufferReader) -> None:
        self._epoll.register(reader.fd, select.EPOLLIN)
        self.readers.append(reader)

    def poll(self, timeout_ms: int) -> int:
        """Wait up to timeout_ms for a wakeup, then read every buffer (records submitted without a
        wakeup are read too)."""
        if timeout_ms:
            try:
                self._epoll.poll(timeout_ms / 1000)
            except InterruptedError:
                pass
        return self.consume()

    def consume(self) -> int:
        return sum(r.consume() for r in self.readers)

    @property
    def failed_records(self) -> int:
        return sum(r.failed_records for r in self.readers)

    def close(self) -> None:
        for r in self.readers:
            r.close()
        self.readers.clear()
        self._epoll.close()
