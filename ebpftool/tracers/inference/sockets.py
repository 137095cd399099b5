"""Which TCP sockets belong to whom, from /proc: the watched processes' listening ports and connections."""
from __future__ import annotations

import os
from dataclasses import dataclass

from ebpftool.core.netaddr import AF_INET, AF_INET6, format_address
from ebpftool.core.procfs import fd_targets, pids, read_text

TCP_LISTEN, TCP_ESTABLISHED = 0x0A, 0x01  # TCP states as /proc/net/tcp writes them


@dataclass(frozen=True)
class TcpSocket:
    local_port: int
    state: int
    remote_addr: str
    remote_port: int


def parse_proc_net_tcp(text: str) -> dict[int, TcpSocket]:
    """inode -> socket from the text of /proc/<pid>/net/tcp or tcp6."""
    out = {}
    for line in text.splitlines()[1:]:
        f = line.split()
        if len(f) < 10:
            continue
        try:
            local_port = int(f[1].rsplit(":", 1)[1], 16)
            raddr_hex, rport_hex = f[2].rsplit(":", 1)
            remote_port, state = int(rport_hex, 16), int(f[3], 16)
            if local_port > 0xFFFF or remote_port > 0xFFFF or state > 0xFF:
                continue  # not a line the kernel writes (it prints 4 hex digits per port, 2 for the state)
            out[int(f[9])] = TcpSocket(local_port, state, _hex_addr(raddr_hex), remote_port)
        except (ValueError, IndexError):
            continue
    return out


def _hex_addr(h: str) -> str:
    """An address as /proc/net/tcp writes it (32-bit words in host order) to text."""
    raw = b"".join(int(h[i:i + 8], 16).to_bytes(4, "little") for i in range(0, len(h), 8))
    return format_address(raw, AF_INET if len(raw) == 4 else AF_INET6)


def socket_fds(pid: int) -> dict[int, int]:
    """inode -> fd of the sockets pid holds."""
    return {int(target[8:-1]): fd for fd, target in fd_targets(pid).items() if target.startswith("socket:[")}


class SocketTables:
    """TCP tables per network namespace, read once per scan (processes share namespaces)."""

    def __init__(self) -> None:
        self._by_ns: dict[str, dict[int, TcpSocket]] = {}

    @staticmethod
    def namespace_of(pid: int) -> str:
        try:
            return os.readlink(f"/proc/{pid}/ns/net")
        except OSError:
            return ""

    def of(self, pid: int) -> dict[int, TcpSocket]:
        ns = self.namespace_of(pid)
        if not ns:
            return {}
        if ns not in self._by_ns:
            table: dict[int, TcpSocket] = {}
            for name in ("tcp", "tcp6"):
                text = read_text(f"/proc/{pid}/net/{name}")
                if text:
                    table.update(parse_proc_net_tcp(text))
            self._by_ns[ns] = table
        return self._by_ns[ns]

    def by_namespace(self, only: set[str] | None = None) -> dict[str, dict[int, TcpSocket]]:
        """The table of every network namespace some process is in (of those in `only`, if given),
        in one pass over /proc that reads each namespace's table once."""
        out: dict[str, dict[int, TcpSocket]] = {}
        for pid in pids():
            ns = self.namespace_of(pid)
            if ns and ns not in out and (only is None or ns in only):
                out[ns] = self.of(pid)
                if only is not None and len(out) == len(only):
                    break
        return out
