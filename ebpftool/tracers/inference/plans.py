"""How the inference tracer hooks into the kernel: its attach plans, best first.

Two ways in. The socket hooks (raw tracepoints sock_recv_length / sock_send_length, a connection
watched from its handshake on a watched port) cost an unwatched socket one hash lookup and other
syscalls nothing. Where the kernel allows tp_btf programs, writes are read on tcp_sendmsg_locked
from its typed struct msghdr (no register look-up, no user-memory read of the iovec), and where it
also has the bpf_rdonly_cast kfunc, reads are timed by TCP's own clock of the socket, which the read
just refreshed, instead of a clock helper. The syscall hooks (enter/exit of read, write and accept)
are the fallback for kernels without those tracepoints or for other architectures: they cost every
read and write of the node two tracepoint hits.

The plan is chosen from what the kernel allows, probed cheaply (BTF lookups, two-instruction
programs), before the C program is compiled once; a refusal at load still falls to the next plan.
"""
from __future__ import annotations

import platform
from typing import Mapping

from ebpftool.core.bpf import (kernel_allows_btf_tracepoint, kernel_allows_raw_tracepoints, kernel_allows_rdonly_cast,
                               kfunc_defines)
from ebpftool.core.btf import KIND_FUNC, KIND_TYPEDEF, SOCK_FIELDS, Btf, BtfError
from ebpftool.core.plan import Plan

SYSCALL_TRACEPOINTS = tuple(
    f"syscalls:sys_{side}_{call}"
    for call in ("accept4", "accept", "read", "recvfrom", "readv", "recvmsg", "write", "sendto", "writev",
                 "sendmsg", "sendfile64")
    for side in ("enter", "exit")
) + ("syscalls:sys_enter_close",)
SOCKET_RAW_TRACEPOINTS = ("sock_recv_length", "sock_send_length")
SOCKET_TRACEPOINTS = ("sock:sock_recv_length", "sock:sock_send_length", "sock:inet_sock_set_state")
SEED_TRACEPOINT = "tcp:tcp_rcv_space_adjust"
# Where the kernel has it (Linux 6.7+), a request begins when its first byte arrives, not when the server
# reads it: the socket hooks watch TCP signal queued bytes (ARRIVAL_HOOK in bpf/inference/hooks_socket.bpf.h).
ARRIVAL_TRACEPOINT = "sock:sk_data_ready"
ARRIVAL_RAW_TRACEPOINT = "sk_data_ready"  # its program: raw_tracepoint__sk_data_ready
ARRIVAL_BTF_FUNCTION = "arrival_sk_data_ready"  # or, with the BTF read hook, this tp_btf program
# The BTF send hook (SEND_HOOK_BTF) and its program in bpf/inference/hooks_socket.bpf.h.
SEND_BTF_TRACEPOINT = "tcp_sendmsg_locked"
SEND_BTF_FUNCTION = "send_tcp_sendmsg"
# The BTF read hook (RECV_HOOK_BTF).
RECV_BTF_TRACEPOINT = "sock_recv_length"
RECV_BTF_FUNCTION = "recv_sock_recv_length"
# The programs reached by tail calls from a response write, in their order in the scan_prog array: the two
# passes over its bytes for events, the reading of a response head, and the end of a response so found.
SCAN_FUNCTIONS = ("scan_sse_events", "scan_sse_marks", "scan_response_head", "finish_written_response", "scan_model",
                  "scan_sse_names")
# ... and after them (SCAN_SWITCHED), the reading of a 101's head for an h2c Upgrade (cleartext only: no TLS twin)
SWITCHED_FUNCTION = "switched_protocols"
# The program compiled in two halves side by side where the compile cache is on (BpfProgram's parts; clang
# takes seconds per half): the hooks with the programs they tail-call, then the TLS uprobes' programs with
# their tail-called twins and the HTTP/2 walks (which half is only a matter of balance: the walks are reached
# through prog arrays). Figures in docs/performance.md.
PROGRAM_PARTS = ({"TLS_PROGRAMS": 0, "H2_PROGRAMS": 0}, {"IO_PROGRAMS": 0, "H2_PROGRAMS": 1})

