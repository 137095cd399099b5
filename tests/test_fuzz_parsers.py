"""Bad input, fuzzed: the HTTP/SSE parsers, /proc parsers, zone files and config files.

Parsers fed bytes from the wire must never raise and never return a secret they read; loaders fed
bad files must raise only the documented domain error (EbpftoolError / ZoneFileError), and through
the CLI a bad file is one clear message and a non-zero exit, never a traceback.
"""
from __future__ import annotations

import ipaddress
import re
import string
import struct
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings, strategies as st

from ebpftool.config import check_keys, load_config_file
from ebpftool.core.elf import ElfError, ElfFile
from ebpftool.core.netaddr import AF_INET, AF_INET6, format_address
from ebpftool.errors import EbpftoolError
from ebpftool.tracers.inference import parse_proc_net_tcp
from ebpftool.tracers.inference import parsers as hp
from ebpftool.tracers.inference.tls_libs import probe_plan as tls_probe_plan
from ebpftool.tracers.net.zones import ZoneFileError, build_zone_map, load_zone_file, parse_zones
from tests.conftest import run_ebpftool

pytestmark = pytest.mark.timeout(120)

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                         HealthCheck.too_slow])

# Bytes that look like HTTP often enough to reach the deeper branches of the parsers.
TOKENS = [b"GET ", b"POST ", b"BREW ", b"HTTP/1.1", b"HTTP/1.0 ", b" 200 OK", b"\r\n", b"\n", b"\r\n\r\n", b"/v1/chat/completions",
          b"?", b"#", b"://", b'"model"', b":", b'"', b"\\", b"\\u00", b'"stream"', b"true", b'"usage"', b'"prompt_tokens"',
          b'"completion_tokens"', b"123", b"99999999999999", b"data:", b"[DONE]", b"Content-Type: text/event-stream",
          b"{", b"}", b"\x00", b"\xff\xfe", b"\xc3\xa9"]
wire = st.one_of(st.binary(max_size=600), st.lists(st.sampled_from(TOKENS) | st.binary(max_size=8), max_size=60).map(b"".join))


@FUZZ
@given(wire)
@example(b"A \x00 HTTP/0.0\n")   # a target with no path (found here once): url.path "/"
@example(b"OPTIONS * HTTP/1.1\r\n\r\n")
def test_http_parsers_never_raise_and_return_bounded_printable_values(data):
    req = hp.parse_request(data)
    if req is not None:
        assert req.method in hp.METHODS or req.method == hp.OTHER_METHOD
        assert req.path.startswith("/") and len(req.path) <= hp.MAX_PATH
        assert "?" not in req.path and "#" not in req.path
        assert re.fullmatch(r"[\x21-\x7e]+", req.path)
        assert req.model is None or (len(req.model) <= hp.MAX_PATH and re.fullmatch(r"[\x21-\x7e]*", req.model))
        assert isinstance(hp.path_template(req.path), str)
        hp.fill_body_fields(req, data)
    usage = hp.parse_usage(data)
    for n in (usage.input_tokens, usage.output_tokens):
        assert n is None or 0 <= n < 10**12
    assert usage.model is None or len(usage.model) <= hp.MAX_PATH


@FUZZ
@given(st.text(max_size=300), st.booleans())
def test_path_helpers_never_raise(text, streamed):
    path = hp.clean_path(text)
    assert len(path) <= hp.MAX_PATH and "?" not in path
    hp.path_template(path)
    op = hp.operation_name(path, streamed)
    assert op is None or op in {"chat", "text_completion", "embeddings", "generate_content"}


secret = st.text(string.ascii_letters + string.digits, min_size=12, max_size=40).map(lambda s: "sk-" + s)
segment = st.text(string.ascii_lowercase + string.digits + "-_.", min_size=1, max_size=12)


@FUZZ
@given(secret, secret, secret, st.lists(segment, min_size=1, max_size=5), st.sampled_from(hp.METHODS),
       st.integers(min_value=0, max_value=600))
