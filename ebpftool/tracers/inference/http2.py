"""HTTP/2 (RFC 9113) and gRPC on the server side of one connection, from its bytes: pure Python, no BPF.

The kernel side (finding h2 connections, forwarding their bytes) comes later; this is what it will feed.

- `FrameReader`: one direction's bytes, in pieces as they come (the client preface, then 9-byte frame
  headers; a frame split over reads, many frames in one read), into frames. DATA frames come out in pieces
  as their bytes arrive (padding removed), so a large DATA frame is never held whole; other frames are held
  until complete (bounded by the receiver's SETTINGS_MAX_FRAME_SIZE). The h2c Upgrade path is read too: an
  HTTP/1.1 request with `Upgrade: h2c` (then the preface) on the client's side, `HTTP/1.1 101` on the server's.
- `Connection`: both directions of a connection (each with its own `FrameReader` and HPACK decoder), and the
  streams they carry: `feed(sender, data, ts)` returns the streams that ended in that piece (END_STREAM on the
  response, RST_STREAM, or refused by a GOAWAY), each an `H2Stream` with what may leave the node: method,
  path (no query), authority, content type, `:status`, gRPC status and message, DATA bytes each way, gRPC
  messages each way, and times; for a generative-AI request (its path, or an answer of Server-Sent Events) its
  tokens, their times, the stated usage and the model (`H2Stream.gen_ai`, h2_genai.py). Times are whatever the
  caller passes with each piece (the times of the reads).

Every malformed input raises `H2Error` (HPACK errors included) and nothing else; the connection is then
given up (`Connection.error` says why) and later pieces are ignored: HTTP/2 makes such errors fatal to the
connection, and a decoder whose table is unknown cannot go on.
"""
from __future__ import annotations

import base64
import re
import struct
from collections import Counter, deque
from dataclasses import dataclass, field

from ebpftool.tracers.inference import h2_genai
from ebpftool.tracers.inference.hpack import Decoder, HpackError
from ebpftool.tracers.inference.parsers import MAX_PATH, METHODS, OTHER_METHOD, clean_path

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
CLIENT, SERVER = "client", "server"  # who sent the bytes

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
FLAG_END_STREAM = 0x1
FLAG_ACK = 0x1
FLAG_END_HEADERS = 0x4
FLAG_PADDED = 0x8
FLAG_PRIORITY = 0x20

SETTINGS_HEADER_TABLE_SIZE = 0x1
SETTINGS_MAX_FRAME_SIZE = 0x5
DEFAULT_MAX_FRAME_SIZE = 16384
LARGEST_FRAME_SIZE = (1 << 24) - 1
MAX_HEADER_BLOCK = 1 << 20      # a header block's fragments together (CONTINUATION flood)
MAX_HTTP1_HEAD = 64 * 1024      # the h2c Upgrade's HTTP/1.1 heads
MAX_MESSAGE_TEXT = 256          # grpc-message, authority, content type are cut to this

GRPC_CONTENT_TYPE = "application/grpc"

_HTTP1_REQUEST = re.compile(rb"^([A-Z]{1,16}) (\S{1,8192}) HTTP/1\.[01]\r\n")
_HTTP1_START = re.compile(rb"^[A-Z]{1,16}( |$)")
_PRINTABLE = re.compile(r"[^\x20-\x7e]")
_HEX2 = re.compile(rb"[0-9A-Fa-f]{2}")


# The header fields whose values are read (the rest are decoded only where the dynamic table needs them).
WANTED_HEADERS = frozenset((b":method", b":path", b":authority", b":scheme", b":status", b"content-type",
                            b"grpc-status", b"grpc-message", b"host"))


class H2Error(ValueError):
    """Bytes that are not (or no longer) HTTP/2 this parser can follow: the one exception of this module."""


@dataclass
class Frame:
    """A complete frame other than DATA."""
    type: int
    flags: int
    stream_id: int
    payload: bytes
    ts: int       # the piece holding the frame's first byte
    end_ts: int   # the piece holding its last byte


