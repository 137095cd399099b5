"""Go's crypto/tls in the executables of running processes, and the agents tracer's uprobes on it
(bpf/agents/agents.bpf.c, "TLS: Go's crypto/tls").

Go links its TLS into every executable, so there is no shared library to probe: each executable built with
Go 1.18 or later (its build information says; the programs read Go 1.17's register ABI) that holds
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
import subprocess
from dataclasses import dataclass, field

from ebpftool.core.elf import ElfError, ElfFile, read_elf, section_head
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


BUILDINFO_MAGIC = b"\xff Go buildinf:"
OLDEST_GO = (1, 17)   # the register ABI the programs read


def go_version(path: str) -> str | None:
    """The Go version an ELF file was built with ("go1.19.8"), from the build information Go's linker writes
    to its .go.buildinfo section; "" for a Go executable whose version is not written inline (before Go
    1.18); None for any other file. Only that section's first bytes and the headers are read, so that every
    executable on the node can be asked cheaply."""
    info = section_head(path, ".go.buildinfo", 64)
    if info is None:
        return None
    # magic, pointer size, flags (2: strings inline, Go 1.18+), then at 32 the version, its length a uvarint
    if not info.startswith(BUILDINFO_MAGIC) or len(info) < 33 or not info[15] & 2 or info[32] >= 0x80:
        return ""
    return info[33:33 + info[32]].decode("ascii", "replace")


def register_abi(version: str) -> bool:
    """Whether a Go version passes arguments in registers (Go 1.17+ on amd64)."""
    m = re.match(r"go(\d+)\.(\d+)", version)
    return bool(m) and (int(m.group(1)), int(m.group(2))) >= OLDEST_GO


def go_executable_candidates(proc: str = "/proc") -> list[tuple[str, os.stat_result]]:
    """Openable paths of the executables of running processes, each file once with its stat, to be checked for
    Go's TLS."""
    found: dict[tuple[int, int], tuple[str, os.stat_result]] = {}
    for pid in pids(proc):
        exe = executable_path(pid, proc)
        if exe is None:
            continue
        path = host_path(pid, exe, proc)
        try:
            st = os.stat(path)
        except OSError:
            continue
        found.setdefault((st.st_dev, st.st_ino), (path, st))
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
        for path, st in go_executable_candidates(proc):
            identity, version = (st.st_dev, st.st_ino), (st.st_dev, st.st_ino, st.st_mtime_ns)
            if identity in self.attached or version in self.passed or path in self.refused:
                continue
            built_with = go_version(path)
            if built_with is None:
                self.passed.add(version)
                continue
            if not register_abi(built_with):
                self.refused[path] = f"built with {built_with or 'a Go before 1.18'}: before Go 1.17's register ABI"
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