SOCKET_BTF = Plan(
    "socket",
    "socket hooks on BTF tracepoints: reads on sock_recv_length (timed by TCP's clock), writes on "
    "tcp_sendmsg_locked, + inet_sock_set_state",
    ("sock:sock_recv_length", "sock:inet_sock_set_state"), ("raw_tp_regs", "tp_btf", "kfunc_rdonly_cast"),
    defines={"IO_HOOKS_SOCK": 1, "SEND_HOOK_BTF": 1, "RECV_HOOK_BTF": 1})
SOCKET_BTF_SEND = Plan(
    "socket",
    "socket hooks: raw sock_recv_length + inet_sock_set_state, writes on the tcp_sendmsg_locked BTF tracepoint",
    ("sock:sock_recv_length", "sock:inet_sock_set_state"), ("raw_tp_regs", "tp_btf"),
    defines={"IO_HOOKS_SOCK": 1, "SEND_HOOK_BTF": 1})
SOCKET_RAW = Plan(
    "socket-raw", "socket hooks: raw sock_recv_length/sock_send_length + inet_sock_set_state",
    SOCKET_TRACEPOINTS, ("raw_tp_regs",), defines={"IO_HOOKS_SOCK": 1})
SYSCALL = Plan("syscall", "syscall hooks: read/write/accept syscall tracepoints", SYSCALL_TRACEPOINTS,
               defines={"IO_HOOKS_SOCK": 0})
PLANS = (SOCKET_BTF, SOCKET_BTF_SEND, SOCKET_RAW, SYSCALL)

# --hooks: which plans each choice allows ("socket": on BTF tracepoints where the kernel allows it).
HOOK_CHOICES: dict[str, tuple[Plan, ...]] = {
    "auto": PLANS, "socket": (SOCKET_BTF, SOCKET_BTF_SEND, SOCKET_RAW), "socket-raw": (SOCKET_RAW,),
    "syscall": (SYSCALL,)}
HOOKS = tuple(HOOK_CHOICES)


def send_hook_btf_defines(btf: Btf | None = None) -> dict[str, int]:
    """Offsets and enum values the BTF send hook loads, from the running kernel's BTF (BtfError if absent)."""
    btf = btf or Btf.vmlinux()
    btf.type_id(KIND_TYPEDEF, f"btf_trace_{SEND_BTF_TRACEPOINT}")  # the tracepoint exists
    return {"MSG_ITER_TYPE_OFF": btf.member("msghdr", "msg_iter.iter_type").offset,
            "MSG_ITER_OFFSET_OFF": btf.member("msghdr", "msg_iter.iov_offset").offset,
            "MSG_ITER_UBUF_OFF": btf.member("msghdr", "msg_iter.ubuf").offset,
            "MSG_ITER_COUNT_OFF": btf.member("msghdr", "msg_iter.count").offset,
            "SKB_LEN_OFF": btf.member("sk_buff", "len").offset,
            "SK_WMEM_QUEUED_OFF": btf.member("sock", "sk_wmem_queued").offset,
            "SK_SNDBUF_OFF": btf.member("sock", "sk_sndbuf").offset,
            "ITER_UBUF_TYPE": btf.enum_value("iter_type", "ITER_UBUF"),
            "ITER_IOVEC_TYPE": btf.enum_value("iter_type", "ITER_IOVEC")}


def recv_hook_btf_defines(btf: Btf | None = None) -> dict[str, int]:
    """What the BTF read hook needs from the running kernel's BTF (BtfError if something is absent)."""
    btf = btf or Btf.vmlinux()
    btf.type_id(KIND_TYPEDEF, f"btf_trace_{RECV_BTF_TRACEPOINT}")
    btf.type_id(KIND_FUNC, "bpf_rdonly_cast")
    return {"RECV_HOOK_BTF": 1, "TCP_SOCK_BTF_ID": btf.struct_id("tcp_sock"),
            "TCP_CLOCK_CACHE_OFF": btf.member("tcp_sock", "tcp_clock_cache").offset,
            "TCP_WRITE_SEQ_OFF": btf.member("tcp_sock", "write_seq").offset,
            "PT_REGS_BTF_ID": btf.struct_id("pt_regs"), "TASK_STACK_OFF": btf.member("task_struct", "stack").offset,
            **kfunc_defines()}


