/* ebpftool gpu: CUDA runtime/driver calls (uprobes) and NVIDIA device ioctls
 * (syscall tracepoints), aggregated in maps.
 *
 * Each traced CUDA function gets a uprobe at its entry and a uretprobe at its return: per thread, a
 * stack of calls in flight (a runtime call calls the driver on the same thread) gives each return its
 * entry. A return adds the call's duration to its series' histogram and, for the outermost call only,
 * its bytes, allocations, frees and kernel launches; a blocking call above the threshold, or a sampled
 * one, is also sent to user space as a span (span budget). ioctls on the device nodes are timed from
 * their syscall's entry to its exit, on fds followed from the openat() that returned them.
 *
 * The parts (joined by the loader in this order):
 *   maps.bpf.h         the maps: calls in flight per thread, call and ioctl series, allocations, spans
 *   pids.bpf.h         which processes are traced: the --pid filter, extended to children at fork
 *   memory.bpf.h       memory accounting: live allocations and bytes outstanding per process and kind
 *   spans.bpf.h        which calls become spans, and sending one
 *   calls.bpf.h        a traced call's entry and return: arguments, nesting, durations, counts
 *   hooks_cuda.bpf.h   the uprobes: an entry and a return program per traced function (GPU_FUNCTIONS)
 *   hooks_ioctl.bpf.h  the syscall tracepoints: the device nodes' fds and their ioctls
 *
 * Compile-time parameters (from ebpftool/tracers/gpu/tracer.py):
 *   GPU_FUNCTIONS      list of TRACE(id, kind, dir, mem, stream_arg, blocking), one per
 *                      traced function (the table in ebpftool/tracers/gpu/cuda_api.py);
 *                      each gives a uprobe enter_<id> and a uretprobe leave_<id>
 *   GPU_CALL_BUCKET(v) bucket index of a call or ioctl duration (semconv GPU_CALL_DURATION_BUCKETS)
 *   FILTER_PIDS        1: only pids in watched_pids (and their children) are traced
 *   SPAN_THRESHOLD_NS  a blocking call at least this long becomes a span
 *   SAMPLE_EVERY       N > 0: also one call in N (per CPU) becomes a span
 *   IOCTL_PREFIX, IOCTL_PREFIX_LEN  device path prefix whose fds are watched
 *   RINGBUF_PAGES      size of the span ring buffer
 */
#include <uapi/linux/ptrace.h>
#include "gpu.h"

#ifndef FILTER_PIDS
#define FILTER_PIDS 0
#endif
#ifndef SPAN_THRESHOLD_NS
#define SPAN_THRESHOLD_NS 1000000
#endif
#ifndef SAMPLE_EVERY
#define SAMPLE_EVERY 0
#endif
#ifndef IOCTL_PREFIX
#define IOCTL_PREFIX "/dev/nvidia"
#define IOCTL_PREFIX_LEN 11
#endif
#ifndef RINGBUF_PAGES
#define RINGBUF_PAGES 64
#endif
#ifndef GPU_FUNCTIONS
#define GPU_FUNCTIONS
#endif

/* The parts, each a file of this folder. The loader joins them into one text (BCC rewrites map calls
 * only in its main text), with #line markers so that errors name the right file and line. */
#include "maps.bpf.h"
#include "pids.bpf.h"
#include "memory.bpf.h"
#include "spans.bpf.h"
#include "calls.bpf.h"
#include "hooks_cuda.bpf.h"
#include "hooks_ioctl.bpf.h"
