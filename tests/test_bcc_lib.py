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
