"""Go's crypto/tls in the executables of running processes, and the agents tracer's uprobes on it
(bpf/agents/agents.bpf.c, "TLS: Go's crypto/tls").

Go links its TLS into every executable, so there is no shared library to probe: each executable that holds
crypto/tls.(*Conn).Write, Read and Close (found by name in its symbol table: a Go executable built without
one, `-ldflags=-s`, is not followed) is attached once, by file, which covers every process that runs it,
also those started later. Executables are found in the running processes (a container's through
/proc/PID/root), at start and at each later scan.

Read's result is read at its `ret` instructions, not by a uretprobe (Go moves goroutine stacks, and a return
address rewritten by a uretprobe breaks that): `objdump` (binutils) lists them. Where it is missing, or on
another architecture than x86-64 (the programs read amd64's registers), Go executables are not followed.
"""
from __future__ import annotations

import os
import platform
import re
import shutil
import struct
import subprocess
from dataclasses import dataclass, field

from ebpftool.core.elf import ElfError, ElfFile, read_elf
from ebpftool.core.procfs import executable_path, host_path, pids
from ebpftool.core.uprobe_points import RAX, RBX, RCX, probe_point

WRITE, READ, CLOSE = "crypto/tls.(*Conn).Write", "crypto/tls.(*Conn).Read", "crypto/tls.(*Conn).Close"
R14 = 14   # the running goroutine, in Go's register ABI
PROGRAMS = frozenset({"go_tls_write_enter", "go_tls_read_enter", "go_tls_read_return", "go_tls_close_enter"})
_RET = re.compile(r"^\s*([0-9a-f]+):\s+(?:rep )?ret[q]?\b", re.MULTILINE)
PROLOGUE_BYTES = 64


@dataclass(frozen=True)
class GoProbe:
    vaddr: int
    file_offset: int
    program: str
    label: str


def supported() -> str | None:
    """Why Go executables cannot be followed here (None: they can)."""
    if platform.machine() != "x86_64":
        return f"Go's register ABI is read for x86-64 only (this machine: {platform.machine()})"
    if shutil.which("objdump") is None:
        return "objdump (binutils) is needed to find the `ret` instructions of crypto/tls.(*Conn).Read"
    return None


def return_offsets(path: str, start: int, size: int) -> list[int]:
    """The link-time addresses of the `ret` instructions of the function at [start, start + size)."""
    out = subprocess.run(["objdump", "-d", "--no-show-raw-insn", f"--start-address={start:#x}",
                          f"--stop-address={start + size:#x}", path], capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise ElfError(f"objdump could not read {path}: {out.stderr.strip()[:200]}")
    return [int(m.group(1), 16) for m in _RET.finditer(out.stdout)]


def probe_plan(elf: ElfFile) -> list[GoProbe]:
    """The uprobes for one Go executable (empty: it holds no crypto/tls.Conn methods by name)."""
    write, read, close = elf.symbol(WRITE), elf.symbol(READ), elf.symbol(CLOSE)
    if write is None or read is None or close is None or not read.size:
        return []
    plan: list[GoProbe] = []

    def add(vaddr: int, program: str, label: str) -> None:
        off = elf.file_offset(vaddr)
        if off is not None:
            plan.append(GoProbe(vaddr, off, program, label))

    for sym, program, keep in ((write, "go_tls_write_enter", (RAX, RBX, RCX)),
                               (read, "go_tls_read_enter", (RAX, RBX, RCX, R14)),
                               (close, "go_tls_close_enter", (RAX,))):
        # the first instruction the kernel emulates (the stack check's jbe), before the arguments change
        point = probe_point(elf.code_at(sym.value, PROLOGUE_BYTES), keep)
        add(sym.value + point.offset, program, f"{sym.name}+{point.offset:#x}")
    rets = return_offsets(elf.path, read.value, read.size)
    if not rets:
        return []
    for vaddr in rets:
        add(vaddr, "go_tls_read_return", f"{READ}+{vaddr - read.value:#x} (ret)")
    return plan


def is_go_executable(path: str) -> bool:
    """Whether an ELF file has the section Go's linker writes its build information to (.go.buildinfo): its
    section headers only are read, so that every executable on the node can be asked cheaply."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
            if len(head) < 64 or head[:4] != b"\x7fELF" or head[4] != 2 or head[5] != 1:
                return False
            shoff, = struct.unpack_from("<Q", head, 40)
            shentsize, shnum, shstrndx = struct.unpack_from("<HHH", head, 58)
            if not shoff or shentsize < 64 or not 0 < shnum < 4096 or shstrndx >= shnum:
                return False
            f.seek(shoff)
            sections = f.read(shentsize * shnum)
            names_at, names_size = struct.unpack_from("<QQ", sections, shstrndx * shentsize + 24)
            f.seek(names_at)
            names = f.read(min(names_size, 1 << 16))
    except (OSError, struct.error):
        return False
    return b".go.buildinfo\0" in names


def go_executable_candidates(proc: str = "/proc") -> list[str]:
    """Openable paths of the executables of running processes (each file once), to be checked for Go's TLS."""
    found: dict[tuple[int, int], str] = {}
    for pid in pids(proc):
        exe = executable_path(pid, proc)
        if exe is None:
            continue
        path = host_path(pid, exe, proc)
        try:
            st = os.stat(path)
        except OSError:
            continue
        found.setdefault((st.st_dev, st.st_ino), path)
    return list(found.values())


@dataclass
class GoTlsUprobes:
    """The Go executables attached so far (by identity), and the files seen that hold no Go TLS (not read
    again while unchanged)."""
    attached: dict[tuple[int, int], str] = field(default_factory=dict)
    passed: set[tuple[int, int, int]] = field(default_factory=set)
    refused: dict[str, str] = field(default_factory=dict)

    def attach_new(self, prog, proc: str = "/proc") -> list[str]:
        """Attach the uprobes to every running Go executable with crypto/tls not attached yet; the paths newly
        attached."""
        new = []
        for path in go_executable_candidates(proc):
            try:
                st = os.stat(path)
            except OSError:
                continue
            identity, version = (st.st_dev, st.st_ino), (st.st_dev, st.st_ino, st.st_mtime_ns)
            if identity in self.attached or version in self.passed or path in self.refused:
                continue
            if not is_go_executable(path):
                self.passed.add(version)
                continue
            try:
                plan = probe_plan(read_elf(path))
            except (OSError, ElfError, subprocess.SubprocessError) as exc:
                self.refused[path] = str(exc)
                continue
            if not plan:
                self.passed.add(version)
                continue
            try:
                for probe in plan:
                    prog.attach_uprobe_at(path, probe.vaddr, probe.file_offset, probe.program, probe.label)
            except Exception as exc:  # BCC raises bare Exception
                self.refused[path] = f"uprobe refused: {exc}"
                continue
            self.attached[identity] = path
            new.append(path)
        return new
