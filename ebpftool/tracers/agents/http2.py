"""The calls on one HTTP/2 client connection (h2 by ALPN over TLS, or prior knowledge in clear): each stream is
one call, put back into the HTTP/1.1 form the rest of this package reads.

The client's frames give each stream's request: its header block (HPACK, the inference tracer's decoder)
and its body's first bytes, written as an HTTP/1.1 head (`host` from `:authority`, `content-length` what was
kept of the body) with the time of its first HEADERS frame. The server's frames give its answer: `:status`
and the header fields as a chunked HTTP/1.1 head, each DATA frame's data as a chunk with the time of the read
that held it, END_STREAM as the last chunk. A stream has a ClientConnection of its own, so that streams
interleave as they do on the wire; a reset (by either side) ends its call as a closed connection would.
Frames are read by the inference tracer's FrameReader; a connection whose bytes stop being HTTP/2 (bytes the
kernel did not copy across a frame's head) is given up (`failed`), its open calls ended there.
"""
from __future__ import annotations

from ebpftool.tracers.agents.connection import CAPTURE_BYTES, ClientConnection, Exchange
from ebpftool.tracers.inference.hpack import Decoder
from ebpftool.tracers.inference.http2 import (CLIENT, CONTINUATION, FLAG_END_HEADERS, FLAG_END_STREAM,
                                              FLAG_PRIORITY, HEADERS, MAX_HEADER_BLOCK, PREFACE, RST_STREAM,
                                              SERVER, SETTINGS, DataPiece, Frame, FrameReader, H2Error,
                                              apply_settings, unpad)

MAX_STREAMS = 1024        # streams followed at once on one connection (the rest are not measured)
# Header fields an HTTP/1.1 head must not carry twice or that HTTP/2 framing replaces.
_FRAMING = frozenset((b"content-length", b"transfer-encoding", b"connection", b"host"))


def is_preface(data: bytes) -> bool:
    """Whether a connection's first written bytes are HTTP/2's client preface."""
    return bool(data) and (PREFACE.startswith(data) if len(data) < len(PREFACE) else data.startswith(PREFACE))


