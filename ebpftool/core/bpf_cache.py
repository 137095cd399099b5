"""A cache of what BCC compiled, so that a second start on the same node skips clang (seconds per program).

BCC compiles a program's C text with clang and creates its maps; the functions' instructions then hold the
maps' file descriptors (ld_imm64 with src_reg BPF_PSEUDO_MAP_FD). What is kept per program: each map as the
kernel describes it (type, sizes, flags, its BTF types) with BCC's key and leaf descriptions, each function's
instructions with the places that name a map, the module's BTF, license and kernel version. A warm start
creates the maps itself, puts their new fds into the instructions, and loads each function with bpf(2) when
the tracer asks for it: CachedBPF is a bcc.BPF that was never compiled, so tables, ring buffers and attach
calls are BCC's own.

An entry is keyed by everything that changes what BCC produces: the program's full text, its cflags, the
headers of the -I folders, the kernel (release, build string, a hash of /sys/kernel/btf/vmlinux, the
headers BCC compiles against) and BCC (version, the libraries it runs with). The folder is root's (0700),
entries are 0600 and carry a SHA-256 of their content, checked on every read; an entry that fails a check,
or whose program the kernel refuses, is deleted, and the program is compiled again.

EBPFTOOL_BPF_CACHE=DIR puts the cache elsewhere, =off disables it.
"""
from __future__ import annotations

import atexit
import base64
import ctypes
import functools
import glob
import hashlib
import json
import os
import platform
import stat
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from ebpftool.core import bcc_lib
from ebpftool.core.btf import vmlinux_sha256

DEFAULT_DIR = "/var/cache/ebpftool/bpf"
ENV = "EBPFTOOL_BPF_CACHE"
FORMAT = 1
MAGIC = b"ebpftool-bpf-cache"
MAX_ENTRIES = 64           # the oldest go first
SUFFIX = ".bpfc"
# Beside the programs: what start-up asked of a kernel's BTF, and the answers (ebpftool.core.btf.vmlinux).
BTF_ANSWERS_PREFIX = "btf-"
BTF_ANSWERS_SUFFIX = ".answers"
MAX_BTF_ANSWERS = 4

SYS_BPF = {"x86_64": 321, "aarch64": 280}.get(platform.machine(), 321)
BPF_MAP_CREATE, BPF_PROG_LOAD, BPF_OBJ_GET_INFO_BY_FD, BPF_BTF_LOAD, BPF_BTF_GET_FD_BY_ID = 0, 5, 15, 18, 19
BPF_PSEUDO_MAP_FD = 1
LD_IMM64 = 0x18
VERIFIER_LOG_BYTES = 1 << 20
# The map types whose BCC tables need nothing but the map (perf event arrays and maps of maps need more).
CACHEABLE_MAP_TYPES = {1, 2, 3, 5, 6, 9, 27, 29}  # hash, array, prog array, percpu hash/array, lru hash, ringbuf, task storage
# BCC attaches functions with these prefixes as it builds the module (BPF._trace_autoload).
AUTOLOAD = {"tracepoint__": 5, "raw_tracepoint__": 17}   # prefix -> BPF.TRACEPOINT / BPF.RAW_TRACEPOINT
OTHER_AUTOLOAD = ("kprobe__", "kretprobe__", "kfunc__", "kretfunc__", "lsm__")

_libc = ctypes.CDLL(None, use_errno=True)


class CacheError(Exception):
    """This program cannot be cached, or an entry cannot be used."""


def _bpf(cmd: int, attr: bytes) -> tuple[int, ctypes.Array]:
    """bpf(cmd, attr): (result or -errno, the attr buffer as the kernel left it)."""
    buf = ctypes.create_string_buffer(attr, max(len(attr), 128))
    ret = _libc.syscall(SYS_BPF, cmd, buf, len(buf))
    return (ret if ret >= 0 else -ctypes.get_errno()), buf


def _obj_info(fd: int, size: int, prefill: bytes = b"") -> bytes:
    info = ctypes.create_string_buffer(prefill, size)
    ret, _ = _bpf(BPF_OBJ_GET_INFO_BY_FD, struct.pack("<IIQ", fd, size, ctypes.addressof(info)))
    if ret < 0:
        raise CacheError(f"BPF_OBJ_GET_INFO_BY_FD: {os.strerror(-ret)}")
    return info.raw


