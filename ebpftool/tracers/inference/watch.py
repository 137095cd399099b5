"""What the inference tracer watches, found in /proc: the processes of --pid/--comm and their children, their
listening ports (socket hooks) or sockets (syscall hooks), and the connections open before it started."""
from __future__ import annotations

import ipaddress
import os
import random
from collections import defaultdict

from ebpftool.core import procfs
from ebpftool.core.netaddr import AF_INET, AF_INET6
from ebpftool.tracers.inference.sockets import TCP_ESTABLISHED, TCP_LISTEN, SocketTables, TcpSocket, socket_fds


class InferenceWatch:
    """Mixed into InferenceTracer: telling the kernel what to watch, at start and each interval (state: opts,
    prog, hooks, watched_listeners, _preexisting)."""

    def _preexisting_connections(self) -> dict[str, set[int]]:
        """Established connections on the watched ports (of the watched processes) at start, per netns."""
        pids = self._watched_pids()
        out: dict[str, set[int]] = defaultdict(set)
        tables = SocketTables()
        if pids is None:
            # Port mode: each namespace's table says it all, without the processes' fds.
            ports = set(self.opts.ports)
            for ns, table in tables.by_namespace().items():
                out[ns] = {i for i, s in table.items() if s.state == TCP_ESTABLISHED and s.local_port in ports}
            return {ns: inodes for ns, inodes in out.items() if inodes}
        listening: dict[str, set[int]] = {}  # per namespace
        for pid, _fd, inode, s in self._owned_sockets(pids, tables):
            if s.state != TCP_ESTABLISHED:
                continue
            ns = tables.namespace_of(pid)
            if ns not in listening:
                listening[ns] = {x.local_port for x in tables.of(pid).values() if x.state == TCP_LISTEN}
            if s.local_port in listening[ns]:
                out[ns].add(inode)
        return dict(out)

    def _seeding_done(self, seeded: int) -> bool:
        """True once every connection open at start was found at a read (seeded: the kernel's count of
        them), or is closed."""
        if seeded >= sum(len(v) for v in self._preexisting.values()):
            return True
        found = SocketTables().by_namespace({ns for ns, inodes in self._preexisting.items() if inodes})
        for ns, inodes in self._preexisting.items():
            table = found.get(ns, {})
            self._preexisting[ns] = {i for i in inodes if i in table and table[i].state == TCP_ESTABLISHED}
        return not any(self._preexisting.values())

    def _watched_pids(self) -> set[int] | None:
        o = self.opts
        if not (o.pids or o.comms):
            return None
        roots = set(o.pids)
        if o.comms:
            wanted = set(o.comms)
            for pid in procfs.pids():
                comm = procfs.read_text(f"/proc/{pid}/comm")
                if comm and comm.strip() in wanted:
                    roots.add(pid)
        return procfs.descendants(roots)

    def _scan(self, seed_connections: bool = False) -> None:
        """Tell the kernel the watched processes and their listening sockets (and, at start, open connections)."""
        pids = self._watched_pids()
        if pids is not None:
            self.prog.set_config("watched_pids", pids)
        if self.hooks == "socket":
            if pids is not None:
                # The ports the watched processes listen on (within --port, if given).
                owned = self._owned_sockets(pids, SocketTables())
                ports = {s.local_port for _pid, _fd, _inode, s in owned if s.state == TCP_LISTEN}
                self.prog.set_config("watched_ports", ports)
                self.watched_listeners = len(ports)
            return
        listeners = self.prog["listeners"]
        conns = self.prog["conns"]
        wanted: dict[tuple[int, int], int] = {}
        owned = list(self._owned_sockets(pids, SocketTables()))
        for pid, fd, _inode, s in owned:
            if s.state == TCP_LISTEN:
                wanted[(pid, fd)] = s.local_port
        # Accepted connections share a listener's port; the processes' own outgoing connections (to a
        # database, another service) do not, and are not served requests.
        served_ports = set(wanted.values())
        for pid, fd, _inode, s in owned:
            if s.state == TCP_ESTABLISHED and seed_connections and s.local_port in served_ports:
                self._seed_connection(conns, pid, fd, s)
        present = {(k.pid, k.fd) for k in listeners.keys()}
        for pid, fd in present - wanted.keys():
            listeners.pop(listeners.Key(pid, fd), None)
        for (pid, fd), port in wanted.items():
            if (pid, fd) not in present:
                listeners[listeners.Key(pid, fd)] = listeners.Leaf(port)
        self.watched_listeners = len(wanted)
        if self.arrival_hook:
            self._set_arrival_ports(served_ports)

    def _set_arrival_ports(self, ports: set[int]) -> None:
        """Syscall hooks: the ports whose sockets' arrivals the kernel notes (a bit per port), rewriting only
        the words that changed."""
        words = [0] * (65536 // 64)
        for port in ports:
            words[port // 64] |= 1 << (port % 64)
        if words == self._arrival_port_words:
            return
        table = self.prog["arrival_ports"]
        for i, (now, before) in enumerate(zip(words, self._arrival_port_words or [None] * len(words))):
            if now != before:
                table[table.Key(i)] = table.Leaf(now)
        self._arrival_port_words = words

    def _owned_sockets(self, watched: set[int] | None, tables: SocketTables):
        """(pid, fd, inode, socket) for the TCP sockets the watched processes (every process when watched is
        None) hold, on the --port ports if any were given."""
        ports = set(self.opts.ports)
        for pid in sorted(watched) if watched is not None else procfs.pids():
            sockets = tables.of(pid)
            if not sockets:
                continue
            for inode, fd in socket_fds(pid).items():
                s = sockets.get(inode)
                if s is not None and (not ports or s.local_port in ports):
                    yield pid, fd, inode, s

    def _forget_dead_processes(self) -> None:
        """Remove the kernel state of processes that died without closing their sockets (killed, crashed):
        the kernel closes their fds without a close() syscall, so nothing else would ever remove it."""
        alive: dict[int, bool] = {}

        def dead(pid: int) -> bool:
            if pid not in alive:
                alive[pid] = os.path.exists(f"/proc/{pid}")
            return not alive[pid]

        for name in ("conns", "last_writes"):
            self.prog.delete_keys(name, lambda k: dead(int(k.value) >> 32))
        if self.arrival_hook:  # socket -> connection key (pid << 32 | fd)
            sock_conns = self.prog["sock_conns"]
            for sk in [sk for sk, key in sock_conns.items() if dead(int(key.value) >> 32)]:
                sock_conns.pop(sk, None)
        # per thread: /proc/TID exists while the thread does
        self.prog.delete_keys("accepting", lambda k: dead(int(k.value)))

    @staticmethod
    def _seed_connection(conns, pid: int, fd: int, s: TcpSocket) -> None:
        """A connection accepted before the tracer started: followed from its next request."""
        key = conns.Key((pid << 32) | fd)
        leaf = conns.Leaf()
        leaf.key = key.value
        leaf.id = random.getrandbits(64)  # (pid, fd) is reused by later connections: the id must not be
        leaf.pid = pid  # its cgroup is taken in the kernel at its next read or write
        leaf.seeded = 1  # its next bytes may be the middle of a request: not a reason to let it go
        leaf.port = s.local_port
        leaf.client_port = s.remote_port
        addr = ipaddress.ip_address(s.remote_addr)
        leaf.family = AF_INET if addr.version == 4 else AF_INET6
        for i, b in enumerate(addr.packed):
            leaf.client_addr[i] = b
        conns[key] = leaf
