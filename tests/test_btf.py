"""ebpftool.core.btf: member offsets from BTF bytes built here, and from the running kernel against bpftool."""
from __future__ import annotations

import re
import shutil
import struct
import subprocess

import pytest

from ebpftool.core.btf import KIND_INT, KIND_STRUCT, KIND_TYPEDEF, KIND_UNION, Btf, BtfError, sock_field_offsets


def build_btf(types: list[bytes], strings: bytes) -> bytes:
    type_data = b"".join(types)
    header = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(type_data), len(type_data), len(strings))
    return header + type_data + strings


def btf_type(name_off: int, kind: int, vlen: int, size_or_type: int, kflag: int = 0) -> bytes:
    return struct.pack("<III", name_off, (kflag << 31) | (kind << 24) | vlen, size_or_type)


def member(name_off: int, type_id: int, offset: int) -> bytes:
    return struct.pack("<III", name_off, type_id, offset)


# strings: offsets of each name in the string section
STRINGS = b"\0u16\0u32\0inner\0a\0fam\0outer\0common\0x\0proto\0flags\0bits\0u16_t\0"
S = {name: STRINGS.index(b"\0" + name.encode() + b"\0") + 1 for name in
     ("u16", "u32", "inner", "a", "fam", "outer", "common", "x", "proto", "flags", "bits", "u16_t")}


def sample() -> Btf:
    types = [
        btf_type(S["u16"], KIND_INT, 0, 2) + struct.pack("<I", 16),             # 1: u16
        btf_type(S["u32"], KIND_INT, 0, 4) + struct.pack("<I", 32),             # 2: u32
        btf_type(S["u16_t"], KIND_TYPEDEF, 0, 1),                                # 3: typedef u16 u16_t
        btf_type(S["inner"], KIND_STRUCT, 2, 8)                                  # 4: struct inner
        + member(S["a"], 2, 0) + member(S["fam"], 3, 32),
        btf_type(0, KIND_UNION, 2, 4)                                            # 5: anonymous union
        + member(S["x"], 2, 0) + member(S["proto"], 1, 0),
        btf_type(S["outer"], KIND_STRUCT, 4, 24, kflag=1)                        # 6: struct outer
        + member(S["common"], 4, 0) + member(0, 5, 64)
        + member(S["flags"], 2, 128) + member(S["bits"], 2, (3 << 24) | 160),
    ]
    return Btf(build_btf(types, STRINGS))


def test_offsets_through_nested_structs_anonymous_unions_and_typedefs():
    btf = sample()
    fam = btf.member("outer", "common.fam")
    assert (fam.offset, fam.size) == (4, 2)
    proto = btf.member("outer", "proto")  # inside the anonymous union at byte 8
    assert (proto.offset, proto.size) == (8, 2)
    assert btf.member("outer", "flags").offset == 16
    assert btf.member("outer", "common").size == 8


def test_what_btf_cannot_answer_is_one_error():
    btf = sample()
    with pytest.raises(BtfError, match="bit field"):
        btf.member("outer", "bits")
    with pytest.raises(BtfError, match="no member"):
        btf.member("outer", "nope")
    with pytest.raises(BtfError, match="not in the kernel"):
        btf.member("missing", "x")
    with pytest.raises(BtfError, match="magic"):
        Btf(b"\0" * 64)
    with pytest.raises(BtfError):
        Btf(build_btf([btf_type(0, KIND_STRUCT, 5, 8)], STRINGS))  # members run past the section


@pytest.mark.skipif(shutil.which("bpftool") is None, reason="bpftool (installed by scripts/install.sh --dev)")
def test_running_kernel_offsets_agree_with_bpftool():
    raw = subprocess.run(["bpftool", "btf", "dump", "file", "/sys/kernel/btf/vmlinux"], capture_output=True,
                         text=True, check=True).stdout

    def bits(struct_name: str, name: str) -> int:
        body = raw.split(f"STRUCT '{struct_name}' size=", 1)[1].split("\n[", 1)[0]
        return int(re.search(rf"'{name}' type_id=\d+ bits_offset=(\d+)", body).group(1))

    offsets = sock_field_offsets()
    assert offsets["SK_FAMILY_OFFSET"] == (bits("sock", "__sk_common") + bits("sock_common", "skc_family")) // 8
    assert offsets["SK_PROTOCOL_OFFSET"] == bits("sock", "sk_protocol") // 8
    assert offsets["SK_TYPE_OFFSET"] == bits("sock", "sk_type") // 8
    sk_common = bits("sock", "__sk_common")
    assert offsets["SK_V6_DADDR_OFFSET"] == (sk_common + bits("sock_common", "skc_v6_daddr")) // 8
    assert offsets["SK_V6_RCV_SADDR_OFFSET"] == (sk_common + bits("sock_common", "skc_v6_rcv_saddr")) // 8
    for define, field in (("TCP_SRTT_US_OFFSET", "srtt_us"), ("TCP_SEGS_OUT_OFFSET", "segs_out"),
                          ("TCP_SEGS_IN_OFFSET", "segs_in"), ("TCP_TOTAL_RETRANS_OFFSET", "total_retrans")):
        assert offsets[define] == bits("tcp_sock", field) // 8, define
    # The IPv4 addresses and ports sit in anonymous members (bpftool lists them without names); the net
    # tests read them from live sockets (test_connection_open_before_the_tracer_...).


