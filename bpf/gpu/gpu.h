/* Layouts shared by bpf/gpu/ and ebpftool/tracers/gpu/ (parsed by
 * ebpftool.core.cstruct): map keys, map values and ring-buffer events.
 * The table of traced functions lives in ebpftool/tracers/gpu/cuda_api.py; it is
 * compiled in as the GPU_FUNCTIONS list of TRACE(...) entries. */

/* How a traced function's arguments are read (cuda_api.py chooses one per function). */
#define ARG_PLAIN 0         /* nothing beyond the stream handle, if any */
#define ARG_ALLOC 1         /* (void **out, size_t size, ...): *out read at return */
#define ARG_FREE 2          /* (void *ptr, ...) */
#define ARG_MEMCPY_KIND 3   /* (dst, src, size_t count, cudaMemcpyKind kind, ...) */
#define ARG_MEMCPY_FIXED 4  /* (dst, src, size_t count, ...): direction fixed by the function */
#define ARG_LAUNCH 5        /* (const void *func or CUfunction f, ...) */

/* Copy directions: cudaMemcpyKind + 1, so 0 means "not a copy". */
#define DIR_NONE 0
#define DIR_HOST_TO_HOST 1
#define DIR_HOST_TO_DEVICE 2
#define DIR_DEVICE_TO_HOST 3
#define DIR_DEVICE_TO_DEVICE 4
#define DIR_DEFAULT 5       /* cudaMemcpyDefault / cuMemcpy: inferred by the driver from unified addresses */
#define DIR_UNKNOWN 6       /* a kind value outside cudaMemcpyKind */

/* What an allocation function hands out. */
#define MEM_NONE 0
#define MEM_DEVICE 1
#define MEM_HOST 2          /* page-locked host memory */
#define MEM_MANAGED 3

#define NO_STREAM_ARG 255   /* the function takes no stream */
#define MAX_NESTING 4       /* traced calls in flight on one thread that are remembered */
#define IOCTL_DEVICE_LEN 16 /* bytes of the device name kept after the path prefix */
#define IOCTL_PATH_MAX 64   /* bytes of an opened path compared with the prefix */

/* Tracer-specific slots of the shared stats array (STAT_TRACER_BASE = 2). */
#define STAT_GPU_UNMATCHED_RETURN 2  /* a return whose entry was not the innermost in flight */
#define STAT_GPU_TOO_DEEP 3          /* nesting deeper than MAX_NESTING: call not measured */
#define STAT_GPU_ALLOC_MAP_FULL 4    /* an allocation not remembered: the allocation map was full */
#define STAT_GPU_HIST_MAP_FULL 5     /* a call not in the duration histograms: their map was full */
#define STAT_GPU_ADDRESS_REUSED 6    /* an allocation at an address still remembered (freed untraced) */

/* calls / call_hist / call_bytes maps: one series per process, function,
 * return code, nesting and copy direction. */
struct call_key {
    __u32 pid;
    __u16 fn;
    __u8 nested;
    __u8 dir;
    __s32 rc;
    __u32 pad;
};

/* launches map: kernel launches per process and kernel (host stub address or CUfunction). */
struct launch_key {
    __u32 pid;
    __u16 fn;
    __u16 pad;
    __s32 rc;
    __u32 pad2;
    __u64 func;
};

/* allocations map: one entry per live allocation, removed by a successful free. */
struct alloc_key {
    __u32 pid;
    __u32 pad;
    __u64 ptr;
};

struct alloc_value {
    __u64 size;
    __u64 ts_ns;
    __u32 tid;
    __u16 fn;
    __u8 mem;
    __u8 pad;
};

/* outstanding map (per CPU, summed): bytes allocated minus bytes freed. */
struct outstanding_key {
    __u32 pid;
    __u32 mem;
};

/* ioctl series: per process, device (name after the path prefix), request number and errno. */
struct ioctl_key {
    __u32 pid;
    __u32 request;
    __s32 err;      /* 0, or the -errno the ioctl returned */
    __u32 pad;
    char device[IOCTL_DEVICE_LEN];
};

/* fd -> device name, for the fds of this process that name a watched device. */
struct fd_key {
    __u32 pid;
    __s32 fd;
};

struct fd_device {
    char device[IOCTL_DEVICE_LEN];
};

/* process_names map: the command name of each process seen calling, taken at its
 * first traced call (so a process that exits before the next read is still named). */
struct process_name {
    char comm[16];
};

/* A span: a blocking call above the threshold, or a sampled call. */
struct gpu_call_event {
    __u64 start_ns;
    __u64 end_ns;
    __u64 bytes;
    __u64 stream;
    __u64 ptr;      /* allocation: the pointer handed out; free: the pointer freed; launch: the kernel */
    __u32 pid;
    __u32 tid;
    __s32 rc;
    __u16 fn;
    __u8 dir;
    __u8 nested;
    char comm[16];
};