def test_secrets_in_headers_query_and_body_never_come_out_of_the_parser(header_secret, body_secret, query_secret,
                                                                      segments, method, cut):
    path = "/" + "/".join(segments)
    body = ('{"model":"m-1","api_key":"%s","messages":[{"role":"user","content":"x"}],"stream":true}' % body_secret).encode()
    head = (f"{method} {path}?token={query_secret}&x=1 HTTP/1.1\r\nHost: h\r\n"
            f"Authorization: Bearer {header_secret}\r\nX-Api-Key: {header_secret}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    data = head + body
    for chunk in (data, data[:cut], data[cut:]):  # whole, a truncated capture, a body-only capture
        req = hp.parse_request(chunk)
        out = repr(req) + repr(hp.parse_usage(chunk))
        if req is not None:
            hp.fill_body_fields(req, chunk)
            out += repr(req)
        for s in (header_secret, body_secret, query_secret):
            assert s not in out
    req = hp.parse_request(data)
    assert req is not None and req.path == path and req.model == "m-1" and req.stream is True


@FUZZ
@given(st.lists(st.lists(st.text(string.hexdigits + ":", max_size=40) | st.sampled_from(
    ["0100007F:1F90", "00000000000000000000000001000000:0050", "0A", "01", "12345"]), max_size=14).map(" ".join), max_size=6))
def test_proc_net_tcp_parser_never_raises(lines):
    table = parse_proc_net_tcp("  sl  local_address rem_address   st ...\n" + "\n".join(lines))
    for inode, sock in table.items():
        assert isinstance(inode, int) and 0 <= sock.local_port < 2**16 and 0 <= sock.remote_port < 2**16
        assert 0 <= sock.state < 256


@FUZZ
@given(st.binary(max_size=20), st.sampled_from([0, AF_INET, AF_INET6, 99]))
def test_address_formatting_of_kernel_fields(raw, family):
    """A kernel address field (its first 4 bytes for AF_INET, 16 for AF_INET6) is an address; a field too
    short for its family is refused with ValueError (the kernel's are fixed-size); another family is ''."""
    need = {AF_INET: 4, AF_INET6: 16}.get(family)
    if need is None:
        assert format_address(raw, family) == ""
    elif len(raw) < need:
        with pytest.raises(ValueError):
            format_address(raw, family)
    else:
        text = format_address(raw, family)
        assert ipaddress.ip_address(text).packed in (raw[:need], raw[12:16])  # an IPv4-mapped one as IPv4


# --- zone files ----------------------------------------------------------------------------------
scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20) | st.sampled_from(
    ["10.0.0.0/8", "10.0.0.1/24", "fd00::/64", "::1/128", "0.0.0.0/0", "banana", "local", "zones", "price_per_gb",
     "cidrs", "region"])
yaml_like = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
    scalars.filter(lambda k: k is None or isinstance(k, (str, int, bool))), inner, max_size=4), max_leaves=20)


@FUZZ
@given(yaml_like)
def test_zone_document_fuzz_only_zone_file_errors(data):
    try:
        entries, price = parse_zones(data, "fuzz.yaml")
    except ZoneFileError as exc:
        assert str(exc).startswith("fuzz.yaml")  # names the file (zone names are quoted as written)
        return
    assert entries and (price is None or price >= 0)


@FUZZ
@given(st.dictionaries(st.text(min_size=1, max_size=10), st.lists(st.sampled_from(
    ["10.0.0.0/8", "10.1.0.0/16", "10.1.2.0/24", "192.168.0.0/16", "fd00::/64", "8.8.8.8/32", "10.0.0.1/8"]),
    max_size=3) | st.fixed_dictionaries({"cidrs": st.lists(st.sampled_from(["172.16.0.0/12", "10.9.0.0/16"]), max_size=2)},
                                          optional={"region": st.text(max_size=5) | st.integers(),
                                                    "price_per_gb": st.floats() | st.integers(-5, 5)}), max_size=4))
def test_zone_maps_from_fuzzed_valid_looking_files(tmp_path, zones):
    path = tmp_path / "zones.yaml"
    path.write_text(yaml.safe_dump({"zones": zones}))
    try:
        zm = build_zone_map(str(path), environ={})
    except ZoneFileError:
        return
    import ipaddress

    for net, zone in zm.entries:  # the most specific match is the one listed for its own first address
        assert zm.zone_of(net.network_address).name in {z.name for n, z in zm.entries if net.network_address in n}
    assert zm.zone_of(ipaddress.ip_address("127.0.0.1")).name == "local"


@FUZZ
@given(st.binary(max_size=400) | yaml_like.map(lambda d: yaml.safe_dump(d).encode()))
def test_zone_file_loader_fuzz_only_zone_file_errors(tmp_path, raw):
    path = tmp_path / "zones.yaml"
    path.write_bytes(raw)
    try:
        load_zone_file(path)
    except ZoneFileError as exc:
        assert str(path) in str(exc)



# --- ELF files (any process's mapped "libssl*"/"libcudart*" file is read by root) -----------------------
ELF_SAMPLE = next((Path(p) for p in ("/usr/lib/x86_64-linux-gnu/libssl.so.3", "/usr/bin/true") if Path(p).exists()),
                  None)
elf_prefix = ELF_SAMPLE.read_bytes()[:8192] if ELF_SAMPLE else b""
elf_edits = st.lists(st.tuples(st.integers(0, 8191), st.integers(0, 255)), min_size=1, max_size=24)


