"""Scalars at chosen places in JSON bytes that may be cut anywhere, without parsing the rest.

A request's first bytes hold a body cut at an arbitrary point (the kernel copies a bounded prefix), and
an answer's event may be cut too. `scalars(data, wanted)` walks the tokens with one regular expression
(a string, however long, is one token) and returns the scalars found at the wanted paths, where a path
is the tuple of object keys from the top (an array level is "[]"). It stops at the first byte that is not
JSON, so a cut-off string is never read as if it were structure, and it never raises.

Why not json.loads: a cut body is not JSON, and a prompt may hold text that looks like the keys we want
(`"model": "x"` inside a message is escaped, and lies deeper than the top level anyway).
"""
from __future__ import annotations

import json
import re

ARRAY = "[]"
_WS = re.compile(rb"[ \t\r\n]*")
_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|[{}\[\]:,]|true|false|null|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?')
_MISSING = object()


def _value(tok: bytes):
    try:
        return json.loads(tok)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return _MISSING


def scalars(data: bytes, wanted: set[tuple[str, ...]], limit: int = 1 << 20) -> dict[tuple[str, ...], object]:
    """The first scalar (str, int, float, bool, None) at each wanted path in the JSON value that starts
    data, read up to `limit` bytes; paths not reached are absent."""
    out: dict[tuple[str, ...], object] = {}
    stack: list[list] = []        # one frame a level: [is_object, current key or None]
    pos, end = 0, min(len(data), limit)
    try:
        while pos < end and len(out) < len(wanted):
            pos = _WS.match(data, pos).end()
            m = _TOKEN.match(data, pos)
            if m is None or m.end() > end:
                break                      # not JSON here, or cut off: nothing after it can be trusted
            tok, pos = m.group(), m.end()
            c = tok[:1]
            if c == b"{" or c == b"[":
                stack.append([c == b"{", None])
            elif c == b"}" or c == b"]":
                if not stack:
                    break
                stack.pop()
                if not stack:
                    break                  # the top-level value ended
            elif c == b",":
                if stack and stack[-1][0]:
                    stack[-1][1] = None
            elif c == b":":
                continue
            elif stack and stack[-1][0] and stack[-1][1] is None:
                key = _value(tok)
                if not isinstance(key, str):
                    break
                stack[-1][1] = key
            else:
                path = tuple(f[1] if f[0] else ARRAY for f in stack)
                if path in wanted and path not in out:
                    v = _value(tok)
                    if v is not _MISSING:
                        out[path] = v
    except Exception:  # bytes from the wire: never let them crash the caller
        pass
    return out
