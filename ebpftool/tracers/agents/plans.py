"""How the agents tracer hooks into the kernel: its attach plans (doctor walks them as the others').

OpenSSL's SSL_read/SSL_write (and _ex) by uprobes for TLS; for cleartext, the socket hooks where the kernel has
them (sock:inet_sock_set_state for a connect's SYN_SENT, raw sock_send_length / sock_recv_length for the
socket's reads and writes, the syscall's buffer from its saved registers: Linux 6.3+, x86-64), else the
connect, write/sendto/writev/sendmsg, read/recvfrom/readv/recvmsg and close syscall tracepoints, which every
syscall of the node then pays for (bpf/agents/agents.bpf.c). No kprobe, no fentry, no kernel struct read.
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

SOCKET_TRACEPOINTS = ("sock:inet_sock_set_state", "sock:sock_send_length", "sock:sock_recv_length")

TLS_ONLY = Plan(
    "uprobes",
    "uprobes on OpenSSL's SSL_read/SSL_write (TLS only, --no-cleartext), plaintext of outgoing HTTP/1 calls to "
    "user space", (), ("uprobe", "ringbuf"), defines={"AGENTS_CLEARTEXT": 0})
UPROBES_AND_SYSCALLS = Plan(
    "uprobes+syscalls",
    "uprobes on OpenSSL's SSL_read/SSL_write (TLS) + connect/read/write syscall tracepoints (cleartext), "
    "plaintext of outgoing HTTP/1 calls to user space",
    SYSCALL_TRACEPOINTS, ("uprobe", "ringbuf"), defines={"AGENTS_CLEARTEXT": 1})
UPROBES_AND_SOCKETS = Plan(
    "uprobes+sockets",
    "uprobes on OpenSSL's SSL_read/SSL_write (TLS) + socket hooks: SYN_SENT of a connect, raw "
    "sock_send_length/sock_recv_length (cleartext), plaintext of outgoing HTTP/1 calls to user space",
    SOCKET_TRACEPOINTS, ("uprobe", "ringbuf", "raw_tp_regs"), defines={"AGENTS_CLEARTEXT": 2})
PLANS = (UPROBES_AND_SOCKETS, UPROBES_AND_SYSCALLS)   # the first the kernel allows (TLS_ONLY needs only less)

# --hooks: the cleartext way in each choice allows ("auto": the socket hooks where the kernel has them).
HOOK_CHOICES: dict[str, tuple[Plan, ...]] = {"auto": PLANS, "socket": (UPROBES_AND_SOCKETS,),
                                             "syscall": (UPROBES_AND_SYSCALLS,)}
HOOKS = tuple(HOOK_CHOICES)
