"""A small reader of 64-bit little-endian ELF files: function symbols (.dynsym, .symtab) and loadable
segments, the bytes at a link-time address, and the file offset a uprobe takes for it; and the first bytes of
a named section, read without the rest of the file. Nothing else.
"""
from __future__ import annotations

import os
import struct
from bisect import bisect_right
from dataclasses import dataclass, field
from functools import lru_cache


# ELF constants (the subset this reader needs).
_SHT_SYMTAB, _SHT_DYNSYM = 2, 11
_STT_FUNC, _STT_GNU_IFUNC = 2, 10
_PT_LOAD = 1
_PHDR_SIZE, _SHDR_SIZE, _SYM_SIZE = 56, 64, 24   # Elf64_Phdr, Elf64_Shdr, Elf64_Sym
_MAX_ENTRY = 256   # a header entry's size, bounded: 65,535 entries of 65,535 bytes would be 4 GiB to read
# The files read are whatever any process maps under a library's name, read by root: a crafted one must not
# make the tracer read gigabytes (a sparse file costs its maker nothing) or loop for minutes. A real
# library's symbol and string tables are a few MB (a large Go executable's .symtab tens).
_MAX_TABLE = 256 << 20


class ElfError(ValueError):
    pass


@dataclass(frozen=True)
class ElfSymbol:
    name: str
    value: int
    size: int


@dataclass
class ElfFile:
    """Function symbols and loadable segments of one 64-bit little-endian ELF file."""

    path: str
    dynamic: list[ElfSymbol] = field(default_factory=list)   # defined functions of .dynsym
    static: list[ElfSymbol] = field(default_factory=list)    # defined functions of .symtab (absent when stripped)
    loads: list[tuple[int, int, int]] = field(default_factory=list)  # PT_LOAD (file offset, vaddr, file size)
    _index: tuple[list[int], list[tuple[int, int, str]]] | None = field(default=None, repr=False)

    @classmethod
    def read(cls, path: str, static: bool = True) -> "ElfFile":
        """static False: .symtab is not read (a large executable's dynamic symbols only, cheaply). ElfError
        for a file this reader does not take, malformed ones included; OSError where it cannot be read."""
        try:
            return cls._read(path, static)
        except ElfError:
            raise
        except (struct.error, ValueError, OverflowError) as exc:   # offsets and sizes pointing nowhere
            raise ElfError(f"{path} is a malformed ELF file ({exc})") from None

    @classmethod
    def _read(cls, path: str, static: bool) -> "ElfFile":
        with open(path, "rb") as f:
            e_phoff, e_phentsize, e_phnum, e_shoff, e_shentsize, e_shnum, _shstrndx = _header(f, path)
            if (e_phnum and not _PHDR_SIZE <= e_phentsize <= _MAX_ENTRY
                    or e_shnum and not _SHDR_SIZE <= e_shentsize <= _MAX_ENTRY):
                raise ElfError(f"{path} has program or section headers of sizes no ELF file has")
            elf = cls(path)
            file_size = os.fstat(f.fileno()).st_size
            ph = _read_at(f, e_phoff, e_phentsize * e_phnum, file_size, path)
            for i in range(e_phnum):
                p_type, _pflags, p_offset, p_vaddr, _paddr, p_filesz = struct.unpack_from("<IIQQQQ", ph, i * e_phentsize)
                if p_type == _PT_LOAD:
                    if p_offset + p_filesz > file_size:
                        raise ElfError(f"{path} has a loadable segment past the file's end")
                    elf.loads.append((p_offset, p_vaddr, p_filesz))
            sections = _sections(f, e_shoff, e_shentsize, e_shnum, file_size, path)
            for _name, sh_type, _f, _a, sh_offset, sh_size, sh_link, _info, _al, sh_entsize in sections:
                if sh_type not in (_SHT_SYMTAB, _SHT_DYNSYM) or sh_entsize < _SYM_SIZE or sh_link >= len(sections):
                    continue
                if sh_type == _SHT_SYMTAB and not static:
                    continue
                str_off, str_size = sections[sh_link][4], sections[sh_link][5]
                if sh_size > _MAX_TABLE or str_size > _MAX_TABLE:
                    raise ElfError(f"{path} has a symbol table larger than {_MAX_TABLE >> 20} MiB")
                strtab = _read_at(f, str_off, str_size, file_size, path)
                symtab = _read_at(f, sh_offset, sh_size, file_size, path)
                out = elf.dynamic if sh_type == _SHT_DYNSYM else elf.static
                out.extend(_functions(symtab, sh_entsize, strtab))
        return elf

    def function_names(self) -> set[str]:
        """Exported (dynamic) defined functions: what a uprobe can be attached to by name."""
        return {s.name for s in self.dynamic}

    def symbol_at(self, vaddr: int) -> str | None:
        """The function whose [value, value + size) holds vaddr."""
        if self._index is None:
            by_start = sorted({(s.value, s.size, s.name) for s in self.static + self.dynamic})
            self._index = ([s[0] for s in by_start], by_start)
        starts, symbols = self._index
        last = bisect_right(starts, vaddr) - 1
        # aliases share a start address: the first whose range holds vaddr names it
        i = last
        while i >= 0 and starts[i] == starts[last]:
            value, size, name = symbols[i]
            if vaddr < value + max(size, 1):
                return name
            i -= 1
        return None

    def vaddr(self, file_offset: int) -> int | None:
        """The link-time address of a file offset, through the PT_LOAD segment holding it."""
        for off, vaddr, size in self.loads:
            if off <= file_offset < off + size:
                return file_offset - off + vaddr
        return None


    def file_offset(self, vaddr: int) -> int | None:
        """The file offset of a link-time address (what a uprobe is attached at), through its PT_LOAD segment."""
        for off, seg_vaddr, size in self.loads:
            if seg_vaddr <= vaddr < seg_vaddr + size:
                return vaddr - seg_vaddr + off
        return None

    def code_at(self, vaddr: int, length: int) -> bytes:
        """Up to length bytes of the file at a link-time address (fewer at a segment's end; b"" if unmapped)."""
        off = self.file_offset(vaddr)
        if off is None:
            return b""
        for seg_off, _vaddr, size in self.loads:
            if seg_off <= off < seg_off + size:
                length = min(length, seg_off + size - off)
                break
        with open(self.path, "rb") as f:
            f.seek(off)
            return f.read(length)

    def symbol(self, name: str) -> ElfSymbol | None:
        """The exported (dynamic) function of that name, else the static one."""
        for s in self.dynamic + self.static:
            if s.name == name:
                return s
        return None

