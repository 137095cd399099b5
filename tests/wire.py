"""The truth from the wire: a packet capture on `lo` (tcpdump), parsed here in pure Python.

`Capture(port)` runs `tcpdump -i lo -U -w FILE 'tcp port P'`, waits until the capture provably runs
(its "listening on" line, then a probe connection of ours seen in the file), and on `stop()` makes sure
everything sent so far is in the file (a second probe, seen) before it stops tcpdump with SIGINT.

`read_pcap` reads classic pcap (micro- or nanosecond, either byte order; Ethernet, Linux cooked v1/v2,
raw IP or BSD loopback framing; IPv4 and IPv6), `connections` reassembles each TCP connection's two
directions by sequence number (retransmits and overlaps: each byte keeps the time of the first segment
that carried it), and `exchanges` parses HTTP/1.x on the server side of each connection into requests
and their responses, with the timestamps of the segments that carried their first and last bytes,
the decoded body (Content-Length, chunked, or up to the close) and, for `text/event-stream`, each
server-sent event with the time of the segment carrying its first byte, its JSON and its kind.

Nothing here asks ebpftool anything: it is the expectation the tracer's figures are checked against.
"""
from __future__ import annotations

import bisect
import ipaddress
import json
import os
import signal
import socket
import struct
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

# -- pcap ----------------------------------------------------------------------------------------------

LINKTYPE_NULL, LINKTYPE_EN10MB, LINKTYPE_RAW, LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2 = 0, 1, 101, 113, 276
_RAW_ALIASES = {12, 14, LINKTYPE_RAW}  # DLT_RAW's values on various systems
ETH_IPV4, ETH_IPV6, ETH_VLAN, ETH_QINQ = 0x0800, 0x86DD, 0x8100, 0x88A8

TCP_FIN, TCP_SYN, TCP_RST, TCP_ACK = 0x01, 0x02, 0x04, 0x10


@dataclass
class Segment:
    """One captured TCP segment."""
    ts_ns: int
    src: tuple[str, int]
    dst: tuple[str, int]
    seq: int
    flags: int
    payload: bytes


def read_pcap(data: bytes) -> tuple[int, list[tuple[int, bytes]]]:
    """(linktype, [(timestamp ns, frame)]) of a classic pcap file; a truncated last record (a file still
    being written) is left out."""
    if len(data) < 24:
        return LINKTYPE_EN10MB, []
    magic = data[:4]
    formats = {b"\xd4\xc3\xb2\xa1": ("<", 1000), b"\xa1\xb2\xc3\xd4": (">", 1000),
               b"\x4d\x3c\xb2\xa1": ("<", 1), b"\xa1\xb2\x3c\x4d": (">", 1)}
    if magic not in formats:
        raise ValueError(f"not a classic pcap file (magic {magic.hex()}; pcapng is not read here)")
    endian, frac_ns = formats[magic]
    _vmaj, _vmin, _zone, _sig, _snaplen, network = struct.unpack(endian + "HHiIII", data[4:24])
    linktype = network & 0x0FFFFFFF
    records = []
    off = 24
    rec = struct.Struct(endian + "IIII")
    while off + 16 <= len(data):
        sec, frac, incl, _orig = rec.unpack_from(data, off)
        if off + 16 + incl > len(data):
            break
        records.append((sec * 1_000_000_000 + frac * frac_ns, data[off + 16:off + 16 + incl]))
        off += 16 + incl
    return linktype, records


