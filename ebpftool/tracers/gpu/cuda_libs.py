"""Finding CUDA libraries and naming code addresses: /proc/PID/maps and ELF symbol tables.

- Libraries are found in the maps of running processes (a process in a
  container is read through /proc/PID/root, so its own copy of libcudart is
  found and probed), in the usual install paths, or given by path.
- Which traced functions a library has is read from its dynamic symbol table
  (a small ELF64 reader: the section headers, .dynsym/.symtab and their string
  tables, the PT_LOAD program headers; nothing else).
- A kernel's host-side address (what cudaLaunchKernel receives) becomes a
  symbol name through the mapping that holds it and that file's symbols.
"""
from __future__ import annotations

import glob
import os
import re
import shutil
import struct
import subprocess
from bisect import bisect_right
from dataclasses import dataclass, field
from functools import lru_cache

from ebpftool.core.procfs import Mapping, host_path, pids, read_maps

LIBRARY_NAME = re.compile(r"^lib(cudart|cuda)\.so(\.\d+)*$")

# Where CUDA installs its libraries (toolkit, distribution driver packages, containers).
INSTALL_GLOBS = (
    "/usr/local/cuda/lib64/libcudart.so*",
    "/usr/local/cuda-*/lib64/libcudart.so*",
    "/usr/local/cuda/targets/*/lib/libcudart.so*",
    "/usr/lib/x86_64-linux-gnu/libcuda.so*",
    "/usr/lib/aarch64-linux-gnu/libcuda.so*",
    "/usr/lib64/libcuda.so*",
    "/usr/lib/libcuda.so*",
    "/usr/local/nvidia/lib64/libcuda.so*",
)

# ELF constants (the subset this reader needs).
_SHT_SYMTAB, _SHT_DYNSYM = 2, 11
_STT_FUNC, _STT_GNU_IFUNC = 2, 10
_PT_LOAD = 1


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
    def read(cls, path: str) -> "ElfFile":
        with open(path, "rb") as f:
            ident = f.read(64)
            if len(ident) < 64 or ident[:4] != b"\x7fELF":
                raise ElfError(f"{path} is not an ELF file")
            if ident[4] != 2 or ident[5] != 1:
                raise ElfError(f"{path} is not a 64-bit little-endian ELF file")
            (e_phoff, e_shoff, _flags, _ehsize, e_phentsize, e_phnum, e_shentsize, e_shnum,
             _shstrndx) = struct.unpack_from("<QQIHHHHHH", ident, 32)
            elf = cls(path)
            f.seek(e_phoff)
            ph = f.read(e_phentsize * e_phnum)
            for i in range(e_phnum):
                p_type, _pflags, p_offset, p_vaddr, _paddr, p_filesz = struct.unpack_from("<IIQQQQ", ph, i * e_phentsize)
                if p_type == _PT_LOAD:
                    elf.loads.append((p_offset, p_vaddr, p_filesz))
            f.seek(e_shoff)
            sh = f.read(e_shentsize * e_shnum)
            sections = [struct.unpack_from("<IIQQQQIIQQ", sh, i * e_shentsize) for i in range(e_shnum)]
            for _name, sh_type, _f, _a, sh_offset, sh_size, sh_link, _info, _al, sh_entsize in sections:
                if sh_type not in (_SHT_SYMTAB, _SHT_DYNSYM) or not sh_entsize or sh_link >= len(sections):
                    continue
                str_off, str_size = sections[sh_link][4], sections[sh_link][5]
                f.seek(str_off)
                strtab = f.read(str_size)
                f.seek(sh_offset)
                symtab = f.read(sh_size)
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


def _functions(symtab: bytes, entsize: int, strtab: bytes) -> list[ElfSymbol]:
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


def is_cuda_library(path: str) -> bool:
    return bool(LIBRARY_NAME.match(os.path.basename(path)))


# --- libraries ---------------------------------------------------------------------------------
@dataclass
class CudaLibrary:
    path: str          # openable from the tracer's mount namespace
    source: str        # how it was found: "--lib", "install path", "pid N"
    identity: tuple[int, int]  # (st_dev, st_ino): uprobes are per file, not per path
    functions: list[str] = field(default_factory=list)  # the traced functions probed in it


def file_identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def installed_libraries() -> list[str]:
    found = []
    for pattern in INSTALL_GLOBS:
        found.extend(p for p in sorted(glob.glob(pattern)) if is_cuda_library(p) and os.path.isfile(p))
    return found


def libraries_in_processes(pid_filter: set[int] | None = None, proc: str = "/proc") -> dict[int, tuple[list[str], list[Mapping]]]:
    """pid -> (host-openable paths of the CUDA libraries it has mapped, its file mappings)."""
    out: dict[int, tuple[list[str], list[Mapping]]] = {}
    for pid in pids(proc):
        if pid_filter is not None and pid not in pid_filter:
            continue
        maps = read_maps(pid, proc)
        paths = sorted({m.path for m in maps if is_cuda_library(m.path)})
        if paths:
            out[pid] = ([_prefer_plain(pid, p, proc) for p in paths], maps)
    return out


def _prefer_plain(pid: int, path: str, proc: str) -> str:
    """The path itself when it names the same file here (host processes), else via /proc/PID/root."""
    via_root = host_path(pid, path, proc)
    plain = file_identity(path)
    return path if plain is not None and plain == file_identity(via_root) else via_root


# --- naming kernels -------------------------------------------------------------------------------
def demangle(name: str) -> str:
    """C++ names through c++filt when it is installed (names stay mangled otherwise)."""
    if not name.startswith("_Z") or _cxxfilt() is None:
        return name
    try:
        out = subprocess.run([_cxxfilt(), name], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return name
    return out or name


@lru_cache(maxsize=1)
def _cxxfilt() -> str | None:
    return shutil.which("c++filt")


class SymbolResolver:
    """Names code addresses of processes: remembers their maps so names survive their exit."""

    MAX_PROCESSES = 4096

    def __init__(self, proc: str = "/proc") -> None:
        self.proc = proc
        self._maps: dict[int, list[Mapping]] = {}
        self._names: dict[tuple[int, int], str | None] = {}

    def remember(self, pid: int, maps: list[Mapping] | None = None) -> None:
        if len(self._maps) >= self.MAX_PROCESSES:
            self._maps.pop(next(iter(self._maps)))
        maps = read_maps(pid, self.proc) if maps is None else maps
        if maps:
            self._maps[pid] = maps

    def forget(self, pid: int) -> None:
        self._maps.pop(pid, None)
        for key in [k for k in self._names if k[0] == pid]:
            del self._names[key]

    def resolve(self, pid: int, addr: int) -> str | None:
        """The function symbol holding addr in process pid, demangled; None when unknown."""
        key = (pid, addr)
        if key not in self._names:
            self._names[key] = self._lookup(pid, addr)
        return self._names[key]

    def _lookup(self, pid: int, addr: int) -> str | None:
        if pid not in self._maps:
            self.remember(pid)
        for m in self._maps.get(pid, ()):
            if m.start <= addr < m.end:
                return self._symbol_in_file(pid, m, addr)
        return None

    def _symbol_in_file(self, pid: int, m: Mapping, addr: int) -> str | None:
        for path in (host_path(pid, m.path, self.proc), m.path):
            try:
                elf = read_elf(path)
                break
            except (OSError, ElfError):
                continue
        else:
            return None
        vaddr = elf.vaddr(addr - m.start + m.offset)
        if vaddr is None:
            return None
        name = elf.symbol_at(vaddr)
        return demangle(name) if name else None
