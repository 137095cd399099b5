"""The calls on one client connection: the requests it wrote and the answers it read, paired in order
(HTTP/1.1 keep-alive: one answer at a time, in the order of the requests). A request that asks for the h2c
Upgrade and gets its 101 goes on as HTTP/2's stream 1, the connection as HTTP/2 (http2.ClientH2Connection).

What the user-space side of the tracer will do with the plaintext the kernel hands it, and what the
tests do with the test servers' logs. Each finished call comes out as an Exchange: its Call (None for a
request that is no LLM or MCP call), its Answer, and the times of its first request byte and the answer's
last byte.
"""
from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass

from ebpftool.tracers.agents.answers import Answer, AnswerReader
from ebpftool.tracers.agents.calls import Call, recognise
from ebpftool.tracers.inference.http2 import H2Error, upgrade_request

CAPTURE_BYTES = 4096      # of a request, the head and first body bytes read to recognise it
MAX_HEAD = 16 << 10
_LENGTH = re.compile(rb"\r?\ncontent-length:[ \t]*(\d{1,15})[ \t]*\r?\n", re.IGNORECASE)


@dataclass
class Exchange:
    call: Call | None
    answer: Answer | None     # None: the connection ended before an answer began
    start: float              # the time of the request's first byte
    end: float                # the time of the answer's last byte (or of the close)

    @property
    def duration(self) -> float:
        """Seconds from the request's first byte to the answer's last (MCP: to its JSON-RPC answer)."""
        end = self.answer.result_time if self.answer is not None and self.answer.result_time is not None else self.end
        return max(0.0, end - self.start)

    @property
    def time_to_first_chunk(self) -> float | None:
        a = self.answer
        return None if a is None or a.first_chunk_time is None else max(0.0, a.first_chunk_time - self.start)


class ClientConnection:
    port = 0            # the server's port its requests name (HTTP/1: the tracer reads Host itself)

    def __init__(self, capture: int = CAPTURE_BYTES) -> None:
        self.capture = capture
        self.can_let_go = True   # one call at a time: a connection whose requests are no calls is let go (the
        #                          tracer); not once it is HTTP/2, whose calls share it
        self._in = b""                # request bytes not yet placed
        self._cur: _Request | None = None        # the request being written
        # [call, start, h2c]: sent (or being sent), not yet answered; h2c: the HTTP2-Settings of a request
        # asking for the h2c Upgrade, else None
        self._waiting: deque[list] = deque()
        self._reader: AnswerReader | None = None
        self.h2 = None                # after an h2c Upgrade: the connection as HTTP/2, which reads all from then on
        self.finished: list[Exchange] = []

    def request(self, data: bytes, t: float) -> list[Exchange]:
        """Bytes the client wrote, at time t."""
        if self.h2 is not None:
            return self.h2.request(data, t)
        self._in += data
        while self._in:
            if self._cur is None:
                end = self._in.find(b"\r\n\r\n")
                if end < 0:
                    if len(self._in) > MAX_HEAD:
                        self._in = b""
                    return
                head, self._in = self._in[:end + 4], self._in[end + 4:]
                m = _LENGTH.search(head)
                self._cur = _Request(bytearray(head[:self.capture]), int(m.group(1)) if m else 0, t,
                                     h2c=_h2c_settings(head))
            cur = self._cur
            take, self._in = self._in[:cur.left], self._in[cur.left:]
            room = self.capture - len(cur.captured)
            if room > 0 and take:
                cur.captured += take[:room]
                if cur.entry is not None:       # answered early: what more the body says still counts
                    self._recognised(cur.entry, recognise(bytes(cur.captured)))
            cur.left -= len(take)
            if cur.left > 0:
                return []
            if cur.entry is None:
                self._waiting.append([recognise(bytes(cur.captured)), cur.start, cur.h2c])
            self._cur = None
        return []

    def response(self, data: bytes, t: float) -> list[Exchange]:
        """Bytes the client read, at time t; the calls they finished."""
        if self.h2 is not None:
            done = self.h2.response(data, t)
            self.finished += done
            return done
        done = []
        if self._cur is not None and self._cur.entry is None:
            # An answer before the request's body was all written (a 429 or 401 sent without reading the
            # body): the request is answered as far as it was written.
            self._cur.entry = [recognise(bytes(self._cur.captured)), self._cur.start, self._cur.h2c]
            self._waiting.append(self._cur.entry)
        while data:
            if self._reader is None:
                if not self._waiting:
                    break                 # an answer to no request seen: nothing to pair it with
                self._reader = AnswerReader(self._waiting[0][0])
            self._reader.feed(data, t)
            data = self._reader.leftover()
            if self._reader.done:
                if self._reader.answer.status == 101 and self._waiting[0][2] is not None:
                    done += self._upgrade_to_h2(data, t)
                    break
                done.append(self._end(t, closed=False))
        self.finished += done
        return done

    def close(self, t: float) -> list[Exchange]:
        """The connection ended: an answer under way ends here, requests never answered end unanswered."""
        if self.h2 is not None:
            done = self.h2.close(t)
            self.finished += done
            return done
        done = []
        if self._reader is not None:
            done.append(self._end(t, closed=True))
        while self._waiting:
            call, start, _h2c = self._waiting.popleft()
            done.append(Exchange(call, None, start, t))
        self.finished += done
        return done

    def waiting_calls(self) -> list[Call | None]:
        """The requests written and not yet (fully) answered, in order: their Call, None for one that is no
        LLM or MCP call. The tracer lets go of a connection whose waiting requests are all None."""
        if self.h2 is not None:
            return []
        return [entry[0] for entry in self._waiting]

    def awaiting(self, call: Call | None, start: float) -> None:
        """A request written elsewhere and now waiting for its answer here (the h2c Upgrade's request, whose
        answer comes on HTTP/2's stream 1)."""
        self._waiting.append([call, start, None])

    def _upgrade_to_h2(self, rest: bytes, t: float) -> list[Exchange]:
        """The server took the h2c Upgrade (its 101 just read): the request goes on as stream 1, and every byte
        from here (rest: the server's first frames) is HTTP/2."""
        from ebpftool.tracers.agents.http2 import ClientH2Connection   # it builds on this module

        call, start, settings = self._waiting.popleft()
        self._reader = None
        self.h2 = ClientH2Connection(self.capture)
        self.h2.upgraded(call, start, settings)
        self.can_let_go = False
        return self.h2.response(rest, t) if rest else []

    def _recognised(self, entry: list, call: Call | None) -> None:
        if call is None:
            return
        entry[0] = call
        if self._reader is not None and self._waiting and self._waiting[0] is entry:
            self._reader.call = call

    def _end(self, t: float, closed: bool) -> Exchange:
        call, start, _h2c = self._waiting.popleft()
        answer = self._reader.finish(closed=closed)
        self._reader = None
        return Exchange(call, answer, start, t)


@dataclass
class _Request:
    captured: bytearray       # its head and first body bytes, up to the capture bound
    left: int                 # body bytes still to come (Content-Length)
    start: float              # the time of its first byte
    h2c: bytes | None = None  # it asks for the h2c Upgrade: its HTTP2-Settings (the client's first SETTINGS)
    entry: list | None = None  # its place among the requests waiting for an answer, once it has one


def _h2c_settings(head: bytes) -> bytes | None:
    """The HTTP2-Settings payload of a request head asking for the h2c Upgrade (RFC 7540 3.2), else None."""
    if b"h2c" not in head.lower():
        return None
    try:
        return upgrade_request(head).settings
    except H2Error:
        return None
