"""OpenSSL on this node (libssl, and executables that carry OpenSSL and export it, as Node.js does), and the
inference tracer's uprobes on it (bpf/inference/hooks_tls.bpf.h).

A uprobe belongs to a file (an inode), so one attach covers every process that maps that file, also those
started later. Files are found in the maps of running processes (a container's own copy through
/proc/PID/root) and in the usual library directories; each is attached once, by identity. Later scans
attach the copies that appeared since (a container started after the tracer).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Collection

from ebpftool.core.elf import ElfError, ElfFile, exports_all, read_elf
from ebpftool.core.procfs import executable_path, host_path, pids, read_maps
from ebpftool.core.uprobe_points import RCX, RDI, RDX, RSI, forwarding_call, probe_point

# libssl, also a copy a Python wheel bundles (auditwheel names it libssl-<hash>.so.N)
LIBSSL_NAME = re.compile(r"libssl(-[0-9a-f]+)?\.so(\.\d+)*$")
# An executable with OpenSSL linked in that exports its functions (Node.js: its addons link against them)
OPENSSL_EXPORTS = frozenset({"SSL_read", "SSL_write"})
LIBRARY_DIRS = ("/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu",
                "/usr/lib64", "/usr/lib", "/lib64", "/usr/local/lib", "/usr/local/ssl/lib")

# Where the probes go (docs/inference.md "TLS (OpenSSL)"). OpenSSL 1.1.1 and 3.x implement SSL_read and
# SSL_read_ex (and SSL_write, SSL_write_ex) in one internal function that both call first, with SSL_*_ex's
# arguments (SSL *, buffer, length, size_t *moved) and > 0 for success: one entry probe and one uretprobe
# there see every call of either. They go on its first instruction when the kernel emulates it (a push):
# a uretprobe must be where the stack pointer still points at the return address, and an instruction the
# kernel single-steps (the wrappers begin with `sub $N,%rsp`) costs ten times as much at every call.
# Where the code has another shape, each function is probed itself, as (symbol, entry program, return
# program): its entry probe on its first emulated instruction before the arguments change, its uretprobe
# at the entry. SSL_read_ex / SSL_write_ex report the bytes moved through a pointer; Python's ssl module and
# most of OpenSSL 3's users call them. The handshake's calls tie an SSL object to its socket (memory BIOs);
# SSL_free forgets it.
SHARED_IMPLEMENTATIONS = (
    (("SSL_read", "SSL_read_ex"), "tls_read_ex_enter", "tls_read_exit"),
    (("SSL_write", "SSL_write_ex"), "tls_write_ex_enter", "tls_write_exit"),
)
TLS_FUNCTIONS = (
    ("SSL_read", "tls_read_enter", "tls_read_exit"),
    ("SSL_read_ex", "tls_read_ex_enter", "tls_read_exit"),
    ("SSL_write", "tls_write_enter", "tls_write_exit"),
    ("SSL_write_ex", "tls_write_ex_enter", "tls_write_exit"),
    ("SSL_do_handshake", "tls_handshake_enter", None),
    ("SSL_accept", "tls_handshake_enter", None),
    ("SSL_free", "tls_free_enter", None),
)
CALL_ARGUMENTS = (RDI, RSI, RDX, RCX)   # the most any of the programs reads
# loaded at start, side by side: what the usual plan attaches (the others load when a library needs them)
TLS_PROGRAMS = sorted({p for _, *programs in SHARED_IMPLEMENTATIONS for p in programs}
                      | {enter for _, enter, leave in TLS_FUNCTIONS if leave is None})
PROLOGUE_BYTES = 96
# Distinct libssl files given uprobes, at most: each container image brings its own copy (a node's default
# limit is 110 Pods), and any user can map as many copies as they like, each costing an ELF read and a few
# uprobes. Past it a file is refused; its TLS connections are counted as ones no hooked library read.
MAX_FILES = 512
OVER_LIMIT = f"{MAX_FILES} libssl files have uprobes already, the most this tracer attaches"


@dataclass(frozen=True)
class TlsProbe:
    vaddr: int          # link-time address of the probed instruction
    file_offset: int
    program: str
    ret: bool
    label: str          # for the probe list: the function and the offset in it


def _shared_implementation(elf: ElfFile, wrappers: tuple[str, str]) -> int | None:
    """The address of the function both wrappers call first, if the _ex one hands it its own arguments."""
    targets = []
    for name in wrappers:
        sym = elf.symbol(name)
        if sym is None:
            return None
        call = forwarding_call(elf.code_at(sym.value, PROLOGUE_BYTES))
        if call is None:
            return None
        targets.append((sym.value + call[0], call[1]))
    (plain, _), (ex, changed) = targets
    if plain != ex or changed & set(CALL_ARGUMENTS):
        return None
    return plain


def probe_plan(elf: ElfFile) -> list[TlsProbe]:
    """The TLS uprobes for one libssl file (empty: none of its functions found)."""
    plan: list[TlsProbe] = []
    covered: set[str] = set()

    def add(vaddr: int, program: str, ret: bool, label: str) -> None:
        off = elf.file_offset(vaddr)
        if off is not None:
            plan.append(TlsProbe(vaddr, off, program, ret, label))

    for wrappers, enter, leave in SHARED_IMPLEMENTATIONS:
        impl = _shared_implementation(elf, wrappers)
        if impl is None:
            continue
        point = probe_point(elf.code_at(impl, PROLOGUE_BYTES), CALL_ARGUMENTS, return_address=True)
        if not point.emulated:
            continue
        label = f"{wrappers[0]}+{wrappers[1]} (their implementation at {impl + point.offset:#x})"
        add(impl + point.offset, enter, False, label)
        add(impl + point.offset, leave, True, label)
        covered.update(wrappers)
    for symbol, enter, leave in TLS_FUNCTIONS:
        sym = elf.symbol(symbol)
        if symbol in covered or sym is None:
            continue
        code = elf.code_at(sym.value, PROLOGUE_BYTES)
        entry = probe_point(code, CALL_ARGUMENTS)
        add(sym.value + entry.offset, enter, False, f"{symbol}+{entry.offset:#x}")
        if leave:
            add(sym.value + probe_point(code, (), return_address=True).offset, leave, True, symbol)
    return plan


def tls_library_candidates(proc: str = "/proc") -> list[str]:
    """Openable paths of every OpenSSL a running process maps (a libssl, or its executable where that exports
    OpenSSL's functions), then the libssl files in the library directories."""
    found = []
    for pid in pids(proc):
        # a library is mapped in several segments: each path once per process
        paths = {m.path for m in read_maps(pid, proc) if LIBSSL_NAME.search(m.path)}
        exe = executable_path(pid, proc)
        if exe and exports_all(host_path(pid, exe, proc), OPENSSL_EXPORTS):
            paths.add(exe)
        for path in sorted(paths):
            inside = host_path(pid, path, proc)
            found.append(path if _same_file(path, inside) else inside)
    for d in LIBRARY_DIRS:
        try:
            names = sorted(os.listdir(d))
        except OSError:
            continue
        found.extend(os.path.join(d, n) for n in names if LIBSSL_NAME.fullmatch(n))
    return found


def _same_file(a: str, b: str) -> bool:
    try:
        sa, sb = os.stat(a), os.stat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


@dataclass
class TlsUprobes:
    """The libssl files attached so far (by identity) and what was refused."""
    attached: dict[tuple[int, int], str] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)

    def attach_new(self, prog, proc: str = "/proc", programs: Collection[str] | None = None) -> list[str]:
        """Attach the TLS uprobes to every libssl file not attached yet (by file: processes that map it later
        are covered too); the paths newly attached. programs: only the probes of these functions of prog (a
        tracer with fewer hooks than the inference tracer's plan, the agents tracer's)."""
        new = []
        for path in tls_library_candidates(proc):
            try:
                st = os.stat(path)
            except OSError:
                continue
            identity = (st.st_dev, st.st_ino)
            if identity in self.attached or path in self.refused:
                continue
            if len(self.attached) >= MAX_FILES:
                self.refused[path] = OVER_LIMIT
                continue
            try:
                plan = probe_plan(read_elf(path))
            except (OSError, ElfError) as exc:
                self.refused[path] = f"not readable as an ELF file: {exc}"
                continue
            attached_any = False
            for probe in plan:
                if programs is not None and probe.program not in programs:
                    continue
                try:
                    prog.attach_uprobe_at(path, probe.vaddr, probe.file_offset, probe.program, probe.label,
                                          ret=probe.ret)
                    attached_any = True
                except Exception:  # BCC raises bare Exception
                    continue
            if attached_any:
                self.attached[identity] = path
                new.append(path)
            else:
                self.refused[path] = "none of SSL_read, SSL_read_ex, SSL_write, SSL_write_ex found"
        return new