@pytest.mark.skipif(shutil.which("bpftool") is None, reason="bpftool (installed by scripts/install.sh --dev)")
def test_running_kernel_types_and_enum_values_agree_with_bpftool():
    raw = subprocess.run(["bpftool", "btf", "dump", "file", "/sys/kernel/btf/vmlinux"], capture_output=True,
                         text=True, check=True).stdout
    btf = Btf.vmlinux()
    typedef = re.search(r"^\[(\d+)\] TYPEDEF 'btf_trace_inet_sock_set_state'", raw, re.M)  # (every kernel's)
    assert btf.type_id(KIND_TYPEDEF, "btf_trace_inet_sock_set_state") == int(typedef.group(1))
    enum = raw.split("ENUM 'iter_type' ", 1)[1].split("\n[", 1)[0]
    for name in ("ITER_UBUF", "ITER_IOVEC"):
        assert btf.enum_value("iter_type", name) == int(re.search(rf"'{name}' val=(-?\d+)", enum).group(1))
    with pytest.raises(BtfError, match="no ITER_NOPE"):
        btf.enum_value("iter_type", "ITER_NOPE")
    with pytest.raises(BtfError, match="not in the kernel"):
        btf.type_id(KIND_TYPEDEF, "btf_trace_no_such_tracepoint")


def test_a_kernel_functions_parameter_position_agrees_with_bpftool():
    """Where tcp_recvmsg() takes its flags (the net tracer's kprobe fallback reads them there: Linux 5.19 moved
    them), against bpftool's dump of the function's prototype."""
    raw = subprocess.run(["bpftool", "btf", "dump", "file", "/sys/kernel/btf/vmlinux"], capture_output=True,
                         text=True, check=True).stdout
    func = re.search(r"^\[\d+\] FUNC 'tcp_recvmsg' type_id=(\d+)", raw, re.M)
    proto = raw.split(f"\n[{func.group(1)}] FUNC_PROTO ", 1)[1].split("\n[", 1)[0]
    names = re.findall(r"^\t'(\w*)' type_id=", proto, re.M)
    btf = Btf.vmlinux()
    assert btf.param_index("tcp_recvmsg", "flags") == names.index("flags")
    with pytest.raises(BtfError, match="no parameter named nope"):
        btf.param_index("tcp_recvmsg", "nope")


def test_the_kernel_btf_is_parsed_once_per_process_until_forgotten():
    first = Btf.vmlinux()
    assert Btf.vmlinux() is first  # every tracer and plan asks: one parse
    Btf.forget_vmlinux()
    again = Btf.vmlinux()
    assert again is not first and again.raw == first.raw
    assert again.type_id(KIND_STRUCT, "sock") == first.type_id(KIND_STRUCT, "sock")


def test_a_second_start_answers_from_what_the_first_asked_without_indexing_the_btf(tmp_path, monkeypatch):
    """The answers (and the errors) of the kernel's BTF are kept in the compile cache's folder at
    forget_vmlinux(), keyed by the BTF's SHA-256: the next process answers the same questions alike without
    indexing the BTF; a question it did not ask indexes it. A damaged file is removed and not believed."""
    from ebpftool.core import bpf_cache
    monkeypatch.setenv(bpf_cache.ENV, str(tmp_path / "cache"))

    def ask(btf):
        with pytest.raises(BtfError) as missing:
            btf.type_id(KIND_TYPEDEF, "btf_trace_no_such_tracepoint")
        return (btf.struct_id("sock"), btf.member("sock", "__sk_common.skc_family"),
                btf.enum_value("iter_type", "ITER_IOVEC"), list(sock_field_offsets().items()), str(missing.value))
        # (in their order: the defines of a program's text, whose order is its compile cache key's)

    Btf.forget_vmlinux()
    first = Btf.vmlinux()
    answers = ask(first)
    Btf.forget_vmlinux()
    (kept,) = (tmp_path / "cache").glob(f"*{bpf_cache.BTF_ANSWERS_SUFFIX}")
    second = Btf.vmlinux()
    assert ask(second) == answers and second._btf is None   # nothing indexed
    assert second.struct_id("tcp_sock") == Btf(second.raw).struct_id("tcp_sock") and second._btf is not None
    Btf.forget_vmlinux()

    data = kept.read_bytes()
    kept.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))   # its SHA-256 no longer matches
    third = Btf.vmlinux()
    assert ask(third) == answers and third._btf is not None
    Btf.forget_vmlinux()
    assert kept.exists()   # written again, whole
