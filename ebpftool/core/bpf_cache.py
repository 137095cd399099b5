"""A cache of what BCC compiled, so that a second start on the same node skips clang and LLVM.

BCC 0.26 compiles C text into a module (instructions per function, map definitions, maps created) and has
no cache and no way to load a compiled object. Compiling is most of a tracer's start (inference.bpf.c:
~3-4 s; the rest of a start is tenths). So after a real compile the module's content is saved: each
function's instructions, where they load a map's fd (an ld_imm64 with src_reg BPF_PSEUDO_MAP_FD), each
map's definition as the kernel holds it (BPF_OBJ_GET_INFO_BY_FD) and as BCC describes it to Python (its
key and leaf types). A later start with the same key gets a BCC `BPF` object built from that: maps created
anew with bpf(BPF_MAP_CREATE), their fds written into the instructions, programs loaded with
bpf(BPF_PROG_LOAD) (without the program BTF BCC adds for the verifier's messages). BCC's Python class is
used as it is, through a stand-in for the few functions of libbcc it asks about a module
(`_LibProxy`): everything else (attaching, ring buffers, tables) is BCC's own code.

The key is everything that changes what BCC produces: the whole program text (defines and macros
included), the cflags, the kernel's release and build and a hash of its BTF, and BCC's version and
library file. The cache directory (/var/cache/ebpftool/bpf, EBPFTOOL_BPF_CACHE to change it, "off" to
disable) must be a directory owned by root and writable by no one else, or it is not used; entries are
files of mode 0600 whose first line is the SHA-256 of the rest, checked before use. An entry that fails
any check, or a program the kernel refuses from it, is compiled anew and replaced.
"""
from __future__ import annotations

import base64
import ctypes
import hashlib
import json
import os
import stat
import struct
import threading
from pathlib import Path
from typing import Any

FORMAT = 2
DEFAULT_DIR = "/var/cache/ebpftool/bpf"
ENV = "EBPFTOOL_BPF_CACHE"
VMLINUX_BTF = "/sys/kernel/btf/vmlinux"

BPF_MAP_CREATE = 0
BPF_PROG_LOAD = 5
BPF_OBJ_GET_INFO_BY_FD = 15
BPF_BTF_LOAD = 18
BPF_BTF_GET_FD_BY_ID = 19
BPF_LD_IMM64 = 0x18
BPF_PSEUDO_MAP_FD = 1

# What this process did with the cache, for the tests and the start-up report.
counters = {"hits": 0, "misses": 0, "stored": 0, "rejected": 0}
_lock = threading.Lock()
_MODULES: dict[int, "CachedModule"] = {}   # fake module handle -> its content
_pending = threading.local()              # the CachedModule the next bpf_module_create_c_from_string returns


class CacheError(Exception):
    """An entry that cannot be used (corrupt, another key, a program the kernel refuses)."""


def _syscall_nr() -> int:
    from ebpftool.core.bpf import SYS_BPF
    return SYS_BPF


_libc = ctypes.CDLL(None, use_errno=True)


def _bpf(cmd: int, attr: bytes) -> int:
    buf = ctypes.create_string_buffer(attr, max(len(attr), 128))
    return _libc.syscall(_syscall_nr(), cmd, buf, ctypes.sizeof(buf))


def cache_dir() -> tuple[Path | None, str]:
    """The cache directory to use, made if need be, or (None, why not)."""
    setting = os.environ.get(ENV, DEFAULT_DIR)
    if setting.lower() in ("", "off", "0", "no"):
        return None, f"{ENV}={setting}"
    path = Path(setting)
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = os.lstat(path)
    except OSError as exc:
        return None, f"cannot use {path}: {exc.strerror}"
    if not stat.S_ISDIR(st.st_mode):
        return None, f"{path} is not a directory"
    if st.st_uid != 0:
        return None, f"{path} is not owned by root"
    if st.st_mode & 0o022:
        return None, f"{path} is writable by group or others"
    return path, ""


def _file_identity(path: str) -> str:
    try:
        st = os.stat(path)
    except OSError:
        return "-"
    return f"{st.st_size}:{st.st_mtime_ns}"


_btf_hash: dict[str, str] = {}