@pytest.mark.skipif(ELF_SAMPLE is None, reason="no ELF library to mutate")
@FUZZ
@given(elf_edits, st.sampled_from([64, 1024, 8192, None]))
def test_elf_reader_takes_any_mutated_file_with_elf_errors_only(tmp_path, edits, length):
    """A malformed file raises ElfError (the callers skip it and say so); the TLS probe plan of whatever was read
    never raises. Headers are mutated in place; the file is the sample's first bytes or the whole sample."""
    data = bytearray(elf_prefix if length else ELF_SAMPLE.read_bytes())[:length]
    for offset, value in edits:
        if offset < len(data):
            data[offset] = value
    path = tmp_path / "libssl.so.3"
    path.write_bytes(bytes(data))
    try:
        elf = ElfFile.read(str(path))
    except ElfError:
        return
    tls_probe_plan(elf)


def test_elf_reader_refuses_tables_it_would_read_gigabytes_for(tmp_path):
    """A sparse file (free to make) whose section headers claim a 4 GiB symbol table: refused before any read."""
    path = tmp_path / "libssl.so.3"
    shoff = 4096
    header = bytearray(64)
    header[:6] = b"\x7fELF\x02\x01"
    struct.pack_into("<QQIHHHHHH", header, 32, 0, shoff, 0, 64, 56, 0, 64, 3, 0)
    sections = bytearray(3 * 64)
    struct.pack_into("<IIQQQQIIQQ", sections, 64, 0, 11, 0, 0, 1 << 20, 4 << 30, 2, 0, 8, 24)   # .dynsym
    struct.pack_into("<IIQQQQIIQQ", sections, 128, 0, 3, 0, 0, 1 << 20, 4096, 0, 0, 1, 0)      # its strings
    with open(path, "wb") as f:
        f.write(header)
        f.seek(shoff)
        f.write(sections)
        f.truncate(8 << 30)
    with pytest.raises(ElfError, match="symbol table larger than"):
        ElfFile.read(str(path))

# --- config files ----------------------------------------------------------------------------------
@FUZZ
@given(yaml_like.map(lambda d: yaml.safe_dump(d).encode()) | st.binary(max_size=200).map(lambda b: b"a: 1\n" + b))
def test_config_loader_fuzz_only_domain_errors(tmp_path, raw):
    path = tmp_path / "c.yaml"
    path.write_bytes(raw)
    try:
        data = load_config_file(str(path))
        check_keys(str(path), data, {"port", "interval", "span_rate"})
    except EbpftoolError as exc:
        assert str(exc).startswith("config file ")  # names the file (keys are quoted as written)
        return
    assert set(data) <= {"port", "interval", "span_rate"}


# --- bad files through the CLI ---------------------------------------------------------------------
def run_with_file(tmp_path, name: str, content: bytes | None, args: list[str]):
    """`ebpftool ARGS` where FILE in args is a file holding content (None: no such file). Never a traceback."""
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    r = run_ebpftool([str(path) if a == "FILE" else a for a in args])
    assert "Traceback" not in r.stderr + r.stdout
    return r


@pytest.mark.root
@pytest.mark.parametrize("content, phrase", [
    (b"zones:\n  a: [banana]\n", "is not a valid CIDR"),
    (b"zones: [oops\n", "not valid YAML at line"),
    (b"\xff\xfe\x00zones", "not UTF-8"),
    (None, "cannot read the zone file"),
])
def test_bad_zone_file_through_the_cli_is_one_sentence_exit_1(tmp_path, content, phrase):
    r = run_with_file(tmp_path, "zones.yaml", content, ["net", "--zones", "FILE", "--duration", "1", "--no-ui"])
    assert r.returncode == 1, (r.stdout, r.stderr)
    message = " ".join(r.stderr.split())  # the console wraps long lines
    assert message.startswith("ebpftool: ") and phrase in message and r.stderr.count("ebpftool:") == 1


@pytest.mark.parametrize("content, phrase", [
    (b"a: [1, 2\n", "is not valid YAML at line 2"),
    (b"- port\n", "must be a mapping"),
    (b"\xff\xfe\x00", "is not UTF-8 text"),
    (b"no_such_flag: 1\n", "unknown keys: no_such_flag"),
    (None, "cannot read config file"),
])
def test_bad_config_file_through_the_cli_is_one_message_no_traceback(tmp_path, content, phrase):
    r = run_with_file(tmp_path, "c.yaml", content,
                      ["inference", "--config", "FILE", "--port", "80", "--duration", "1", "--no-ui"])
    # A config file is read while the flags are parsed: a usage error (exit 2), as for a bad flag value.
    assert r.returncode != 0 and r.returncode in (1, 2), (r.stdout, r.stderr)
    message = " ".join(re.sub(r"[│╭╮╰╯─]", " ", r.stderr).split())
    assert phrase in message, message
