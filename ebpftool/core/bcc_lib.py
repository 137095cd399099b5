"""BCC's Python package without its compiler where nothing is compiled in this process.

`import bcc` loads libbcc.so.0, which links LLVM and clang: their pages, mapped and relocated, are about half
of a tracer's resident memory, though a tracer that takes its programs from the compile cache (and compiles
in child processes, ebpftool.core.bpf_compile) never calls them. Debian's libbpfcc ships libbcc_bpf.so.0
beside it: BCC's own attach, map, ring-buffer and symbol functions, without the compiler. import_bcc()
imports bcc with its `lib` standing on that library (and on libbpf.so.1 for the two functions it lacks);
use_compiler() moves it onto libbcc.so.0 the first time this process must compile. Where libbcc_bpf.so.0 is
missing, bcc loads libbcc.so.0 as it always does.
"""
from __future__ import annotations

import ctypes
import sys
import threading
from typing import Any

FULL_LIBRARY = "libbcc.so.0"
RUNTIME_LIBRARIES = ("libbcc_bpf.so.0", "libbpf.so.1")
_IMPORT_LOCK = threading.Lock()


class NeedsCompiler:
    """A function only libbcc.so.0 has (BCC's compiler and its module): holds the prototype bcc's libbcc.py
    gives it, for use_compiler() to carry over, and says so if called before."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.restype: Any = ctypes.c_int
        self.argtypes: Any = None

    def __call__(self, *args: Any) -> Any:
        raise RuntimeError(f"BCC's {self.name}() is in {FULL_LIBRARY} only, not yet loaded in this process "
                           "(ebpftool.core.bcc_lib.use_compiler)")


class BccLib:
    """What bcc's modules call `lib`: each function from the runtime libraries, or a NeedsCompiler stand-in;
    after use_compiler(), every one from libbcc.so.0 (bcc's modules all hold this one object)."""

    def __init__(self, libraries: list[ctypes.CDLL]) -> None:
        self._libraries = libraries
        self.compiler = False

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        for library in self._libraries:
            try:
                fn = getattr(library, name)
                break
            except AttributeError:
                continue
        else:
            fn = NeedsCompiler(name)
        self.__dict__[name] = fn   # where bcc sets its prototype, and where the next call finds it
        return fn

    def use_compiler(self) -> None:
        """Every function from libbcc.so.0 from now on, with the prototypes bcc gave them."""
        if self.compiler:
            return
        full = ctypes.CDLL(FULL_LIBRARY, use_errno=True)
        for name, fn in list(self.__dict__.items()):
            if name.startswith("_") or name == "compiler":
                continue
            try:
                real = getattr(full, name)
            except AttributeError:
                continue   # in neither: still a stand-in
            real.restype, real.argtypes = fn.restype, fn.argtypes
            self.__dict__[name] = real
        self._libraries = [full]
        self.compiler = True


def runtime_libraries_found() -> bool:
    """Whether this process can run bcc on the runtime libraries (for doctor)."""
    return _runtime_lib() is not None


def _runtime_lib() -> BccLib | None:
    try:
        return BccLib([ctypes.CDLL(name, use_errno=True) for name in RUNTIME_LIBRARIES])
    except OSError:
        return None


def import_bcc_module(compiler: bool):
    """The bcc module (ImportError as `import bcc` raises it). Its first import here decides its library: the
    runtime one unless compiler is asked for; later calls with compiler move it onto libbcc.so.0."""
    with _IMPORT_LOCK:
        if "bcc" not in sys.modules and not compiler:
            runtime = _runtime_lib()
            if runtime is not None:
                real_cdll = ctypes.CDLL

                def cdll(name, *args, **kwargs):
                    return runtime if name == FULL_LIBRARY else real_cdll(name, *args, **kwargs)
                ctypes.CDLL = cdll   # bcc/libbcc.py: lib = ct.CDLL("libbcc.so.0", use_errno=True)
                try:
                    import bcc  # noqa: PLC0415  (Debian's python3-bpfcc)
                finally:
                    ctypes.CDLL = real_cdll
                return bcc
        import bcc  # noqa: PLC0415
        if compiler:
            use_compiler(bcc)
        return bcc


def use_compiler(bcc) -> None:
    """bcc's lib on libbcc.so.0 (a no-op where it was loaded there)."""
    lib = getattr(bcc, "lib", None)
    if isinstance(lib, BccLib):
        lib.use_compiler()

