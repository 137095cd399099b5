"""The kernel's events (bpf/agents/agents.h, struct agent_event) put back together: each read or write a
client made in a call, whole (bytes the kernel did not copy stand as NUL filler of their length), with its
time, and the connection's end.

A read or write of more than AGENTS_CHUNK bytes comes as several events, the last one marked; each event
carries the connection's sequence number, so a lost event (ring buffer full) shows as a gap, and the call it
belonged to is given up rather than read wrong.
"""
from __future__ import annotations

import ctypes
from dataclasses import dataclass, field

from ebpftool.core.cstruct import cstring, load_header

STRUCTS, H = load_header("agents/agents.h")
AgentEvent = STRUCTS["agent_event"]
HEADER_BYTES = AgentEvent.data.offset
EV_WRITE, EV_READ, EV_CLOSE = H["EV_WRITE"], H["EV_READ"], H["EV_CLOSE"]
VIA_TLS, VIA_SOCKET = H["VIA_TLS"], H["VIA_SOCKET"]


class _Header(ctypes.Structure):
    """struct agent_event without its data: decoding copies only the header."""
    _fields_ = [(name, kind) for name, kind in AgentEvent._fields_ if name != "data"]


@dataclass(frozen=True)
class Io:
    """One read or write of a call (or the connection's end: kind EV_CLOSE, no data)."""
    kind: int
    key: tuple[int, int, int]    # (tgid, via, id): the connection
    call: int                    # the connection's call number (its `POST ` writes so far)
    starts: bool                 # this write began the call
    t: float                     # CLOCK_MONOTONIC seconds at the read's or write's return
    data: bytes                  # the bytes moved, uncopied ones as NUL filler
    not_copied: int              # of which filler
    port: int                    # the server's port where the kernel knows it (sockets), else 0
    tid: int
    comm: str


@dataclass
class _Pending:
    """A read or write whose events are coming."""
    head: _Header
    parts: list[bytes] = field(default_factory=list)
    size: int = 0          # bytes placed so far (copied or filler)
    copied: int = 0


class Reassembler:
    """Events in, whole reads and writes out; counts the events found missing."""

    def __init__(self) -> None:
        self._next_seq: dict[tuple[int, int, int], int] = {}
        self._pending: dict[tuple[int, int, int], _Pending] = {}
        self.gaps = 0          # times a connection's sequence jumped: events lost in between

    def feed(self, raw: bytes) -> tuple[tuple[int, int, int], Io | None, bool]:
        """(the event's connection; the read or write it completed, or None; whether events were lost before
        it on its connection)."""
        h = _Header.from_buffer_copy(raw[:HEADER_BYTES].ljust(ctypes.sizeof(_Header), b"\0"))
        key = (int(h.tgid), int(h.via), int(h.id))
        expected = self._next_seq.get(key)
        lost = expected is not None and h.seq != expected
        if lost:
            self.gaps += 1
            self._pending.pop(key, None)
        self._next_seq[key] = (h.seq + 1) & 0xFFFFFFFF
        if h.kind == EV_CLOSE:
            self._next_seq.pop(key, None)
            self._pending.pop(key, None)
            return key, self._io(h, key, b"", 0), lost
        p = self._pending.get(key)
        if p is None or h.offset == 0:
            if p is not None:
                lost = True          # a read or write whose last event never came
            p = self._pending[key] = _Pending(h)
        if h.offset > p.size:   # a vectored call's buffer cut short: the rest of it was not copied
            p.parts.append(b"\0" * (h.offset - p.size))
            p.size = h.offset
        piece = raw[HEADER_BYTES:HEADER_BYTES + h.size]
        p.parts.append(piece)
        p.size += len(piece)
        p.copied += len(piece)
        if not h.last:
            return key, None, lost
        del self._pending[key]
        data = b"".join(p.parts)
        filler = max(0, int(h.len) - len(data))
        return key, self._io(p.head, key, data + b"\0" * filler, max(0, int(h.len) - p.copied)), lost

    def forget(self, key: tuple[int, int, int]) -> None:
        self._next_seq.pop(key, None)
        self._pending.pop(key, None)

    @staticmethod
    def _io(h: _Header, key: tuple[int, int, int], data: bytes, filler: int) -> Io:
        return Io(int(h.kind), key, int(h.call), bool(h.starts), h.ts / 1e9, data, filler, int(h.port),
                  int(h.tid), cstring(h.comm))
