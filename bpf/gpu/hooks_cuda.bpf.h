/* The uprobes: for each traced function (GPU_FUNCTIONS, from ebpftool/tracers/gpu/cuda_api.py) an entry
 * program enter_<id> and a return program leave_<id>, which user space attaches to every CUDA library
 * that exports the function. */

#define TRACE(id, kind, dir, mem, stream_arg, blocking)                                     \
    int enter_##id(struct pt_regs *ctx) { return on_enter(ctx, id, kind, dir, stream_arg); } \
    int leave_##id(struct pt_regs *ctx) { return on_leave(ctx, id, kind, mem, blocking); }
GPU_FUNCTIONS
