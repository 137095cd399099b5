"""How the net tracer hooks into the kernel: its attach plans, best first.

Bytes need inet_sock_set_state and sock_send_length / sock_recv_length (Linux 6.3+); tcp_probe,
tcp_retransmit_skb and tcp_destroy_sock add RTT, retransmits and a second close hook where present.
Where the kernel's BTF gives struct sock's field offsets and raw tracepoints load, the byte and RTT
hooks run as raw tracepoints reading the socket at those offsets (NET_RAW_IO), which also counts
segments; else as ordinary tracepoints. Before 6.3, kprobes on the protocols' sendmsg/recvmsg count
bytes (NET_KPROBE_IO), where the kernel has kprobes.
"""
from __future__ import annotations

from ebpftool.core.plan import Plan

# Tracepoints: bytes need the first three; the rest add RTT, retransmits and a second close hook.
REQUIRED_TRACEPOINTS = ("sock:inet_sock_set_state", "sock:sock_send_length", "sock:sock_recv_length")
IO_TRACEPOINTS = ("sock:sock_send_length", "sock:sock_recv_length")  # Linux 6.3+; kprobes before (NET_KPROBE_IO)
OPTIONAL_TRACEPOINTS = {
    "tcp:tcp_probe": "NET_HAVE_TCP_PROBE",
    "tcp:tcp_retransmit_skb": "NET_HAVE_TCP_RETRANSMIT_SKB",
    "tcp:tcp_destroy_sock": "NET_HAVE_TCP_DESTROY_SOCK",
}
RAW_TRACEPOINTS = ("sock:sock_send_length", "sock:sock_recv_length", "tcp:tcp_probe")  # raw with NET_RAW_IO
# The kprobe fallback's functions: (function, entry program, return program, required). Each takes the socket
# first and returns the bytes moved.
KPROBE_FUNCTIONS = (
    ("tcp_sendmsg", "kprobe_io_entry", "kprobe_send_return", True),
    ("tcp_recvmsg", "kprobe_recv_entry", "kprobe_recv_return", True),
    ("udp_sendmsg", "kprobe_io_entry", "kprobe_send_return", False),
    ("udp_recvmsg", "kprobe_recv_entry", "kprobe_recv_return", False),
    ("udpv6_sendmsg", "kprobe_io_entry", "kprobe_send_return", False),
    ("udpv6_recvmsg", "kprobe_recv_entry", "kprobe_recv_return", False),
)

RAW = Plan("raw tracepoints",
           "raw sock_send_length/sock_recv_length/tcp_probe (struct sock offsets from BTF) + tcp tracepoints",
           REQUIRED_TRACEPOINTS, ("raw_tp", "btf_sock_offsets"), optional=tuple(OPTIONAL_TRACEPOINTS),
           defines={"NET_RAW_IO": 1})
TRACEPOINTS = Plan("tracepoints", "sock/tcp tracepoints", REQUIRED_TRACEPOINTS, optional=tuple(OPTIONAL_TRACEPOINTS),
                   defines={"NET_RAW_IO": 0})
KPROBES = Plan("kprobes (bytes) + raw tcp_probe", "kprobes on tcp/udp sendmsg/recvmsg (bytes) + tcp tracepoints",
               ("sock:inet_sock_set_state",), ("kprobe", "btf_sock_offsets"), optional=tuple(OPTIONAL_TRACEPOINTS),
               defines={"NET_RAW_IO": 0, "NET_KPROBE_IO": 1})
PLANS = (RAW, TRACEPOINTS, KPROBES)