def _header(f, path: str) -> tuple[int, int, int, int, int, int, int]:
    """Of the ELF header of open file f: the program headers' offset, entry size and count, the section
    headers' offset, entry size and count, and the index of the section holding the section names; ElfError
    for a file this reader does not take."""
    ident = f.read(64)
    if len(ident) < 64 or ident[:4] != b"\x7fELF":
        raise ElfError(f"{path} is not an ELF file")
    if ident[4] != 2 or ident[5] != 1:
        raise ElfError(f"{path} is not a 64-bit little-endian ELF file")
    e_phoff, e_shoff, _flags, _ehsize, e_phentsize, e_phnum, e_shentsize, e_shnum, shstrndx = \
        struct.unpack_from("<QQIHHHHHH", ident, 32)
    return e_phoff, e_phentsize, e_phnum, e_shoff, e_shentsize, e_shnum, shstrndx


def _read_at(f, offset: int, size: int, file_size: int, path: str) -> bytes:
    """Up to size bytes of open file f from offset; ElfError for an offset past the file's end."""
    if offset > file_size:
        raise ElfError(f"{path} points past its end")
    f.seek(offset)
    return f.read(size)


def _sections(f, shoff: int, shentsize: int, shnum: int, file_size: int, path: str) -> list[tuple]:
    """The section headers of open file f (Elf64_Shdr fields: name, type, flags, addr, offset, size, link,
    info, addralign, entsize)."""
    sh = _read_at(f, shoff, shentsize * shnum, file_size, path)
    return [struct.unpack_from("<IIQQQQIIQQ", sh, i * shentsize) for i in range(shnum)]


def section_head(path: str, name: str, length: int) -> bytes | None:
    """Up to `length` first bytes of the section of that name; None where there is none (or the file is no
    ELF file this reader takes). Only the headers and the section names are read: cheap enough to ask of
    every executable on a node."""
    try:
        with open(path, "rb") as f:
            _phoff, _phentsize, _phnum, shoff, shentsize, shnum, shstrndx = _header(f, path)
            if not shoff or shentsize < 64 or not 0 < shnum < 4096 or shstrndx >= shnum:
                return None
            file_size = os.fstat(f.fileno()).st_size
            sections = _sections(f, shoff, shentsize, shnum, file_size, path)
            names = _read_at(f, sections[shstrndx][4], min(sections[shstrndx][5], 1 << 16), file_size, path)
            wanted = name.encode() + b"\0"
            for section in sections:
                if names[section[0]:section[0] + len(wanted)] == wanted:
                    return _read_at(f, section[4], length, file_size, path)
    except (OSError, ElfError, struct.error):
        return None
    return None


def _functions(symtab: bytes, entsize: int, strtab: bytes) -> list[ElfSymbol]:
    """The defined functions of a symbol table (entries of entsize >= 24 bytes)."""
    out = []
    for i in range(len(symtab) // entsize):
        st_name, st_info, _other, st_shndx, st_value, st_size = struct.unpack_from("<IBBHQQ", symtab, i * entsize)
        if st_shndx == 0 or (st_info & 0xF) not in (_STT_FUNC, _STT_GNU_IFUNC) or not st_name:
            continue
        end = strtab.find(b"\0", st_name)
        out.append(ElfSymbol(strtab[st_name:end].decode("utf-8", "replace"), st_value, st_size))
    return out


@lru_cache(maxsize=256)
def _elf_by_identity(path: str, _dev: int, _ino: int, _mtime: int) -> ElfFile:
    return ElfFile.read(path)


def read_elf(path: str) -> ElfFile:
    """ElfFile.read, cached per file identity (a replaced file is read again)."""
    st = os.stat(path)
    return _elf_by_identity(path, st.st_dev, st.st_ino, st.st_mtime_ns)


@lru_cache(maxsize=1024)
def _exports_by_identity(path: str, names: frozenset[str], _dev: int, _ino: int, _mtime: int) -> bool:
    try:
        exported = ElfFile.read(path, static=False).function_names()
    except (OSError, ElfError):
        return False
    return names <= exported


def exports_all(path: str, names: frozenset[str]) -> bool:
    """Whether an ELF file exports every one of these functions (cached per file identity; False for a file
    that cannot be read or is no ELF file)."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    return _exports_by_identity(path, names, st.st_dev, st.st_ino, st.st_mtime_ns)
