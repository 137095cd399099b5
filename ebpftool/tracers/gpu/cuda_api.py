"""The CUDA functions `ebpftool gpu` traces, and what their arguments mean.

One table drives both sides: bpf/gpu/gpu.bpf.c gets it as the GPU_FUNCTIONS list
(one uprobe/uretprobe pair per entry, the entry's id compiled in), and user
space uses it to name what the kernel maps count. Argument kinds, copy
directions and memory types are the constants of bpf/gpu/gpu.h.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from ebpftool.core.cstruct import load_header

_, H = load_header("gpu/gpu.h")

RUNTIME = "cudart"  # libcudart.so*: the CUDA runtime API
DRIVER = "cuda"     # libcuda.so*: the driver API (the runtime calls it)

# cudaMemcpyKind + 1 (bpf/gpu/gpu.h DIR_*), as the exported attribute values.
DIRECTIONS = {
    H["DIR_HOST_TO_HOST"]: "host_to_host",
    H["DIR_HOST_TO_DEVICE"]: "host_to_device",
    H["DIR_DEVICE_TO_HOST"]: "device_to_host",
    H["DIR_DEVICE_TO_DEVICE"]: "device_to_device",
    H["DIR_DEFAULT"]: "default",
    H["DIR_UNKNOWN"]: "unknown",
}
MEMORY_TYPES = {H["MEM_DEVICE"]: "device", H["MEM_HOST"]: "host_pinned", H["MEM_MANAGED"]: "managed"}


@dataclass(frozen=True)
class CudaFunction:
    symbol: str
    library: str                 # RUNTIME or DRIVER
    kind: int                    # ARG_* of bpf/gpu/gpu.h: which arguments are read
    blocking: bool = False       # the host thread waits for the device: a span above --span-threshold
    direction: int = 0           # DIR_* for copies whose direction the function fixes
    memory: int = 0              # MEM_* an allocation hands out
    stream_arg: int | None = None  # 0-based index of the stream argument
    arguments: str = ""          # the C signature, for the reader of this table and docs/gpu.md


def _f(symbol, library, kind, **kw) -> CudaFunction:
    return CudaFunction(symbol, library, H[kind], **kw)


R, D = RUNTIME, DRIVER
H2D, D2H, D2D, DEFAULT = H["DIR_HOST_TO_DEVICE"], H["DIR_DEVICE_TO_HOST"], H["DIR_DEVICE_TO_DEVICE"], H["DIR_DEFAULT"]
DEV, HOST, MANAGED = H["MEM_DEVICE"], H["MEM_HOST"], H["MEM_MANAGED"]

FUNCTIONS: tuple[CudaFunction, ...] = (
    # --- runtime API ---
    _f("cudaMalloc", R, "ARG_ALLOC", memory=DEV, arguments="(void **devPtr, size_t size)"),
    _f("cudaMallocManaged", R, "ARG_ALLOC", memory=MANAGED, arguments="(void **devPtr, size_t size, unsigned flags)"),
    _f("cudaMallocHost", R, "ARG_ALLOC", memory=HOST, arguments="(void **ptr, size_t size)"),
    _f("cudaHostAlloc", R, "ARG_ALLOC", memory=HOST, arguments="(void **pHost, size_t size, unsigned flags)"),
    _f("cudaFree", R, "ARG_FREE", arguments="(void *devPtr)"),
    _f("cudaFreeHost", R, "ARG_FREE", arguments="(void *ptr)"),
    _f("cudaMemcpy", R, "ARG_MEMCPY_KIND", blocking=True,
       arguments="(void *dst, const void *src, size_t count, cudaMemcpyKind kind)"),
    _f("cudaMemcpyAsync", R, "ARG_MEMCPY_KIND", stream_arg=4,
       arguments="(void *dst, const void *src, size_t count, cudaMemcpyKind kind, cudaStream_t stream)"),
    _f("cudaLaunchKernel", R, "ARG_LAUNCH", stream_arg=7,  # dim3 by value takes two registers each
       arguments="(const void *func, dim3 grid, dim3 block, void **args, size_t sharedMem, cudaStream_t stream)"),
    _f("cudaStreamSynchronize", R, "ARG_PLAIN", blocking=True, stream_arg=0, arguments="(cudaStream_t stream)"),
    _f("cudaDeviceSynchronize", R, "ARG_PLAIN", blocking=True, arguments="(void)"),
    _f("cudaEventSynchronize", R, "ARG_PLAIN", blocking=True, arguments="(cudaEvent_t event)"),
    # stream-ordered allocation (PyTorch's cudaMallocAsync backend, RMM)
    _f("cudaMallocAsync", R, "ARG_ALLOC", memory=DEV, stream_arg=2,
       arguments="(void **devPtr, size_t size, cudaStream_t hStream)"),
    _f("cudaMallocFromPoolAsync", R, "ARG_ALLOC", memory=DEV, stream_arg=3,
       arguments="(void **ptr, size_t size, cudaMemPool_t memPool, cudaStream_t stream)"),
    _f("cudaFreeAsync", R, "ARG_FREE", stream_arg=1, arguments="(void *devPtr, cudaStream_t hStream)"),
    # what programs built with --default-stream per-thread call instead
    _f("cudaMemcpy_ptds", R, "ARG_MEMCPY_KIND", blocking=True,
       arguments="(void *dst, const void *src, size_t count, cudaMemcpyKind kind)"),
    _f("cudaMemcpyAsync_ptsz", R, "ARG_MEMCPY_KIND", stream_arg=4,
       arguments="(void *dst, const void *src, size_t count, cudaMemcpyKind kind, cudaStream_t stream)"),
    _f("cudaLaunchKernel_ptsz", R, "ARG_LAUNCH", stream_arg=7,
       arguments="(const void *func, dim3 grid, dim3 block, void **args, size_t sharedMem, cudaStream_t stream)"),
    _f("cudaStreamSynchronize_ptsz", R, "ARG_PLAIN", blocking=True, stream_arg=0, arguments="(cudaStream_t stream)"),
    # --- driver API ---
    _f("cuMemAlloc_v2", D, "ARG_ALLOC", memory=DEV, arguments="(CUdeviceptr *dptr, size_t bytesize)"),
    _f("cuMemAllocManaged", D, "ARG_ALLOC", memory=MANAGED,
       arguments="(CUdeviceptr *dptr, size_t bytesize, unsigned flags)"),
    _f("cuMemAllocHost_v2", D, "ARG_ALLOC", memory=HOST, arguments="(void **pp, size_t bytesize)"),
    _f("cuMemFree_v2", D, "ARG_FREE", arguments="(CUdeviceptr dptr)"),
    _f("cuMemFreeHost", D, "ARG_FREE", arguments="(void *p)"),
    _f("cuMemcpy", D, "ARG_MEMCPY_FIXED", blocking=True, direction=DEFAULT,
       arguments="(CUdeviceptr dst, CUdeviceptr src, size_t ByteCount)"),
    _f("cuMemcpyHtoD_v2", D, "ARG_MEMCPY_FIXED", blocking=True, direction=H2D,
       arguments="(CUdeviceptr dstDevice, const void *srcHost, size_t ByteCount)"),
    _f("cuMemcpyDtoH_v2", D, "ARG_MEMCPY_FIXED", blocking=True, direction=D2H,
       arguments="(void *dstHost, CUdeviceptr srcDevice, size_t ByteCount)"),
    _f("cuMemcpyDtoD_v2", D, "ARG_MEMCPY_FIXED", direction=D2D,
       arguments="(CUdeviceptr dstDevice, CUdeviceptr srcDevice, size_t ByteCount)"),
    _f("cuMemcpyAsync", D, "ARG_MEMCPY_FIXED", direction=DEFAULT, stream_arg=3,
       arguments="(CUdeviceptr dst, CUdeviceptr src, size_t ByteCount, CUstream hStream)"),
    _f("cuMemcpyHtoDAsync_v2", D, "ARG_MEMCPY_FIXED", direction=H2D, stream_arg=3,
       arguments="(CUdeviceptr dstDevice, const void *srcHost, size_t ByteCount, CUstream hStream)"),
    _f("cuMemcpyDtoHAsync_v2", D, "ARG_MEMCPY_FIXED", direction=D2H, stream_arg=3,
       arguments="(void *dstHost, CUdeviceptr srcDevice, size_t ByteCount, CUstream hStream)"),
    _f("cuLaunchKernel", D, "ARG_LAUNCH", stream_arg=8,
       arguments="(CUfunction f, unsigned gridX, gridY, gridZ, blockX, blockY, blockZ, sharedMem, "
                 "CUstream hStream, void **params, void **extra)"),
    _f("cuCtxSynchronize", D, "ARG_PLAIN", blocking=True, arguments="(void)"),
    _f("cuStreamSynchronize", D, "ARG_PLAIN", blocking=True, stream_arg=0, arguments="(CUstream hStream)"),
    _f("cuEventSynchronize", D, "ARG_PLAIN", blocking=True, arguments="(CUevent hEvent)"),
    _f("cuMemAllocAsync", D, "ARG_ALLOC", memory=DEV, stream_arg=2,
       arguments="(CUdeviceptr *dptr, size_t bytesize, CUstream hStream)"),
    _f("cuMemFreeAsync", D, "ARG_FREE", stream_arg=1, arguments="(CUdeviceptr dptr, CUstream hStream)"),
)

BY_SYMBOL = {f.symbol: f for f in FUNCTIONS}


def function_id(fn: CudaFunction) -> int:
    """The id compiled into the probes (1-based: 0 is never a function)."""
    return FUNCTIONS.index(fn) + 1


def by_id(fn_id: int) -> CudaFunction | None:
    return FUNCTIONS[fn_id - 1] if 1 <= fn_id <= len(FUNCTIONS) else None


def probe_list(functions: Sequence[CudaFunction] = FUNCTIONS) -> str:
    """The GPU_FUNCTIONS define: TRACE(id, kind, dir, mem, stream_arg, blocking) per function."""
    no_stream = H["NO_STREAM_ARG"]
    return " ".join(
        f"TRACE({function_id(f)}, {f.kind}, {f.direction}, {f.memory}, "
        f"{no_stream if f.stream_arg is None else f.stream_arg}, {int(f.blocking)})"
        for f in functions
    )


def probe_names(fn: CudaFunction) -> tuple[str, str]:
    """(uprobe, uretprobe) program names in bpf/gpu/gpu.bpf.c."""
    i = function_id(fn)
    return f"enter_{i}", f"leave_{i}"
