/* The gpu tracer's maps: the calls in flight on each thread, the call and ioctl series user space reads
 * each interval, live allocations, the device nodes' fds, and the span ring buffer. */

/* One traced call in flight: what the return needs from the entry. */
struct frame {
    u64 start_ns;
    u64 arg;      /* ALLOC: address of the out-pointer; FREE: the pointer; LAUNCH: the kernel */
    u64 size;
    u64 stream;
    u32 fn;
    u32 dir;
};

/* Calls in flight on one thread. A runtime call (cudaMalloc) calls the driver
 * (cuMemAlloc_v2) on the same thread: the inner call sees depth > 0, is
 * counted as nested and left out of the byte, allocation and launch totals. */
struct thread_state {
    u32 depth;
    u32 pid;      /* a reused tid from another process starts afresh */
    struct frame frames[MAX_NESTING];
};

/* An ioctl in flight on one thread: its series and when it began. */
struct ioctl_inflight {
    u64 start_ns;
    struct ioctl_key key;
};

BPF_HASH(watched_pids, u32, u8, 4096);                           /* FILTER_PIDS: the processes traced */

/* CUDA calls */
BPF_TABLE("lru_hash", u32, struct thread_state, threads, 16384);  /* thread id -> its calls in flight */
BPF_ARRAY(zero_thread, struct thread_state, 1);                   /* a zeroed entry to start a thread's from */
BPF_ARRAY(zero_hist, struct hist_value, 1);                       /* a zeroed entry to start a series' from */
BPF_PERCPU_HASH(call_hist, struct call_key, struct hist_value, 16384);
BPF_PERCPU_HASH(call_bytes, struct call_key, u64, 16384);
BPF_PERCPU_HASH(launches, struct launch_key, u64, 16384);
BPF_HASH(allocations, struct alloc_key, struct alloc_value, 262144);
BPF_PERCPU_HASH(outstanding, struct outstanding_key, s64, 4096);
BPF_PERCPU_ARRAY(sample_counter, u64, 1);                         /* SAMPLE_EVERY: calls returned, per CPU */
BPF_HASH(process_names, u32, struct process_name, 16384);
BPF_RINGBUF_OUTPUT(gpu_events, RINGBUF_PAGES);                    /* spans */

/* ioctls on the device nodes */
BPF_HASH(open_pending, u32, struct fd_device, 1024);              /* thread id -> the device its openat() opens */
BPF_HASH(device_fds, struct fd_key, struct fd_device, 16384);
BPF_HASH(ioctl_start, u32, struct ioctl_inflight, 4096);          /* thread id -> its ioctl in flight */
BPF_PERCPU_HASH(ioctl_hist, struct ioctl_key, struct hist_value, 4096);
