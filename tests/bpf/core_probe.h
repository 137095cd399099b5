/* Test fixture: the event of tests/bpf/core_probe.bpf.c. */
#define PROBE_TAG_LEN 8

struct probe_event {
    __u32 pid;
    __u32 seq;
    __u64 ts_ns;
    char tag[PROBE_TAG_LEN];
};