# -- what is kept ------------------------------------------------------------------------------------
@dataclass
class MapSpec:
    name: str
    type: int
    key_size: int
    value_size: int
    max_entries: int
    flags: int
    btf_key_type_id: int
    btf_value_type_id: int
    map_extra: int
    key_desc: str
    leaf_desc: str


@dataclass
class Function:
    insns: bytes
    relocs: list[tuple[int, str]]    # (instruction index of an ld_imm64, map name)


@dataclass
class Compiled:
    license: str
    kern_version: int
    maps: list[MapSpec]              # in BCC's table order (a table's id is its index)
    functions: dict[str, Function]
    btf: bytes = b""

    def to_json(self) -> bytes:
        return json.dumps({
            "format": FORMAT, "license": self.license, "kern_version": self.kern_version,
            "maps": [m.__dict__ for m in self.maps], "btf": base64.b64encode(self.btf).decode(),
            "functions": {name: {"insns": base64.b64encode(f.insns).decode(), "relocs": f.relocs}
                          for name, f in self.functions.items()}}).encode()

    @classmethod
    def from_json(cls, data: bytes) -> "Compiled":
        d = json.loads(data)
        if d.get("format") != FORMAT:
            raise CacheError("another format")
        return cls(d["license"], int(d["kern_version"]), [MapSpec(**m) for m in d["maps"]],
                   {name: Function(base64.b64decode(f["insns"]), [(int(i), str(m)) for i, m in f["relocs"]])
                    for name, f in d["functions"].items()},
                   base64.b64decode(d["btf"]))


def _map_shape(m: MapSpec) -> tuple:
    """What two parts' declarations of one map must agree on (not their BTF type ids: each part has its BTF)."""
    return (m.type, m.key_size, m.value_size, m.max_entries, m.flags, m.map_extra, m.key_desc, m.leaf_desc)


def merged(parts: Sequence[Compiled]) -> Compiled:
    """One module out of parts compiled apart from one text (each with its own functions, all with the same map
    declarations): the first part's maps and BTF, every part's functions, whose relocations name maps. A map
    of a later part that the first lacks or declares otherwise, or a function in two parts, is a CacheError."""
    first = parts[0]
    maps = {m.name: m for m in first.maps}
    functions = dict(first.functions)
    for part in parts[1:]:
        for m in part.maps:
            if m.name not in maps or _map_shape(maps[m.name]) != _map_shape(m):
                raise CacheError(f"map {m.name} is not declared alike in every part")
        for name, fn in part.functions.items():
            if name in functions:
                raise CacheError(f"function {name} is in two parts")
            functions[name] = fn
    return Compiled(first.license, first.kern_version, first.maps, functions, first.btf)


def _map_info(fd: int) -> dict[str, int]:
    """struct bpf_map_info (include/uapi/linux/bpf.h) of a map fd, the fields a map is created from."""
    raw = _obj_info(fd, 88)
    mtype, _id, key_size, value_size, max_entries, flags = struct.unpack_from("<6I", raw, 0)
    btf_id, btf_key, btf_value = struct.unpack_from("<3I", raw, 64)
    (map_extra,) = struct.unpack_from("<Q", raw, 80)
    return {"type": mtype, "key_size": key_size, "value_size": value_size, "max_entries": max_entries,
            "flags": flags, "btf_id": btf_id, "btf_key_type_id": btf_key, "btf_value_type_id": btf_value,
            "map_extra": map_extra}


def _btf_bytes(btf_id: int) -> bytes:
    """The raw BTF the kernel holds under btf_id (the module's own types, which BCC loaded)."""
    fd, _ = _bpf(BPF_BTF_GET_FD_BY_ID, struct.pack("<I", btf_id))
    if fd < 0:
        raise CacheError(f"BPF_BTF_GET_FD_BY_ID: {os.strerror(-fd)}")
    try:
        size = struct.unpack_from("<I", _obj_info(fd, 32), 8)[0]   # struct bpf_btf_info: btf, btf_size, ...
        blob = ctypes.create_string_buffer(size)
        _obj_info(fd, 32, struct.pack("<QI", ctypes.addressof(blob), size))
        return blob.raw
    finally:
        os.close(fd)