def _ip_packet(linktype: int, frame: bytes) -> tuple[int, bytes] | None:
    """(ethertype, IP packet) of a link-layer frame, or None for what is not IPv4/IPv6."""
    if linktype == LINKTYPE_EN10MB:
        if len(frame) < 14:
            return None
        etype, off = struct.unpack_from("!H", frame, 12)[0], 14
        while etype in (ETH_VLAN, ETH_QINQ) and len(frame) >= off + 4:
            etype, off = struct.unpack_from("!H", frame, off + 2)[0], off + 4
        return etype, frame[off:]
    if linktype == LINKTYPE_LINUX_SLL:
        if len(frame) < 16:
            return None
        return struct.unpack_from("!H", frame, 14)[0], frame[16:]
    if linktype == LINKTYPE_LINUX_SLL2:
        if len(frame) < 20:
            return None
        return struct.unpack_from("!H", frame, 0)[0], frame[20:]
    if linktype == LINKTYPE_NULL:
        if len(frame) < 4:
            return None
        family = struct.unpack_from("<I", frame, 0)[0]
        if family > 0xFFFF:
            family = struct.unpack_from(">I", frame, 0)[0]
        return (ETH_IPV4 if family == 2 else ETH_IPV6), frame[4:]
    if linktype in _RAW_ALIASES:
        if not frame:
            return None
        return (ETH_IPV4 if frame[0] >> 4 == 4 else ETH_IPV6), frame
    raise ValueError(f"link type {linktype} is not read here")


def _tcp_of(etype: int, pkt: bytes) -> tuple[str, str, bytes] | None:
    """(source address, destination address, TCP segment) of an IP packet carrying TCP."""
    if etype == ETH_IPV4 and len(pkt) >= 20 and pkt[0] >> 4 == 4:
        ihl = (pkt[0] & 0x0F) * 4
        total = struct.unpack_from("!H", pkt, 2)[0]
        frag = struct.unpack_from("!H", pkt, 6)[0]
        if pkt[9] != 6 or frag & 0x1FFF:
            return None
        body = pkt[ihl:total] if total >= ihl else pkt[ihl:]  # the length drops Ethernet padding
        return str(ipaddress.IPv4Address(pkt[12:16])), str(ipaddress.IPv4Address(pkt[16:20])), body
    if etype == ETH_IPV6 and len(pkt) >= 40 and pkt[0] >> 4 == 6:
        plen = struct.unpack_from("!H", pkt, 4)[0]
        nh, off, end = pkt[6], 40, 40 + plen
        while nh in (0, 43, 60) and len(pkt) >= off + 8:  # hop-by-hop, routing, destination options
            nh, off = pkt[off], off + (pkt[off + 1] + 1) * 8
        if nh != 6:
            return None
        return (str(ipaddress.IPv6Address(pkt[8:24])), str(ipaddress.IPv6Address(pkt[24:40])),
                pkt[off:end if plen else None])
    return None


def segments(data: bytes) -> list[Segment]:
    """The TCP segments of a pcap file, in capture order."""
    linktype, records = read_pcap(data)
    out = []
    for ts, frame in records:
        ip = _ip_packet(linktype, frame)
        if ip is None:
            continue
        tcp = _tcp_of(*ip)
        if tcp is None or len(tcp[2]) < 20:
            continue
        src, dst, seg = tcp
        sport, dport, seq, _ack, off_flags = struct.unpack_from("!HHIIH", seg, 0)
        doff = (off_flags >> 12) * 4
        out.append(Segment(ts, (src, sport), (dst, dport), seq, off_flags & 0x3F, bytes(seg[doff:])))
    return out


# -- TCP reassembly ------------------------------------------------------------------------------------

def _signed(d: int) -> int:
    """A difference of two sequence numbers, modulo 2**32, as a signed 32-bit number."""
    d &= 0xFFFFFFFF
    return d - (1 << 32) if d & 0x80000000 else d


