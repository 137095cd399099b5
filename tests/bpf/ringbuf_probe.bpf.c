/* Test fixture for ebpftool.core.ringbuf: one record per getppid() of TARGET_PID into a one-page ring
 * buffer, record i RECORD_SIZE(i) bytes long (so records wrap around the buffer's end at every offset),
 * each byte after the first four (i) being (i + offset) & 0xff; every DISCARD_EVERY-th record is
 * reserved and discarded instead. */
#define SCRATCH 512
#define RECORD_SIZE(i) (8 + ((i) * 37) % 300)
#define DISCARD_EVERY 7

BPF_RINGBUF_OUTPUT(records, 1);
BPF_ARRAY(seq, u32, 1);
BPF_ARRAY(refused, u64, 1);  /* records the full buffer refused (the test reads after each call: none) */
struct scratch_t {
    u8 b[SCRATCH];
};
BPF_PERCPU_ARRAY(scratch, struct scratch_t, 1);

TRACEPOINT_PROBE(syscalls, sys_enter_getppid)
{
    if ((bpf_get_current_pid_tgid() >> 32) != TARGET_PID)
        return 0;
    u32 zero = 0;
    u32 *s = seq.lookup(&zero);
    struct scratch_t *sc = scratch.lookup(&zero);
    if (!s || !sc)
        return 0;
    u8 *buf = sc->b;
    u32 i = (*s)++;
    if (i % DISCARD_EVERY == DISCARD_EVERY - 1) {
        u32 *r = records.ringbuf_reserve(sizeof(u32));
        if (r) {
            *r = i;
            records.ringbuf_discard(r, 0);
        }
        return 0;
    }
    u64 size = RECORD_SIZE(i);
    *(u32 *)buf = i;
    for (u32 k = 4; k < SCRATCH; k++)
        buf[k] = (u8)(i + k);
    asm volatile("" : "+r"(size));  /* the bound below stays in the program for the verifier */
    size &= SCRATCH - 1;  /* RECORD_SIZE is below SCRATCH */
    if (size < 8)
        return 0;
    if (records.ringbuf_output(buf, size, 0) != 0) {
        u64 *f = refused.lookup(&zero);
        if (f)
            __sync_fetch_and_add(f, 1);
    }
    return 0;
}