def _insns_refs(insns: bytes) -> list[tuple[int, int]]:
    """(instruction index, imm) of each ld_imm64 that names a map by fd; CacheError for other pseudo loads."""
    refs = []
    for i in range(0, len(insns) // 8):
        code, regs, _off, imm = struct.unpack_from("<BBhi", insns, 8 * i)
        if code == LD_IMM64 and i + 1 < len(insns) // 8:
            src = regs >> 4
            if src == BPF_PSEUDO_MAP_FD:
                refs.append((i, imm))
            elif src:
                raise CacheError(f"an ld_imm64 of kind {src}")
    return refs


def capture(bpf, lib) -> Compiled:
    """What a freshly compiled BCC module holds, in cacheable form (CacheError when it cannot be)."""
    module = bpf.module
    lib.bpf_num_tables.restype, lib.bpf_num_tables.argtypes = ctypes.c_ulonglong, [ctypes.c_void_p]
    lib.bpf_table_name.restype = ctypes.c_char_p
    lib.bpf_table_name.argtypes = [ctypes.c_void_p, ctypes.c_ulonglong]
    maps, by_fd, btf_ids = [], {}, set()
    for i in range(lib.bpf_num_tables(module)):
        name = lib.bpf_table_name(module, i)
        fd = lib.bpf_table_fd(module, name)
        if fd < 0 or lib.bpf_table_id(module, name) != i:
            raise CacheError(f"table {name!r} has no map of its own")
        info = _map_info(fd)
        if info["type"] not in CACHEABLE_MAP_TYPES:
            raise CacheError(f"map {name!r} is of type {info['type']}")
        if info["btf_id"]:
            btf_ids.add(info["btf_id"])
        maps.append(MapSpec(name.decode(), info["type"], info["key_size"], info["value_size"], info["max_entries"],
                            info["flags"], info["btf_key_type_id"], info["btf_value_type_id"], info["map_extra"],
                            (lib.bpf_table_key_desc(module, name) or b"").decode(),
                            (lib.bpf_table_leaf_desc(module, name) or b"").decode()))
        by_fd[fd] = name.decode()
    if len(btf_ids) > 1:
        raise CacheError("maps of more than one BTF")
    functions = {}
    for i in range(lib.bpf_num_functions(module)):
        name = lib.bpf_function_name(module, i).decode()
        if name.startswith(OTHER_AUTOLOAD):
            raise CacheError(f"function {name} is attached as BCC builds the module")
        insns = ctypes.string_at(lib.bpf_function_start(module, name.encode()),
                                 lib.bpf_function_size(module, name.encode()))
        relocs = []
        for at, fd in _insns_refs(insns):
            if fd not in by_fd:
                raise CacheError(f"function {name} names an fd ({fd}) that is not one of its maps")
            relocs.append((at, by_fd[fd]))
        functions[name] = Function(insns, relocs)
    return Compiled((lib.bpf_module_license(module) or b"GPL").decode(), int(lib.bpf_module_kern_version(module)),
                    maps, functions, _btf_bytes(btf_ids.pop()) if btf_ids else b"")


# -- the key -------------------------------------------------------------------------------------------
def _file_stamp(path: str) -> list:
    try:
        st = os.stat(path)
    except OSError:
        return [path, None]
    return [os.path.realpath(path), st.st_size, st.st_mtime_ns]


def _bcc_libraries() -> set[str]:
    """The files of BCC and of the compiler it runs with, the same whether this process loaded the compiler or
    only BCC's runtime library (ebpftool.core.bcc_lib): the libraries it mapped, and beside BCC's, every
    libbcc, LLVM and clang library."""
    mapped = set()
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                path = line.split(None, 5)[-1].strip()
                if any(n in os.path.basename(path) for n in ("libbcc", "libLLVM", "libclang", "libbpf")):
                    mapped.add(path)
    except OSError:
        pass
    beside = set()
    for folder in {os.path.dirname(p) for p in mapped if os.path.basename(p).startswith("libbcc")}:
        for pattern in ("libbcc*.so*", "libLLVM*.so*", "libclang-cpp*.so*"):
            beside.update(glob.glob(os.path.join(folder, pattern)))
    return {os.path.realpath(p) for p in mapped | beside}


@functools.lru_cache(maxsize=1)
def _node_key() -> str:
    """What belongs to this node and this BCC, the same for every program (computed once per process)."""
    uname = os.uname()
    btf = vmlinux_sha256()
    bcc = bcc_lib.import_bcc_module(compiler=False)   # as the tracer imports it: no compiler loaded for a key
    libs = _bcc_libraries()
    build = f"/lib/modules/{uname.release}/build"
    return json.dumps({
        "release": uname.release, "build": uname.version, "machine": uname.machine, "btf": btf,
        "bcc": getattr(bcc, "__version__", None), "bcc_module": getattr(bcc, "__file__", None),
        "libs": sorted(_file_stamp(p) for p in libs),
        "headers": [_file_stamp(build), _file_stamp(f"{build}/include/generated/autoconf.h"),
                    _file_stamp(f"/lib/modules/{uname.release}/source")]})


def _include_dirs_hash(cflags: Sequence[str]) -> str:
    """A hash of every header in the program's -I folders (its layout headers are real #includes)."""
    h = hashlib.sha256()
    for flag in cflags:
        if not flag.startswith("-I"):
            continue
        root = Path(flag[2:])
        for path in sorted(root.rglob("*.h")):
            try:
                h.update(str(path).encode() + b"\0" + path.read_bytes() + b"\0")
            except OSError:
                h.update(str(path).encode() + b"\0unreadable\0")
    return h.hexdigest()


def cache_key(text: str, cflags: Sequence[str]) -> str:
    h = hashlib.sha256()
    for part in (str(FORMAT), _node_key(), json.dumps(list(cflags)), _include_dirs_hash(cflags), text):
        h.update(part.encode() + b"\0")
    return h.hexdigest()


# -- the folder -------------------------------------------------------------------------------------
@dataclass
class BpfCache:
    directory: Path
    notes: list[str] = field(default_factory=list)   # what went wrong, for whoever reports it

    @classmethod
    def from_env(cls) -> "BpfCache | None":
        """The cache EBPFTOOL_BPF_CACHE names (default /var/cache/ebpftool/bpf), None when =off."""
        where = os.environ.get(ENV, "").strip()
        if where.lower() in ("off", "0", "no", "false", "none"):
            return None
        return cls(Path(where or DEFAULT_DIR))

    def _ready(self) -> bool:
        """Make the folder (0700) or check it: ours, a real folder, writable by nobody else."""
        d = self.directory
        try:
            d.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            try:
                d.mkdir(mode=0o700)
            except FileExistsError:
                pass
            st = os.lstat(d)
        except OSError as exc:
            return self._note(f"cannot make the compile cache {d}: {exc.strerror}")
        if not stat.S_ISDIR(st.st_mode):
            return self._note(f"the compile cache {d} is not a folder; not used")
        if st.st_uid != os.geteuid() or st.st_mode & 0o022:
            return self._note(f"the compile cache {d} is not this user's alone (uid {st.st_uid}, mode "
                              f"{stat.S_IMODE(st.st_mode):o}); not used")
        for parent in d.resolve().parents:
            # Whoever may write to a folder above may move the cache away and put their own in its place
            # between this check and a load (a sticky folder such as /tmp only lets them remove their own).
            pst = os.stat(parent)
            if pst.st_uid not in (0, os.geteuid()) or pst.st_mode & 0o022 and not pst.st_mode & stat.S_ISVTX:
                return self._note(f"the compile cache {d} is inside {parent}, which others may change (uid "
                                  f"{pst.st_uid}, mode {stat.S_IMODE(pst.st_mode):o}); not used")
        if st.st_mode & 0o077:
            os.chmod(d, 0o700)   # e.g. a hostPath that kubelet made 0755
        return True

    def status(self) -> tuple[bool, str]:
        """Whether the folder can be used, and what it holds or why not (for doctor)."""
        if not self._ready():
            return False, self.notes[-1]
        n = len(list(self.directory.glob(f"*{SUFFIX}")))
        return True, f"{self.directory}: {n} compiled program{'' if n == 1 else 's'} ({ENV}=DIR|off)"

    def _note(self, why: str) -> bool:
        self.notes.append(why)
        return False

    def path(self, key: str) -> Path:
        return self.directory / f"{key}{SUFFIX}"

    def fetch(self, key: str) -> Compiled | None:
        """The entry for key, checked; a bad one is deleted (and noted)."""
        body = self._read(self.path(key), key)
        if body is None:
            return None
        try:
            return Compiled.from_json(body)
        except (CacheError, ValueError, KeyError, TypeError) as exc:
            self.discard(key, str(exc))
            return None

    def store(self, key: str, compiled: Compiled) -> None:
        if self._write(self.path(key), compiled.to_json()):
            self._prune()

    def fetch_btf_answers(self, btf_sha256: str) -> dict:
        """What an earlier start asked of the kernel's BTF with this SHA-256 and its answers ({} if none)."""
        name = f"{BTF_ANSWERS_PREFIX}{btf_sha256}"
        body = self._read(self.directory / f"{name}{BTF_ANSWERS_SUFFIX}", name)
        try:
            answers = json.loads(body) if body is not None else {}
        except ValueError:
            answers = None
        if not isinstance(answers, dict):
            self.discard(name, "not a table of answers", BTF_ANSWERS_SUFFIX)
            return {}
        return answers

    def store_btf_answers(self, btf_sha256: str, answers: dict) -> None:
        if self._write(self.directory / f"{BTF_ANSWERS_PREFIX}{btf_sha256}{BTF_ANSWERS_SUFFIX}",
                       json.dumps(answers).encode()):   # not sorted: an answer's own order (field_offsets) is kept
            old = sorted(self.directory.glob(f"*{BTF_ANSWERS_SUFFIX}"), key=lambda p: p.stat().st_mtime_ns)
            for path in old[:-MAX_BTF_ANSWERS]:   # the kernels booted before
                path.unlink(missing_ok=True)

    def _read(self, path: Path, key: str) -> bytes | None:
        """An entry's content, its file and SHA-256 checked; a bad one is deleted (and noted)."""
        suffix = path.name[len(key):]
        if not self._ready():
            return None
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return None
        except OSError as exc:
            self.discard(key, f"unreadable ({exc.strerror})", suffix)
            return None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
                raise CacheError("not a private file of this user")
            with os.fdopen(fd, "rb", closefd=False) as f:
                data = f.read()
            head, _, body = data.partition(b"\n")
            parts = head.split(b" ")
            if len(parts) != 3 or parts[0] != MAGIC or parts[1] != str(FORMAT).encode():
                raise CacheError("not an entry of this format")
            if hashlib.sha256(body).hexdigest().encode() != parts[2]:
                raise CacheError("its SHA-256 does not match its content")
            return body
        except (CacheError, OSError) as exc:
            self.discard(key, str(exc), suffix)
            return None
        finally:
            os.close(fd)

    def _write(self, path: Path, body: bytes) -> bool:
        """Write an entry (0600, with its SHA-256) in one rename; whether it was written."""
        if not self._ready():
            return False
        data = b"%s %d %s\n" % (MAGIC, FORMAT, hashlib.sha256(body).hexdigest().encode()) + body
        tmp = None
        try:
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".new-", suffix=path.suffix)   # 0600
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
            tmp = None
            return True
        except OSError as exc:
            self._note(f"cannot write to the compile cache {self.directory}: {exc.strerror}")
            return False
        finally:
            if tmp is not None:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass

    def _prune(self) -> None:
        entries = sorted(self.directory.glob(f"*{SUFFIX}"), key=lambda p: p.stat().st_mtime_ns)
        for old in entries[:-MAX_ENTRIES]:
            old.unlink(missing_ok=True)

    def discard(self, key: str, why: str, suffix: str = SUFFIX) -> None:
        self._note(f"compile cache entry {key[:12]} removed: {why}")
        path = self.directory / f"{key}{suffix}"
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            self._note(f"cannot remove {path}: {exc.strerror}")


