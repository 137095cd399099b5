"""What the kernel holds, read with bpftool and tracefs: for the tests that prove a tracer leaves nothing."""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable


def kernel_ids(kind: str) -> set[int]:
    """Ids of every BPF object of a kind ("prog" or "map") the kernel lists."""
    out = subprocess.run(["bpftool", kind, "show", "-j"], capture_output=True, text=True, check=True).stdout
    return {o["id"] for o in json.loads(out or "[]")}


def still_loaded(ids: set[int], kind: str, within: float = 5.0) -> set[int]:
    """Which of ids the kernel still lists after `within` seconds: it frees a dead process's programs
    and maps in deferred work (a prog_array holding a tail-call program is released after its owner)."""
    deadline = time.monotonic() + within
    left = ids & kernel_ids(kind)
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = ids & kernel_ids(kind)
    return left


def ids_held_by_live_processes() -> tuple[set[int], set[int]]:
    """(program ids, map ids) that some running process holds an fd of (a program, map or link)."""
    progs, maps = set(), set()
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                held = bpf_ids_held_by(int(p))
            except OSError:  # gone meanwhile, or a kernel thread
                continue
            progs |= held[0]
            maps |= held[1]
    return progs, maps


def orphans_still_loaded(before: set[int], kind: str, within: float = 5.0) -> set[int]:
    """Objects of a kind loaded since `before` that no running process holds and the kernel still lists after
    `within` seconds: what a process that has exited left behind. Objects held by processes running beside
    the test (other test runs on a shared machine) are not counted."""
    deadline = time.monotonic() + within
    while True:
        left = kernel_ids(kind) - before
        if left:
            left -= ids_held_by_live_processes()[0 if kind == "prog" else 1]
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.2)


def perf_attachments() -> list[dict]:
    """Programs attached through perf events (tracepoints, uprobes): pid, fd, prog_id, fd_type."""
    out = subprocess.run(["bpftool", "perf", "show", "-j"], capture_output=True, text=True, check=True).stdout
    return json.loads(out or "[]")


def bpf_links_held_by(pid: int) -> list[dict]:
    """The BPF links (bpf_link fds: uprobe_multi, raw tracepoints, ...) a process holds, from /proc/PID/fdinfo:
    link_id, prog_id and fd_type (the fdinfo's link_type, e.g. "uprobe_multi")."""
    links = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            info = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
        except OSError:
            continue
        fields = dict(re.findall(r"^(link_type|link_id|prog_id):\s+(\S+)$", info, re.M))
        if "link_type" in fields:
            links.append({"pid": pid, "fd": int(fd), "fd_type": fields["link_type"],
                          "link_id": int(fields.get("link_id", -1)), "prog_id": int(fields.get("prog_id", -1))})
    return links


def uprobe_events() -> str:
    for path in ("/sys/kernel/tracing/uprobe_events", "/sys/kernel/debug/tracing/uprobe_events"):
        if os.path.exists(path):
            return Path(path).read_text()
    return ""


# --- BPF objects a process holds; the inference tracer's connection table ---------------------------
CONN_TABLE_PROBES = 8  # bpf/inference/conn_table.bpf.h CONN_PROBES: how far from its home slot a connection may lie
CONN_FILTER_BITS = 14  # bpf/inference/conn_table.bpf.h CONN_FILTER_BITS: the filter's slots, 2**14


def bpf_ids_held_by(pid: int) -> tuple[set[int], set[int]]:
    """(program ids, map ids) of the BPF objects a process holds, from /proc/PID/fdinfo."""
    progs, maps = set(), set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            info = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
        except OSError:
            continue
        for key, ids in (("prog_id", progs), ("map_id", maps)):
            m = re.search(rf"^{key}:\s+(\d+)$", info, re.M)
            if m:
                ids.add(int(m.group(1)))
    return progs, maps


def map_id_named(map_ids: set[int], name: str) -> int:
    for mid in map_ids:
        out = subprocess.run(["bpftool", "map", "show", "id", str(mid), "-j"], capture_output=True, text=True)
        if out.returncode == 0 and json.loads(out.stdout).get("name") == name:
            return mid
    raise AssertionError(f"no map named {name} among {sorted(map_ids)}")


def _map_values(map_id: int, *keys: int) -> list:
    """Values of a BTF-described map: every entry, or those at the given u32 keys."""
    if not keys:
        out = subprocess.run(["bpftool", "map", "dump", "id", str(map_id), "-j"], capture_output=True, text=True,
                             check=True)
        entries = json.loads(out.stdout or "[]")
    else:
        entries = []
        for key in keys:
            out = subprocess.run(["bpftool", "map", "lookup", "id", str(map_id), "key", *map(str, key.to_bytes(4, "little")),
                                  "-j"], capture_output=True, text=True, check=True)
            entries.append(json.loads(out.stdout))
    values = [entry.get("formatted", entry)["value"] for entry in entries]
    assert all(isinstance(v, (dict, int)) for v in values), "the map has no BTF: bpftool cannot name its fields"
    return values