# What the syscall hooks read to find the socket behind a connection's fd (SYSCALL_SOCKETS in
# bpf/inference/hooks_syscall.bpf.h): (#define, struct, member, size in bytes).
SYSCALL_SOCKET_FIELDS = (
    ("TASK_FILES_OFF", "task_struct", "files", 8),
    ("FILES_FDT_OFF", "files_struct", "fdt", 8),
    ("FDT_FD_OFF", "fdtable", "fd", 8),
    ("FDT_MAX_FDS_OFF", "fdtable", "max_fds", 4),
    ("FILE_PRIVATE_DATA_OFF", "file", "private_data", 8),
    ("SOCKET_SK_OFF", "socket", "sk", 8),
) + tuple(f for f in SOCK_FIELDS if f[0] in ("SK_FAMILY_OFFSET", "SK_DPORT_OFFSET", "SK_NUM_OFFSET",
                                             "SK_DADDR_OFFSET", "SK_V6_DADDR_OFFSET"))


def syscall_socket_defines(btf: Btf | None = None) -> dict[str, int]:
    """The offsets with which the syscall hooks find a connection's socket (BtfError where the kernel's BTF
    lacks one or it has another size)."""
    out = (btf or Btf.vmlinux()).field_offsets(SYSCALL_SOCKET_FIELDS)
    if out["SK_NUM_OFFSET"] != out["SK_DPORT_OFFSET"] + 2:  # read as one word, skc_portpair
        raise BtfError("struct sock's skc_num does not follow skc_dport")
    return {"SYSCALL_SOCKETS": 1, **out}


def tcp_queue_defines(btf: Btf | None = None) -> dict[str, int]:
    """Where TCP keeps what a socket received and what was read of it (the arrival hooks count the bytes
    queued, probe_queued_bytes() in bpf/inference/io.bpf.h; BtfError where the BTF lacks them)."""
    return (btf or Btf.vmlinux()).field_offsets((("TCP_RCV_NXT_OFF", "tcp_sock", "rcv_nxt", 4),
                                                  ("TCP_COPIED_SEQ_OFF", "tcp_sock", "copied_seq", 4)))


def raw_tp_regs_missing() -> str:
    """Why the socket hooks' raw tracepoints cannot read the syscall's registers here ('' when they can)."""
    if platform.machine() != "x86_64":
        return f"the socket hooks read x86-64 syscall registers; this is {platform.machine()}"
    return "" if kernel_allows_raw_tracepoints() else "the kernel refused a raw tracepoint program"


def kernel_features() -> tuple[dict[str, bool], dict[str, dict[str, int]]]:
    """What the plans need, probed without compiling anything, and the BTF defines of the send and read
    hooks and of the syscall hooks' sockets where the kernel's BTF has what they load (parsed once)."""
    features = {"raw_tp_regs": not raw_tp_regs_missing(), "tp_btf": False, "kfunc_rdonly_cast": False}
    btf_defines: dict[str, dict[str, int]] = {}
    try:
        btf = Btf.vmlinux()
    except BtfError:
        return features, btf_defines  # no BTF: the plans without it
    try:
        btf_defines["send"] = send_hook_btf_defines(btf)
        features["tp_btf"] = kernel_allows_btf_tracepoint(SEND_BTF_TRACEPOINT, btf)
        btf_defines["recv"] = recv_hook_btf_defines(btf)
        features["kfunc_rdonly_cast"] = kernel_allows_rdonly_cast(RECV_BTF_TRACEPOINT, btf)
    except BtfError:
        pass  # not what a hook loads (no bpf_rdonly_cast before Linux 6.2): the plans without it
    try:
        btf_defines["tcp_queue"] = tcp_queue_defines(btf)
    except BtfError:
        pass  # an HTTP/2 read is then timed by its latest arrival
    try:
        btf_defines["syscall"] = syscall_socket_defines(btf)
    except BtfError:
        pass  # the syscall hooks without their sockets: no arrival time, no address accept() was not given
    return features, btf_defines


def plan_defines(plan: Plan, btf_defines: Mapping[str, Mapping[str, int]]) -> dict[str, int]:
    """The compile-time defines that select plan, with the BTF offsets its hooks load."""
    out = {"IO_HOOKS_SOCK": plan.defines["IO_HOOKS_SOCK"], "SEND_HOOK_BTF": plan.defines.get("SEND_HOOK_BTF", 0)}
    if out["SEND_HOOK_BTF"]:
        out |= btf_defines["send"]
    if plan.defines.get("RECV_HOOK_BTF"):
        out |= btf_defines["recv"]
    if not out["IO_HOOKS_SOCK"] and "syscall" in btf_defines:
        out |= btf_defines["syscall"]
    return out | btf_defines.get("tcp_queue", {})