# -- loading from an entry ------------------------------------------------------------------------------
class _CachedModule:
    """Stands where BCC keeps its compiled module: answers the three questions bcc.table asks of it."""

    def __init__(self, maps: list[MapSpec]) -> None:
        self.maps = maps


class _TableLib:
    """bcc.table's `lib`, answering for a _CachedModule and passing everything else to libbcc."""

    def __init__(self, real) -> None:
        self._real = real

    def __getattr__(self, name: str):
        return getattr(self._real, name)

    def bpf_table_type_id(self, module, map_id):
        return module.maps[map_id].type if isinstance(module, _CachedModule) else self._real.bpf_table_type_id(module, map_id)

    def bpf_table_flags_id(self, module, map_id):
        return module.maps[map_id].flags if isinstance(module, _CachedModule) else self._real.bpf_table_flags_id(module, map_id)

    def bpf_table_max_entries_id(self, module, map_id):
        if isinstance(module, _CachedModule):
            return module.maps[map_id].max_entries
        return self._real.bpf_table_max_entries_id(module, map_id)


def prog_load(prog_type: int, insns: bytes, name: str, *, license_: str = "GPL", kern_version: int = 0,
              attach_type: int = 0, attach_btf_id: int = 0, log=None, log_level: int = 1) -> int:
    """One bpf(BPF_PROG_LOAD): the fd, or -errno; the verifier writes into log (a ctypes buffer) at log_level
    where one is given."""
    code = ctypes.create_string_buffer(insns, len(insns))
    lic = ctypes.create_string_buffer(license_.encode())
    # union bpf_attr, BPF_PROG_LOAD, up to attach_btf_id (include/uapi/linux/bpf.h)
    attr = struct.pack("<IIQQIIQII16sIIIIQIIQII", prog_type, len(insns) // 8, ctypes.addressof(code),
                       ctypes.addressof(lic), log_level if log else 0, len(log) if log else 0,
                       ctypes.addressof(log) if log else 0, kern_version, 0, name.encode()[:15], 0,
                       attach_type, 0, 0, 0, 0, 0, 0, 0, attach_btf_id)
    fd, _ = _bpf(BPF_PROG_LOAD, attr)
    return fd


