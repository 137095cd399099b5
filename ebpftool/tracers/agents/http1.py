"""An HTTP/1.x response read from pieces cut anywhere: its status, a few header values, and its body with
the chunked framing and gzip/deflate undone, handed on as it comes.

Only Content-Type, Content-Length, Transfer-Encoding and Content-Encoding are read of the headers (no
other value is kept: an answer's headers may carry request ids and cookies). Interim 1xx answers are
skipped; a 101 (Switching Protocols) ends at its head, the new protocol's bytes after it left over. Never raises on garbage: a head it cannot read ends the reading (`failed`).
"""
from __future__ import annotations

import re
import zlib

MAX_HEAD = 16 << 10     # a response head longer than this is not one this reader follows
_STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3})(?: [^\r\n]*)?\r?\n")
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,15})[^\r\n]*\r?\n")
_KEPT = (b"content-type", b"content-length", b"transfer-encoding", b"content-encoding")


class ResponseStream:
    """feed() pieces of one response; each call returns the body bytes the piece completed. `done` once
    the body ended by its length or last chunk; bytes fed past that end (the next answer on a kept-alive
    connection) wait in `leftover`."""

    def __init__(self) -> None:
        self.status: int | None = None
        self.content_type = ""
        self.done = False
        self.failed = False
        self.leftover = b""
        self._head = b""
        self._length: int | None = None     # bytes of body still expected (Content-Length)
        self._chunked = False
        self._chunk_left = 0                # bytes left in the current chunk (chunked)
        self._chunk_state = "size"          # size | data | crlf | trailer
        self._pending = b""                 # a chunk-size line or CRLF cut between pieces
        self._inflate = None

    @property
    def in_body(self) -> bool:
        return self.status is not None

    def feed(self, data: bytes) -> bytes:
        if self.failed or not data:
            return b""
        if self.done:
            self.leftover += data
            return b""
        try:
            if self.status is None:
                data = self._read_head(data)
                if self.status is None:
                    return b""
                if self.done:               # no body (204, 304, Content-Length: 0)
                    self.leftover += data
                    return b""
            raw = self._unframe(data)
            return self._decode(raw)
        except Exception:  # bytes from the wire: never let them crash the caller
            self.failed = True
            return b""

    def end(self) -> bytes:
        """The connection closed: a body without length ends here; what the decoder held comes out."""
        if self.status is not None and not self._chunked and self._length is None:
            self.done = True
        if self._inflate is not None:
            try:
                return self._inflate.flush()
            except zlib.error:
                return b""
        return b""

    # -- the head ----------------------------------------------------------------------------------
    def _read_head(self, data: bytes) -> bytes:
        self._head += data
        while True:
            end = self._head.find(b"\r\n\r\n")
            sep = 4
            if end < 0:
                end, sep = self._head.find(b"\n\n"), 2
            if end < 0:
                if len(self._head) > MAX_HEAD or (len(self._head) >= 5 and not self._head.startswith(b"HTTP/")):
                    self.failed = True
                return b""
            m = _STATUS_LINE.match(self._head)
            if not m:
                self.failed = True
                return b""
            status = int(m.group(1))
            head, rest = self._head[m.end():end], self._head[end + sep:]
            if 100 <= status < 200 and status != 101:   # 100 Continue, 103 Early Hints: the answer follows
                self._head = rest
                continue
            self._head = b""
            self._headers(head, status)
            self.status = status
            return rest

    def _headers(self, head: bytes, status: int) -> None:
        for line in head.split(b"\n"):
            name, sep, value = line.partition(b":")
            name = name.strip().lower()
            if not sep or name not in _KEPT:
                continue
            value = value.strip()
            if name == b"content-type":
                self.content_type = value.decode("latin-1").split(";", 1)[0].strip().lower()
            elif name == b"content-length" and value.isdigit():
                self._length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                self._chunked = True
            elif name == b"content-encoding":
                enc = value.lower()
                if enc in (b"gzip", b"x-gzip"):
                    self._inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
                elif enc == b"deflate":
                    self._inflate = zlib.decompressobj()
        if self._chunked:
            self._length = None
        if status in (101, 204, 304) or self._length == 0:
            self.done = True

    # -- the body ----------------------------------------------------------------------------------
    def _unframe(self, data: bytes) -> bytes:
        if not self._chunked:
            if self._length is None:
                return data
            body = data[:self._length]
            self._length -= len(body)
            if self._length == 0:
                self.done = True
                self.leftover += data[len(body):]
            return body
        out = []
        data = self._pending + data
        self._pending = b""
        pos = 0
        while pos < len(data) and not self.done:
            if self._chunk_state == "size":
                m = _CHUNK_SIZE.match(data, pos)
                if not m:
                    if b"\n" in data[pos:pos + 64] or len(data) - pos > 64:
                        self.failed = True
                        return b"".join(out)
                    self._pending = data[pos:]
                    break
                pos = m.end()
                self._chunk_left = int(m.group(1), 16)
                self._chunk_state = "data" if self._chunk_left else "trailer"
            elif self._chunk_state == "data":
                take = data[pos:pos + self._chunk_left]
                out.append(take)
                pos += len(take)
                self._chunk_left -= len(take)
                if self._chunk_left == 0:
                    self._chunk_state = "crlf"
            elif self._chunk_state == "crlf":
                nl = data.find(b"\n", pos)
                if nl < 0:
                    self._pending = data[pos:]
                    break
                pos = nl + 1
                self._chunk_state = "size"
            else:  # trailer fields after the last chunk, up to an empty line
                nl = data.find(b"\n", pos)
                if nl < 0:
                    self._pending = data[pos:]
                    break
                line = data[pos:nl].strip()
                pos = nl + 1
                if not line:
                    self.done = True
                    self.leftover += data[pos:]
        return b"".join(out)

    def _decode(self, raw: bytes) -> bytes:
        if self._inflate is None or not raw:
            return raw
        try:
            return self._inflate.decompress(raw)
        except zlib.error:
            self._inflate = None
            self.failed = True
            return b""
