"""The HTTP/2 and gRPC parsers (ebpftool/tracers/inference/hpack.py, http2.py), pure Python, on real bytes.

- HPACK against RFC 7541's own examples (C.1 integers, C.3/C.4 requests, C.6 responses with eviction) and
  its error cases; fuzzed: any bytes give fields or HpackError, any frames give streams or H2Error, and
  header values other than the exported few never come out.
- Real servers and clients nobody here wrote, captured with tcpdump on `lo` (tests/wire.py reassembles each
  direction; marked `root`): a grpcio server and client (unary, server-streaming with messages split across
  DATA frames, several concurrent streams on one channel, error statuses with and without messages first, a
  client cancel); nghttpd with nghttp (padding, trailers, server push, CONTINUATION, SETTINGS_HEADER_TABLE_SIZE
  both ways, PRIORITY frames, a POST echoed back) and h2load (many concurrent streams); nghttpx taking
  nghttp's h2c Upgrade. Each connection's bytes are fed in the pieces seen on the wire (both directions in
  wire order), in 1-byte pieces (the same streams must come out, times included), and each direction whole.
  Expected values come from the clients and servers (the client's results, codes, details and messages, the
  server handler's log, the files served, nghttp's and h2load's statistics, nghttpx's access log) and from
  their clocks (the client's call start and end, the handler's entry and first send), never from the parser.
"""
from __future__ import annotations

import json
import re
import shutil
import string
import struct
import subprocess
import threading
import time
from concurrent import futures
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from ebpftool.tracers.inference import http2 as h2
from ebpftool.tracers.inference.h2_streams import H2Peer, InferenceHttp2
from ebpftool.tracers.inference.hpack import (HUFFMAN_CODES, STATIC_TABLE, Decoder, HpackError, decode_integer,
                                              decode_string, huffman_decode)
from tests import wire
from tests.servers.nginx import free_port, wait_listening

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# -- HPACK: RFC 7541's examples --------------------------------------------------------------------------

def test_integer_examples_c1():
    assert decode_integer(bytes([0b01010]), 0, 5) == (10, 1)             # C.1.1
    assert decode_integer(bytes([0x1F, 0x9A, 0x0A]), 0, 5) == (1337, 3)  # C.1.2
    assert decode_integer(bytes([0x2A]), 0, 8) == (42, 1)                # C.1.3


def test_tables_are_the_rfcs():
    assert len(STATIC_TABLE) == 61 and STATIC_TABLE[0] == (b":authority", b"") and STATIC_TABLE[60] == (
        b"www-authenticate", b"")
    assert len(HUFFMAN_CODES) == 257 and HUFFMAN_CODES[ord("a")] == (0x3, 5) and HUFFMAN_CODES[256] == (0x3FFFFFFF, 30)
    # a prefix code: no code is the prefix of another
    codes = sorted((format(c, f"0{n}b") for c, n in HUFFMAN_CODES))
    assert all(not b.startswith(a) for a, b in zip(codes, codes[1:]))