def load_program(prog_type: int, insns: bytes, name: str, *, license_: str = "GPL", kern_version: int = 0,
                 attach_type: int = 0, attach_btf_id: int = 0, explain: bool = True) -> int:
    """bpf(BPF_PROG_LOAD): the fd, or OSError with the verifier's last lines (asked again with a log: the
    verifier's work twice; explain=False raises with errno's text alone, for a caller that falls back)."""
    def load(log) -> int:
        return prog_load(prog_type, insns, name, license_=license_, kern_version=kern_version,
                         attach_type=attach_type, attach_btf_id=attach_btf_id, log=log)

    fd = load(None)   # no verifier log: a long program's log can outgrow any buffer (ENOSPC)
    if fd >= 0:
        return fd
    if not explain:
        raise OSError(-fd, os.strerror(-fd))
    log = ctypes.create_string_buffer(VERIFIER_LOG_BYTES)
    load(log)   # again, for the verifier's reason
    detail = [line for line in log.value.decode(errors="replace").splitlines() if line.strip()][-3:]
    raise OSError(-fd, f"{os.strerror(-fd)}{': ' if detail else ''}{' / '.join(detail)}")


def _create_map(m: MapSpec, btf_fd: int) -> int:
    with_btf = btf_fd >= 0 and (m.btf_key_type_id or m.btf_value_type_id)
    attr = struct.pack("<7I16s5IQ", m.type, m.key_size, m.value_size, m.max_entries, m.flags, 0, 0,
                       m.name.encode()[:15], 0, btf_fd if with_btf else 0,
                       m.btf_key_type_id if with_btf else 0, m.btf_value_type_id if with_btf else 0, 0, m.map_extra)
    fd, _ = _bpf(BPF_MAP_CREATE, attr)
    if fd < 0:
        raise CacheError(f"creating map {m.name}: {os.strerror(-fd)}")
    return fd


