"""OpenSSL's libssl on this node, and the inference tracer's uprobes on it (bpf/inference/hooks_tls.bpf.h).

A uprobe belongs to a file (an inode), so one attach covers every process that maps that file, also those
started later. Files are found in the maps of running processes (a container's own copy through
/proc/PID/root) and in the usual library directories; each is attached once, by identity. Later scans
attach the copies that appeared since (a container started after the tracer).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from ebpftool.core.procfs import host_path, pids, read_maps

LIBSSL_NAME = re.compile(r"libssl\.so(\.\d+)*$")
LIBRARY_DIRS = ("/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu",
                "/usr/lib64", "/usr/lib", "/lib64", "/usr/local/lib", "/usr/local/ssl/lib")

# (symbol, program at its entry, program at its return or None). SSL_read_ex / SSL_write_ex (1.1.1+) report
# the bytes moved through a pointer; Python's ssl module and most of OpenSSL 3's users call them. The
# handshake's calls tie an SSL object to its socket (memory BIOs); SSL_free forgets it.
TLS_FUNCTIONS = (
    ("SSL_read", "tls_read_enter", "tls_read_exit"),
    ("SSL_read_ex", "tls_read_ex_enter", "tls_read_ex_exit"),
    ("SSL_write", "tls_write_enter", "tls_write_exit"),
    ("SSL_write_ex", "tls_write_ex_enter", "tls_write_ex_exit"),
    ("SSL_do_handshake", "tls_handshake_enter", None),
    ("SSL_accept", "tls_handshake_enter", None),
    ("SSL_free", "tls_free_enter", None),
)


def libssl_candidates(proc: str = "/proc") -> list[str]:
    """Openable paths of every libssl mapped by a running process, then those in the library directories."""
    found = []
    for pid in pids(proc):
        # a library is mapped in several segments: each path once per process
        for path in sorted({m.path for m in read_maps(pid, proc) if LIBSSL_NAME.search(m.path)}):
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

    def attach_new(self, prog, proc: str = "/proc") -> list[str]:
        """Attach the TLS uprobes to every libssl file not attached yet; the paths newly attached."""
        new = []
        for path in libssl_candidates(proc):
            try:
                st = os.stat(path)
            except OSError:
                continue
            identity = (st.st_dev, st.st_ino)
            if identity in self.attached or path in self.refused:
                continue
            attached_any = False
            for symbol, entry, ret in TLS_FUNCTIONS:
                try:
                    prog.attach_uprobe(path, symbol, entry)
                    if ret:
                        prog.attach_uprobe(path, symbol, ret, ret=True)
                    attached_any = True
                except Exception:  # BCC raises bare Exception: the symbol is absent from this version
                    continue
            if attached_any:
                self.attached[identity] = path
                new.append(path)
            else:
                self.refused[path] = "none of SSL_read, SSL_read_ex, SSL_write, SSL_write_ex found"
        return new