class Stream:
    """One direction of a TCP connection: its bytes in order, and when each was first on the wire."""

    def __init__(self) -> None:
        self.isn: int | None = None   # sequence number of the first data byte (SYN + 1)
        self._segs: list[tuple[int, int, bytes]] = []  # (ts, seq, payload) in capture order
        self.fin_ts: int | None = None
        self.data = b""
        self._starts: list[int] = []  # disjoint runs [start, end) of the stream, each with one time
        self._ends: list[int] = []
        self._times: list[int] = []
        self.gap = False  # bytes missing from the capture: the stream stops before them

    def add(self, ts: int, seq: int, flags: int, payload: bytes) -> None:
        if flags & TCP_SYN:
            self.isn = (seq + 1) & 0xFFFFFFFF
        if payload:
            self._segs.append((ts, seq, payload))
        if flags & TCP_FIN and self.fin_ts is None:
            self.fin_ts = ts

    def assemble(self) -> None:
        if not self._segs:
            return
        base = self.isn
        if base is None:  # the handshake was before the capture: start at the lowest sequence seen
            first = self._segs[0][1]
            base = (first + min(_signed(seq - first) for _, seq, _ in self._segs)) & 0xFFFFFFFF
        pieces = []
        for ts, seq, payload in self._segs:
            rel = _signed(seq - base)  # < 0: before the stream's start (a keep-alive probe at ISN-1, say)
            start, end = rel, rel + len(payload)
            if end <= 0:
                continue
            if start < 0:
                payload, start = payload[-start:], 0
            pieces.append((ts, start, end, payload))
        # Byte by byte, the earliest segment that carried it wins: walk the segments in time order,
        # each filling what no earlier one covered.
        covered: list[tuple[int, int, int]] = []  # (start, end, ts), disjoint, sorted by start
        buf = bytearray()
        for ts, start, end, payload in sorted(pieces, key=lambda p: p[0]):
            if end > len(buf):
                buf.extend(b"\0" * (end - len(buf)))
            pos = start
            i = bisect.bisect_left(covered, (start, -1, -1))
            if i > 0 and covered[i - 1][1] > start:
                i -= 1
            new = []
            while pos < end:
                if i < len(covered) and covered[i][0] <= pos:
                    pos = max(pos, covered[i][1])
                    i += 1
                    continue
                stop = min(end, covered[i][0]) if i < len(covered) else end
                if stop > pos:
                    buf[pos:stop] = payload[pos - start:stop - start]
                    new.append((pos, stop, ts))
                pos = stop
            for run in new:
                bisect.insort(covered, run)
        # The stream is what is contiguous from its start.
        pos = 0
        for start, end, ts in covered:
            if start > pos:
                self.gap = True
                break
            self._starts.append(start)
            self._ends.append(end)
            self._times.append(ts)
            pos = end
        self.data = bytes(buf[:pos])

    def runs(self) -> list[tuple[int, int, int]]:
        """(start, end, time) of each run of the stream's bytes first carried by one segment, in stream order."""
        return list(zip(self._starts, self._ends, self._times))

    def time_at(self, offset: int) -> int:
        """When the byte at offset was first on the wire (ns since the epoch)."""
        i = bisect.bisect_right(self._starts, offset) - 1
        if i < 0 or offset >= self._ends[i]:
            raise IndexError(f"offset {offset} is not in the stream (0..{len(self.data)})")
        return self._times[i]


@dataclass
class Connection:
    client: tuple[str, int]
    server: tuple[str, int]
    syn_ts: int
    up: Stream = field(default_factory=Stream)    # client to server
    down: Stream = field(default_factory=Stream)  # server to client


def connections(segs: list[Segment], server_port: int) -> list[Connection]:
    """The TCP connections to server_port, in the order of their first segment, both directions
    reassembled. A SYN with a new sequence number on a 4-tuple already seen starts a new connection."""
    conns: list[Connection] = []
    current: dict[tuple, Connection] = {}
    for s in segs:
        if s.dst[1] == server_port:
            client, server, up = s.src, s.dst, True
        elif s.src[1] == server_port:
            client, server, up = s.dst, s.src, False
        else:
            continue
        key = (client, server)
        c = current.get(key)
        if up and s.flags & TCP_SYN and not s.flags & TCP_ACK:
            if c is None or (c.up.isn is not None and c.up.isn != (s.seq + 1) & 0xFFFFFFFF) or c.up._segs:
                c = None
        if c is None:
            c = Connection(client, server, s.ts_ns)
            current[key] = c
            conns.append(c)
        (c.up if up else c.down).add(s.ts_ns, s.seq, s.flags, s.payload)
    for c in conns:
        c.up.assemble()
        c.down.assemble()
    return conns


# -- HTTP/1.x -------------------------------------------------------------------------------------------

@dataclass
class Event:
    """One server-sent event."""
    ts_ns: int          # the segment that carried its first byte
    data: str
    json: object = None
    kind: str = ""      # done | usage | role | finish | content | other


