"""Member offsets of kernel structs, read from the running kernel's own BTF (/sys/kernel/btf/vmlinux).

BCC compiles against whatever headers the node has, which may belong to another kernel version, so
ebpftool's C never takes a struct layout from them. Where a program must read a field of a kernel
object it only has a pointer to (a raw tracepoint's `struct sock *`), the offset comes from here and
is compiled in as a constant, as libbpf's CO-RE relocations would do: the layout is the live kernel's.

Format: include/uapi/linux/btf.h and Documentation/bpf/btf.rst. Only what finding a member needs is
decoded; every other type is skipped by its size.
"""
from __future__ import annotations

import functools
import hashlib
import json
import struct
import threading
from array import array
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
    """One BTF blob, indexed compactly: per type id its raw `info`, name offset, size-or-type and the offset
    of its extra data, in four arrays of 32-bit words (about 2 MB for a kernel's 125,000 types, where a
    tuple per type took 28 MB). The kernel's own BTF is parsed once per process: Btf.vmlinux()."""

    _vmlinux: "RememberedBtf | None" = None
    _vmlinux_lock = threading.Lock()

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
        self._strings_at = hdr_len + str_off
        self._strings_end = self._strings_at + str_len
        # Indexed by type id; id 0 is void.
        self._info, self._name_off, self._size_or_type, self._extra = (array("I", [0]) for _ in range(4))
        self._index()

    @classmethod
    def vmlinux(cls) -> "RememberedBtf":
        """The running kernel's BTF as this process asks it (see forget_vmlinux): read and indexed only when a
        question comes that an earlier start did not ask (RememberedBtf)."""
        with cls._vmlinux_lock:
            if cls._vmlinux is None:
                sha256 = vmlinux_sha256()
                if sha256 is None:
                    raise BtfError(f"cannot read {VMLINUX_BTF}")
                cls._vmlinux = RememberedBtf(sha256)
            return cls._vmlinux

    @classmethod
    def forget_vmlinux(cls) -> None:
        """Drop the kernel's BTF (about 8 MB with its index) once start-up no longer needs it, keeping the new
        answers for the next start; a later Btf.vmlinux() reads it again."""
        with cls._vmlinux_lock:
            if cls._vmlinux is not None:
                cls._vmlinux.keep_answers()
            cls._vmlinux = None

    @property
    def raw(self) -> bytes:
        return self._data

    def _index(self) -> None:
        data, pos, end = self._data, self._types_at, self._types_end
        unpack = struct.Struct("<III").unpack_from
        info_a, name_a, size_a, extra_a = self._info, self._name_off, self._size_or_type, self._extra
        fixed, per_entry = _EXTRA_FIXED.get, _EXTRA_PER_ENTRY.get
        while pos < end:
            name_off, info, size_or_type = unpack(data, pos)
            kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
            info_a.append(info)
            name_a.append(name_off)
            size_a.append(size_or_type)
            extra_a.append(pos + 12)
            pos += 12 + fixed(kind, 0) + per_entry(kind, 0) * vlen
        if pos != end:
            raise BtfError("BTF type section is malformed")

    def _type(self, type_id: int) -> tuple[int, int, int, int, int, bool]:
        """(kind, name_off, vlen, size_or_type, offset of its extra data, kind_flag) of a type id."""
        info = self._info[type_id]
        return ((info >> 24) & 0x1F, self._name_off[type_id], info & 0xFFFF, self._size_or_type[type_id],
                self._extra[type_id], bool(info >> 31))

    def _name(self, off: int) -> str:
        end = self._data.index(b"\0", self._strings_at + off)
        return self._data[self._strings_at + off:end].decode()

    def _string_offsets(self, name: bytes) -> list[int]:
        """Where the string `name` is in the string section (once, unless the BTF was not deduplicated)."""
        data, start, end = self._data, self._strings_at, self._strings_end
        out, at = [], data.find(b"\0" + name + b"\0", start, end)
        while at >= 0:
            out.append(at + 1 - start)
            at = data.find(b"\0" + name + b"\0", at + 1, end)
        return out

    def _resolve(self, type_id: int) -> int:
        """Through typedefs and qualifiers to the type itself."""
        for _ in range(32):
            kind, _n, _v, ref, _x, _k = self._type(type_id)
            if kind not in _QUALIFIERS:
                return type_id
            type_id = ref
        raise BtfError("BTF qualifier chain too long")

    def _size(self, type_id: int) -> int:
        kind, _n, _v, size_or_type, extra, _k = self._type(self._resolve(type_id))
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
        ids = self._name_off.tobytes()
        for off in self._string_offsets(name.encode()):
            at = ids.find(struct.pack("<I", off))
            while at >= 0:
                if at % 4 == 0 and (self._info[at // 4] >> 24) & 0x1F == kind:
                    return at // 4
                at = ids.find(struct.pack("<I", off), at + 1)
        raise BtfError(f"{name} is not in the kernel's BTF")

    def struct_id(self, name: str) -> int:
        return self.type_id(KIND_STRUCT, name)

    def param_index(self, func: str, param: str) -> int:
        """Where a kernel function takes the parameter of this name, from 0 (its FUNC's FUNC_PROTO): where a
        kprobe reads it, when kernel versions moved it."""
        _k, _n, _v, proto, _x, _kf = self._type(self.type_id(KIND_FUNC, func))
        kind, _n, vlen, _s, extra, _kf = self._type(proto)
        if kind != KIND_FUNC_PROTO:
            raise BtfError(f"{func} has no prototype in the kernel's BTF")
        for i in range(vlen):
            name_off, _type = struct.unpack_from("<II", self._data, extra + 8 * i)
            if self._name(name_off) == param:
                return i
        raise BtfError(f"{func}() has no parameter named {param} in the kernel's BTF")

    def enum_value(self, enum_name: str, name: str) -> int:
        """The value of enumerator name in enum enum_name (e.g. "iter_type", "ITER_IOVEC")."""
        _k, _n, vlen, _s, extra, _kf = self._type(self.type_id(KIND_ENUM, enum_name))
        for i in range(vlen):
            name_off, value = struct.unpack_from("<Ii", self._data, extra + 8 * i)
            if self._name(name_off) == name:
                return value
        raise BtfError(f"enum {enum_name} has no {name}")

    def _find(self, type_id: int, member: str) -> tuple[int, int] | None:
        """(bit offset, type id) of member in a struct/union, looking into anonymous members."""
        kind, _n, vlen, _s, extra, kflag = self._type(self._resolve(type_id))
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

    def field_offsets(self, fields) -> dict[str, int]:
        """#define -> offset for (#define, struct, member path, size in bytes) fields; BtfError if one is missing
        or has another size than the program reads."""
        offsets = {}
        for define, struct_name, path, size in fields:
            m = self.member(struct_name, path)
            if m.size != size:
                raise BtfError(f"struct {struct_name}'s {path} is {m.size} bytes wide, not {size}")
            offsets[define] = m.offset
        return offsets


@functools.lru_cache(maxsize=1)
def vmlinux_sha256() -> str | None:
    """The SHA-256 of the running kernel's BTF (None where it cannot be read); it changes only with a boot.
    The compile cache's key and the remembered BTF answers share this one read."""
    try:
        return hashlib.sha256(VMLINUX_BTF.read_bytes()).hexdigest()
    except OSError:
        return None


class RememberedBtf:
    """The kernel's BTF as start-up asks it: the questions it may ask (type_id, struct_id, enum_value, member,
    field_offsets, param_index) are answered from what an earlier start asked of the same BTF (its SHA-256), kept in the
    compile cache's folder (ebpftool.core.bpf_cache, checked as its entries are); only a new question indexes
    the BTF (~0.2 s of Python on a kernel's 150,000 types), and its answer, or the BtfError it raised, is
    kept at forget_vmlinux(). With the cache off every question is asked of the BTF itself."""

    def __init__(self, sha256: str) -> None:
        self._sha256 = sha256
        self._raw: bytes | None = None
        self._btf: Btf | None = None
        self._lock = threading.Lock()
        self._cache = self._cache_folder()
        self._answers: dict = self._cache.fetch_btf_answers(self._sha256) if self._cache else {}
        self._new = False

    @property
    def raw(self) -> bytes:
        """The BTF's bytes, read at the first need."""
        if self._raw is None:
            try:
                self._raw = VMLINUX_BTF.read_bytes()
            except OSError as exc:
                raise BtfError(f"cannot read {VMLINUX_BTF}: {exc.strerror}") from exc
        return self._raw

    @staticmethod
    def _cache_folder():
        from ebpftool.core.bpf_cache import BpfCache  # noqa: PLC0415  (it imports this module)
        return BpfCache.from_env()

    def _ask(self, question: str, *args):
        key = json.dumps([question, *args])
        with self._lock:
            answer = self._answers.get(key)
            if answer is None:
                if self._btf is None:
                    self._btf = Btf(self.raw)
                try:
                    value = getattr(self._btf, question)(*args)
                    answer = {"value": [value.offset, value.size] if isinstance(value, Member) else value}
                except BtfError as exc:
                    answer = {"error": str(exc)}
                self._answers[key] = answer
                self._new = True
        if "error" in answer:
            raise BtfError(answer["error"])
        return Member(*answer["value"]) if question == "member" else answer["value"]

    def type_id(self, kind: int, name: str) -> int:
        return self._ask("type_id", kind, name)

    def struct_id(self, name: str) -> int:
        return self._ask("struct_id", name)

    def enum_value(self, enum_name: str, name: str) -> int:
        return self._ask("enum_value", enum_name, name)

    def param_index(self, func: str, param: str) -> int:
        return self._ask("param_index", func, param)

    def member(self, struct_name: str, path: str) -> Member:
        return self._ask("member", struct_name, path)

    def field_offsets(self, fields) -> dict[str, int]:
        return self._ask("field_offsets", [list(f) for f in fields])

    def keep_answers(self) -> None:
        """Write the answers to the cache if this process asked something new."""
        with self._lock:
            if self._new and self._cache is not None:
                self._cache.store_btf_answers(self._sha256, self._answers)
                self._new = False


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
    return Btf.vmlinux().field_offsets(SOCK_FIELDS)