def kernel_identity() -> str:
    """Release, build and a hash of the kernel's BTF (read once per process)."""
    u = os.uname()
    key = _file_identity(VMLINUX_BTF)
    if key not in _btf_hash:
        try:
            _btf_hash[key] = hashlib.sha256(Path(VMLINUX_BTF).read_bytes()).hexdigest()
        except OSError:
            _btf_hash[key] = "no-btf"
    return f"{u.release}|{u.version}|{u.machine}|{_btf_hash[key]}"


def cache_key(text: str, cflags: list[str]) -> str:
    import bcc

    lib_path = getattr(bcc.libbcc.lib, "_name", "libbcc.so.0")
    parts = [f"format {FORMAT}", kernel_identity(), f"bcc {getattr(bcc, '__version__', '?')}",
             f"libbcc {lib_path} {_file_identity(_resolve_lib(lib_path))}", "cflags " + "\0".join(cflags), text]
    return hashlib.sha256("\n\0".join(parts).encode()).hexdigest()


def _resolve_lib(name: str) -> str:
    for d in ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib", "/lib"):
        if os.path.exists(f"{d}/{name}"):
            return f"{d}/{name}"
    return name


# -- capturing a compiled module ---------------------------------------------------------------------

def _obj_info(fd: int, info: ctypes.Array) -> None:
    attr = struct.pack("<IIQ", fd, ctypes.sizeof(info), ctypes.addressof(info))
    if _bpf(BPF_OBJ_GET_INFO_BY_FD, attr) != 0:
        raise CacheError(f"object info: {os.strerror(ctypes.get_errno())}")


def _map_info(fd: int) -> dict[str, Any]:
    """struct bpf_map_info of a map, as far as creating it again needs."""
    info = ctypes.create_string_buffer(88)
    _obj_info(fd, info)
    mtype, _id, key_size, value_size, max_entries, flags, name = struct.unpack_from("<IIIIII16s", info.raw)
    btf_id, btf_key, btf_value = struct.unpack_from("<III", info.raw, 64)
    return {"type": mtype, "key_size": key_size, "value_size": value_size, "max_entries": max_entries,
            "flags": flags, "name": name.rstrip(b"\0").decode(errors="replace"),
            "btf_id": btf_id, "btf_key_type_id": btf_key, "btf_value_type_id": btf_value}


def _btf_bytes(btf_id: int) -> bytes:
    """The BTF object BCC loaded for a module's maps (their key and value types, which bpftool shows)."""
    fd = _bpf(BPF_BTF_GET_FD_BY_ID, struct.pack("<III", btf_id, 0, 0))
    if fd < 0:
        raise CacheError(f"BTF {btf_id}: {os.strerror(ctypes.get_errno())}")
    try:
        info = ctypes.create_string_buffer(32)
        _obj_info(fd, info)
        size = struct.unpack_from("<I", info.raw, 8)[0]
        data = ctypes.create_string_buffer(size)
        info = ctypes.create_string_buffer(struct.pack("<QI", ctypes.addressof(data), size), 32)
        _obj_info(fd, info)
        return data.raw
    finally:
        os.close(fd)


def _load_btf(data: bytes) -> int:
    buf = ctypes.create_string_buffer(data, len(data))
    fd = _bpf(BPF_BTF_LOAD, struct.pack("<QQIII", ctypes.addressof(buf), 0, len(data), 0, 0))
    if fd < 0:
        raise CacheError(f"loading the maps' BTF: {os.strerror(ctypes.get_errno())}")
    return fd