@dataclass
class Exchange:
    """One request on the wire and its response."""
    client: tuple[str, int]
    server: tuple[str, int]
    index: int                  # its place on its connection, from 0
    method: str
    path: str
    request_headers: dict
    request_body: bytes
    request_first_ns: int
    request_last_ns: int
    status: int = 0             # 0: no (complete) response on the wire
    reason: str = ""
    headers: dict = field(default_factory=dict)  # response headers, names lowercased (last one wins)
    body: bytes = b""
    response_first_ns: int = 0
    response_last_ns: int = 0
    chunked: bool = False
    complete: bool = False      # the response's end was on the wire (length reached, last chunk, close)
    events: list[Event] = field(default_factory=list)

    # -- what the truth says the tracer should report --------------------------------------------
    @property
    def streamed(self) -> bool:
        return self.headers.get("content-type", "").split(";")[0].strip().lower() == "text/event-stream"

    @property
    def content_events(self) -> list[Event]:
        return [e for e in self.events if e.kind == "content"]

    @property
    def body_json(self):
        if self.streamed or not self.body:
            return None
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    @property
    def usage(self) -> dict | None:
        """The answer's `usage` (its last usage-carrying event, or the JSON body's)."""
        if self.streamed:
            for e in reversed(self.events):
                if isinstance(e.json, dict) and isinstance(e.json.get("usage"), dict):
                    return e.json["usage"]
                # the Responses API's: in its last event's response (`response.completed`)
                inner = e.json.get("response") if isinstance(e.json, dict) else None
                if isinstance(inner, dict) and isinstance(inner.get("usage"), dict):
                    return inner["usage"]
            return None
        j = self.body_json
        return j["usage"] if isinstance(j, dict) and isinstance(j.get("usage"), dict) else None

    @property
    def model(self) -> str | None:
        docs = [e.json for e in self.events] if self.streamed else [self.body_json]
        for j in docs:
            if isinstance(j, dict) and isinstance(j.get("model"), str):
                return j["model"]
        return None

    @property
    def expected_output_tokens(self) -> int | None:
        """usage.completion_tokens where the answer carries it, else the number of content events
        (None for an answer that is neither streamed nor carries usage)."""
        u = self.usage
        if u is not None:
            for name in ("completion_tokens", "output_tokens"):
                if isinstance(u.get(name), int):
                    return u[name]
        return len(self.content_events) if self.streamed else None

    @property
    def ttft_ns(self) -> int | None:
        c = self.content_events
        return c[0].ts_ns - self.request_first_ns if c else None

    @property
    def tpot_ns(self) -> float | None:
        c = self.content_events
        return (c[-1].ts_ns - c[0].ts_ns) / (len(c) - 1) if len(c) > 1 else None

    @property
    def duration_ns(self) -> int | None:
        return self.response_last_ns - self.request_first_ns if self.response_last_ns else None


def _head(data: bytes, pos: int) -> tuple[str, list[tuple[str, str]], int] | None:
    """(first line, [(name, value)], offset after the blank line) of a message head at pos, or None
    when the head is not complete in data."""
    end = data.find(b"\r\n\r\n", pos)
    lf = data.find(b"\n\n", pos)
    if end < 0 and lf < 0:
        return None
    if end < 0 or (0 <= lf < end):
        stop, after = lf, lf + 2
    else:
        stop, after = end, end + 4
    lines = data[pos:stop].decode("latin-1").replace("\r\n", "\n").split("\n")
    headers = []
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers.append((k.strip().lower(), v.strip()))
    return lines[0], headers, after


