/* The maps every way in shares: the response scratch, captures, metric series and histograms, the ring
 * buffer. Each way in (hooks_socket.bpf.h, hooks_syscall.bpf.h) adds its own connection table. */

struct user_iov {
    u64 base;
    u64 len;
};

/* The buffer of iovec i of a vectored read or write (iov_array: in user memory, or the kernel's copy) and
 * *len, at most `remaining` of its bytes; 0, *len untouched, where it cannot be read. */
static __always_inline u64 nth_iovec(u64 iov_array, int iov_in_kernel, u32 i, u64 remaining, u64 *len)
{
    struct user_iov iov = {};
    void *at = (void *)(iov_array + (u64)i * sizeof(iov));
    long err = iov_in_kernel ? bpf_probe_read_kernel(&iov, sizeof(iov), at) : read_user(&iov, sizeof(iov), at);
    if (err != 0)
        return 0;
    *len = iov.len < remaining ? iov.len : remaining;
    return iov.base;
}

/* The scanned write lies at data[SCAN_LEAD]: before it, zeros and the '\n' that makes its first byte a
 * line start, room for the usage check's look-back; after it, zeros and room for the last loads. */
#define SCAN_LEAD 16
#define RARE_WORDS 8  /* words of one buffer that may hold a mark or a count, looked at closer (the first ones) */
#define COUNT_WORDS 8   /* the last words of one buffer where a count may begin, looked at closer */
#define COUNT_RING 16   /* (their ring: the slot after the last one is written for every other noted word) */
#define NAMED_WORDS 16  /* words of one buffer where a named event's line may begin or end (the first ones) */
struct scratch {
    u8 data[SCAN_LEAD + SSE_SCAN_MAX + 32];
    u64 end;                  /* one past the buffer's last byte in data */
    u64 events;               /* events in the buffer */
    u64 named;                /* find_names(): bit i, event i (of the first 64) has a known `event:` name */
    u64 named_token;          /* ... that ends in `delta` (not `message_delta`): a token */
    u32 counts;               /* words where a count may begin, noted in count_word (a ring) */
    u16 count_word[COUNT_RING];
    u32 names;                /* words where a named event's line may begin or end (the first NAMED_WORDS) */
    u16 name_word[NAMED_WORDS * 2];    /* (slots from NAMED_WORDS on: where later ones are written, not kept) */
    u16 name_events[NAMED_WORDS * 2];  /* events begun before that word */
    u64 usage_at;             /* where the last output-token count seen begins (0: none) */
    u32 rare;                 /* words found that may hold a mark or a count (the first RARE_WORDS are kept) */
    u16 rare_word[RARE_WORDS];
    u16 rare_events[RARE_WORDS];  /* events begun before that word: its marks are the last one's */
    u64 found;                /* read_head(): where a loop found what it looked for (0: nowhere) */
    u64 limit;                /* read_head(): the bound of its loop */
};

BPF_HASH(watched_pids, u32, u8, 4096);
BPF_TABLE("lru_hash", u64, struct last_write, last_writes, 4096);
BPF_PERCPU_ARRAY(scratch_buf, struct scratch, 1);
BPF_ARRAY(last_write_init, struct last_write, 1);
BPF_ARRAY(zero_hist, struct hist_value, 1);
/* http.server.request.duration: one series per struct req_key, in a table of SERIES_SLOTS slots
 * (open addressing, SERIES_PROBES slots from the home slot, a hash of the key) whose index is also
 * the series' index in the per-CPU histograms. Every request ends here: inlined array lookups find its
 * series where a hash map took a helper call (~43 ns per request on this benchmark's CPU). A CPU
 * claims a free slot by compare-and-swap; two CPUs that meet the same new key at once may fill two
 * slots with it, and user space adds up slots with the same key. The generative-AI maps below are
 * hash maps: their requests are few and each makes many writes. */
#define SERIES_BITS 12
#define SERIES_SLOTS (1 << SERIES_BITS)
#define SERIES_PROBES 8
BPF_ARRAY(series_keys, struct req_key, SERIES_SLOTS);
BPF_PERCPU_ARRAY(http_hist, struct hist_value, SERIES_SLOTS);
BPF_PERCPU_HASH(genai_hist, struct req_key, struct hist_value, 1024);
BPF_PERCPU_HASH(ttft_hist, struct req_key, struct hist_value, 1024);
BPF_PERCPU_HASH(tpot_hist, struct req_key, struct hist_value, 1024);
BPF_PERCPU_HASH(output_tokens, struct req_key, u64, 1024);
BPF_PERCPU_HASH(unparsed, u16, u64, 1024);                /* per port */
/* per port: TLS connections that carried application data but whose plaintext never came (no TLS library
 * with ebpftool's uprobes met them: Go's crypto/tls, BoringSSL, rustls, a libssl not found) */
BPF_PERCPU_HASH(tls_unknown, u16, u64, 1024);
BPF_PERCPU_HASH(accepted, u16, u64, 1024);                /* per port */
BPF_RINGBUF_OUTPUT(events, RINGBUF_PAGES);

/* The connection found by key k, or NULL (per way in, below). */
static __always_inline struct conn_state *find_conn(u64 k);
