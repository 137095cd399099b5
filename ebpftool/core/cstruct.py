"""ctypes structures read from the C headers in bpf/, so an event's layout is defined once.

The headers shared by a BPF program and user space hold plain structs of
fixed-width fields (`__u32 pid;`, `char comm[16];`, `__u8 buf[MAX_CAPTURE];`)
and `#define NAME number` constants. This module parses exactly that subset and
builds ctypes.Structure classes with the C compiler's natural alignment, which
is what clang uses for the BPF target too.
"""
from __future__ import annotations

import ctypes
import os
import re
import struct
import sys
from functools import lru_cache
from operator import itemgetter
from pathlib import Path
from typing import Callable


def _bpf_dir() -> Path:
    """Where the C programs and their headers are: EBPFTOOL_BPF_DIR where set; for a package installed in an
    environment (scripts/install.sh installs a copy), the copy of bpf/ its wheel put in the environment's
    share/ (pyproject.toml's data-files); for the package run from a checkout, the checkout's bpf/."""
    if os.environ.get("EBPFTOOL_BPF_DIR"):
        return Path(os.environ["EBPFTOOL_BPF_DIR"])
    package = Path(__file__).resolve().parents[1]
    if package.is_relative_to(Path(sys.prefix).resolve()):
        return Path(sys.prefix) / "share" / "ebpftool" / "bpf"
    return package.parent / "bpf"


BPF_DIR = _bpf_dir()

_TYPES = {
    "__u8": ctypes.c_uint8, "u8": ctypes.c_uint8, "__s8": ctypes.c_int8, "char": ctypes.c_char,
    "__u16": ctypes.c_uint16, "u16": ctypes.c_uint16, "__s16": ctypes.c_int16,
    "__u32": ctypes.c_uint32, "u32": ctypes.c_uint32, "__s32": ctypes.c_int32, "s32": ctypes.c_int32,
    "__u64": ctypes.c_uint64, "u64": ctypes.c_uint64, "__s64": ctypes.c_int64, "s64": ctypes.c_int64,
}
_DEFINE = re.compile(r"^\s*#define\s+([A-Z_][A-Z0-9_]*)\s+\(?\s*(-?(?:0x[0-9a-fA-F]+|\d+))[uUlL]*\s*\)?\s*(?:/[*/].*)?$", re.M)
_STRUCT = re.compile(r"struct\s+(\w+)\s*\{(.*?)\}\s*;", re.S)
_FIELD = re.compile(r"^\s*(?:unsigned\s+)?(\w+)\s+(\w+)\s*(?:\[\s*(\w+)\s*\])?\s*;")
_ENUM = re.compile(r"enum\s+\w*\s*\{(.*?)\}\s*;", re.S)
_ENUMERATOR = re.compile(r"^\s*([A-Za-z_]\w*)\s*(?:=\s*(-?(?:0x[0-9a-fA-F]+|\d+))[uUlL]*)?\s*$")
_COMMENT = re.compile(r"/\*.*?\*/|//[^\n]*", re.S)


class HeaderError(ValueError):
    pass


def parse_defines(text: str) -> dict[str, int]:
    return {name: int(value, 0) for name, value in _DEFINE.findall(text)}


def parse_enums(text: str) -> dict[str, int]:
    """The constants of every `enum { NAME = number, ... };` in text (an enumerator without a value is the
    previous one plus one, as in C)."""
    out: dict[str, int] = {}
    for body in _ENUM.findall(_COMMENT.sub("", text)):
        value = -1
        for item in body.split(","):
            if not item.strip():
                continue
            m = _ENUMERATOR.match(item)
            if not m:
                raise HeaderError(f"enum: cannot parse '{item.strip()}'")
            value = int(m.group(2), 0) if m.group(2) is not None else value + 1
            out[m.group(1)] = value
    return out


def parse_structs(text: str) -> dict[str, type[ctypes.Structure]]:
    """Every `struct name { ... };` of fixed-width fields in text, as ctypes classes."""
    defines = parse_defines(text)
    body_text = _COMMENT.sub("", text)
    out: dict[str, type[ctypes.Structure]] = {}
    for name, body in _STRUCT.findall(body_text):
        fields = []
        for line in body.split(";"):
            line = line.strip()
            if not line:
                continue
            m = _FIELD.match(line + ";")
            if not m:
                raise HeaderError(f"struct {name}: cannot parse field '{line}'")
            ctype_name, field, dim = m.groups()
            if ctype_name == "struct":
                raise HeaderError(f"struct {name}: nested structs are not supported ('{line}')")
            if ctype_name in out:
                ctype = out[ctype_name]
            elif ctype_name in _TYPES:
                ctype = _TYPES[ctype_name]
            else:
                raise HeaderError(f"struct {name}: unknown type '{ctype_name}'")
            if dim is not None:
                count = int(dim) if dim.isdigit() else defines.get(dim)
                if count is None:
                    raise HeaderError(f"struct {name}: unknown array size '{dim}'")
                if ctype is ctypes.c_char:
                    ctype = ctypes.c_uint8  # raw bytes: no NUL handling by ctypes
                ctype = ctype * count
            fields.append((field, ctype))
        out[name] = type(name, (ctypes.Structure,), {"_fields_": fields})
    return out


@lru_cache(maxsize=None)
def load_header(name: str) -> tuple[dict[str, type[ctypes.Structure]], dict[str, int]]:
    """(structs, constants) of bpf/<name>: its `#define NAME number`s and its enumerators."""
    text = (Path(BPF_DIR) / name).read_text()
    return parse_structs(text), {**parse_enums(text), **parse_defines(text)}


def decode(struct_type: type[ctypes.Structure], data: bytes) -> ctypes.Structure:
    """Copy one record into a struct; short records (a truncated read) are an error."""
    size = _whole(struct_type, data)
    return struct_type.from_buffer_copy(data[:size])


def _whole(struct_type: type[ctypes.Structure], data: bytes) -> int:
    """The struct's size; a shorter record (a truncated read) is an error."""
    size = ctypes.sizeof(struct_type)
    if len(data) < size:
        raise ValueError(f"{struct_type.__name__}: record of {len(data)} bytes, expected {size}")
    return size


_SCALAR_CODES = {1: "B", 2: "H", 4: "I", 8: "Q"}


def field_reader(struct_type: type[ctypes.Structure], *names: str) -> Callable[[bytes], tuple[int, ...]]:
    """A reader of some unsigned integer fields of a record, as a tuple in the order named: for a record
    of which only a few fields are wanted (no copy of the rest, as decode() makes). A short record is an
    error, as for decode()."""
    fields = sorted((getattr(struct_type, n).offset, getattr(struct_type, n).size, i) for i, n in enumerate(names))
    fmt, at, order = "<", 0, []
    for offset, size, i in fields:
        fmt += f"{offset - at}x" if offset > at else ""
        fmt += _SCALAR_CODES[size]
        at = offset + size
        order.append(i)
    unpack = struct.Struct(fmt).unpack_from
    in_order = itemgetter(*[order.index(i) for i in range(len(names))]) if order != sorted(order) else None

    whole = ctypes.sizeof(struct_type)

    def read(data: bytes) -> tuple[int, ...]:
        if len(data) < whole:
            _whole(struct_type, data)  # raises, as decode() does
        values = unpack(data)
        return values if in_order is None else in_order(values)
    return read


def cstring(raw) -> str:
    """A NUL-terminated char array (e.g. comm) as text."""
    b = bytes(raw)
    return b.split(b"\0", 1)[0].decode("utf-8", "replace")
