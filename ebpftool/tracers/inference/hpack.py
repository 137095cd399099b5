"""HPACK (RFC 7541): the header compression of HTTP/2, decoding only, for the inference tracer.

A `Decoder` holds one direction of one connection's state (its dynamic table): the headers a client sends
and those a server sends are decoded by two decoders. `Decoder.decode(block)` takes one complete header block
(a HEADERS or PUSH_PROMISE fragment and its CONTINUATIONs, padding removed) and returns its fields as
(name, value) bytes in order. Pure Python, no BPF: the bytes come from the wire, so every malformed input
raises `HpackError` and nothing else; after an error the decoder's table is no longer known (HTTP/2 makes
that a connection error, COMPRESSION_ERROR), so callers stop decoding that direction.

The header values decoded here stay in the process: callers keep the few fields they export.
"""
from __future__ import annotations


class HpackError(ValueError):
    """A header block that cannot be decoded (the one exception this module raises on bad input)."""


# RFC 7541 appendix A: the static table, index 1..61.
STATIC_TABLE: tuple[tuple[bytes, bytes], ...] = (
    (b":authority", b""),
    (b":method", b"GET"),
    (b":method", b"POST"),
    (b":path", b"/"),
    (b":path", b"/index.html"),
    (b":scheme", b"http"),
    (b":scheme", b"https"),
    (b":status", b"200"),
    (b":status", b"204"),
    (b":status", b"206"),
    (b":status", b"304"),
    (b":status", b"400"),
    (b":status", b"404"),
    (b":status", b"500"),
    (b"accept-charset", b""),
    (b"accept-encoding", b"gzip, deflate"),
    (b"accept-language", b""),
    (b"accept-ranges", b""),
    (b"accept", b""),
    (b"access-control-allow-origin", b""),
    (b"age", b""),
    (b"allow", b""),
    (b"authorization", b""),
    (b"cache-control", b""),
    (b"content-disposition", b""),
    (b"content-encoding", b""),
    (b"content-language", b""),
    (b"content-length", b""),
    (b"content-location", b""),
    (b"content-range", b""),
    (b"content-type", b""),
    (b"cookie", b""),
    (b"date", b""),
    (b"etag", b""),
    (b"expect", b""),
    (b"expires", b""),
    (b"from", b""),
    (b"host", b""),
    (b"if-match", b""),
    (b"if-modified-since", b""),
    (b"if-none-match", b""),
    (b"if-range", b""),
    (b"if-unmodified-since", b""),
    (b"last-modified", b""),
    (b"link", b""),
    (b"location", b""),
    (b"max-forwards", b""),
    (b"proxy-authenticate", b""),
    (b"proxy-authorization", b""),
    (b"range", b""),
    (b"referer", b""),
    (b"refresh", b""),
    (b"retry-after", b""),
    (b"server", b""),
    (b"set-cookie", b""),
    (b"strict-transport-security", b""),
    (b"transfer-encoding", b""),
    (b"user-agent", b""),
    (b"vary", b""),
    (b"via", b""),
    (b"www-authenticate", b""),
)

