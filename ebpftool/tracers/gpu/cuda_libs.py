"""Finding CUDA libraries and naming code addresses: /proc/PID/maps and ELF symbol tables.

- Libraries are found in the maps of running processes (a process in a
  container is read through /proc/PID/root, so its own copy of libcudart is
  found and probed), in the usual install paths, or given by path.
- Which traced functions a library has is read from its dynamic symbol table
  (ebpftool.core.elf).
- A kernel's host-side address (what cudaLaunchKernel receives) becomes a
  symbol name through the mapping that holds it and that file's symbols.
"""
from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from functools import lru_cache

from ebpftool.core.elf import ElfError, read_elf
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
