"""Pure parts of the gpu tracer: the ELF reader, /proc/PID/maps parsing, library discovery,
kernel-name resolution, the function table compiled into the probes."""
from __future__ import annotations

import os
import subprocess

import pytest

from ebpftool.core.cstruct import load_header
from ebpftool.tracers.gpu.cuda_api import BY_SYMBOL, FUNCTIONS, by_id, function_id, probe_list, probe_names
from ebpftool.core.procfs import descendants, parse_maps
from ebpftool.core.elf import ElfError, ElfFile, read_elf
from ebpftool.tracers.gpu.cuda_libs import SymbolResolver, is_cuda_library, libraries_in_processes
from ebpftool.tracers.gpu import errno_name
from tests.fixtures.gpu.workload import CUDART, Workload, build_fixtures

MAPS = """\
55d0c0a00000-55d0c0a01000 r--p 00000000 08:01 1234 /tmp/x/cuda_workload
55d0c0a01000-55d0c0a02000 r-xp 00001000 08:01 1234 /tmp/x/cuda_workload
7f10a0000000-7f10a0021000 rw-p 00000000 00:00 0
7f10a1000000-7f10a1010000 r--p 00000000 08:01 99 /usr/local/cuda/lib64/libcudart.so.13
7f10a1010000-7f10a1080000 r-xp 00010000 08:01 99 /usr/local/cuda/lib64/libcudart.so.13
7f10a2000000-7f10a2001000 r-xp 00000000 08:01 77 /usr/lib/x86_64-linux-gnu/libcuda.so.1 (deleted)
7ffd1a000000-7ffd1a021000 rw-p 00000000 00:00 0 [stack]
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return build_fixtures(tmp_path_factory.mktemp("gpu-units"))


def test_parse_maps_keeps_file_mappings_and_strips_deleted():
    maps = parse_maps(MAPS)
    assert [m.path for m in maps] == ["/tmp/x/cuda_workload"] * 2 + ["/usr/local/cuda/lib64/libcudart.so.13"] * 2 + \
        ["/usr/lib/x86_64-linux-gnu/libcuda.so.1"]
    assert (maps[3].start, maps[3].end, maps[3].offset) == (0x7f10a1010000, 0x7f10a1080000, 0x10000)


@pytest.mark.parametrize("path, yes", [
    ("/usr/local/cuda/lib64/libcudart.so.13", True), ("/usr/lib/libcuda.so.1", True),
    ("/usr/lib/libcuda.so.580.65.06", True), ("/x/libcudart.so", True),
    ("/x/libcudnn.so.9", False), ("/x/libcudart_static.a", False), ("/x/libcuda.so.1.bak", False),
])
def test_cuda_library_names(path, yes):
    assert is_cuda_library(path) is yes


def test_real_libcudart_exports_the_runtime_functions_traced():
    names = read_elf(CUDART).function_names()
    runtime = [f.symbol for f in FUNCTIONS if f.library == "cudart"]
    assert set(runtime) <= names
    assert "cuMemAlloc_v2" not in names


def test_fake_driver_exports_the_driver_functions_traced(built):
    names = ElfFile.read(built["libcuda"]).function_names()
    assert {f.symbol for f in FUNCTIONS if f.library == "cuda"} <= names


def test_elf_reader_refuses_what_is_not_elf(tmp_path):
    p = tmp_path / "not-elf"
    p.write_bytes(b"#!/bin/sh\n" * 10)
    with pytest.raises(ElfError):
        ElfFile.read(str(p))


def test_symbol_of_an_address_in_a_running_process(built):
    # the address the process prints is the one cudaLaunchKernel would receive
    nm = subprocess.run(["nm", built["workload"]], capture_output=True, text=True, check=True).stdout
    symbols = {line.split()[2]: int(line.split()[0], 16) for line in nm.splitlines() if len(line.split()) == 3}
    stub_vaddr, main_vaddr = symbols["vector_add_kernel_stub"], symbols["main"]
    with Workload(built["workload"], built["libcuda"]) as w:
        maps = parse_maps(open(f"/proc/{w.pid}/maps").read())
        exe = os.path.realpath(built["workload"])
        base = min(m.start - m.offset for m in maps if m.path == exe)
        resolver = SymbolResolver()
        resolver.remember(w.pid)
        assert resolver.resolve(w.pid, base + stub_vaddr) == "vector_add_kernel_stub"
        assert resolver.resolve(w.pid, base + main_vaddr + 4) == "main"  # inside a function, not at its start
        found = libraries_in_processes({w.pid})
        assert list(found) == [w.pid]
        assert found[w.pid][0] == [built["libcuda"]]
        w.close()
    # remembered maps name addresses after the process is gone
    assert resolver.resolve(w.pid, base + stub_vaddr) == "vector_add_kernel_stub"
    assert SymbolResolver().resolve(w.pid, base + stub_vaddr) is None


def test_process_tree_holds_children():
    child = subprocess.Popen(["sleep", "5"])
    try:
        assert {os.getpid(), child.pid} <= descendants([os.getpid()])
    finally:
        child.kill()
        child.wait()


def test_probe_list_compiles_the_table_with_header_constants():
    _, h = load_header("gpu/gpu.h")
    text = probe_list()
    assert text.count("TRACE(") == len(FUNCTIONS)
    memcpy = BY_SYMBOL["cudaMemcpyAsync"]
    i = function_id(memcpy)
    assert f"TRACE({i}, {h['ARG_MEMCPY_KIND']}, 0, 0, 4, 0)" in text
    sync = BY_SYMBOL["cudaDeviceSynchronize"]
    assert f"TRACE({function_id(sync)}, {h['ARG_PLAIN']}, 0, 0, {h['NO_STREAM_ARG']}, 1)" in text
    assert probe_names(memcpy) == (f"enter_{i}", f"leave_{i}")
    assert by_id(i) is memcpy and by_id(0) is None and by_id(len(FUNCTIONS) + 1) is None


def test_the_table_covers_what_the_issue_names():
    wanted = {"cudaMalloc", "cudaFree", "cudaMallocManaged", "cudaMallocHost", "cudaMemcpy", "cudaMemcpyAsync",
              "cudaLaunchKernel", "cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize",
              "cuMemAlloc_v2", "cuMemFree_v2", "cuMemcpyHtoD_v2", "cuMemcpyDtoH_v2", "cuMemcpyHtoDAsync_v2",
              "cuMemcpyDtoHAsync_v2", "cuLaunchKernel", "cuCtxSynchronize", "cuStreamSynchronize"}
    assert wanted <= set(BY_SYMBOL)


def test_errno_names():
    assert errno_name(-25) == "ENOTTY"
    assert errno_name(-9999) == "9999"