# RFC 7541 appendix B: the Huffman code of each symbol 0..255 and EOS (256), as "code/bit length" in hex/decimal,
# in symbol order.
_HUFFMAN_TABLE = """
    1ff8/13 7fffd8/23 fffffe2/28 fffffe3/28 fffffe4/28 fffffe5/28
    fffffe6/28 fffffe7/28 fffffe8/28 ffffea/24 3ffffffc/30 fffffe9/28
    fffffea/28 3ffffffd/30 fffffeb/28 fffffec/28 fffffed/28 fffffee/28
    fffffef/28 ffffff0/28 ffffff1/28 ffffff2/28 3ffffffe/30 ffffff3/28
    ffffff4/28 ffffff5/28 ffffff6/28 ffffff7/28 ffffff8/28 ffffff9/28
    ffffffa/28 ffffffb/28 14/6 3f8/10 3f9/10 ffa/12
    1ff9/13 15/6 f8/8 7fa/11 3fa/10 3fb/10
    f9/8 7fb/11 fa/8 16/6 17/6 18/6
    0/5 1/5 2/5 19/6 1a/6 1b/6
    1c/6 1d/6 1e/6 1f/6 5c/7 fb/8
    7ffc/15 20/6 ffb/12 3fc/10 1ffa/13 21/6
    5d/7 5e/7 5f/7 60/7 61/7 62/7
    63/7 64/7 65/7 66/7 67/7 68/7
    69/7 6a/7 6b/7 6c/7 6d/7 6e/7
    6f/7 70/7 71/7 72/7 fc/8 73/7
    fd/8 1ffb/13 7fff0/19 1ffc/13 3ffc/14 22/6
    7ffd/15 3/5 23/6 4/5 24/6 5/5
    25/6 26/6 27/6 6/5 74/7 75/7
    28/6 29/6 2a/6 7/5 2b/6 76/7
    2c/6 8/5 9/5 2d/6 77/7 78/7
    79/7 7a/7 7b/7 7ffe/15 7fc/11 3ffd/14
    1ffd/13 ffffffc/28 fffe6/20 3fffd2/22 fffe7/20 fffe8/20
    3fffd3/22 3fffd4/22 3fffd5/22 7fffd9/23 3fffd6/22 7fffda/23
    7fffdb/23 7fffdc/23 7fffdd/23 7fffde/23 ffffeb/24 7fffdf/23
    ffffec/24 ffffed/24 3fffd7/22 7fffe0/23 ffffee/24 7fffe1/23
    7fffe2/23 7fffe3/23 7fffe4/23 1fffdc/21 3fffd8/22 7fffe5/23
    3fffd9/22 7fffe6/23 7fffe7/23 ffffef/24 3fffda/22 1fffdd/21
    fffe9/20 3fffdb/22 3fffdc/22 7fffe8/23 7fffe9/23 1fffde/21
    7fffea/23 3fffdd/22 3fffde/22 fffff0/24 1fffdf/21 3fffdf/22
    7fffeb/23 7fffec/23 1fffe0/21 1fffe1/21 3fffe0/22 1fffe2/21
    7fffed/23 3fffe1/22 7fffee/23 7fffef/23 fffea/20 3fffe2/22
    3fffe3/22 3fffe4/22 7ffff0/23 3fffe5/22 3fffe6/22 7ffff1/23
    3ffffe0/26 3ffffe1/26 fffeb/20 7fff1/19 3fffe7/22 7ffff2/23
    3fffe8/22 1ffffec/25 3ffffe2/26 3ffffe3/26 3ffffe4/26 7ffffde/27
    7ffffdf/27 3ffffe5/26 fffff1/24 1ffffed/25 7fff2/19 1fffe3/21
    3ffffe6/26 7ffffe0/27 7ffffe1/27 3ffffe7/26 7ffffe2/27 fffff2/24
    1fffe4/21 1fffe5/21 3ffffe8/26 3ffffe9/26 ffffffd/28 7ffffe3/27
    7ffffe4/27 7ffffe5/27 fffec/20 fffff3/24 fffed/20 1fffe6/21
    3fffe9/22 1fffe7/21 1fffe8/21 7ffff3/23 3fffea/22 3fffeb/22
    1ffffee/25 1ffffef/25 fffff4/24 fffff5/24 3ffffea/26 7ffff4/23
    3ffffeb/26 7ffffe6/27 3ffffec/26 3ffffed/26 7ffffe7/27 7ffffe8/27
    7ffffe9/27 7ffffea/27 7ffffeb/27 ffffffe/28 7ffffec/27 7ffffed/27
    7ffffee/27 7ffffef/27 7fffff0/27 3ffffee/26 3fffffff/30
"""
HUFFMAN_CODES: tuple[tuple[int, int], ...] = tuple(
    (int(code, 16), int(bits)) for code, bits in (item.split("/") for item in _HUFFMAN_TABLE.split()))
EOS = 256
_HUFFMAN_DECODE = {(bits, code): sym for sym, (code, bits) in enumerate(HUFFMAN_CODES)}

SAME_BLOCKS_MAX = 256         # blocks remembered per decoder (Decoder._same)
ENTRY_OVERHEAD = 32            # RFC 7541 4.1: an entry's size is its name's and value's octets plus 32
DEFAULT_TABLE_SIZE = 4096      # SETTINGS_HEADER_TABLE_SIZE's initial value
MAX_INTEGER = (1 << 32) - 1    # larger integers are refused (an attack, or bytes that are not HPACK)
MAX_HEADER_LIST = 256 * 1024   # decoded octets per block (names + values + 32 each): bounds an indexed-field bomb


def _huffman_states() -> tuple[list[tuple[int, int]], frozenset[int]]:
    """The Huffman code as a state machine over 4-bit steps (as nghttp2 decodes it): states are the code
    tree's inner nodes (0 the root); step[state * 16 + nibble] is (next state, the symbol completed in the
    step or -1; -2: EOS, an error). Each step completes at most one symbol (no code is shorter than 5
    bits). Also the states a string may end in: the root, or 1 to 7 one-bits of the EOS code's prefix."""
    children: list[list[int]] = [[-1, -1]]     # per inner node: child per bit (inner node index, or ~symbol)
    for sym, (code, bits) in enumerate(HUFFMAN_CODES):
        node = 0
        for i in range(bits - 1, -1, -1):
            bit = (code >> i) & 1
            if i == 0:
                children[node][bit] = ~sym
            else:
                if children[node][bit] < 0:
                    children.append([-1, -1])
                    children[node][bit] = len(children) - 1
                node = children[node][bit]
    steps = []
    for state in range(len(children)):
        for nibble in range(16):
            node, emitted = state, -1
            for shift in (3, 2, 1, 0):
                nxt = children[node][(nibble >> shift) & 1]
                if nxt < 0:
                    emitted = -2 if ~nxt == EOS else ~nxt
                    node = 0
                else:
                    node = nxt
            steps.append((node, emitted))
    ends, node = {0}, 0
    for _ in range(7):
        node = children[node][1]
        ends.add(node)
    return steps, frozenset(ends)


