"""How the agents tracer hooks into the kernel: its one attach plan (doctor walks it as the others').

OpenSSL's SSL_read/SSL_write (and _ex) by uprobes for TLS, and the connect, write/sendto/writev/sendmsg,
read/recvfrom/readv/recvmsg and close syscall tracepoints for cleartext (bpf/agents/agents.bpf.c). No kprobe, no fentry, no kernel struct read:
what every kernel with tracepoints, uprobes and ring buffers allows.
"""
from __future__ import annotations

from ebpftool.core.plan import Plan

SYSCALL_TRACEPOINTS = tuple(
    f"syscalls:sys_{side}_{call}"
    for call in ("connect", "write", "sendto", "writev", "sendmsg", "read", "recvfrom", "readv", "recvmsg")
    for side in ("enter", "exit")
) + ("syscalls:sys_enter_close",)

# The programs of bpf/agents/agents.bpf.c that tls_libs.probe_plan() may place (its names), and the ones it
# places that this tracer has no use for (the handshake's: the agents tracer keys a connection by its SSL
# object, not by its socket).
TLS_PROGRAMS = frozenset({"tls_read_enter", "tls_read_ex_enter", "tls_write_enter", "tls_write_ex_enter",
                          "tls_read_exit", "tls_write_exit",
                          "tls_free_enter"})

TLS_ONLY = Plan(
    "uprobes",
    "uprobes on OpenSSL's SSL_read/SSL_write (TLS only, --no-cleartext), plaintext of outgoing HTTP/1 calls to "
    "user space", (), ("uprobe", "ringbuf"), defines={"AGENTS_CLEARTEXT": 0})
UPROBES_AND_SYSCALLS = Plan(
    "uprobes+syscalls",
    "uprobes on OpenSSL's SSL_read/SSL_write (TLS) + connect/read/write syscall tracepoints (cleartext), "
    "plaintext of outgoing HTTP/1 calls to user space",
    SYSCALL_TRACEPOINTS, ("uprobe", "ringbuf"), defines={"AGENTS_CLEARTEXT": 1})
PLANS = (UPROBES_AND_SYSCALLS,)   # what doctor walks: the default (TLS_ONLY needs only less)
