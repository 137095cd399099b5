"""Reading /proc: the processes there, their parents and small text files.

Every tracer that follows processes by pid (inference's --pid/--comm, gpu's --pid)
walks /proc the same way; `proc` is a parameter so tests can feed a fake tree.
"""
from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable


def pids(proc: str = "/proc") -> list[int]:
    """Every process now (threads are not listed at the top of /proc)."""
    try:
        return [int(d) for d in os.listdir(proc) if d.isdigit()]
    except OSError:
        return []


def read_text(path: str) -> str | None:
    """A small file's text, or None when it cannot be read (the process is gone, no permission). Bytes that are
    not UTF-8 (a comm or a path is whatever its owner wrote) are kept as surrogates, as os.readlink keeps them:
    paths stay openable; see display_name for text that leaves the node."""
    try:
        with open(path, errors="surrogateescape") as f:
            return f.read()
    except OSError:
        return None


def display_name(name: str) -> str:
    """A name read from the system (surrogates for bytes that are not UTF-8) as text that can be encoded: those
    bytes replaced. OTLP and Prometheus' text encode UTF-8, and one name that cannot be encoded fails the whole
    export it is in."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def executable_name(pid: int, recorded: str = "", proc: str = "/proc") -> str:
    """process.executable.name as the conventions define it: the base name of /proc/PID/exe. A comm names a
    thread (Ray's `ray::IDLE`, a gRPC worker) or whatever the process wrote there; recorded (the comm the
    kernel saw) stands in when the process is gone, its main thread's comm when it has no executable (a
    kernel thread) or cannot be read."""
    try:
        name = os.path.basename(os.readlink(f"{proc}/{pid}/exe")).removesuffix(" (deleted)")
    except OSError:
        name = ""
    if name:
        return display_name(name)
    comm = read_text(f"{proc}/{pid}/comm") if not recorded else None
    return recorded or display_name(comm.strip() if comm else "")


def executable_path(pid: int, proc: str = "/proc") -> str | None:
    """The path of a process's executable as it sees it (None: a kernel thread, gone, or deleted since)."""
    try:
        path = os.readlink(f"{proc}/{pid}/exe")
    except OSError:
        return None
    return None if path.endswith(" (deleted)") else path


def fd_targets(pid: int, proc: str = "/proc") -> dict[int, str]:
    """fd -> what it is open on (a path, `socket:[inode]`, ...) for the fds pid holds now."""
    try:
        fds = os.listdir(f"{proc}/{pid}/fd")
    except OSError:
        return {}
    out = {}
    for fd in fds:
        try:
            out[int(fd)] = os.readlink(f"{proc}/{pid}/fd/{fd}")
        except (OSError, ValueError):
            continue
    return out


def parent_of_stat(stat: str) -> int | None:
    """The parent pid in the text of /proc/PID/stat (the command name may hold spaces and parentheses)."""
    try:
        return int(stat.rsplit(")", 1)[1].split()[1])
    except (IndexError, ValueError):
        return None


def descendants(roots: Iterable[int], proc: str = "/proc") -> set[int]:
    """roots and their descendants now: server workers and CUDA programs are often forked children."""
    children: dict[int, list[int]] = defaultdict(list)
    for pid in pids(proc):
        stat = read_text(f"{proc}/{pid}/stat")
        parent = parent_of_stat(stat) if stat else None
        if parent is not None:
            children[parent].append(pid)
    out, todo = set(), list(roots)
    while todo:
        p = todo.pop()
        if p not in out:
            out.add(p)
            todo.extend(children.get(p, ()))
    return out


# --- /proc/PID/maps: the files a process maps (CUDA libraries, libssl) -----------------------------
@dataclass(frozen=True)
class Mapping:
    start: int
    end: int
    offset: int
    path: str   # as the process sees it (inside its own mount namespace)


def parse_maps(text: str) -> list[Mapping]:
    """File-backed mappings of a /proc/PID/maps text."""
    out = []
    for line in text.splitlines():
        parts = line.split(None, 5)
        if len(parts) < 6 or not parts[5].startswith("/"):
            continue
        start, end = (int(x, 16) for x in parts[0].split("-"))
        path = parts[5]
        if path.endswith(" (deleted)"):
            path = path[: -len(" (deleted)")]
        out.append(Mapping(start, end, int(parts[2], 16), path))
    return out


def read_maps(pid: int, proc: str = "/proc") -> list[Mapping]:
    try:
        with open(f"{proc}/{pid}/maps", errors="surrogateescape") as f:   # a path may be any bytes
            return parse_maps(f.read())
    except OSError:  # gone, or a kernel thread
        return []


def host_path(pid: int, path: str, proc: str = "/proc") -> str:
    """A path as process pid sees it, made openable from here (containers have their own root)."""
    return f"{proc}/{pid}/root{path}"