_HUFFMAN_STEPS, _HUFFMAN_ENDS = _huffman_states()


def huffman_decode(data: bytes) -> bytes:
    """The octets of a Huffman-coded string literal (RFC 7541 5.2): EOS inside, or padding longer than
    7 bits or not made of the EOS code's most significant (all one) bits, is an error."""
    out = bytearray()
    steps, state = _HUFFMAN_STEPS, 0
    for byte in data:
        state, sym = steps[state * 16 + (byte >> 4)]
        if sym >= 0:
            out.append(sym)
        elif sym == -2:
            raise HpackError("EOS symbol inside a Huffman-coded string")
        state, sym = steps[state * 16 + (byte & 15)]
        if sym >= 0:
            out.append(sym)
        elif sym == -2:
            raise HpackError("EOS symbol inside a Huffman-coded string")
    if state not in _HUFFMAN_ENDS:
        raise HpackError("Huffman padding longer than 7 bits or not the EOS prefix")
    return bytes(out)


def decode_integer(data: bytes, pos: int, prefix_bits: int) -> tuple[int, int]:
    """(value, position after it) of an integer with an N-bit prefix starting at data[pos] (RFC 7541 5.1)."""
    if pos >= len(data):
        raise HpackError("truncated integer")
    limit = (1 << prefix_bits) - 1
    value = data[pos] & limit
    pos += 1
    if value < limit:
        return value, pos
    shift = 0
    while True:
        if pos >= len(data):
            raise HpackError("truncated integer")
        b = data[pos]
        pos += 1
        value += (b & 0x7F) << shift
        shift += 7
        if value > MAX_INTEGER:
            raise HpackError("integer too large")
        if not b & 0x80:
            return value, pos


def skip_string(data: bytes, pos: int) -> int:
    """The position after a string literal, not decoded."""
    if pos >= len(data):
        raise HpackError("truncated string")
    length, pos = decode_integer(data, pos, 7)
    if pos + length > len(data):
        raise HpackError("string longer than the header block")
    return pos + length


def decode_string(data: bytes, pos: int) -> tuple[bytes, int]:
    """(octets, position after) of a string literal (RFC 7541 5.2): H bit, 7-bit-prefix length, octets."""
    if pos >= len(data):
        raise HpackError("truncated string")
    huffman = bool(data[pos] & 0x80)
    length, pos = decode_integer(data, pos, 7)
    end = pos + length
    if end > len(data):
        raise HpackError("string longer than the header block")
    raw = bytes(data[pos:end])
    if not huffman:
        return raw, end
    text = _HUFFMAN_MEMO.get(raw)
    if text is None:
        text = huffman_decode(raw)
        if length <= HUFFMAN_MEMO_KEY_MAX:
            if len(_HUFFMAN_MEMO) >= HUFFMAN_MEMO_ENTRIES:
                _HUFFMAN_MEMO.clear()
            _HUFFMAN_MEMO[raw] = text
    return text, end


# Decoded Huffman strings by their coded octets. A server and its clients send the same few values over and
# over (content types, paths, dates that change once a second, `server`, `grpc-status`), and decoding is the
# parser's largest cost per stream (a bit walk in Python); only what decoded without error is kept. Bounded:
# cleared when full. It holds what the dynamic tables hold anyway: values seen on this node, never exported.
HUFFMAN_MEMO_ENTRIES = 4096
HUFFMAN_MEMO_KEY_MAX = 256
_HUFFMAN_MEMO: dict[bytes, bytes] = {}