def _load_btf(blob: bytes) -> int:
    buf = ctypes.create_string_buffer(blob, len(blob))
    fd, _ = _bpf(BPF_BTF_LOAD, struct.pack("<QQIII", ctypes.addressof(buf), 0, len(blob), 0, 0))
    if fd < 0:
        raise CacheError(f"loading the program's BTF: {os.strerror(-fd)}")
    return fd


def cached_bpf_class(bcc) -> type:
    """CachedBPF, a bcc.BPF built from a Compiled entry (made once per process: it subclasses bcc.BPF)."""
    if getattr(bcc, "_ebpftool_cached_bpf", None) is not None:
        return bcc._ebpftool_cached_bpf
    import bcc.table as bcc_table  # noqa: PLC0415
    if not isinstance(bcc_table.lib, _TableLib):
        bcc_table.lib = _TableLib(bcc_table.lib)

    class CachedBPF(bcc.BPF):
        """A bcc.BPF whose module came from the compile cache: maps made here, functions loaded here."""

        def __init__(self, compiled: Compiled, on_refused: Callable[[str], None] | None = None) -> None:
            # What bcc.BPF.__init__ sets up, without compiling anything.
            self.kprobe_fds, self.uprobe_fds, self.tracepoint_fds, self.raw_tracepoint_fds = {}, {}, {}, {}
            self.kfunc_entry_fds, self.kfunc_exit_fds, self.lsm_fds = {}, {}, {}
            self.perf_buffers, self.open_perf_events = {}, {}
            self._ringbuf_manager = None
            self.tracefile = None
            self.debug = 0
            self.funcs, self.tables = {}, {}
            self.compiled = compiled
            self.on_refused = on_refused
            self.module = _CachedModule(compiled.maps)
            self.map_fds: dict[str, int] = {}
            self.btf_fd = -1
            atexit.register(self.cleanup)
            try:
                if compiled.btf:
                    self.btf_fd = _load_btf(compiled.btf)
                for m in compiled.maps:
                    self.map_fds[m.name] = _create_map(m, self.btf_fd)
                self._trace_autoload()
            except BaseException:
                self.cleanup()
                raise

        def _trace_autoload(self) -> None:
            for name in self.compiled.functions:
                for prefix, prog_type in AUTOLOAD.items():
                    if name.startswith(prefix):
                        fn = self.load_func(name, prog_type)
                        if prog_type == bcc.BPF.TRACEPOINT:
                            self.attach_tracepoint(tp=fn.name[len(prefix):].replace(b"__", b":"), fn_name=fn.name)
                        else:
                            self.attach_raw_tracepoint(tp=fn.name[len(prefix):], fn_name=fn.name)

        def dump_func(self, func_name) -> bytes:
            name = func_name.decode() if isinstance(func_name, bytes) else func_name
            fn = self.compiled.functions.get(name)
            if fn is None:
                raise Exception(f"Unknown program {name}")
            out = bytearray(fn.insns)
            for at, map_name in fn.relocs:
                struct.pack_into("<i", out, 8 * at + 4, self.map_fds[map_name])
            return bytes(out)

        def load_func(self, func_name, prog_type, device=None, attach_type=-1):
            key = func_name if isinstance(func_name, bytes) else func_name.encode()
            if key in self.funcs:
                return self.funcs[key]
            try:
                fd = load_program(prog_type, self.dump_func(key), key.decode(), license_=self.compiled.license,
                                  kern_version=self.compiled.kern_version,
                                  attach_type=attach_type if attach_type >= 0 else 0)
            except OSError as exc:
                if self.on_refused:
                    self.on_refused(f"the kernel refused {key.decode()}: {exc.strerror}")
                raise Exception(f"Failed to load BPF program {key.decode()} (from the compile cache, now "
                                f"removed: the next start compiles it): {exc.strerror}") from None
            fn = bcc.BPF.Function(self, key, fd)
            self.funcs[key] = fn
            return fn

        def get_table(self, name, keytype=None, leaftype=None, reducer=None):
            key = name.decode() if isinstance(name, bytes) else name
            for map_id, m in enumerate(self.compiled.maps):
                if m.name == key:
                    break
            else:
                raise KeyError(name)
            if not keytype and m.type not in (22, 23):   # queue / stack have no key
                keytype = bcc.BPF._decode_table_type(json.loads(m.key_desc))
            if not leaftype:
                leaftype = bcc.BPF._decode_table_type(json.loads(m.leaf_desc))
            return bcc_table.Table(self, map_id, self.map_fds[key], keytype, leaftype, key.encode(), reducer=reducer)

        def close(self) -> None:
            for name, fn in list(self.funcs.items()):
                os.close(fn.fd)
                del self.funcs[name]
            for fd in self.map_fds.values():
                os.close(fd)
            self.map_fds.clear()
            if self.btf_fd >= 0:
                os.close(self.btf_fd)
                self.btf_fd = -1
            self.module = None

    bcc._ebpftool_cached_bpf = CachedBPF
    return CachedBPF

