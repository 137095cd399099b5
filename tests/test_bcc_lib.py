"""BCC's `lib` on its runtime library (ebpftool.core.bcc_lib): a function the runtime library lacks is a
stand-in that keeps the prototype bcc gives it and says why it cannot run; use_compiler() carries every
prototype over to the full library. With libc standing for the runtime library and libm for the full one."""
from __future__ import annotations

import ctypes
import os

import pytest

from ebpftool.core import bcc_lib


def test_a_missing_function_keeps_its_prototype_and_works_once_the_full_library_is_loaded(monkeypatch):
    lib = bcc_lib.BccLib([ctypes.CDLL("libc.so.6", use_errno=True)])
    lib.getpid.restype = ctypes.c_int
    lib.cos.restype = ctypes.c_double          # libm's, not libc's: a stand-in until then
    lib.cos.argtypes = [ctypes.c_double]
    assert isinstance(lib.cos, bcc_lib.NeedsCompiler)
    with pytest.raises(RuntimeError, match=r"cos\(\) is in libbcc\.so\.0 only"):
        lib.cos(0.0)
    assert lib.getpid() == os.getpid()

    monkeypatch.setattr(bcc_lib, "FULL_LIBRARY", "libm.so.6")
    lib.use_compiler()
    assert lib.compiler
    assert lib.cos(0.0) == 1.0                 # the double went in and came out as declared
    assert lib.getpid() == os.getpid()         # and what was loaded before is the full library's now
    lib.use_compiler()                          # once only
    assert lib.cos(0.0) == 1.0


NO_COMPILER = """
import os, sys
sys.path.insert(0, os.getcwd())
os.environ["EBPFTOOL_BPF_CACHE"] = "off"   # so the program must be compiled in this process
from ebpftool.core import bcc_lib
from ebpftool.core.bpf import BpfProgram, import_bcc
from ebpftool.errors import EbpftoolError
import_bcc()
bcc_lib.FULL_LIBRARY = "libebpftool-no-such-bcc.so.0"
try:
    BpfProgram("net/net.bpf.c", {}).load()
except EbpftoolError as exc:
    print(exc)
"""


def test_a_compile_without_bccs_compiler_is_one_sentence_not_a_traceback():
    """Where the process must compile and libbcc.so.0 cannot be loaded, the user reads why in one sentence."""
    import subprocess
    import sys

    from tests.conftest import ROOT
    pytest.importorskip("bcc")
    out = subprocess.run([sys.executable, "-c", NO_COMPILER], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert out.stdout.startswith("net/net.bpf.c must be compiled here, and BCC's compiler cannot be loaded: "
                                 "libebpftool-no-such-bcc.so.0"), out.stdout