class Decoder:
    """One direction's HPACK decoding state: the dynamic table (newest entry first) and its size limits.

    `max_allowed` is the SETTINGS_HEADER_TABLE_SIZE the decoding side announced (the largest value a
    dynamic table size update may ask for); `max_size` is the size the encoder chose, changed only by
    size updates at a block's start (RFC 7541 4.2, 6.3).
    """

    def __init__(self, max_allowed: int = DEFAULT_TABLE_SIZE) -> None:
        self.max_allowed = max_allowed
        self.max_size = max_allowed
        self.size = 0
        self.table: list[tuple[bytes, bytes]] = []
        # A block that leaves the table as it was decodes the same while the table stays the same: the same
        # request or trailers again (h2load's, a gRPC method's once its names are in the table) is looked up.
        self.version = 0                  # changes whenever the table does
        self._same: dict[tuple[int, frozenset[bytes] | None, bytes], list[tuple[bytes, bytes]]] = {}

    def set_max_allowed(self, value: int) -> None:
        """The decoding side announced SETTINGS_HEADER_TABLE_SIZE = value. The table itself changes when
        the encoder sends its size update (it must, in its next block, if it has to shrink)."""
        self.max_allowed = value

    def _evict(self, room: int) -> None:
        while self.table and self.size + room > self.max_size:
            name, value = self.table.pop()
            self.size -= len(name) + len(value) + ENTRY_OVERHEAD

    def _add(self, name: bytes, value: bytes) -> None:
        self.version += 1
        need = len(name) + len(value) + ENTRY_OVERHEAD
        if need > self.max_size:  # RFC 7541 4.4: an entry larger than the table empties it, and is not added
            self.table.clear()
            self.size = 0
            return
        self._evict(need)
        self.table.insert(0, (name, value))
        self.size += need

    def _resize(self, new_size: int) -> None:
        self.version += 1
        if new_size > self.max_allowed:
            raise HpackError(f"dynamic table size update to {new_size} above the announced {self.max_allowed}")
        self.max_size = new_size
        self._evict(0)

    def entry(self, index: int) -> tuple[bytes, bytes]:
        """The (name, value) at an index of the static then dynamic table."""
        if index <= 0:
            raise HpackError("index 0")
        if index <= len(STATIC_TABLE):
            return STATIC_TABLE[index - 1]
        i = index - len(STATIC_TABLE) - 1
        if i >= len(self.table):
            raise HpackError(f"index {index} beyond the tables ({len(STATIC_TABLE)} + {len(self.table)})")
        return self.table[i]

    def decode(self, block: bytes, wanted: frozenset[bytes] | None = None) -> list[tuple[bytes, bytes]]:
        """The header fields of one complete header block, in order; the dynamic table updated. With
        `wanted`, the value of a literal that does not enter the table and whose name is not wanted is not
        decoded (b"": Huffman decoding is most of HPACK's cost, and such values are dropped anyway)."""
        data = bytes(block)
        key = (self.version, wanted, data)
        known = self._same.get(key)
        if known is not None:
            return list(known)
        version = self.version
        try:
            fields = self._decode(data, wanted)
            if self.version == version:   # the block changed nothing: the same bytes decode the same next time
                if len(self._same) >= SAME_BLOCKS_MAX:
                    self._same.clear()
                self._same[key] = fields
            return list(fields)
        except HpackError:
            raise
        except Exception as e:  # a bug must not crash the caller's loop on bytes from the wire
            raise HpackError(f"undecodable header block: {type(e).__name__}: {e}") from e

    def _decode(self, data: bytes, wanted: frozenset[bytes] | None = None) -> list[tuple[bytes, bytes]]:
        fields: list[tuple[bytes, bytes]] = []
        pos, total, seen_field = 0, 0, False
        while pos < len(data):
            b = data[pos]
            if b & 0x80:                         # 1xxxxxxx: indexed header field
                index, pos = decode_integer(data, pos, 7)
                name, value = self.entry(index)
            elif b & 0xC0 == 0x40:               # 01xxxxxx: literal with incremental indexing
                name, value, pos = self._literal(data, pos, 6)
                self._add(name, value)
            elif b & 0xE0 == 0x20:               # 001xxxxx: dynamic table size update
                if seen_field:
                    raise HpackError("dynamic table size update after a header field")
                size, pos = decode_integer(data, pos, 5)
                self._resize(size)
                continue
            else:                                # 0000xxxx without indexing, 0001xxxx never indexed
                name, value, pos = self._literal(data, pos, 4, wanted)
            seen_field = True
            total += len(name) + len(value) + ENTRY_OVERHEAD
            if total > MAX_HEADER_LIST:
                raise HpackError(f"header list larger than {MAX_HEADER_LIST} octets")
            fields.append((name, value))
        return fields

    def _literal(self, data: bytes, pos: int, prefix_bits: int,
                 wanted: frozenset[bytes] | None = None) -> tuple[bytes, bytes, int]:
        index, pos = decode_integer(data, pos, prefix_bits)
        if index:
            name = self.entry(index)[0]
        else:
            name, pos = decode_string(data, pos)
        if wanted is not None and name not in wanted:
            return name, b"", skip_string(data, pos)
        value, pos = decode_string(data, pos)
        return name, value, pos
