"""Member offsets of kernel structs, read from the running kernel's own BTF (/sys/kernel/btf/vmlinux).

BCC compiles against whatever headers the node has, which may belong to another kernel version, so
ebpftool's C never takes a struct layout from them. Where a program must read a field of a kernel
object it only has a pointer to (a raw tracepoint's `struct sock *`), the offset comes from here and
is compiled in as a constant, as libbpf's CO-RE relocations would do: the layout is the live kernel's.

Format: include/uapi/linux/btf.h and Documentation/bpf/btf.rst. Only what finding a member needs is
decoded; every other type is skipped by its size.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

VMLINUX_BTF = Path("/sys/kernel/btf/vmlinux")
BTF_MAGIC = 0xEB9F

KIND_INT, KIND_PTR, KIND_ARRAY, KIND_STRUCT, KIND_UNION, KIND_ENUM = 1, 2, 3, 4, 5, 6
KIND_FWD, KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT = 7, 8, 9, 10, 11
KIND_FUNC, KIND_FUNC_PROTO, KIND_VAR, KIND_DATASEC, KIND_FLOAT = 12, 13, 14, 15, 16
KIND_DECL_TAG, KIND_TYPE_TAG, KIND_ENUM64 = 17, 18, 19

# Bytes that follow struct btf_type (12 bytes) for each kind: fixed, or per vlen entry.
_EXTRA_FIXED = {KIND_INT: 4, KIND_ARRAY: 12, KIND_VAR: 4, KIND_DECL_TAG: 4}
_EXTRA_PER_ENTRY = {KIND_STRUCT: 12, KIND_UNION: 12, KIND_ENUM: 8, KIND_FUNC_PROTO: 8, KIND_DATASEC: 12,
                    KIND_ENUM64: 12}
_QUALIFIERS = (KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT, KIND_TYPE_TAG)


class BtfError(Exception):
    """The BTF cannot answer: absent, malformed, or the member is not a plain field."""


@dataclass(frozen=True)
class Member:
    offset: int   # bytes from the start of the outer struct
    size: int     # bytes


class Btf:
    def __init__(self, data: bytes) -> None:
        if len(data) < 24:
            raise BtfError("BTF data is truncated")
        magic, _version, _flags, hdr_len = struct.unpack_from("<HBBI", data, 0)
        if magic != BTF_MAGIC:
            raise BtfError("not BTF data (bad magic)")
        type_off, type_len, str_off, str_len = struct.unpack_from("<IIII", data, 8)
        self._data = data
        self._types_at = hdr_len + type_off
        self._types_end = self._types_at + type_len
        self._strings = data[hdr_len + str_off:hdr_len + str_off + str_len]
        # type id -> (kind, name_off, vlen, size_or_type, offset of its extra data, kind_flag); id 0 is void.
        self._types: list[tuple[int, int, int, int, int, bool]] = [(0, 0, 0, 0, 0, False)]
        self._index()

    @classmethod
    def vmlinux(cls) -> "Btf":
        try:
            return cls(VMLINUX_BTF.read_bytes())
        except OSError as exc:
            raise BtfError(f"cannot read {VMLINUX_BTF}: {exc.strerror}") from exc

    def _index(self) -> None:
        data, pos, end = self._data, self._types_at, self._types_end
        unpack = struct.Struct("<III").unpack_from
        while pos < end:
            name_off, info, size_or_type = unpack(data, pos)
            kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
            self._types.append((kind, name_off, vlen, size_or_type, pos + 12, bool(info >> 31)))
            pos += 12 + _EXTRA_FIXED.get(kind, 0) + _EXTRA_PER_ENTRY.get(kind, 0) * vlen
        if pos != end:
            raise BtfError("BTF type section is malformed")

    def _name(self, off: int) -> str:
        end = self._strings.index(b"\0", off)
        return self._strings[off:end].decode()

    def _resolve(self, type_id: int) -> int:
        """Through typedefs and qualifiers to the type itself."""
        for _ in range(32):
            kind, _n, _v, ref, _x, _k = self._types[type_id]
            if kind not in _QUALIFIERS:
                return type_id
            type_id = ref
        raise BtfError("BTF qualifier chain too long")

    def _size(self, type_id: int) -> int:
        kind, _n, _v, size_or_type, extra, _k = self._types[self._resolve(type_id)]
        if kind in (KIND_INT, KIND_STRUCT, KIND_UNION, KIND_ENUM, KIND_ENUM64, KIND_FLOAT):
            return size_or_type
        if kind == KIND_PTR:
            return 8
        if kind == KIND_ARRAY:
            elem, _index_type, nelems = struct.unpack_from("<III", self._data, extra)
            return self._size(elem) * nelems
        raise BtfError(f"BTF type {type_id} has no size")

    def type_id(self, kind: int, name: str) -> int:
        """The id of the type of this kind and name (e.g. KIND_TYPEDEF, "btf_trace_sock_send_length")."""
        for type_id, (k, name_off, _v, _s, _x, _kf) in enumerate(self._types):
            if k == kind and name_off and self._name(name_off) == name:
                return type_id
        raise BtfError(f"{name} is not in the kernel's BTF")

    def struct_id(self, name: str) -> int:
        return self.type_id(KIND_STRUCT, name)

    def enum_value(self, enum_name: str, name: str) -> int:
        """The value of enumerator name in enum enum_name (e.g. "iter_type", "ITER_IOVEC")."""
        _k, _n, vlen, _s, extra, _kf = self._types[self.type_id(KIND_ENUM, enum_name)]
        for i in range(vlen):
            name_off, value = struct.unpack_from("<Ii", self._data, extra + 8 * i)
            if self._name(name_off) == name:
                return value
        raise BtfError(f"enum {enum_name} has no {name}")

    def _find(self, type_id: int, member: str) -> tuple[int, int] | None:
        """(bit offset, type id) of member in a struct/union, looking into anonymous members."""
        kind, _n, vlen, _s, extra, kflag = self._types[self._resolve(type_id)]
        if kind not in (KIND_STRUCT, KIND_UNION):
            return None
        for i in range(vlen):
            name_off, mtype, moff = struct.unpack_from("<III", self._data, extra + 12 * i)
            bit_offset, bitfield_size = (moff & 0xFFFFFF, moff >> 24) if kflag else (moff, 0)
            if name_off == 0:
                inner = self._find(mtype, member)
                if inner is not None:
                    return bit_offset + inner[0], inner[1]
                continue
            if self._name(name_off) == member:
                if bitfield_size or bit_offset % 8:
                    raise BtfError(f"{member} is a bit field")
                return bit_offset, mtype
        return None

    def member(self, struct_name: str, path: str) -> Member:
        """Offset and size of struct_name.path (e.g. "sock", "__sk_common.skc_family")."""
        type_id, bits = self.struct_id(struct_name), 0
        for part in path.split("."):
            found = self._find(type_id, part)
            if found is None:
                raise BtfError(f"struct {struct_name} has no member {path}")
            bits += found[0]
            type_id = found[1]
        return Member(bits // 8, self._size(type_id))


# (#define, struct, member path, size in bytes) of the fields the raw socket tracepoint programs read.
SOCK_FIELDS = (
    ("SK_FAMILY_OFFSET", "sock", "__sk_common.skc_family", 2),
    ("SK_PROTOCOL_OFFSET", "sock", "sk_protocol", 2),
    ("SK_TYPE_OFFSET", "sock", "sk_type", 2),
    ("SK_DADDR_OFFSET", "sock", "__sk_common.skc_daddr", 4),
    ("SK_RCV_SADDR_OFFSET", "sock", "__sk_common.skc_rcv_saddr", 4),
    ("SK_DPORT_OFFSET", "sock", "__sk_common.skc_dport", 2),
    ("SK_NUM_OFFSET", "sock", "__sk_common.skc_num", 2),
    ("SK_V6_DADDR_OFFSET", "sock", "__sk_common.skc_v6_daddr", 16),
    ("SK_V6_RCV_SADDR_OFFSET", "sock", "__sk_common.skc_v6_rcv_saddr", 16),
    ("TCP_SRTT_US_OFFSET", "tcp_sock", "srtt_us", 4),
    ("TCP_SEGS_OUT_OFFSET", "tcp_sock", "segs_out", 4),
    ("TCP_SEGS_IN_OFFSET", "tcp_sock", "segs_in", 4),
    ("TCP_TOTAL_RETRANS_OFFSET", "tcp_sock", "total_retrans", 4),
)


def sock_field_offsets() -> dict[str, int]:
    """The offsets the raw socket tracepoint programs need, as #defines: a struct sock's family, protocol,
    addresses and ports, and a struct tcp_sock's smoothed RTT and segment counts. Raises BtfError if one is missing or has
    another size than the programs read."""
    btf = Btf.vmlinux()
    offsets = {}
    for define, struct_name, path, size in SOCK_FIELDS:
        m = btf.member(struct_name, path)
        if m.size != size:
            raise BtfError(f"struct {struct_name}'s {path} is {m.size} bytes wide, not {size}")
        offsets[define] = m.offset
    return offsets