def _body(data: bytes, pos: int, headers: dict, until_close: bool | None):
    """(decoded body, [(decoded offset, stream offset, length)], end offset, chunked, complete).
    until_close: None for a request (no length: no body), else whether the stream was closed (a
    response without a length ends at the close)."""
    te = headers.get("transfer-encoding", "").lower()
    if "chunked" in te:
        body, pieces, p = bytearray(), [], pos
        while True:
            eol = data.find(b"\r\n", p)
            if eol < 0:
                return bytes(body), pieces, len(data), True, False
            size_text = data[p:eol].split(b";")[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                return bytes(body), pieces, len(data), True, False
            p = eol + 2
            if size == 0:
                # trailers, then the blank line
                while True:
                    eol = data.find(b"\r\n", p)
                    if eol < 0:
                        return bytes(body), pieces, len(data), True, False
                    line, p = data[p:eol], eol + 2
                    if not line:
                        return bytes(body), pieces, p, True, True
            chunk = data[p:p + size]
            pieces.append((len(body), p, len(chunk)))
            body.extend(chunk)
            if len(chunk) < size or data[p + size:p + size + 2] != b"\r\n":
                return bytes(body), pieces, len(data), True, False
            p += size + 2
    if "content-length" in headers:
        n = int(headers["content-length"])
        chunk = data[pos:pos + n]
        return chunk, [(0, pos, len(chunk))], pos + len(chunk), False, len(chunk) == n
    if until_close:
        chunk = data[pos:]
        return chunk, [(0, pos, len(chunk))], len(data), False, True
    return b"", [], pos, False, True


def _stream_offset(pieces, body_offset: int) -> int:
    for dec, raw, n in pieces:
        if dec <= body_offset < dec + n:
            return raw + body_offset - dec
    raise IndexError(body_offset)


ANTHROPIC_EVENTS = ("message_start", "content_block_start", "content_block_delta", "content_block_stop",
                    "message_delta", "message_stop", "ping", "error")


def classify(doc) -> str:
    """The kind of an OpenAI-style streamed chunk (the JSON of one event), or of a Triton generate_stream event."""
    if not isinstance(doc, dict):
        return "other"
    if isinstance(doc.get("text_output"), str):  # Triton's generate_stream
        return "content" if doc["text_output"] else "finish"
    kind = doc.get("type")
    if isinstance(kind, str) and (kind.startswith("response.") or kind in ANTHROPIC_EVENTS):
        # the Responses API (`response.output_text.delta`, ...; `response.created`, ...) and Anthropic's
        # Messages API: a token is a delta of the output (text, reasoning, a tool call's arguments)
        return "content" if kind.endswith(".delta") or kind == "content_block_delta" else "other"
    choices = doc.get("choices")
    if choices is None:
        return "other"
    if not choices:
        return "usage" if doc.get("usage") else "other"
    has_finish = False
    for c in choices:
        if not isinstance(c, dict):
            continue
        delta = c.get("delta")
        text = delta.get("content") if isinstance(delta, dict) else c.get("text")
        if isinstance(text, str) and text:
            return "content"
        if isinstance(delta, dict) and text == "" and delta.get("role") != "assistant":
            return "content"  # a token whose text the server held back (vLLM: one event per token, the stop token's too)
        if c.get("finish_reason"):
            has_finish = True
    return "finish" if has_finish else "role"


def sse_events(body: bytes, time_of) -> list[Event]:
    """The events of a text/event-stream body (those with data), each with the time of its first byte
    (time_of: body offset -> ns)."""
    events = []
    pos = 0
    n = len(body)
    while pos < n:
        # an event is a block of lines up to a blank line
        start = pos
        data_lines = []
        while pos < n:
            eol = pos
            while eol < n and body[eol] not in (0x0A, 0x0D):
                eol += 1
            line = body[pos:eol].decode("utf-8", "replace")
            if eol < n and body[eol] == 0x0D and eol + 1 < n and body[eol + 1] == 0x0A:
                nxt = eol + 2
            else:
                nxt = eol + 1
            if eol >= n:  # an unterminated last line: not an event yet
                pos = n
                data_lines = None
                break
            pos = nxt
            if line == "":
                break
            if line.startswith("data:"):
                v = line[5:]
                data_lines.append(v[1:] if v.startswith(" ") else v)
        if not data_lines:
            continue
        data = "\n".join(data_lines)
        ev = Event(time_of(start), data)
        if data.strip() == "[DONE]":
            ev.kind = "done"
        else:
            try:
                ev.json = json.loads(data)
            except ValueError:
                ev.json = None
            ev.kind = classify(ev.json)
        events.append(ev)
    return events


def exchanges_of(conn: Connection) -> list[Exchange]:
    """The requests of one connection and their responses, in order (pipelining included)."""
    up, down = conn.up, conn.down
    out: list[Exchange] = []
    pos = 0
    while pos < len(up.data):
        while up.data[pos:pos + 2] == b"\r\n":  # stray CRLF between requests
            pos += 2
        if pos >= len(up.data):
            break
        head = _head(up.data, pos)
        if head is None:  # a request cut short on the wire
            parts = up.data[pos:].split(b" ", 2)
            out.append(Exchange(conn.client, conn.server, len(out), parts[0].decode("latin-1"),
                                parts[1].decode("latin-1") if len(parts) > 1 else "", {}, b"",
                                up.time_at(pos), up.time_at(len(up.data) - 1)))
            break
        line, hdrs, after = head
        headers = dict(hdrs)
        body, _pieces, end, _chunked, _complete = _body(up.data, after, headers, until_close=None)
        method, _, rest = line.partition(" ")
        target = rest.rpartition(" ")[0] if " " in rest else rest
        out.append(Exchange(conn.client, conn.server, len(out), method, target, headers, body,
                            up.time_at(pos), up.time_at(max(end, after) - 1)))
        pos = max(end, after)
    pos = 0
    i = 0
    while i < len(out) and pos < len(down.data):
        head = _head(down.data, pos)
        if head is None:
            break
        line, hdrs, after = head
        parts = line.split(" ", 2)
        try:
            status = int(parts[1])
        except (IndexError, ValueError):
            break
        headers = dict(hdrs)
        if 100 <= status < 200 and status != 101:  # interim (100 Continue): not the answer
            pos = after
            continue
        x = out[i]
        no_body = x.method == "HEAD" or status in (204, 304) or 100 <= status < 200
        if no_body:
            body, pieces, end, chunked, complete = b"", [], after, False, True
        else:
            body, pieces, end, chunked, complete = _body(down.data, after, headers, until_close=down.fin_ts is not None)
        x.status, x.reason, x.headers, x.body, x.chunked = status, " ".join(parts[2:]), headers, body, chunked
        x.complete = complete
        x.response_first_ns = down.time_at(pos)
        x.response_last_ns = down.time_at(max(end, after) - 1)
        if x.streamed:
            x.events = sse_events(body, lambda off, p=pieces: down.time_at(_stream_offset(p, off)))
        pos = max(end, after)
        i += 1
    return out


def exchanges(pcap: bytes, server_port: int) -> list[Exchange]:
    """Every request to server_port in a pcap file and its response, connections in the order they
    began, requests in order on each."""
    out = []
    for c in connections(segments(pcap), server_port):
        if c.up.data:
            out.extend(exchanges_of(c))
    return out


# -- the capture -----------------------------------------------------------------------------------------

class Capture:
    """tcpdump on lo for one TCP port, known to be capturing once started, complete once stopped."""

    def __init__(self, port: int, directory: str | None = None, iface: str = "lo") -> None:
        self.port = port
        self.iface = iface
        self.dir = Path(directory or tempfile.mkdtemp(prefix="ebpftool-wire-"))
        self.path = self.dir / f"port{port}.pcap"
        self.proc: subprocess.Popen | None = None
        self.stderr = ""
        self.dropped: int | None = None
        self._probes: list[int] = []

    def start(self, timeout: float = 20.0) -> "Capture":
        # -Z root: Debian's tcpdump would otherwise switch to the user tcpdump, which may not write here
        self.proc = subprocess.Popen(
            ["tcpdump", "-i", self.iface, "-U", "-n", "-s", "0", "-B", "16384", "-Z", "root",
             "--immediate-mode", "--time-stamp-precision=nano", "-w", str(self.path), f"tcp port {self.port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + timeout
        lines = []
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                if self.proc.poll() is not None:
                    break
                continue
            lines.append(line)
            if "listening on" in line:
                break
        else:
            lines.append("(timed out)")
        if not lines or "listening on" not in lines[-1]:
            self._kill()
            raise RuntimeError(f"tcpdump did not start: {''.join(lines)}")
        self._err = lines
        self.probe(deadline - time.monotonic())
        return self

    def probe(self, timeout: float = 20.0) -> None:
        """Open (and close) a connection to the port and wait until the capture file holds it: from then
        on, whatever went over the port before is in the file."""
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            cport = s.getsockname()[1]
            self._probes.append(cport)
            try:
                s.settimeout(2)
                s.connect(("127.0.0.1", self.port))
            except OSError:
                pass  # nothing listening yet: the SYN and the reset are on the wire all the same
        deadline = time.monotonic() + timeout
        while True:
            try:
                segs = segments(self.path.read_bytes())
            except (OSError, ValueError):
                segs = []
            if any(cport in (s.src[1], s.dst[1]) for s in segs):
                return
            if time.monotonic() > deadline or (self.proc and self.proc.poll() is not None):
                raise RuntimeError(f"the capture on port {self.port} did not see the probe from port {cport}")
            time.sleep(0.02)

    def stop(self) -> bytes:
        """Everything sent so far in the file, tcpdump stopped; the capture's bytes."""
        if self.proc and self.proc.poll() is None:
            self.probe()
            self.proc.send_signal(signal.SIGINT)
            try:
                _, err = self.proc.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                self._kill()
                err = ""
            self.stderr = "".join(self._err) + (err or "")
            for line in self.stderr.splitlines():
                if "dropped by kernel" in line:
                    self.dropped = int(line.split()[0])
        return self.path.read_bytes()

    def exchanges(self) -> list[Exchange]:
        return exchanges(self.path.read_bytes(), self.port)

    def _kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> "Capture":
        return self.start()

    def __exit__(self, *exc) -> None:
        if self.proc and self.proc.poll() is None:
            self.stop()
        self._kill()


def write_pcap(packets: list[tuple[int, bytes]], linktype: int = LINKTYPE_EN10MB, nano: bool = True,
               big_endian: bool = False) -> bytes:
    """A classic pcap file of (timestamp ns, frame): for tests of this module."""
    e = ">" if big_endian else "<"
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    out = [struct.pack(e + "IHHiIII", magic, 2, 4, 0, 0, 262144, linktype)]
    for ts, frame in packets:
        sec, rest = divmod(ts, 1_000_000_000)
        frac = rest if nano else rest // 1000
        out.append(struct.pack(e + "IIII", sec, frac, len(frame), len(frame)) + frame)
    return b"".join(out)


def tcp_frame(src: tuple[str, int], dst: tuple[str, int], seq: int, payload: bytes = b"", flags: int = TCP_ACK,
              linktype: int = LINKTYPE_EN10MB, ack: int = 0) -> bytes:
    """An Ethernet (or Linux cooked) frame of one TCP segment, IPv4 or IPv6 by the addresses: for tests."""
    tcp = struct.pack("!HHIIHHHH", src[1], dst[1], seq & 0xFFFFFFFF, ack, (5 << 12) | flags, 65535, 0, 0) + payload
    a, b = ipaddress.ip_address(src[0]), ipaddress.ip_address(dst[0])
    if a.version == 4:
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0x4000, 64, 6, 0, a.packed, b.packed) + tcp
        etype = ETH_IPV4
    else:
        ip = struct.pack("!IHBB16s16s", 6 << 28, len(tcp), 6, 64, a.packed, b.packed) + tcp
        etype = ETH_IPV6
    if linktype == LINKTYPE_LINUX_SLL:
        return struct.pack("!HHH8sH", 0, 772, 6, b"\0" * 8, etype) + ip
    if linktype == LINKTYPE_LINUX_SLL2:
        return struct.pack("!HHIHBB8s", etype, 0, 1, 772, 0, 6, b"\0" * 8) + ip
    return b"\0" * 12 + struct.pack("!H", etype) + ip


def proc_exe_name(pid: int) -> str:
    """The base name of /proc/PID/exe: what process.executable.name must be."""
    return os.path.basename(os.readlink(f"/proc/{pid}/exe"))