def _used_slots(maps: set[int]) -> list[int]:
    """The socket hooks' table slots that conn_used marks as occupied."""
    return [word * 64 + bit for word, bits in enumerate(_map_values(map_id_named(maps, "conn_used")))
            for bit in range(64) if int(bits) >> bit & 1]


def conn_pids(maps: set[int], hooks: str) -> list[int]:
    """The serving pid of every connection the inference tracer follows (conn_state.pid): every entry of
    the syscall hooks' conns hash; the socket hooks' conns table slots that conn_used marks and that hold a
    socket (key > CONN_CLAIMED)."""
    conns = map_id_named(maps, "conns")
    if hooks == "syscall":
        return [int(v["pid"]) for v in _map_values(conns)]
    used = _used_slots(maps)
    return [int(v["pid"]) for v in _map_values(conns, *used) if int(v["key"]) > 1]


def array_total(map_id: int) -> int:
    """The sum of an array map's integer values (the socket hooks' conn_filter counts)."""
    return sum(int(v) for v in _map_values(map_id))


def filter_slot(sk: int) -> int:
    """The slot of a socket address in the socket hooks' filter (bpf/inference/conn_table.bpf.h conn_filter_slot)."""
    return table_home(sk, 1 << CONN_FILTER_BITS)  # the same hash, fewer bits


def filter_bits(maps: set[int]) -> set[int]:
    """The filter slots whose bit the socket hooks read is set (filter_bits, in key order)."""
    words = [int(v) for v in _map_values(map_id_named(maps, "filter_bits"))]
    assert len(words) == (1 << CONN_FILTER_BITS) // 64, len(words)
    return {w * 64 + b for w, v in enumerate(words) for b in range(64) if v >> b & 1}


def table_home(sk: int, slots: int) -> int:
    """The home slot of a socket address in the socket hooks' connection table (bpf/inference/conn_table.bpf.h conn_home)."""
    return ((sk * 0x9E3779B97F4A7C15) % (1 << 64)) >> (64 - (slots.bit_length() - 1))


def table_slots(maps: set[int]) -> dict[int, int]:
    """slot -> socket address of the connections the socket hooks' table holds (conn_used's bits)."""
    used = _used_slots(maps)
    keys = {slot: int(v["key"]) for slot, v in zip(used, _map_values(map_id_named(maps, "conns"), *used))}
    assert all(k > 1 for k in keys.values()), keys  # a marked slot holds a socket
    return keys


# --- TCP sockets, as /proc/net/tcp lists them ----------------------------------------------------------
TCP_ESTABLISHED = "01"   # /proc/net/tcp's `st` column: the kernel's TCP state numbers, in hex
TCP_CLOSE_WAIT = "08"
TCP_LISTEN = "0A"


@dataclass(frozen=True)
class TcpSocket:
    address: str       # local address
    port: int          # local port
    peer_port: int
    state: str         # TCP_* above
    unacked: int       # bytes sent that the peer has not acknowledged yet (tx_queue)
    unread: int        # bytes received that its owner has not read yet (rx_queue)


def tcp_sockets(port: int) -> list[TcpSocket]:
    """The TCP sockets of this network namespace whose local port is port (from /proc/net/tcp and tcp6)."""
    found = []
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        for line in Path(table).read_text().splitlines()[1:]:
            local, remote, state, queues = line.split()[1:5]
            addr, local_port = local.split(":")
            if int(local_port, 16) != port:
                continue
            raw = bytes.fromhex(addr)
            # /proc prints each 32-bit word in host (little-endian) order
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            unacked, unread = (int(q, 16) for q in queues.split(":"))
            found.append(TcpSocket(socket.inet_ntop(family, raw), port, int(remote.split(":")[1], 16), state,
                                   unacked, unread))
    return found


def wait_until(condition: Callable[[], bool], within: float = 10.0) -> bool:
    """Whether condition() holds within `within` seconds (polled)."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


def wait_for_server_sockets(port: int, client_ports: Iterable[int], done: Callable[[TcpSocket | None], bool],
                            within: float = 10.0) -> bool:
    """Whether, within `within` seconds, done() holds for the server's socket (local port `port`) of each of
    these client ports (None: it is gone). The tracers' hooks run inside the kernel's own state changes and
    reads, so a state a socket has reached is one the hooks have seen."""
    wanted = set(client_ports)

    def all_done() -> bool:
        by_peer = {s.peer_port: s for s in tcp_sockets(port) if s.peer_port in wanted}
        return all(done(by_peer.get(p)) for p in wanted)
    return wait_until(all_done, within)


def read_by_server(port: int, client_port: int) -> bool:
    """Whether the server (local port `port`) has read all that the client at client_port sent: all of it
    acknowledged (so it arrived) and nothing left in the server's receive queue."""
    client = [s for s in tcp_sockets(client_port) if s.peer_port == port]
    server = [s for s in tcp_sockets(port) if s.peer_port == client_port]
    return bool(client and server) and client[0].unacked == 0 and server[0].unread == 0