def capture(bpf) -> dict[str, Any]:
    """The content of a module BCC just compiled (CacheError where it holds what this cache cannot redo)."""
    lib = _RealLib.get()
    m = bpf.module
    tables = []
    by_fd: dict[int, str] = {}
    for i in range(lib.bpf_num_tables(m)):
        name = lib.bpf_table_name(m, i)
        fd = lib.bpf_table_fd(m, name)
        table_id = lib.bpf_table_id(m, name)
        by_fd[fd] = name.decode()
        tables.append({"name": name.decode(), "id": table_id,
                       "type": lib.bpf_table_type_id(m, table_id), "flags": lib.bpf_table_flags_id(m, table_id),
                       "max_entries": lib.bpf_table_max_entries_id(m, table_id),
                       "key_desc": (lib.bpf_table_key_desc(m, name) or b"").decode(),
                       "leaf_desc": (lib.bpf_table_leaf_desc(m, name) or b"").decode(),
                       "kernel": _map_info(fd)})
    functions = []
    for i in range(lib.bpf_num_functions(m)):
        name = lib.bpf_function_name(m, i)
        code = ctypes.string_at(lib.bpf_function_start(m, name), lib.bpf_function_size(m, name))
        relocs = []
        at = 0
        while at + 8 <= len(code):
            op, regs, _off, imm = struct.unpack_from("<BBhi", code, at)
            if op == BPF_LD_IMM64:
                src = regs >> 4
                if src == BPF_PSEUDO_MAP_FD and imm in by_fd:
                    relocs.append([at // 8, by_fd[imm]])
                elif src != 0:
                    raise CacheError(f"{name.decode()} loads a pseudo value of kind {src}")
                at += 16
                continue
            at += 8
        functions.append({"name": name.decode(), "code": base64.b64encode(code).decode(), "relocs": relocs})
    btf = {}
    for t in tables:
        btf_id = t["kernel"].pop("btf_id")
        if btf_id:
            if str(btf_id) not in btf:
                btf[str(btf_id)] = base64.b64encode(_btf_bytes(btf_id)).decode()
            t["kernel"]["btf"] = str(btf_id)
    return {"format": FORMAT, "license": (lib.bpf_module_license(m) or b"GPL").decode(),
            "kern_version": lib.bpf_module_kern_version(m), "tables": tables, "functions": functions, "btf": btf}


def store(directory: Path, key: str, content: dict[str, Any]) -> None:
    body = json.dumps({**content, "key": key}, separators=(",", ":")).encode()
    data = hashlib.sha256(body).hexdigest().encode() + b"\n" + body
    tmp = directory / f".{key}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, directory / f"{key}.json")
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    with _lock:
        counters["stored"] += 1
    prune(directory)


MAX_ENTRIES = 64  # ~30-170 KB each; the least recently used go first


def prune(directory: Path, keep: int = MAX_ENTRIES) -> None:
    """Remove all but the `keep` most recently used entries (a hit touches its entry)."""
    try:
        found = sorted(directory.glob("*.json"), key=lambda p: p.stat().st_mtime_ns, reverse=True)
        for old in found[keep:]:
            old.unlink()
    except OSError:
        pass


def read(directory: Path, key: str) -> dict[str, Any] | None:
    """The entry for key, checked (None if there is none; CacheError if it is not sound)."""
    path = directory / f"{key}.json"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CacheError(f"{path}: {exc.strerror}") from exc
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if st.st_uid != 0 or st.st_mode & 0o077 or not stat.S_ISREG(st.st_mode):
            raise CacheError(f"{path} is not a root-only file")
        data = f.read()
    digest, _, body = data.partition(b"\n")
    if hashlib.sha256(body).hexdigest().encode() != digest:
        raise CacheError(f"{path}: checksum mismatch")
    try:
        content = json.loads(body)
    except ValueError as exc:
        raise CacheError(f"{path}: {exc}") from exc
    if content.get("key") != key or content.get("format") != FORMAT:
        raise CacheError(f"{path}: another key or format")
    try:
        os.utime(path)  # recently used: kept by prune()
    except OSError:
        pass
    return content


def discard(directory: Path, key: str) -> None:
    try:
        (directory / f"{key}.json").unlink()
    except OSError:
        pass


# -- a BCC module from an entry -------------------------------------------------------------------------

class CachedModule:
    """Maps created anew and instructions relocated to them, answering what BCC asks a module."""

    def __init__(self, content: dict[str, Any]) -> None:
        self.content = content
        self.license = content["license"].encode()
        self.kern_version = int(content["kern_version"])
        self.tables = {t["name"].encode(): t for t in content["tables"]}
        self.by_id = {int(t["id"]): t for t in content["tables"]}
        self.fds: dict[bytes, int] = {}
        self.names = [f["name"].encode() for f in content["functions"]]
        self.code: dict[bytes, ctypes.Array] = {}
        self.on_reject = None  # called when the kernel refuses one of its programs
        self.btf_fds: dict[str, int] = {}
        try:
            for ref, blob in content.get("btf", {}).items():
                self.btf_fds[ref] = _load_btf(base64.b64decode(blob))
            for name, t in self.tables.items():
                self.fds[name] = self._create_map(t["kernel"], self.btf_fds)
            for fd in self.btf_fds.values():
                os.close(fd)  # the maps hold it
            self.btf_fds.clear()
            for f in content["functions"]:
                code = bytearray(base64.b64decode(f["code"]))
                for index, table in f["relocs"]:
                    fd = self.fds.get(table.encode())
                    if fd is None or code[index * 8] != BPF_LD_IMM64:
                        raise CacheError(f"bad relocation in {f['name']}")
                    struct.pack_into("<i", code, index * 8 + 4, fd)
                self.code[f["name"].encode()] = ctypes.create_string_buffer(bytes(code), len(code))
        except Exception:
            self.destroy()
            raise
        self.handle = ctypes.addressof(self.code[self.names[0]]) if self.names else id(self)

    @staticmethod
    def _create_map(k: dict[str, Any], btf_fds: dict[str, int]) -> int:
        btf_fd = btf_fds.get(k.get("btf", ""), 0)
        attr = struct.pack("<IIIIIII16sIIIII", k["type"], k["key_size"], k["value_size"], k["max_entries"], k["flags"],
                           0, 0, k["name"].encode()[:15], 0, btf_fd, k.get("btf_key_type_id", 0) if btf_fd else 0,
                           k.get("btf_value_type_id", 0) if btf_fd else 0, 0)
        fd = _bpf(BPF_MAP_CREATE, attr)
        if fd < 0:
            raise CacheError(f"creating map {k['name']}: {os.strerror(ctypes.get_errno())}")
        return fd

    def destroy(self) -> None:
        for fd in [*self.fds.values(), *getattr(self, "btf_fds", {}).values()]:
            try:
                os.close(fd)
            except OSError:
                pass
        self.fds.clear()
        getattr(self, "btf_fds", {}).clear()

    def load(self, prog_type: int, name: bytes, attach_type: int) -> int:
        code = self.code.get(name)
        if code is None:
            ctypes.set_errno(2)
            return -1
        license_ = ctypes.create_string_buffer(self.license)
        attr = struct.pack("<IIQQIIQII16sII", prog_type, ctypes.sizeof(code) // 8,
                           ctypes.addressof(code), ctypes.addressof(license_), 0, 0, 0, self.kern_version, 0,
                           name[:15], 0, max(attach_type, 0))
        fd = _bpf(BPF_PROG_LOAD, attr)
        if fd < 0:
            err = ctypes.get_errno()
            with _lock:
                counters["rejected"] += 1
            if self.on_reject is not None:
                self.on_reject()  # the next start compiles anew
            ctypes.set_errno(err)
        return fd


class _RealLib:
    """libbcc with the signatures this module needs (its own handle: BCC's stays as BCC set it)."""
    _lib = None

    @classmethod
    def get(cls):
        if cls._lib is None:
            import bcc

            lib = ctypes.CDLL(bcc.libbcc.lib._name, use_errno=True)
            c = ctypes
            for name, res, args in (
                ("bpf_num_tables", c.c_ulonglong, [c.c_void_p]),
                ("bpf_table_name", c.c_char_p, [c.c_void_p, c.c_ulonglong]),
                ("bpf_table_fd", c.c_int, [c.c_void_p, c.c_char_p]),
                ("bpf_table_id", c.c_ulonglong, [c.c_void_p, c.c_char_p]),
                ("bpf_table_type_id", c.c_int, [c.c_void_p, c.c_ulonglong]),
                ("bpf_table_flags_id", c.c_int, [c.c_void_p, c.c_ulonglong]),
                ("bpf_table_max_entries_id", c.c_ulonglong, [c.c_void_p, c.c_ulonglong]),
                ("bpf_table_key_desc", c.c_char_p, [c.c_void_p, c.c_char_p]),
                ("bpf_table_leaf_desc", c.c_char_p, [c.c_void_p, c.c_char_p]),
                ("bpf_num_functions", c.c_ulonglong, [c.c_void_p]),
                ("bpf_function_name", c.c_char_p, [c.c_void_p, c.c_ulonglong]),
                ("bpf_function_start", c.c_void_p, [c.c_void_p, c.c_char_p]),
                ("bpf_function_size", c.c_size_t, [c.c_void_p, c.c_char_p]),
                ("bpf_module_license", c.c_char_p, [c.c_void_p]),
                ("bpf_module_kern_version", c.c_uint, [c.c_void_p])):
                f = getattr(lib, name)
                f.restype, f.argtypes = res, args
            cls._lib = lib
        return cls._lib


def _table(cm: CachedModule, table_id: int) -> dict[str, Any]:
    return cm.by_id[int(table_id)]


# libbcc functions BCC's Python calls with a module, answered for a cached one: name -> f(cm, *args).
_HOOKS = {
    "bpf_module_license": lambda cm: cm.license,
    "bpf_module_kern_version": lambda cm: cm.kern_version,
    "bpf_num_functions": lambda cm: len(cm.names),
    "bpf_function_name": lambda cm, i: cm.names[i] if 0 <= i < len(cm.names) else None,
    "bpf_function_start": lambda cm, name: ctypes.addressof(cm.code[name]) if name in cm.code else None,
    "bpf_function_size": lambda cm, name: ctypes.sizeof(cm.code[name]) if name in cm.code else 0,
    "bpf_table_id": lambda cm, name: int(cm.tables[name]["id"]) if name in cm.tables else 2 ** 64 - 1,
    "bpf_table_fd": lambda cm, name: cm.fds.get(name, -1),
    "bpf_table_type_id": lambda cm, i: int(_table(cm, i)["type"]),
    "bpf_table_flags_id": lambda cm, i: int(_table(cm, i)["flags"]),
    "bpf_table_max_entries_id": lambda cm, i: int(_table(cm, i)["max_entries"]),
    "bpf_table_key_desc": lambda cm, name: cm.tables[name]["key_desc"].encode() if name in cm.tables else None,
    "bpf_table_leaf_desc": lambda cm, name: cm.tables[name]["leaf_desc"].encode() if name in cm.tables else None,
    "bcc_func_load": lambda cm, prog_type, name, _start, _size, _lic, _kv, _ll, _buf, _bufsz, _dev, attach_type:
        cm.load(prog_type, name, attach_type),
    "bpf_module_destroy": lambda cm: _forget(cm),
}


def _forget(cm: CachedModule) -> None:
    cm.destroy()
    with _lock:
        _MODULES.pop(cm.handle, None)


class _LibProxy:
    """Stands in for libbcc in BCC's Python modules: a call about a cached module is answered here, any
    other goes to libbcc unchanged."""

    def __init__(self, real) -> None:
        self._real = real

    def __getattr__(self, name: str):
        real = getattr(self._real, name)
        hook = _HOOKS.get(name)
        if name == "bpf_module_create_c_from_string":
            def create(*args):
                cm = getattr(_pending, "module", None)
                if cm is not None:
                    _pending.module = None
                    with _lock:
                        _MODULES[cm.handle] = cm
                    return cm.handle
                return real(*args)
            value = create
        elif hook is None:
            return real
        else:
            def call(module, *args, _real=real, _hook=hook):
                cm = _MODULES.get(module) if module is not None else None
                return _hook(cm, *args) if cm is not None else _real(module, *args)
            value = call
        setattr(self, name, value)
        return value


def install() -> None:
    """Put the stand-in in front of libbcc in BCC's modules (once)."""
    import bcc
    import bcc.table

    if not isinstance(bcc.lib, _LibProxy):
        proxy = _LibProxy(bcc.lib)
        bcc.lib = proxy
        bcc.table.lib = proxy


def bpf_from_cache(content: dict[str, Any], text: str, cflags: list[str], on_reject=None):
    """A BCC BPF object made from a cache entry (CacheError, nothing left behind, if it cannot be)."""
    import bcc

    install()
    cm = CachedModule(content)
    cm.on_reject = on_reject
    _pending.module = cm
    bpf = bcc.BPF.__new__(bcc.BPF)
    try:
        bpf.__init__(text=text, cflags=cflags)
        return bpf
    except Exception as exc:
        _pending.module = None
        try:
            bpf.cleanup()  # what it attached and loaded before failing (e.g. an autoloaded tracepoint)
        except Exception:
            pass
        _forget(cm)
        raise CacheError(str(exc)) from exc