@dataclass
class DataPiece:
    """Some of a DATA frame's data (padding removed). `first` on the frame's first piece, `last` on its last
    (which may carry no bytes); `length` is the frame's data length without padding."""
    stream_id: int
    flags: int
    length: int
    data: bytes
    first: bool
    last: bool
    ts: int       # the piece holding the frame's first byte
    end_ts: int   # the piece holding these bytes (for the last piece: the frame's last byte)
    skipped: int = 0  # data bytes of the frame not seen here (left out by the kernel), after `data`


@dataclass
class Upgrade:
    """The HTTP/1.1 request of an h2c Upgrade (it becomes stream 1), or the server's 101 (`request` False)."""
    request: bool
    method: str = ""
    target: str = ""
    host: str = ""
    settings: bytes = b""   # the HTTP2-Settings header's SETTINGS payload
    body_length: int = 0
    ts: int = 0
    end_ts: int = 0


class FrameReader:
    """One direction of a connection: bytes in, frames (and DATA pieces, and the Upgrade's heads) out."""

    def __init__(self, sender: str, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        if sender not in (CLIENT, SERVER):
            raise ValueError(f"sender is {CLIENT!r} or {SERVER!r}")
        self.sender = sender
        self.max_frame_size = max_frame_size
        self.state = "start"
        self.buf = bytearray()
        self.base = 0                    # stream offset of buf[0]
        self.pieces: deque[tuple[int, int]] = deque()  # (stream offset of a piece's first byte, its time)
        self.bytes_in = 0
        # the frame being read: (length, type, flags, stream id, time of its first byte)
        self._head: tuple[int, int, int, int, int] | None = None
        self._data_left = self._pad_left = self._pad = 0
        self._data_first = True
        self._body_left = 0              # an Upgrade request's body still to come
        self._upgrade: Upgrade | None = None

    # -- bytes in -------------------------------------------------------------------------------------
    def feed(self, data: bytes, ts: int) -> list:
        """The frames (`Frame`, `DataPiece`, `Upgrade`) completed or advanced by these bytes, sent at ts."""
        if data:
            self.pieces.append((self.bytes_in, ts))
            self.bytes_in += len(data)
            self.buf += data
        out: list = []
        while self._step(out, ts):
            pass
        return out

    def skip(self, n: int, ts: int) -> list:
        """n bytes of this direction not seen, sent at ts: only a DATA frame's data (and padding) may be left
        out (the kernel sends a DATA frame's first bytes only); anything else is H2Error."""
        out: list = []
        if n <= 0:
            return out
        head = self._head
        if self.buf or self.state != "frames" or head is None or head[1] != DATA or self._data_left < 0:
            raise H2Error("bytes not seen outside a DATA frame's data")
        length, _ftype, flags, sid, start_ts = head
        data = min(self._data_left, n)
        pad = min(self._pad_left, n - data)
        if data + pad < n:
            raise H2Error("bytes not seen past a DATA frame's end")
        self.pieces.append((self.bytes_in, ts))
        self.bytes_in += n
        self.base += n
        self._data_left -= data
        self._pad_left -= pad
        last = not self._data_left and not self._pad_left
        data_len = length - 1 - self._pad if flags & FLAG_PADDED else length
        out.append(DataPiece(sid, flags, data_len, b"", self._data_first, last, start_ts, ts, skipped=data))
        self._data_first = False
        if last:
            self._head = None
        return out

    def _time_at(self, offset: int) -> int:
        """The time of the piece holding the byte at a stream offset (offsets asked only go forward)."""
        while len(self.pieces) > 1 and self.pieces[1][0] <= offset:
            self.pieces.popleft()
        return self.pieces[0][1]

    def _take(self, n: int) -> bytes:
        chunk = bytes(self.buf[:n])
        del self.buf[:n]
        self.base += n
        return chunk

    def _step(self, out: list, ts: int) -> bool:
        """One step of reading; False when it needs more bytes."""
        st = self.state
        if st == "frames":
            return self._frame_step(out, ts)
        if st == "start":
            if not self.buf:
                return False
            if self.sender == SERVER:
                self.state = "101" if self.buf[0] == ord("H") else "frames"  # 'H' would be a frame of >4 MB
                return True
            if PREFACE.startswith(bytes(self.buf[:len(PREFACE)])):
                if len(self.buf) < len(PREFACE):
                    return False
                self._take(len(PREFACE))
                self.state = "frames"
                return True
            if _HTTP1_START.match(bytes(self.buf[:17])):
                self.state = "upgrade"
                return True
            raise H2Error("not HTTP/2: no client preface and no HTTP/1.1 request")
        if st == "preface":
            n = min(len(self.buf), len(PREFACE))
            if bytes(self.buf[:n]) != PREFACE[:n]:
                raise H2Error("no client preface after the h2c Upgrade")
            if n < len(PREFACE):
                return False
            self._take(len(PREFACE))
            self.state = "frames"
            return True
        if st in ("upgrade", "101"):
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > MAX_HTTP1_HEAD:
                    raise H2Error("HTTP/1.1 head too long")
                return False
            start_ts = self._time_at(self.base)
            head = self._take(end + 4)
            if st == "101":
                status = head.split(b"\r\n", 1)[0].split(b" ")
                if len(status) < 2 or not status[0].startswith(b"HTTP/1.") or status[1] != b"101":
                    raise H2Error(f"the h2c Upgrade was not taken: {head[:32]!r}")
                out.append(Upgrade(False, ts=start_ts, end_ts=ts))
                self.state = "frames"
                return True
            up = upgrade_request(head)
            up.ts, up.end_ts = start_ts, ts
            self._body_left = up.body_length
            self._upgrade = up
            self.state = "upgrade-body"
            return True
        if st == "upgrade-body":
            if self._body_left:
                n = min(self._body_left, len(self.buf))
                if not n:
                    return False
                self._take(n)
                self._body_left -= n
                if self._body_left:
                    return False
            self._upgrade.end_ts = ts
            out.append(self._upgrade)
            self._upgrade = None
            self.state = "preface"
            return True
        raise AssertionError(st)

    def _frame_step(self, out: list, ts: int) -> bool:
        if self._head is None:
            if len(self.buf) < 9:
                return False
            start_ts = self._time_at(self.base)
            hdr = self._take(9)
            length = int.from_bytes(hdr[:3], "big")
            ftype, flags = hdr[3], hdr[4]
            sid = struct.unpack_from("!I", hdr, 5)[0] & 0x7FFFFFFF
            if length > self.max_frame_size:
                raise H2Error(f"frame of {length} bytes above the maximum {self.max_frame_size} (type {ftype})")
            self._head = (length, ftype, flags, sid, start_ts)
            if ftype == DATA:
                if sid == 0:
                    raise H2Error("DATA on stream 0")
                self._data_left, self._pad_left, self._data_first = length, 0, True
                if flags & FLAG_PADDED:
                    if length < 1:
                        raise H2Error("padded DATA frame without its pad length")
                    self._data_left = -1  # the pad length byte comes first
            return True
        length, ftype, flags, sid, start_ts = self._head
        if ftype != DATA:
            if len(self.buf) < length:
                return False
            payload = self._take(length)
            self._head = None
            out.append(Frame(ftype, flags, sid, payload, start_ts, ts))
            return True
        if self._data_left < 0:  # PADDED: the pad length
            if not self.buf:
                return False
            pad = self._take(1)[0]
            if pad > length - 1:
                raise H2Error("DATA padding longer than the frame")
            self._data_left, self._pad_left, self._pad = length - 1 - pad, pad, pad
            return True
        if self._data_left:
            n = min(self._data_left, len(self.buf))
            if not n:
                return False
            chunk = self._take(n)
            self._data_left -= n
        else:
            chunk = b""
        if not self._data_left and self._pad_left:
            n = min(self._pad_left, len(self.buf))
            self._take(n)
            self._pad_left -= n
        last = not self._data_left and not self._pad_left
        if not chunk and not last:
            return False
        data_len = length - 1 - self._pad if flags & FLAG_PADDED else length
        out.append(DataPiece(sid, flags, data_len, chunk, self._data_first, last, start_ts, ts))
        self._data_first = False
        if last:
            self._head = None
        return True


def unpad(f: Frame) -> bytes:
    """A frame's payload without its padding (PADDED)."""
    payload = f.payload
    if f.flags & FLAG_PADDED:
        if not payload:
            raise H2Error("padded frame without its pad length")
        pad = payload[0]
        if pad > len(payload) - 1:
            raise H2Error("padding longer than the frame")
        payload = payload[1:len(payload) - pad]
    return payload


def apply_settings(sender: str, payload: bytes, decoders: dict, readers: dict) -> None:
    """The sender's SETTINGS bound what the other side sends it: the HPACK table its decoder allows, the frame
    size its reader takes (decoders and readers by sender, as a connection keeps them)."""
    other = SERVER if sender == CLIENT else CLIENT
    for i in range(0, len(payload), 6):
        ident, value = struct.unpack_from("!HI", payload, i)
        if ident == SETTINGS_HEADER_TABLE_SIZE:
            decoders[other].set_max_allowed(value)
        elif ident == SETTINGS_MAX_FRAME_SIZE:
            if not DEFAULT_MAX_FRAME_SIZE <= value <= LARGEST_FRAME_SIZE:
                raise H2Error(f"SETTINGS_MAX_FRAME_SIZE {value} out of range")
            readers[other].max_frame_size = value


def upgrade_request(head: bytes) -> Upgrade:
    """The h2c Upgrade request of an HTTP/1.1 head (RFC 7540 3.2), or H2Error for any other request."""
    m = _HTTP1_REQUEST.match(head)
    if not m:
        raise H2Error("not an HTTP/1.1 request")
    headers: dict[str, str] = {}
    for line in head[m.end():].split(b"\r\n"):
        if b":" in line:
            name, _, value = line.partition(b":")
            headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
    if "h2c" not in [t.strip().lower() for t in headers.get("upgrade", "").split(",")]:
        raise H2Error("an HTTP/1.1 request without an h2c Upgrade")
    if "transfer-encoding" in headers:
        raise H2Error("a chunked h2c Upgrade request is not read")
    try:
        body_length = int(headers.get("content-length", "0"))
        raw = headers.get("http2-settings", "").encode("ascii")
        settings = base64.urlsafe_b64decode(raw + b"=" * (-len(raw) % 4))
    except ValueError as e:
        raise H2Error(f"bad h2c Upgrade request: {e}") from e
    if body_length < 0:
        raise H2Error("negative Content-Length")
    return Upgrade(True, m.group(1).decode(), m.group(2).decode("latin-1"), headers.get("host", ""), settings,
                   body_length)


# -- streams ----------------------------------------------------------------------------------------------

@dataclass
class H2Stream:
    """One stream (one request and its response), with only what may leave the node."""
    stream_id: int
    method: str | None = None
    path: str | None = None            # without query or fragment (parsers.clean_path)
    authority: str | None = None       # without userinfo
    scheme: str | None = None
    content_type: str | None = None    # the request's, lowercased, parameters left out
    request_start_ns: int | None = None  # the piece holding the first byte of its first HEADERS frame
    request_end_ns: int | None = None    # the piece holding the last byte of the client's END_STREAM frame
    status: int | None = None          # the final :status (1xx left out)
    response_start_ns: int | None = None  # the first byte of the response HEADERS that carried it
    first_data_ns: int | None = None   # the first byte of the response's first DATA frame that carries data
    end_ns: int | None = None          # the last byte of the response's END_STREAM frame, or the RST_STREAM / GOAWAY
    end_reason: str | None = None      # end_stream | rst_stream | goaway
    rst_error: int | None = None       # RST_STREAM's (or GOAWAY's) error code
    rst_by: str | None = None          # who reset it
    grpc_status: int | None = None     # from the trailers (or a Trailers-Only response)
    grpc_message: str | None = None    # percent-decoded, printable, bounded
    request_bytes: int = 0             # DATA bytes, padding left out
    response_bytes: int = 0
    request_messages: int = 0          # gRPC messages (5-byte length prefix) complete in the DATA
    response_messages: int = 0
    first_request_message_ns: int | None = None  # the DATA frame holding the first request message's first byte
    first_message_ns: int | None = None  # the DATA frame holding the first response message's first byte
    last_message_ns: int | None = None   # ... and the last's
    messages_lost: bool = False        # a message's length prefix was in DATA not seen: its counts are too low
    pushed: bool = False               # a server push (PUSH_PROMISE)
    upgraded: bool = False             # stream 1 of an h2c Upgrade: its request was HTTP/1.1
    # a generative-AI request (its path, as over HTTP/1; or an answer of Server-Sent Events): its DATA read for
    # tokens, their times, the stated usage and the model (h2_genai.py); None for other streams
    gen_ai: h2_genai.GenAiReader | None = None
    _messages: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def grpc(self) -> bool:
        return bool(self.content_type) and self.content_type.startswith(GRPC_CONTENT_TYPE)

    @property
    def rpc(self) -> tuple[str, str] | None:
        """(rpc.service, rpc.method) of a gRPC path `/package.Service/Method`."""
        if not self.grpc or not self.path or self.path.count("/") != 2:
            return None
        service, method = self.path[1:].split("/")
        return (service, method) if service and method else None

    @property
    def ended(self) -> bool:
        return self.end_reason is not None


class _MessageCounter:
    """gRPC's length-prefixed messages (1 flag byte, 4 length bytes, the message) in one direction's DATA."""

    def __init__(self) -> None:
        self.prefix = bytearray()
        self.lost = False                  # a length prefix was among bytes not seen: counting stopped
        self.body_left = 0
        self.complete = 0
        self.first_ts: int | None = None   # the DATA frame holding the first message's first byte
        self.last_ts: int | None = None    # ... and the latest message's

    def skip(self, n: int) -> None:
        """n bytes of data not seen: inside a message's body they are counted down; where a length prefix
        lay among them, the messages after it cannot be told apart (lost)."""
        if self.lost or n <= 0:
            return
        if self.prefix or n > self.body_left:
            self.lost = True
            return
        self.body_left -= n
        if not self.body_left:
            self.complete += 1

    def feed(self, data: bytes, ts: int) -> None:
        if self.lost:
            return
        pos = 0
        while pos < len(data):
            if self.body_left:
                n = min(self.body_left, len(data) - pos)
                self.body_left -= n
                pos += n
                if not self.body_left:
                    self.complete += 1
                continue
            if not self.prefix:
                self.last_ts = ts
                if self.first_ts is None:
                    self.first_ts = ts
            n = min(5 - len(self.prefix), len(data) - pos)
            self.prefix += data[pos:pos + n]
            pos += n
            if len(self.prefix) == 5:
                self.body_left = struct.unpack_from("!I", self.prefix, 1)[0]
                self.prefix.clear()
                if not self.body_left:
                    self.complete += 1


@dataclass
class _HeaderBlock:
    """A header block being read: its HEADERS or PUSH_PROMISE frame, then CONTINUATIONs."""
    type: int
    stream_id: int
    end_stream: bool         # the HEADERS frame's END_STREAM (a PUSH_PROMISE has none)
    ts: int                  # the first byte of its first frame
    promised: int = 0        # PUSH_PROMISE's promised stream
    fragments: list = field(default_factory=list)
    size: int = 0

    def add(self, fragment: bytes) -> None:
        self.fragments.append(fragment)
        self.size += len(fragment)
        if self.size > MAX_HEADER_BLOCK:
            raise H2Error("header block larger than 1 MiB")


def _text(value: bytes, limit: int = MAX_MESSAGE_TEXT) -> str:
    return _PRINTABLE.sub("_", value.decode("latin-1"))[:limit]


def _percent_decode(value: bytes) -> bytes:
    """gRPC's grpc-message encoding: %XX for bytes outside printable ASCII (and '%' itself)."""
    out, i = bytearray(), 0
    while i < len(value):
        if value[i] == 0x25 and _HEX2.fullmatch(value[i + 1:i + 3]):
            out.append(int(value[i + 1:i + 3], 16))
            i += 3
        else:
            out.append(value[i])
            i += 1
    return bytes(out)


class Connection:
    """Both directions of one HTTP/2 connection, seen from the server's side: bytes in, streams out.

    `feed(sender, data, ts)` takes the next bytes one side sent (CLIENT or SERVER) with their time and returns
    the streams that ended in them. Feed each direction's bytes in order; feeding the two directions in the
    order they were on the wire keeps every cross-direction rule (SETTINGS bounds) exact. Streams whose
    request had not been seen (a connection picked up midway) come out with what was seen.
    """

    def __init__(self, preface_seen: bool = False) -> None:
        """preface_seen: the client's bytes begin after its preface (checked by whoever feeds them)."""
        self.readers = {CLIENT: FrameReader(CLIENT), SERVER: FrameReader(SERVER)}
        if preface_seen:
            self.readers[CLIENT].state = self.readers[SERVER].state = "frames"
        self.decoders = {CLIENT: Decoder(), SERVER: Decoder()}
        self.streams: dict[int, H2Stream] = {}
        self.finished_count = 0
        self.goaway: tuple[str, int, int] | None = None   # (sender, last stream id, error code)
        self.upgraded = False
        self.carries_gen_ai = False   # a stream of it has been a generative-AI request or an event stream
        self.error: str | None = None
        self.frames: Counter = Counter()   # (sender, frame type) -> frames read (DATA counted once per frame)
        self._block: dict[str, _HeaderBlock | None] = {CLIENT: None, SERVER: None}  # per sender
        self._highest = [0, 0]  # the highest stream id seen, even and odd

    def feed(self, sender: str, data: bytes, ts: int, skipped: int = 0) -> list[H2Stream]:
        """The streams that ended in these bytes; `skipped` bytes not seen follow them (DATA the kernel left
        out: FrameReader.skip)."""
        if self.error is not None:
            return []
        if sender not in self.readers:
            raise ValueError(f"sender is {CLIENT!r} or {SERVER!r}")
        done: list[H2Stream] = []
        try:
            reader = self.readers[sender]
            for item in reader.feed(data, ts):
                self._handle(sender, item, done)
            for item in reader.skip(skipped, ts):
                self._handle(sender, item, done)
        except H2Error as e:
            self.error = str(e)
            raise
        except HpackError as e:
            self.error = f"HPACK: {e}"
            raise H2Error(self.error) from e
        except Exception as e:  # a bug must not crash the caller's loop on bytes from the wire
            self.error = f"{type(e).__name__}: {e}"
            raise H2Error(self.error) from e
        return done

    def upgraded_request(self, method: str, target: str, ts: int) -> H2Stream:
        """Stream 1 of an h2c Upgrade whose HTTP/1.1 request was read by someone else (the kernel read it as
        HTTP/1 and passes over the 101 and the client preface): its method, target and start. Its answer
        comes in the frames fed after."""
        self._upgrade(CLIENT, Upgrade(True, method, target, ts=ts, end_ts=ts))
        return self.streams[1]

    def close(self) -> list[H2Stream]:
        """The streams still open (the connection closed before they ended), their end unknown."""
        left = list(self.streams.values())
        self.streams.clear()
        for s in left:
            if s.gen_ai is not None:
                s.gen_ai.finish()
        return left

    # -- frames ----------------------------------------------------------------------------------------
    def _stream(self, sid: int) -> H2Stream | None:
        """The stream, opened if new; None for one that has ended (ids only grow: RFC 9113 5.1.1)."""
        s = self.streams.get(sid)
        if s is None:
            if sid <= self._highest[sid % 2]:
                return None  # a late frame (RST_STREAM, trailers after a reset) on an ended stream
            self._highest[sid % 2] = sid
            s = self.streams[sid] = H2Stream(sid)
        return s

    def _finish(self, s: H2Stream, ts: int, reason: str, done: list) -> None:
        if s.ended:
            return
        s.end_ns, s.end_reason = ts, reason
        if s.gen_ai is not None:
            s.gen_ai.finish()
        self.streams.pop(s.stream_id, None)
        self.finished_count += 1
        done.append(s)

    def _handle(self, sender: str, item, done: list) -> None:
        if isinstance(item, Upgrade):
            self._upgrade(sender, item)
            return
        pending = self._block[sender]
        if pending is not None and (isinstance(item, DataPiece) or item.type != CONTINUATION
                                    or item.stream_id != pending.stream_id):
            raise H2Error("a header block interrupted before its END_HEADERS")
        if isinstance(item, DataPiece):
            if item.first:
                self.frames[sender, DATA] += 1
            self._data(sender, item, done)
            return
        f = item
        t = f.type
        self.frames[sender, t] += 1
        if t in (HEADERS, PUSH_PROMISE):
            if f.stream_id == 0:
                raise H2Error("header block on stream 0")
            fragment = unpad(f)
            block = _HeaderBlock(t, f.stream_id, t == HEADERS and bool(f.flags & FLAG_END_STREAM), f.ts)
            if t == HEADERS and f.flags & FLAG_PRIORITY:   # stream dependency and weight: not needed here
                if len(fragment) < 5:
                    raise H2Error("HEADERS too short for its priority")
                fragment = fragment[5:]
            if t == PUSH_PROMISE:
                if len(fragment) < 4:
                    raise H2Error("PUSH_PROMISE too short")
                block.promised = struct.unpack_from("!I", fragment)[0] & 0x7FFFFFFF
                fragment = fragment[4:]
            block.add(fragment)
            if f.flags & FLAG_END_HEADERS:
                self._header_block(sender, block, f.end_ts, done)
            else:
                self._block[sender] = block
        elif t == CONTINUATION:
            if pending is None:
                raise H2Error("CONTINUATION without a header block")
            pending.add(f.payload)
            if f.flags & FLAG_END_HEADERS:
                self._block[sender] = None
                self._header_block(sender, pending, f.end_ts, done)
        elif t == RST_STREAM:
            if f.stream_id == 0 or len(f.payload) != 4:
                raise H2Error("bad RST_STREAM")
            s = self.streams.get(f.stream_id)   # a reset of a stream not seen (or ended) opens nothing
            if s is not None:
                s.rst_error, s.rst_by = struct.unpack("!I", f.payload)[0], sender
                self._finish(s, f.end_ts, "rst_stream", done)
        elif t == SETTINGS:
            if f.stream_id != 0 or len(f.payload) % 6 or (f.flags & FLAG_ACK and f.payload):
                raise H2Error("bad SETTINGS")
            if not f.flags & FLAG_ACK:
                self._settings(sender, f.payload)
        elif t == GOAWAY:
            if f.stream_id != 0 or len(f.payload) < 8:
                raise H2Error("bad GOAWAY")
            last, code = struct.unpack_from("!II", f.payload)
            last &= 0x7FFFFFFF
            self.goaway = (sender, last, code)
            # the streams the GOAWAY's receiver opened above `last` were not (and will not be) processed
            opened_by_other = 1 if sender == SERVER else 0
            for s in [s for s in self.streams.values() if s.stream_id > last and s.stream_id % 2 == opened_by_other]:
                s.rst_error, s.rst_by = code, sender
                self._finish(s, f.end_ts, "goaway", done)
        elif t == PRIORITY:
            if f.stream_id == 0 or len(f.payload) != 5:
                raise H2Error("bad PRIORITY")
        elif t == PING:
            if f.stream_id != 0 or len(f.payload) != 8:
                raise H2Error("bad PING")
        elif t == WINDOW_UPDATE:
            if len(f.payload) != 4:
                raise H2Error("bad WINDOW_UPDATE")
        # other types: extensions, ignored (RFC 9113 4.1)

    def _settings(self, sender: str, payload: bytes) -> None:
        apply_settings(sender, payload, self.decoders, self.readers)

    def _upgrade(self, sender: str, up: Upgrade) -> None:
        self.upgraded = True
        if not up.request:
            return
        if len(up.settings) % 6:
            raise H2Error("bad HTTP2-Settings")
        self._settings(CLIENT, up.settings)
        s = self._stream(1)
        s.upgraded = True
        s.method = up.method if up.method in METHODS else OTHER_METHOD
        s.path = clean_path(up.target)
        s.authority = _authority(up.host.encode("latin-1"))
        s.scheme = "http"
        s.request_start_ns, s.request_end_ns = up.ts, up.end_ts
        s.request_bytes = up.body_length
        self.carries_gen_ai |= _gen_ai_begin(s)

    def _header_block(self, sender: str, block: _HeaderBlock, end_ts: int, done: list) -> None:
        fields = self.decoders[sender].decode(b"".join(block.fragments), WANTED_HEADERS)
        ts, end_stream = block.ts, block.end_stream
        if block.type == PUSH_PROMISE:
            if sender != SERVER or not block.promised:
                raise H2Error("PUSH_PROMISE from a client, or promising stream 0")
            s = self._stream(block.promised)
            if s is not None:
                s.pushed = True
                self._request_fields(s, fields, ts)
            return
        s = self._stream(block.stream_id)
        if s is None:
            return
        if sender == CLIENT:
            if s.request_start_ns is None:
                self._request_fields(s, fields, ts)
                self.carries_gen_ai |= _gen_ai_begin(s)
            if end_stream:
                s.request_end_ns = end_ts
            return
        status = grpc_status = grpc_message = content_type = None
        for name, value in fields:
            if name == b":status":
                status = value
            elif name == b"content-type":
                content_type = value
            elif name == b"grpc-status":
                grpc_status = value
            elif name == b"grpc-message":
                grpc_message = value
        if status is not None:
            try:
                code = int(status)
            except ValueError:
                raise H2Error("bad :status") from None
            if not 100 <= code <= 999:
                raise H2Error("bad :status")
            if code >= 200 and s.status is None:
                s.status, s.response_start_ns = code, ts
                if (s.gen_ai is None and content_type is not None and not s.grpc and not s.pushed
                        and content_type.lower().startswith(h2_genai.SSE_CONTENT_TYPE)):
                    # a stream of events on a path not known as generative AI (HTTP/1: OP_STREAM)
                    s.gen_ai = h2_genai.GenAiReader(h2_genai.STREAM_OPERATION)
                    self.carries_gen_ai = True
        if grpc_status is not None:
            try:
                s.grpc_status = int(grpc_status)
            except ValueError:
                s.grpc_status = None
        if grpc_message is not None:
            s.grpc_message = _text(_percent_decode(grpc_message))
        if end_stream:
            self._finish(s, end_ts, "end_stream", done)

    @staticmethod
    def _request_fields(s: H2Stream, fields: list, ts: int) -> None:
        s.request_start_ns = ts
        for name, value in fields:
            if name == b":method":
                method = value.decode("latin-1")
                s.method = method if method in METHODS else OTHER_METHOD
            elif name == b":path":
                s.path = clean_path(value.decode("latin-1"))
            elif name == b":authority":
                s.authority = _authority(value)
            elif name == b":scheme":
                s.scheme = _text(value, 16)
            elif name == b"content-type":
                s.content_type = _text(value.split(b";", 1)[0].strip().lower(), 64)

    def _data(self, sender: str, piece: DataPiece, done: list) -> None:
        s = self._stream(piece.stream_id)
        if s is None:
            return
        size = len(piece.data) + piece.skipped
        if sender == SERVER:
            s.response_bytes += size
            if piece.first and piece.length and s.first_data_ns is None:
                s.first_data_ns = piece.ts
        else:
            s.request_bytes += size
        if s.gen_ai is not None and size:
            if sender == SERVER:
                s.gen_ai.response(piece.data, piece.end_ts, piece.skipped)
            else:
                s.gen_ai.request(piece.data, piece.skipped)
        if s.grpc and size:
            counter = s._messages.get(sender)
            if counter is None:
                counter = s._messages[sender] = _MessageCounter()
            counter.feed(piece.data, piece.ts)
            counter.skip(piece.skipped)
            if sender == SERVER:
                s.response_messages = counter.complete
                s.first_message_ns, s.last_message_ns = counter.first_ts, counter.last_ts
            else:
                s.request_messages = counter.complete
                s.first_request_message_ns = counter.first_ts
            if counter.lost:
                s.messages_lost = True
        if piece.last and piece.flags & FLAG_END_STREAM:
            if sender == SERVER:
                self._finish(s, piece.end_ts, "end_stream", done)
            else:
                s.request_end_ns = piece.end_ts


def _gen_ai_begin(s: H2Stream) -> bool:
    """A reader for a request whose path names a generative-AI operation (not gRPC, not a push): decided once,
    at its request headers, so that other streams' DATA costs nothing more. Whether the stream has one."""
    if s.gen_ai is None and not s.grpc and not s.pushed:
        op = h2_genai.operation(s.method, s.path)
        if op is not None:
            s.gen_ai = h2_genai.GenAiReader(op, h2_genai.is_ndjson(s.path))
    return s.gen_ai is not None


def _authority(value: bytes) -> str:
    """:authority (or Host) without userinfo, printable, bounded."""
    return _text(value.rpartition(b"@")[2], MAX_PATH)