REQ = [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"), (b":authority", b"www.example.com")]
REQ2 = REQ + [(b"cache-control", b"no-cache")]
REQ3 = [(b":method", b"GET"), (b":scheme", b"https"), (b":path", b"/index.html"), (b":authority", b"www.example.com"),
        (b"custom-key", b"custom-value")]


@pytest.mark.parametrize("blocks", [
    pytest.param(["828684410f7777772e6578616d706c652e636f6d", "828684be58086e6f2d6361636865",
                  "828785bf400a637573746f6d2d6b65790c637573746f6d2d76616c7565"], id="C.3-plain"),
    pytest.param(["828684418cf1e3c2e5f23a6ba0ab90f4ff", "828684be5886a8eb10649cbf",
                  "828785bf408825a849e95ba97d7f8925a849e95bb8e8b4bf"], id="C.4-huffman"),
])
def test_request_examples(blocks):
    d = Decoder()
    assert d.decode(bytes.fromhex(blocks[0])) == REQ and d.size == 57
    assert d.decode(bytes.fromhex(blocks[1])) == REQ2 and d.size == 110
    assert d.decode(bytes.fromhex(blocks[2])) == REQ3 and d.size == 164
    assert d.table == [(b"custom-key", b"custom-value"), (b"cache-control", b"no-cache"),
                       (b":authority", b"www.example.com")]


def test_response_examples_c6_with_eviction():
    d = Decoder(256)
    date1, date2 = b"Mon, 21 Oct 2013 20:13:21 GMT", b"Mon, 21 Oct 2013 20:13:22 GMT"
    loc = (b"location", b"https://www.example.com")
    assert d.decode(bytes.fromhex(
        "488264025885aec3771a4b6196d07abe941054d444a8200595040b8166e082a62d1bff6e919d29ad171863c78f0b97c8e9ae82ae43d3")
    ) == [(b":status", b"302"), (b"cache-control", b"private"), (b"date", date1), loc]
    assert d.size == 222
    assert d.decode(bytes.fromhex("4883640effc1c0bf")) == [
        (b":status", b"307"), (b"cache-control", b"private"), (b"date", date1), loc]
    assert d.size == 222 and d.table[0] == (b":status", b"307")   # (:status, 302) evicted
    cookie = b"foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1"
    assert d.decode(bytes.fromhex(
        "88c16196d07abe941054d444a8200595040b8166e084a62d1bffc05a839bd9ab77ad94e7821dd7f2e6c7b335dfdfcd5b3960d5af27087f"
        "3672c1ab270fb5291f9587316065c003ed4ee5b1063d5007")) == [
        (b":status", b"200"), (b"cache-control", b"private"), (b"date", date2), loc, (b"content-encoding", b"gzip"),
        (b"set-cookie", cookie)]
    assert d.size == 215 and d.table == [(b"set-cookie", cookie), (b"content-encoding", b"gzip"), (b"date", date2)]


def test_size_update_evicts_and_is_bounded_by_the_setting():
    d = Decoder()
    d.decode(bytes.fromhex("828684410f7777772e6578616d706c652e636f6d"))
    assert d.table and d.size == 57
    assert d.decode(bytes([0x20]) + bytes.fromhex("82")) == [(b":method", b"GET")]   # size 0: emptied
    assert d.table == [] and d.max_size == 0
    d.set_max_allowed(100)
    with pytest.raises(HpackError):
        d.decode(bytes([0x3F, 0x61]))   # 31 + 97 = 128 > 100
    d = Decoder()
    with pytest.raises(HpackError):
        d.decode(bytes.fromhex("82") + bytes([0x20]))   # an update after a field


@pytest.mark.parametrize("block", [
    "80",                     # index 0
    "be",                     # index 62, the dynamic table is empty
    "1f",                     # a truncated integer
    "1fffffffffff0f",         # an integer beyond 2**32
    "0085f2b24a87ff",         # Huffman with EOS inside
    "400a637573746f6d2d6b6579",   # a value missing
    "0081ff",                 # padding of 8 bits
    "00810000",               # padding not of ones (and trailing bytes)
    "4005637573",             # a string longer than the block
])
def test_bad_blocks_raise_hpack_error(block):
    with pytest.raises(HpackError):
        Decoder().decode(bytes.fromhex(block))


def test_huffman_of_every_symbol():
    """Each symbol coded alone (padded with ones) decodes to itself."""
    for sym, (code, bits) in enumerate(HUFFMAN_CODES[:256]):
        pad = -bits % 8
        value = (code << pad) | ((1 << pad) - 1)
        assert huffman_decode(value.to_bytes((bits + pad) // 8, "big")) == bytes([sym])


@FUZZ
@given(st.binary(max_size=126))
def test_a_huffman_string_decodes_alike_every_time(coded):
    """decode_string keeps what it decoded (hpack.py's memo): a string decodes, or fails, alike the first time
    and after, and as huffman_decode says."""
    literal = bytes([0x80 | len(coded)]) + coded  # H bit, 7-bit length
    def outcome(decode, *args):
        try:
            return decode(*args)
        except HpackError:
            return "error"
    direct = outcome(huffman_decode, coded)
    assert outcome(decode_string, literal, 0) == (direct if direct == "error" else (direct, len(literal)))
    assert outcome(decode_string, literal, 0) == outcome(decode_string, literal, 0)


@FUZZ
@given(st.lists(st.binary(max_size=80), min_size=1, max_size=4))
def test_decoder_never_raises_anything_but_hpack_error(blocks):
    d = Decoder()
    for block in blocks:
        try:
            fields = d.decode(block)
        except HpackError as e:
            assert e.__cause__ is None, "a bug turned into HpackError"
            continue
        assert all(isinstance(n, bytes) and isinstance(v, bytes) for n, v in fields)
        assert d.size <= d.max_size <= d.max_allowed


# -- HTTP/2 frames made here (for the fuzzing and the error paths; real bytes are below) --------------------

def _lit(name: bytes, value: bytes) -> bytes:
    """A literal header field without indexing, new name, no Huffman (lengths < 127)."""
    return b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value


def frame(ftype: int, flags: int, sid: int, payload: bytes) -> bytes:
    return len(payload).to_bytes(3, "big") + bytes([ftype, flags]) + struct.pack("!I", sid) + payload


def request_bytes(secret: str) -> bytes:
    block = b"".join(_lit(n, v) for n, v in [
        (b":method", b"POST"), (b":scheme", b"http"), (b":path", f"/v1/x?key={secret}".encode()),
        (b":authority", f"user:{secret}@h:1".encode()), (b"authorization", f"Bearer {secret}".encode()),
        (b"content-type", b"application/grpc+proto")])
    return (h2.PREFACE + frame(h2.SETTINGS, 0, 0, b"") + frame(h2.HEADERS, 0x20, 1, b"\x80\x00\x00\x00\x10" + block[:20])
            + frame(h2.CONTINUATION, 0x4, 1, block[20:]) + frame(h2.DATA, 0x9, 1, b"\x03" + b"\0\0\0\0\x02hi" + b"\0\0\0"))


def response_bytes(secret: str) -> bytes:
    head = _lit(b":status", b"200") + _lit(b"set-cookie", secret.encode())
    trailers = _lit(b"grpc-status", b"7") + _lit(b"grpc-message", f"denied%20{secret}%ZZ".encode())
    return (frame(h2.SETTINGS, 0, 0, struct.pack("!HI", 1, 100)) + frame(h2.HEADERS, 0x4, 1, head)
            + frame(h2.DATA, 0, 1, b"\0\0\0\0\x01a\0\0") + frame(h2.DATA, 0, 1, b"\0\0\x01b") + frame(h2.HEADERS, 0x5, 1, trailers))


def test_made_frames_give_the_stream_and_no_secret_header():
    secret = "sk-abcdefghijklmnop"
    conn = h2.Connection()
    assert conn.feed(h2.CLIENT, request_bytes(secret), 1) == []
    [s] = conn.feed(h2.SERVER, response_bytes(secret), 2)
    assert (s.method, s.path, s.authority, s.content_type, s.status, s.grpc_status) == (
        "POST", "/v1/x", "h:1", "application/grpc+proto", 200, 7)
    assert s.grpc_message == f"denied {secret}%ZZ"   # the server's own message: bounded, kept
    assert (s.request_bytes, s.request_messages, s.response_bytes, s.response_messages) == (7, 1, 12, 2)
    assert s.rpc == ("v1", "x")
    leaked = {k: v for k, v in vars(s).items() if k != "grpc_message" and secret in str(v)}
    assert not leaked


def test_h2c_upgrade_made_bytes():
    settings_b64 = "AAEAAAEA"   # HEADER_TABLE_SIZE 256
    up = (f"GET /v1/models?x=1 HTTP/1.1\r\nHost: h:8\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
          f"HTTP2-Settings: {settings_b64}\r\n\r\n").encode() + h2.PREFACE + frame(h2.SETTINGS, 0, 0, b"")
    down = (b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n" + frame(h2.SETTINGS, 0, 0, b"")
            + frame(h2.HEADERS, 0x4, 1, b"\x88") + frame(h2.DATA, 0x1, 1, b"ok"))
    conn = h2.Connection()
    conn.feed(h2.CLIENT, up, 5)
    [s] = conn.feed(h2.SERVER, down, 6)
    assert (s.upgraded, s.method, s.path, s.authority, s.status, s.response_bytes, s.request_start_ns) == (
        True, "GET", "/v1/models", "h:8", 200, 2, 5)
    assert conn.decoders[h2.SERVER].max_allowed == 256


def test_goaway_refuses_the_streams_above_its_last_and_1xx_is_not_the_status():
    get = lambda path: b"\x82\x86" + _lit(b":path", path)   # noqa: E731  GET, http
    conn = h2.Connection()
    conn.feed(h2.CLIENT, h2.PREFACE + b"".join(frame(h2.HEADERS, 0x5, sid, get(b"/%d" % sid)) for sid in (1, 3, 5)), 1)
    [one] = conn.feed(h2.SERVER, frame(h2.HEADERS, 0x4, 1, _lit(b":status", b"103")) + frame(h2.HEADERS, 0x5, 1, b"\x88"), 2)
    assert (one.path, one.status, one.response_start_ns, one.end_reason) == ("/1", 200, 2, "end_stream")
    refused = conn.feed(h2.SERVER, frame(h2.GOAWAY, 0, 0, struct.pack("!II", 1, 0)), 3)
    assert [(s.path, s.end_reason, s.rst_by, s.end_ns) for s in refused] == [
        ("/3", "goaway", h2.SERVER, 3), ("/5", "goaway", h2.SERVER, 3)]
    assert conn.goaway == (h2.SERVER, 1, 0) and not conn.streams


def exporting_tracer(spans: list):
    """h2_streams' stream-to-metrics-and-spans code alone (no BPF): its spans go to `spans`."""
    tracer = InferenceHttp2()
    tracer.opts = SimpleNamespace(span_rate=100)
    tracer.cgroups = SimpleNamespace(workload_attributes=lambda cgroup: {})
    tracer.clock = SimpleNamespace(to_wall_ns=lambda ns: ns)
    tracer.telemetry = SimpleNamespace(emit_span=spans.append)
    tracer.exe = lambda pid, comm: comm
    tracer._server_rates = SimpleNamespace(saw_span=lambda attrs: None)
    tracer.spans_sent = 0
    tracer._h2_init()
    return tracer


def test_a_grpc_call_reset_before_its_trailers_has_the_status_grpc_maps_the_code_to():
    """gRPC's own reading of RST_STREAM (grpc/doc/PROTOCOL-HTTP2.md): a client's CANCEL (a cancelled call, as a
    Triton client's stop_stream(cancel_requests=True) sends) is CANCELLED, not a call without a status (which
    made it a server error: error.type no_status, span ERROR); REFUSED_STREAM is UNAVAILABLE; trailers win; a
    closed connection has none. Checked on what h2_streams exports: the metric's attributes and the spans."""
    spans: list = []
    tracer = exporting_tracer(spans)
    peer = H2Peer(1, 8001, 0, False, "127.0.0.1", 40000, "tritonserver")
    call = lambda sid: frame(h2.HEADERS, 0x4, sid, b"\x83\x86" + _lit(b":path", b"/p.S/M")   # noqa: E731
                             + _lit(b"content-type", b"application/grpc"))
    conn = h2.Connection()
    ended = conn.feed(h2.CLIENT, h2.PREFACE + call(1) + call(3) + call(5) + call(7), 1)
    ended += conn.feed(h2.SERVER, frame(h2.HEADERS, 0x4, 1, b"\x88") + frame(h2.DATA, 0, 1, b"\0\0\0\0\x01a"), 2)
    ended += conn.feed(h2.CLIENT, frame(h2.RST_STREAM, 0, 1, struct.pack("!I", 8)), 3)      # CANCEL
    ended += conn.feed(h2.SERVER, frame(h2.RST_STREAM, 0, 3, struct.pack("!I", 7)), 4)      # REFUSED_STREAM
    ended += conn.feed(h2.SERVER, frame(h2.HEADERS, 0x5, 5, b"\x88" + _lit(b"grpc-status", b"0")), 5)
    [closed] = conn.close()
    closed.end_ns, closed.end_reason = 6, "closed"
    for s in ended + [closed]:
        tracer._h2_stream_done(peer, s)
    got = [(sp.attributes["rpc.response.status_code"], sp.attributes.get("error.type"), sp.error) for sp in spans]
    assert got == [("CANCELLED", None, False), ("UNAVAILABLE", "UNAVAILABLE", True), ("OK", None, False),
                   ("no_status", "no_status", True)]
    assert spans[0].attributes["ebpftool.rpc.response_messages"] == 1
    counted = sorted(dict(k[1])["rpc.response.status_code"] for k in tracer._h2_hist.series
                     if k[0] == "rpc.server.call.duration")
    assert counted == ["CANCELLED", "OK", "UNAVAILABLE", "no_status"]


@pytest.mark.parametrize("sender,data", [
    (h2.CLIENT, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),                       # HTTP/1 without Upgrade
    (h2.CLIENT, b"\x16\x03\x01\x02\x00"),                                    # TLS
    (h2.SERVER, b"HTTP/1.1 200 OK\r\n\r\n"),                                 # the Upgrade refused
    (h2.SERVER, frame(h2.HEADERS, 0x4, 1, b"\x80")),                         # HPACK index 0
    (h2.SERVER, frame(h2.HEADERS, 0x0, 1, b"\x88") + frame(h2.DATA, 0, 1, b"")),  # CONTINUATION missing
    (h2.SERVER, frame(h2.CONTINUATION, 0x4, 1, b"\x88")),                    # CONTINUATION alone
    (h2.SERVER, b"\x00\x40\x01" + frame(h2.DATA, 0, 1, b"")[3:]),            # 16385 bytes > the maximum
    (h2.SERVER, frame(h2.SETTINGS, 0, 0, b"\0\x05\0\0\0\x01")),              # MAX_FRAME_SIZE 1
    (h2.SERVER, frame(h2.DATA, 0x8, 1, b"\x05ab")),                          # padding longer than the frame
])
def test_bad_connections_raise_h2_error_once(sender, data):
    conn = h2.Connection()
    if sender == h2.SERVER:
        conn.feed(h2.CLIENT, h2.PREFACE, 0)
    with pytest.raises(h2.H2Error):
        conn.feed(sender, data, 1)
    assert conn.error and conn.feed(sender, data, 2) == []


FRAME_TYPES = st.integers(min_value=0, max_value=11)


@st.composite
def frames(draw):
    ftype = draw(FRAME_TYPES)
    payload = draw(st.binary(max_size=40) | st.sampled_from([b"\x88", b"\x82\x84\x86", b"\x00\x00\x00\x00\x03abc", b""]))
    return frame(ftype, draw(st.integers(0, 255)), draw(st.integers(0, 5)), payload)


@FUZZ
@given(st.lists(st.tuples(st.booleans(), frames()), max_size=12), st.integers(1, 7))
def test_connection_never_raises_anything_but_h2_error(items, cut):
    conn = h2.Connection()
    data = {h2.CLIENT: h2.PREFACE, h2.SERVER: b""}
    for from_client, f in items:
        data[h2.CLIENT if from_client else h2.SERVER] += f
    try:
        for sender in (h2.CLIENT, h2.SERVER):
            for i in range(0, len(data[sender]), cut):
                for s in conn.feed(sender, data[sender][i:i + cut], i):
                    assert s.ended and (s.path is None or s.path.startswith("/"))
    except h2.H2Error as e:
        assert conn.error
        assert e.__cause__ is None or type(e.__cause__) is HpackError, "a bug turned into H2Error"


secret_st = st.text(string.ascii_letters + string.digits, min_size=12, max_size=30).map(lambda s: "sk-" + s)


@FUZZ
@given(secret_st, st.integers(1, 64))
def test_secrets_in_headers_never_come_out(secret, cut):
    conn = h2.Connection()
    out = []
    for sender, data in ((h2.CLIENT, request_bytes(secret)), (h2.SERVER, response_bytes(secret))):
        for i in range(0, len(data), cut):
            out += conn.feed(sender, data[i:i + cut], i)
    [s] = out
    assert all(secret not in str(v) for k, v in vars(s).items() if k != "grpc_message")


# -- real bytes ---------------------------------------------------------------------------------------------

def wire_pieces(c: wire.Connection) -> list[tuple[int, str, bytes]]:
    """Each direction's bytes in the pieces (segments) seen on the wire, both directions in wire order."""
    out = []
    for order, (sender, stream) in enumerate(((h2.CLIENT, c.up), (h2.SERVER, c.down))):
        assert not stream.gap, "bytes missing from the capture"
        for start, end, ts in zip(stream._starts, stream._ends, stream._times):
            out.append((ts, order, start, sender, stream.data[start:end]))
    out.sort(key=lambda p: p[:3])
    return [(ts, sender, data) for ts, _, _, sender, data in out]


def parse(pieces, mode: str) -> tuple[list[h2.H2Stream], h2.Connection]:
    conn = h2.Connection()
    done: list[h2.H2Stream] = []
    if mode == "directions":   # each direction in one read, the client's first
        for sender in (h2.CLIENT, h2.SERVER):
            mine = [p for p in pieces if p[1] == sender]
            done += conn.feed(sender, b"".join(p[2] for p in mine), mine[0][0])
    else:
        for ts, sender, data in pieces:
            if mode == "bytes":
                for i in range(len(data)):
                    done += conn.feed(sender, data[i:i + 1], ts)
            else:
                done += conn.feed(sender, data, ts)
    assert conn.error is None
    return done, conn


def parse_all_ways(c: wire.Connection) -> tuple[dict[int, h2.H2Stream], h2.Connection]:
    """The streams of a connection fed as on the wire; checked to be the same when fed byte by byte (times
    too) and, for what does not depend on the order of the two directions, each direction whole."""
    pieces = wire_pieces(c)
    segs, conn = parse(pieces, "segments")
    ones, _ = parse(pieces, "bytes")
    assert ones == segs
    whole, _ = parse(pieces, "directions")
    reset = {s.stream_id for s in segs if s.end_reason != "end_stream"}   # a reset read before the answer hides it

    def key(s):
        request = (s.stream_id, s.method, s.path, s.authority, s.content_type, s.request_bytes, s.request_messages,
                   s.pushed)
        return request if s.stream_id in reset else request + (s.status, s.grpc_status, s.grpc_message,
                                                               s.response_bytes, s.response_messages)
    assert sorted(map(key, whole)) == sorted(map(key, segs))
    return {s.stream_id: s for s in segs}, conn


def h2_connections(cap: wire.Capture) -> list[wire.Connection]:
    cap.stop()
    assert cap.dropped == 0
    return [c for c in wire.connections(wire.segments(cap.path.read_bytes()), cap.port) if c.up.data]


# -- grpcio ---------------------------------------------------------------------------------------------------

SERVICE = "ebpftool.test.Echo"


class EchoServer:
    """A grpcio server with generic handlers on raw bytes; each handler logs what it did, with its clock."""

    def __init__(self) -> None:
        import grpc
        self.grpc = grpc
        self.log: dict[int, dict] = {}
        self.lock = threading.Lock()
        handlers = {
            "Unary": grpc.unary_unary_rpc_method_handler(self.unary),
            "Stream": grpc.unary_stream_rpc_method_handler(self.stream),
            "Fail": grpc.unary_unary_rpc_method_handler(self.fail),
            "StreamFail": grpc.unary_stream_rpc_method_handler(self.stream_fail),
            "StreamCancel": grpc.unary_stream_rpc_method_handler(self.stream_cancel),
        }
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=12))
        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def _enter(self, request: bytes, method: str) -> dict:
        spec = json.loads(request)
        entry = {"method": method, "spec": spec, "enter_ns": time.time_ns(), "sent": [], "first_send_ns": None}
        with self.lock:
            self.log[spec["id"]] = entry
        return entry

    def _messages(self, entry: dict):
        spec = entry["spec"]
        for k in range(spec["n"]):
            msg = bytes([65 + k % 26]) * (spec["size"] + k)
            if entry["first_send_ns"] is None:
                entry["first_send_ns"] = time.time_ns()
            entry["sent"].append(len(msg))
            yield msg

    def unary(self, request, context):
        entry = self._enter(request, "Unary")
        reply = b"r" * entry["spec"]["size"]
        entry["first_send_ns"] = time.time_ns()
        entry["sent"].append(len(reply))
        return reply

    def stream(self, request, context):
        yield from self._messages(self._enter(request, "Stream"))

    def fail(self, request, context):
        entry = self._enter(request, "Fail")
        context.abort(self.grpc.StatusCode.INVALID_ARGUMENT, entry["spec"]["message"])

    def stream_fail(self, request, context):
        entry = self._enter(request, "StreamFail")
        yield from self._messages(entry)
        context.abort(self.grpc.StatusCode.RESOURCE_EXHAUSTED, entry["spec"]["message"])

    def stream_cancel(self, request, context):
        entry = self._enter(request, "StreamCancel")
        cancelled = threading.Event()
        context.add_callback(cancelled.set)
        yield from self._messages(entry)
        cancelled.wait(30)   # no trailers: the client cancels once it has the messages


def _request(call_id: int, pad: int, **spec) -> bytes:
    """A request whose length is unique to the call (so the stream it rode on is found by its DATA bytes)."""
    body = json.dumps({"id": call_id, **spec}).encode()
    return body + b" " * (pad - len(body))


class Call:
    def __init__(self, kind: str, call_id: int, **spec) -> None:
        self.kind, self.id = kind, call_id
        self.request = _request(call_id, 300 + 17 * call_id, **spec)
        self.received: list[int] = []
        self.code = self.details = None
        self.start_ns = self.end_ns = self.first_recv_ns = 0

    def run(self, channel, grpc) -> "Call":
        path = f"/{SERVICE}/{self.kind}"
        self.start_ns = time.time_ns()
        try:
            if self.kind in ("Unary", "Fail"):
                reply = channel.unary_unary(path)(self.request, timeout=60)
                self.first_recv_ns = time.time_ns()
                self.received.append(len(reply))
            else:
                call = channel.unary_stream(path)(self.request, timeout=60)
                for msg in call:
                    self.first_recv_ns = self.first_recv_ns or time.time_ns()
                    self.received.append(len(msg))
                    if self.kind == "StreamCancel" and len(self.received) == 2:
                        call.cancel()
            self.code = grpc.StatusCode.OK
        except grpc.RpcError as e:
            self.code, self.details = e.code(), e.details()
        self.end_ns = time.time_ns()
        return self


@pytest.fixture
def echo_server():
    pytest.importorskip("grpc")
    server = EchoServer()
    yield server
    server.server.stop(None)


@pytest.mark.root
@pytest.mark.timeout(180)
def test_grpcio_unary_streaming_errors_and_cancel_on_one_channel(echo_server, tmp_path):
    import grpc
    port = echo_server.port
    calls = [Call("Unary", 0, size=10), Call("Unary", 1, size=40000),
             Call("Stream", 2, n=5, size=100), Call("Stream", 3, n=4, size=20000), Call("Stream", 4, n=0, size=1),
             Call("Fail", 5, message="bad input: ünïcode 100%"), Call("StreamFail", 6, n=2, size=30, message="quota"),
             Call("StreamCancel", 7, n=2, size=50)]
    calls += [Call("Unary", 8 + i, size=100 + i) for i in range(6)]
    with wire.Capture(port, str(tmp_path)) as cap:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            with futures.ThreadPoolExecutor(len(calls)) as pool:   # all at once: concurrent streams on one channel
                list(pool.map(lambda c: c.run(channel, grpc), calls))
        conns = h2_connections(cap)
    assert len(conns) == 1, "one channel, one connection"
    streams, conn = parse_all_ways(conns[0])
    by_request = {s.request_bytes: s for s in streams.values()}
    assert len(by_request) == len(streams) == len(calls)
    assert conn.frames[h2.SERVER, h2.DATA] > len(calls)   # the 40 KB answers took several DATA frames
    for c in calls:
        log = echo_server.log[c.id]
        s = by_request[5 + len(c.request)]
        assert (s.method, s.path, s.authority, s.scheme, s.content_type) == (
            "POST", f"/{SERVICE}/{c.kind}", f"127.0.0.1:{port}", "http", "application/grpc"), c.kind
        assert s.rpc == (SERVICE, c.kind)
        assert s.request_messages == 1 and s.status == 200
        if c.kind == "StreamCancel":
            assert c.code == grpc.StatusCode.CANCELLED
            assert (s.end_reason, s.rst_by, s.rst_error) == ("rst_stream", h2.CLIENT, 0x8)   # RFC 9113 CANCEL
            assert s.response_messages == len(c.received) == log["spec"]["n"]
        else:
            assert s.end_reason == "end_stream"
            assert s.grpc_status == c.code.value[0], c.kind
            if c.details:
                # its UTF-8 bytes, each outside printable ASCII shown as _
                assert s.grpc_message == re.sub(r"[^\x20-\x7e]", "_", c.details.encode().decode("latin-1"))
            else:
                assert s.grpc_message in (None, "")
            assert s.response_messages == len(c.received) == len(log["sent"])
            assert s.response_bytes == sum(5 + n for n in c.received)
        # times: ordered as the client's and the handler's clocks say (the wire lies between them)
        assert c.start_ns <= s.request_start_ns <= log["enter_ns"]
        assert s.request_start_ns <= s.request_end_ns <= log["enter_ns"]
        if c.received:
            assert log["first_send_ns"] <= s.first_data_ns == s.first_message_ns <= c.first_recv_ns
            assert s.first_data_ns <= s.last_message_ns
        else:
            assert s.first_data_ns is None and s.response_messages == 0
        if c.kind == "StreamCancel":   # the client's cancel returns before its RST_STREAM need be sent
            assert c.first_recv_ns <= s.end_ns
        else:
            assert s.response_start_ns <= s.end_ns <= c.end_ns


# -- nghttpd, nghttp, h2load, nghttpx --------------------------------------------------------------------------

def _tools(*names: str) -> None:
    missing = [n for n in names if shutil.which(n) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (apt-get install nghttp2-client nghttp2-server nghttp2-proxy)")


class Daemon:
    def __init__(self, args: list[str], port: int) -> None:
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        wait_listening(port)

    def stop(self) -> str:
        self.proc.terminate()
        try:
            return self.proc.communicate(timeout=10)[0]
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.communicate()[0]


def _nghttp_stats(out: str) -> dict[str, int]:
    """path -> status, from `nghttp -s`'s table."""
    rows = re.findall(r"^\s*\d+\s+\S+\s+\S+\s+\S+\s+(\d{3})\s+\S+\s+(/\S*)$", out, re.M)
    return {path: int(code) for code, path in rows}


@pytest.fixture
def docroot(tmp_path):
    d = tmp_path / "www"
    d.mkdir()
    (d / "a.bin").write_bytes(bytes(range(256)) * 160)   # 40,960 bytes: three DATA frames at least
    (d / "b.txt").write_bytes(b"hello " * 500)
    (d / "up.bin").write_bytes(b"u" * 5000)
    return d


@pytest.mark.root
@pytest.mark.timeout(120)
def test_nghttpd_and_nghttp_padding_trailers_push_continuation_table_sizes(docroot, tmp_path):
    _tools("nghttpd", "nghttp")
    port = free_port()
    server = Daemon(["nghttpd", "--no-tls", "-d", str(docroot), "-p", "/a.bin=/b.txt", "--padding=16",
                     "--trailer", "x-trailer: secret-trailer", "-c", "256", "--echo-upload", str(port)], port)
    base = f"http://127.0.0.1:{port}"
    try:
        with wire.Capture(port, str(tmp_path)) as cap:
            gets = subprocess.run(["nghttp", "-n", "-s", "-v", "--continuation", "-c", "100",
                                   "-H", "authorization: Bearer sk-never-out", f"{base}/a.bin", f"{base}/b.txt",
                                   f"{base}/missing"], capture_output=True, text=True, timeout=30)
            post = subprocess.run(["nghttp", "-n", "-s", "-d", str(docroot / "up.bin"), f"{base}/up"],
                                  capture_output=True, text=True, timeout=30)
            conns = h2_connections(cap)
    finally:
        server.stop()
    assert gets.returncode == 0 and post.returncode == 0, gets.stderr + post.stderr
    said = _nghttp_stats(gets.stdout)
    assert said == {"/a.bin": 200, "/b.txt": 200, "/missing": 404}
    assert "recv PUSH_PROMISE frame" in gets.stdout and "SETTINGS_HEADER_TABLE_SIZE(0x01):256" in gets.stdout
    assert len(conns) == 2
    streams, conn = parse_all_ways(conns[0])
    got = {(s.path, s.pushed): s for s in streams.values()}
    assert {p: s.status for (p, pushed), s in got.items() if not pushed} == said
    size = {"/a.bin": 40960, "/b.txt": 3000}
    for path in ("/a.bin", "/b.txt"):
        s = got[path, False]
        assert (s.method, s.authority, s.end_reason, s.response_bytes) == ("GET", f"127.0.0.1:{port}", "end_stream",
                                                                          size[path])
        assert s.request_start_ns <= s.response_start_ns <= s.first_data_ns <= s.end_ns
    pushed = got["/b.txt", True]   # nghttpd -p /a.bin=/b.txt
    assert pushed.stream_id % 2 == 0 and (pushed.status, pushed.response_bytes) == (200, 3000)
    assert got["/missing", False].response_bytes > 0
    # what the traffic held (nghttp's request headers of 18 KB exceed one frame; nghttpd pads; both tables shrank)
    assert conn.frames[h2.CLIENT, h2.CONTINUATION] >= 2 and conn.frames[h2.CLIENT, h2.PRIORITY] >= 1
    assert conn.frames[h2.SERVER, h2.PUSH_PROMISE] == 1 and conn.frames[h2.CLIENT, h2.GOAWAY] == 1
    # nghttpd announced 256 (nghttp's table shrinks only in a block sent after that, if any: timing); nghttp
    # announced 100 before any request, so every answer's block came from a table of at most 100
    assert conn.decoders[h2.CLIENT].max_allowed == 256
    assert conn.decoders[h2.SERVER].max_allowed == 100 and conn.decoders[h2.SERVER].max_size <= 100
    assert all("sk-never-out" not in str(v) and "secret-trailer" not in str(v)
               for s in streams.values() for v in vars(s).values())
    [up] = parse_all_ways(conns[1])[0].values()
    assert _nghttp_stats(post.stdout) == {"/up": 200}
    assert (up.method, up.path, up.request_bytes, up.response_bytes, up.status) == ("POST", "/up", 5000, 5000, 200)


@pytest.mark.root
@pytest.mark.timeout(120)
def test_h2load_many_concurrent_streams(docroot, tmp_path):
    _tools("nghttpd", "h2load")
    port = free_port()
    server = Daemon(["nghttpd", "--no-tls", "-d", str(docroot), str(port)], port)
    try:
        with wire.Capture(port, str(tmp_path)) as cap:
            out = subprocess.run(["h2load", "-n", "40", "-c", "1", "-m", "8", f"http://127.0.0.1:{port}/b.txt"],
                                 capture_output=True, text=True, timeout=60).stdout
            conns = h2_connections(cap)
    finally:
        server.stop()
    assert "40 succeeded" in out and "40 2xx" in out, out
    [c] = conns
    streams, _ = parse_all_ways(c)
    assert len(streams) == 40
    assert {(s.method, s.path, s.status, s.response_bytes, s.end_reason) for s in streams.values()} == {
        ("GET", "/b.txt", 200, 3000, "end_stream")}
    # concurrent: some request started before an earlier one ended
    ordered = sorted(streams.values(), key=lambda s: s.stream_id)
    assert any(b.request_start_ns < a.end_ns for a, b in zip(ordered, ordered[1:]))


@pytest.mark.root
@pytest.mark.timeout(120)
def test_h2c_upgrade_through_nghttpx(docroot, tmp_path):
    _tools("nghttpd", "nghttpx", "nghttp")
    backend, port = free_port(), free_port()
    server = Daemon(["nghttpd", "--no-tls", "-d", str(docroot), str(backend)], backend)
    access = tmp_path / "access.log"
    proxy = Daemon(["nghttpx", "--conf=/dev/null", "-f", f"127.0.0.1,{port};no-tls", "-b",
                    f"127.0.0.1,{backend};;proto=h2", "--workers=1", f"--accesslog-file={access}",
                    f"--errorlog-file={tmp_path / 'error.log'}"], port)
    try:
        with wire.Capture(port, str(tmp_path)) as cap:
            out = subprocess.run(["nghttp", "-n", "-s", "-v", "-u", f"http://127.0.0.1:{port}/a.bin",
                                  f"http://127.0.0.1:{port}/b.txt"], capture_output=True, text=True, timeout=30)
            conns = h2_connections(cap)
    finally:
        proxy.stop()
        server.stop()
    assert "HTTP Upgrade success" in out.stdout, out.stdout + out.stderr
    # nghttpx's own log: the upgraded request arrived as HTTP/1.1, the next one as HTTP/2
    logged = re.findall(r'"(GET) (\S+) HTTP/([\d.]+)" (\d{3}) (\d+)', access.read_text())
    assert sorted(logged) == [("GET", "/a.bin", "1.1", "200", "40960"), ("GET", "/b.txt", "2", "200", "3000")]
    [c] = conns
    streams, conn = parse_all_ways(c)
    assert conn.upgraded
    s1 = streams[1]
    assert (s1.upgraded, s1.method, s1.path, s1.authority, s1.status, s1.response_bytes, s1.end_reason) == (
        True, "GET", "/a.bin", f"127.0.0.1:{port}", 200, 40960, "end_stream")
    assert s1.request_start_ns == c.up.time_at(0)   # the HTTP/1.1 request's first byte
    other = [s for s in streams.values() if s.stream_id != 1]
    assert [(s.method, s.path, s.status, s.response_bytes) for s in other] == [("GET", "/b.txt", 200, 3000)]


def test_time_to_first_message_starts_at_the_request_message_of_a_stream_that_asks_later():
    """A bidirectional call (Triton's ModelStreamInfer through tritonclient) opens with HEADERS and sends its
    request message later: its time to first message starts at that message, not at the HEADERS (the wait in
    between is the client's). A call whose request message came with its HEADERS is unchanged."""
    spans: list = []
    tracer = exporting_tracer(spans)
    headers = lambda sid: frame(h2.HEADERS, 0x4, sid, b"\x83\x86" + _lit(b":path", b"/p.S/Stream")   # noqa: E731
                                + _lit(b"content-type", b"application/grpc"))
    message = b"\0\0\0\0\x01a"
    conn = h2.Connection()
    ended = conn.feed(h2.CLIENT, h2.PREFACE + headers(1), 1_000)                     # opens, asks nothing yet
    ended += conn.feed(h2.CLIENT, headers(3) + frame(h2.DATA, 0x1, 3, message), 2_000)  # asks at once
    ended += conn.feed(h2.CLIENT, frame(h2.DATA, 0, 1, message), 50_000)              # asks 49 us after opening
    ended += conn.feed(h2.SERVER, frame(h2.HEADERS, 0x4, 1, b"\x88") + frame(h2.HEADERS, 0x4, 3, b"\x88"), 60_000)
    ended += conn.feed(h2.SERVER, frame(h2.DATA, 0, 1, message) + frame(h2.DATA, 0, 3, message), 70_000)
    ended += conn.feed(h2.SERVER, frame(h2.HEADERS, 0x5, 1, b"\x88" + _lit(b"grpc-status", b"0"))
                       + frame(h2.HEADERS, 0x5, 3, b"\x88" + _lit(b"grpc-status", b"0")), 80_000)
    for s in ended:
        tracer._h2_stream_done(H2Peer(1, 8001, 0, False, "127.0.0.1", 40000, "x"), s)
    ttfm = {sp.start_ns: sp.attributes["ebpftool.rpc.server.time_to_first_message"]
            for sp in spans}
    assert ttfm == {1_000: (70_000 - 50_000) / 1e9, 2_000: (70_000 - 2_000) / 1e9}


def test_a_block_decoded_again_gives_the_same_fields_until_the_table_changes():
    """Decoder remembers blocks that left its table as it was: the same block decodes the same while the
    table is unchanged, and afresh once an entry was added (its dynamic indices then name other fields)."""
    d = Decoder()
    d.decode(b"\x40\x03x-a\x01A")                  # adds ("x-a", "A"): index 62
    assert d.decode(b"\xbe") == d.decode(b"\xbe") == [(b"x-a", b"A")]
    d.decode(b"\x40\x03x-b\x01B")                  # adds ("x-b", "B"): now 62, and x-a is 63
    assert d.decode(b"\xbe") == [(b"x-b", b"B")] and d.decode(b"\xbf") == [(b"x-a", b"A")]