class ClientH2Connection:
    """request(data, t) with the bytes the client wrote, response(data, t) with those it read (each returns
    the calls they finished, as ClientConnection.response does), close(t) at its end."""

    can_let_go = False   # its calls share the connection: it is followed whole, never let go

    def __init__(self, capture: int = CAPTURE_BYTES) -> None:
        self.capture = capture
        self.readers = {CLIENT: FrameReader(CLIENT), SERVER: FrameReader(SERVER)}
        self.decoders = {CLIENT: Decoder(), SERVER: Decoder()}
        self.streams: dict[int, _Stream] = {}
        self.port = 0                       # from the latest request's :authority (0: it named none)
        self.failed: str | None = None
        self.finished: list[Exchange] = []
        self._done: list[Exchange] = []     # finished while the client wrote (its resets): returned next
        self._block: dict[str, tuple[int, bytearray, bool, float] | None] = {CLIENT: None, SERVER: None}

    # -- bytes in ------------------------------------------------------------------------------------------
    def request(self, data: bytes, t: float) -> list[Exchange]:
        self._feed(CLIENT, data, t)
        return []

    def response(self, data: bytes, t: float) -> list[Exchange]:
        self._feed(SERVER, data, t)
        done, self._done = self._done, []
        self.finished += done
        return done

    def close(self, t: float) -> list[Exchange]:
        """The connection ended: the calls under way end here."""
        for s in list(self.streams.values()):
            self._end(s, t)
        done, self._done = self._done, []
        self.finished += done
        return done

    def waiting_calls(self) -> list:
        return []

    def upgraded(self, call, start: float, settings: bytes) -> None:
        """The connection after an h2c Upgrade (RFC 7540 3.2): the HTTP/1.1 request that asked for it (its Call
        and start) is stream 1, which the client has sent whole, its answer to come as HTTP/2; the request's
        HTTP2-Settings are the client's first SETTINGS. The client's preface and frames follow as on any
        HTTP/2 connection."""
        conn = ClientConnection(self.capture)
        conn.awaiting(call, start)
        s = self.streams[1] = _Stream(1, conn, [], start)
        s.sent = True
        try:
            apply_settings(CLIENT, settings, self.decoders, self.readers)
        except Exception as e:  # not SETTINGS (H2Error, a payload cut mid-setting)
            self._give_up(f"HTTP2-Settings: {type(e).__name__}: {e}", start)

    def _feed(self, sender: str, data: bytes, t: float) -> None:
        if self.failed is not None or not data:
            return
        try:
            for item in self.readers[sender].feed(data, t):
                if isinstance(item, DataPiece):
                    self._data(sender, item)
                elif isinstance(item, Frame):
                    self._frame(sender, item)
        except Exception as e:  # not HTTP/2 (H2Error, HPACK), or a bug: the wire must not stop the reading
            self._give_up(f"{type(e).__name__}: {e}", t)

    def _give_up(self, why: str, t: float) -> None:
        self.failed = why
        for s in list(self.streams.values()):
            self._end(s, t)

    # -- frames --------------------------------------------------------------------------------------------
    def _frame(self, sender: str, f: Frame) -> None:
        if f.type == SETTINGS and not f.flags & 1:
            apply_settings(sender, f.payload, self.decoders, self.readers)
        elif f.type == HEADERS:
            payload = unpad(f)
            if f.flags & FLAG_PRIORITY:
                payload = payload[5:]
            self._block[sender] = (f.stream_id, bytearray(payload), bool(f.flags & FLAG_END_STREAM), f.ts)
            if f.flags & FLAG_END_HEADERS:
                self._header_block(sender, f.end_ts)
        elif f.type == CONTINUATION:
            block = self._block[sender]
            if block is None or block[0] != f.stream_id:
                raise H2Error("CONTINUATION without its HEADERS")
            block[1].extend(f.payload)
            if len(block[1]) > MAX_HEADER_BLOCK:
                raise H2Error("header block too long")
            if f.flags & FLAG_END_HEADERS:
                self._header_block(sender, f.end_ts)
        elif f.type == RST_STREAM:
            s = self.streams.get(f.stream_id)
            if s is not None:
                self._end(s, f.ts)

    def _header_block(self, sender: str, end_ts: float) -> None:
        sid, fragments, end_stream, ts = self._block[sender]
        self._block[sender] = None
        fields = self.decoders[sender].decode(bytes(fragments))   # every block: the dynamic table must follow
        if sender == CLIENT:
            s = self.streams.get(sid)
            if s is None:
                if len(self.streams) >= MAX_STREAMS:
                    return    # more streams at once than followed
                s = self.streams[sid] = _Stream(sid, ClientConnection(self.capture), fields, ts)
                _host, colon, port = dict(fields).get(b":authority", b"").rpartition(b":")
                if colon and port.isdigit():
                    self.port = int(port)
            if end_stream:    # (a second block: the request's trailers)
                self._send_request(s)
            return
        s = self.streams.get(sid)
        if s is None:
            return
        status = dict(fields).get(b":status", b"")
        if not s.answered:
            if not status.isdigit() or 100 <= int(status) < 200:
                return    # an interim answer (100 Continue, 103 Early Hints): the final one comes later
            self._send_request(s)
            head = [b"HTTP/1.1 " + status + b" -\r\n"]
            head += [name + b": " + value + b"\r\n" for name, value in fields
                     if not name.startswith(b":") and name not in _FRAMING]
            head.append(b"transfer-encoding: chunked\r\n\r\n")
            s.answered = True
            self._answer(s, b"".join(head), ts)
        if end_stream:
            self._answer(s, b"0\r\n\r\n", end_ts)   # trailers, or an answer without a body
            self._forget(s)

    def _data(self, sender: str, piece: DataPiece) -> None:
        s = self.streams.get(piece.stream_id)
        if s is None:
            return
        if sender == CLIENT:
            room = self.capture - len(s.body)
            if room > 0 and piece.data:
                s.body += piece.data[:room]
            if piece.last and piece.flags & FLAG_END_STREAM:
                self._send_request(s)
            return
        if not s.answered:
            return    # DATA before the answer's head: not HTTP
        if piece.data:
            self._answer(s, b"%x\r\n" % len(piece.data) + piece.data + b"\r\n", piece.end_ts)
        if piece.last and piece.flags & FLAG_END_STREAM:
            self._answer(s, b"0\r\n\r\n", piece.end_ts)
            self._forget(s)

    # -- a stream as an HTTP/1.1 call ----------------------------------------------------------------------
    def _send_request(self, s: "_Stream") -> None:
        """The stream's request, as far as it was written, to its ClientConnection (once)."""
        if s.sent:
            return
        s.sent = True
        f = dict(s.fields)
        head = [f.get(b":method", b"GET") + b" " + f.get(b":path", b"/") + b" HTTP/1.1\r\n"]
        if b":authority" in f:
            head.append(b"host: " + f[b":authority"] + b"\r\n")
        head += [name + b": " + value + b"\r\n" for name, value in s.fields
                 if not name.startswith(b":") and name not in _FRAMING]
        head.append(b"content-length: %d\r\n\r\n" % len(s.body))
        s.conn.request(b"".join(head) + bytes(s.body), s.start)

    def _answer(self, s: "_Stream", data: bytes, t: float) -> None:
        self._done += s.conn.response(data, t)

    def _end(self, s: "_Stream", t: float) -> None:
        """A reset, the connection's end or its bytes lost: the call ends as at a close."""
        self._send_request(s)
        self._done += s.conn.close(t)
        self._forget(s)

    def _forget(self, s: "_Stream") -> None:
        self.streams.pop(s.stream_id, None)


class _Stream:
    __slots__ = ("stream_id", "conn", "fields", "start", "body", "sent", "answered")

    def __init__(self, stream_id: int, conn: ClientConnection, fields: list, start: float) -> None:
        self.stream_id = stream_id
        self.conn = conn
        self.fields = fields      # the request's header fields (names and values stay in this process)
        self.start = start        # the time of its first HEADERS frame
        self.body = bytearray()   # its body's first bytes, up to the capture bound
        self.sent = False         # its request went to conn
        self.answered = False     # its final answer's head went to conn

