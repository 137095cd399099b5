"""The gpu tracer: CUDA runtime/driver calls through uprobes, NVIDIA device ioctls through tracepoints
(see tracer.py).

plans: how it hooks in; cuda_api: the traced functions; cuda_libs: finding CUDA libraries and naming
kernels; figures: what the terminal shows.
"""
from ebpftool.tracers.gpu.plans import PLANS
from ebpftool.tracers.gpu.tracer import (DEFAULT_IOCTL_PREFIX, DEFAULT_SPAN_THRESHOLD_S, GpuOptions, GpuTracer,
                                         errno_name)

__all__ = ["DEFAULT_IOCTL_PREFIX", "DEFAULT_SPAN_THRESHOLD_S", "GpuOptions", "GpuTracer", "PLANS", "errno_name"]
