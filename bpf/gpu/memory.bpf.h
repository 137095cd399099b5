/* Memory accounting: each live allocation (allocations, by process and pointer) and the bytes
 * outstanding per process and memory kind (outstanding: allocated minus freed). */

static __always_inline void add_outstanding(u32 pid, u32 mem, s64 n)
{
    struct outstanding_key key = {.pid = pid, .mem = mem};
    s64 zero = 0;
    s64 *v = outstanding.lookup_or_try_init(&key, &zero);
    if (v)
        *v += n;
}

/* A successful allocation call returns: the pointer it handed out (read from the out-pointer the entry
 * saw in f->arg, then kept in f->arg for the span) is remembered with its size. */
static __always_inline void record_alloc(u32 pid, u32 tid, u32 fn, u32 mem, struct frame *f, u64 now)
{
    u64 ptr = 0;
    if (read_user(&ptr, sizeof(ptr), (void *)f->arg) != 0 || ptr == 0)
        return;
    struct alloc_key key = {.pid = pid, .ptr = ptr};
    struct alloc_value *old = allocations.lookup(&key);
    if (old) {
        /* The address was freed without a traced free (cudaDeviceReset, cuCtxDestroy, a free still
         * returning on another thread): its old size is no longer outstanding. */
        add_outstanding(pid, old->mem, -(s64)old->size);
        stat_add(STAT_GPU_ADDRESS_REUSED, 1);
    }
    struct alloc_value val = {.size = f->size, .ts_ns = now, .tid = tid, .fn = fn, .mem = mem};
    if (allocations.update(&key, &val) != 0) {
        stat_add(STAT_GPU_ALLOC_MAP_FULL, 1);
        return;
    }
    f->arg = ptr;  /* for the span */
    add_outstanding(pid, mem, f->size);
}

/* A successful free call returns: its pointer (f->arg) is forgotten, its size (into f->size, for the
 * span) no longer outstanding. */
static __always_inline void record_free(u32 pid, struct frame *f)
{
    struct alloc_key key = {.pid = pid, .ptr = f->arg};
    struct alloc_value *a = allocations.lookup(&key);
    if (!a)
        return;  /* allocated before the tracer started, or not by a traced function */
    f->size = a->size;
    add_outstanding(pid, a->mem, -(s64)a->size);
    allocations.delete(&key);
}
