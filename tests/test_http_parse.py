"""The inference tracer's pure parsers, fed bytes: HTTP/1.x request heads, JSON body fields, usage, /proc/net/tcp."""
from __future__ import annotations

import random

from ebpftool.core.netaddr import format_address
from ebpftool.tracers.inference import parse_proc_net_tcp
from ebpftool.tracers.inference import parsers as hp

REQUEST = (b"POST /v1/chat/completions?api-key=sk-QUERY HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-SECRET\r\n"
           b"Content-Type: application/json\r\nContent-Length: 80\r\n\r\n"
           b'{"messages":[{"role":"user","content":"hi"}],"model":"llama-3\\"8b","stream":true,"api_key":"sk-BODY"}')


def test_request_line_path_without_query_and_body_fields():
    r = hp.parse_request(REQUEST)
    assert (r.method, r.path, r.version, r.model, r.stream) == ("POST", "/v1/chat/completions", "1.1", 'llama-3"8b', True)
    assert "sk-" not in repr(r)  # nothing secret is kept


def test_truncated_and_odd_requests():
    assert hp.parse_request(REQUEST[:20]) is None  # request line cut: no guess
    cut = hp.parse_request(REQUEST[: REQUEST.index(b'"model"') + 14])
    assert cut.model is None  # a cut-off string is not a model name
    r = hp.parse_request(b"BREW /pot HTTP/1.0\r\n\r\n")
    assert (r.method, r.path, r.version) == ("_OTHER", "/pot", "1.0")
    r = hp.parse_request(b"GET http://proxy.example/a/b?x=1 HTTP/1.1\r\n\r\n")
    assert r.path == "/a/b"
    r = hp.parse_request(b"GET /caf\xc3\xa9\x01/#frag HTTP/1.1\r\n\r\n")
    assert r.path == "/caf___/"  # non-printable and non-ASCII bytes replaced, fragment gone


def test_usage_from_sse_chunk_and_json_body():
    sse = (b'ad\r\ndata: {"id":"x","model":"m-resp","choices":[],"usage":{"prompt_tokens":7,"completion_tokens":5,'
           b'"total_tokens":12}}\n\n\r\n')
    u = hp.parse_usage(sse)
    assert (u.input_tokens, u.output_tokens, u.model) == (7, 5, "m-resp")
    u = hp.parse_usage(b'{"model":"x","usage":{"input_tokens":3,"output_tokens":9}}')
    assert (u.input_tokens, u.output_tokens) == (3, 9)
    assert hp.parse_usage(b"data: [DONE]\n\n") == hp.Usage()


def test_operation_names_and_span_name_template():
    assert hp.operation_name("/v1/chat/completions", True) == "chat"
    assert hp.operation_name("/v1/completions", False) == "text_completion"
    assert hp.operation_name("/api/embed", False) == "embeddings"
    assert hp.operation_name("/v2/models/llama/versions/1/generate_stream", True) == "text_completion"
    assert hp.operation_name("/v1/responses", True) == hp.operation_name("/v1/messages?beta=true", False) == "chat"
    assert hp.operation_name("/v1/responses/resp_1", False) is None         # a stored answer: nothing generated
    assert hp.operation_name("/v1/messages/count_tokens", False) is None
    assert hp.operation_name("/events", True) == "generate_content"
    assert hp.operation_name("/index.html", False) is None
    assert hp.path_template("/users/12345/orders/9f86d081884c7d65") == "/users/{id}/orders/{id}"


def test_garbage_never_raises():
    rng = random.Random(7)
    for _ in range(2000):
        blob = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 300)))
        for prefix in (b"", b"GET ", b"HTTP/1.1 ", b'{"model":"', b"data: "):
            data = prefix + blob
            hp.parse_request(data)
            hp.parse_usage(data)
            req = hp.Request("GET", "/", "1.1")
            hp.fill_body_fields(req, data)


def test_proc_net_tcp_lines():
    text = (
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
        "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 0 100 0 0 10 0\n"
        "   1: 0100007F:1F90 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000     0        0 12346 1 0 20 4 30 10 -1\n"
        "   2: garbage line\n"
        "   3: 0100007F:100000 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12347 1\n"
    )
    t = parse_proc_net_tcp(text)
    assert 12347 not in t  # a port past 16 bits: not a line the kernel writes, skipped
    assert t[12345].local_port == 8080 and t[12345].state == 0x0A
    assert (t[12346].remote_addr, t[12346].remote_port, t[12346].state) == ("127.0.0.1", 0xD2F0, 1)
    v6 = parse_proc_net_tcp("header\n 0: 00000000000000000000000001000000:1F90 0000000000000000FFFF00000100007F:C000 01 0:0 0:0 0 0 0 77\n")
    assert v6[77].remote_addr == "127.0.0.1"  # v4-mapped shown as IPv4
    assert format_address(bytes(16), 0) == ""


def test_request_line_start_reads_a_line_cut_anywhere():
    """The kernel's first 64 bytes of a request (an h2c Upgrade's, sent with its open event): method and
    target, the target cut where the bytes end; None for bytes that begin no request line."""
    assert hp.request_line_start(b"GET /v1/models?key=x HTTP/1.1\r\nHost: a\r\n") == ("GET", "/v1/models?key=x")
    assert hp.request_line_start(b"POST /v1/chat/compl") == ("POST", "/v1/chat/compl")
    assert hp.request_line_start(b"BREW /pot HTTP/1.1\r\n") == ("_OTHER", "/pot")
    for cut in (b"", b"GET", b"GET ", b"\x16\x03\x01", b"get / HTTP/1.1"):
        assert hp.request_line_start(cut) is None
