/* ebpftool inference: HTTP/1.x requests served on watched sockets, measured
 * from tracepoints, aggregated in maps.
 *
 * Two ways in (IO_HOOKS_SOCK), one state machine:
 *  - socket hooks (default where the kernel has them): raw tracepoints
 *    sock_recv_length / sock_send_length fire once per socket read or write,
 *    after it moved its bytes, with the socket's address; a connection is
 *    watched from its TCP handshake on a watched port (sock:inet_sock_set_state),
 *    and the syscall's buffer is found in the task's saved registers. An
 *    unwatched socket costs one inlined array lookup (a counting filter in
 *    front of conns); other syscalls cost nothing.
 *  - syscall hooks (fallback): enter/exit tracepoints of the read, write and
 *    accept syscalls, a connection keyed by (pid, fd) from its accept() on a
 *    listening socket in the listeners map (filled by user space from /proc).
 * Connections open before the tracer are found at their next read: from /proc
 * by user space (syscall hooks), or by the tcp_rcv_space_adjust tracepoint,
 * attached only while such connections exist (socket hooks).
 * Per connection, a state machine follows reads and writes:
 *   - a read when no request is open, or after its response began, starts a
 *     request (and finishes the previous one);
 *   - a write starting with a status line ("HTTP/1.x NNN") starts the response;
 *     one while a response is already under way is a pipelined request's;
 *   - writes carrying `data:` events (Server-Sent Events) are tokens;
 *   - the server's close finishes the request in progress.
 * A finished request goes into histograms (duration; for generative-AI requests
 * time to first token and time per output token) whatever the span budget; a
 * sampled one also goes to user space with bounded captures of its bytes.
 *
 * Compile-time parameters (from ebpftool/tracers/inference.py):
 *   IO_HOOKS_SOCK  1: socket hooks (x86-64 syscall registers); 0: syscall hooks
 *   SEED_CONNECTIONS 1: attach the tcp_rcv_space_adjust program (socket hooks)
 *   ARRIVAL_HOOK   1: a request begins when its first byte arrives (sock:sk_data_ready; socket hooks)
 *   SEND_HOOK_BTF  1: writes seen on the tcp_sendmsg_locked BTF tracepoint, not sock_send_length (socket
 *                  hooks; with MSG_ITER_*_OFF, SKB_LEN_OFF, SK_WMEM_QUEUED_OFF, SK_SNDBUF_OFF, ITER_*_TYPE)
 *   RECV_HOOK_BTF  1: reads seen on the sock_recv_length BTF tracepoint, timed by TCP's clock of the socket
 *                  (socket hooks; with TCP_SOCK_BTF_ID, TCP_CLOCK_CACHE_OFF, KFUNC_RDONLY_CAST)
 *   FILTER_PORTS   1: only connections accepted on listeners in the listeners map (syscall hooks;
 *                  the socket hooks always take the ports from watched_ports)
 *   FILTER_PIDS    1: only processes in watched_pids
 *   CAPTURE_BYTES  bytes captured per part (<= CAPTURE_MAX)
 *   MAX_CONNS, CONN_TABLE_BITS  connections followed at once (1 << CONN_TABLE_BITS)
 *   RINGBUF_PAGES  size of the event ring buffer
 *   HTTP_BUCKET(v), GENAI_DURATION_BUCKET(v), TTFT_BUCKET(v), TPOT_BUCKET(v)
 */
#include <uapi/linux/ptrace.h>
#include "inference.h"

#ifndef IO_HOOKS_SOCK
#define IO_HOOKS_SOCK 0
#endif
#ifndef SEED_CONNECTIONS
#define SEED_CONNECTIONS 0
#endif
#ifndef ARRIVAL_HOOK
#define ARRIVAL_HOOK 0
#endif
#ifndef SEND_HOOK_BTF
#define SEND_HOOK_BTF 0
#endif
#ifndef RECV_HOOK_BTF
#define RECV_HOOK_BTF 0
#endif
#ifndef FILTER_PORTS
#define FILTER_PORTS 0
#endif
#ifndef FILTER_PIDS
#define FILTER_PIDS 0
#endif
#ifndef CAPTURE_BYTES
#define CAPTURE_BYTES 512
#endif
#ifndef RINGBUF_PAGES
#define RINGBUF_PAGES 256
#endif
#ifndef MAX_CONNS
#define MAX_CONNS 65536  /* 1 << CONN_TABLE_BITS: the socket hooks' connection table is indexed by a hash's bits */
#define CONN_TABLE_BITS 16
#endif

/* How the buffer of a read or write syscall is found at its exit. */
#define BUF_PLAIN 0   /* read/write/recvfrom/sendto: a pointer */
#define BUF_IOV 1     /* readv/writev: the first struct iovec */
#define BUF_MSG 2     /* recvmsg/sendmsg: the first iovec of a struct user_msghdr */
#define BUF_NONE 3    /* sendfile: no user bytes */

struct io_args {
    u64 ptr;
    u64 ts;       /* syscall entry */
    s32 fd;
    u16 how;
    u8 is_write;
    u8 active;    /* a read or write on a watched fd is in flight on this thread */
};

struct accept_args {
    u64 sockaddr;
    u32 lfd;
    u16 port;
    u16 pad;
};

struct user_iov {
    u64 base;
    u64 len;
};

/* The scanned write lies at data[SCAN_LEAD]: before it, zeros and the '\n' that makes its first byte a
 * line start, room for the usage check's look-back; after it, zeros and room for the last loads. */
#define SCAN_LEAD 16
#define RARE_WORDS 8  /* words of one buffer that may hold a mark or a count, looked at closer (the first ones) */
struct scratch {
    u8 data[SCAN_LEAD + SSE_SCAN_MAX + 32];
    u64 end;                  /* one past the buffer's last byte in data */
    u64 events;               /* events in the buffer */
    u64 usage_at;             /* where the last output-token count seen begins (0: none) */
    u32 rare;                 /* words found that may hold a mark or a count (the first RARE_WORDS are kept) */
    u16 rare_word[RARE_WORDS];
    u16 rare_events[RARE_WORDS];  /* events begun before that word: its marks are the last one's */
    u64 found;                /* read_head(): where a loop found what it looked for (0: nowhere) */
    u64 limit;                /* read_head(): the bound of its loop */
};

BPF_HASH(watched_pids, u32, u8, 4096);
#if IO_HOOKS_SOCK
/* Socket hooks: a table indexed by a hash of the socket's address (open
 * addressing, CONN_PROBES slots from the home slot), not a hash map: every
 * read and write of a watched socket finds its state with inlined array
 * lookups instead of a hash-map call (~37 ns, and each request makes four).
 * conn_used has a bit per occupied slot, for user space's idle scan. */
BPF_ARRAY(conns, struct conn_state, MAX_CONNS);
BPF_ARRAY(conn_used, u64, MAX_CONNS / 64);
#else
BPF_TABLE("lru_hash", u64, struct conn_state, conns, MAX_CONNS);
#endif
BPF_TABLE("lru_hash", u64, struct last_write, last_writes, 4096);
#if IO_HOOKS_SOCK
BPF_HASH(watched_ports, u16, u8, 4096);                    /* local ports whose connections are watched */
#else
BPF_HASH(listeners, struct conn_key, u16, 4096);          /* watched listening fds -> port */
BPF_HASH(accepting, u32, struct accept_args, 4096);       /* per thread, accept() in flight */
/* Per thread: the read or write on a watched fd in flight. Task storage, not a
 * hash keyed by thread id: the exit of every syscall in the system looks here,
 * and a task-storage miss costs a fraction of a hash lookup. */
BPF_TASK_STORAGE(inflight, struct io_args);
#endif
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
BPF_PERCPU_HASH(accepted, u16, u64, 1024);                /* per port */
BPF_RINGBUF_OUTPUT(events, RINGBUF_PAGES);

/* The connection found by key k, or NULL (per way in, below). */
static __always_inline struct conn_state *find_conn(u64 k);

/* Syscall hooks: a connection is a file descriptor of a process. */
static __always_inline u64 current_key(s32 fd)
{
    return (bpf_get_current_pid_tgid() & 0xffffffff00000000ULL) | (u32)fd;
}

/* ---- classification ------------------------------------------------------ */

/* Little-endian words built from characters, to compare up to 8 bytes at once
 * (byte loops over many prefixes make the verifier's job explode). */
#define C(x, i) ((u64)(u8)(x) << (8 * (i)))
#define W2(a, b) (C(a, 0) | C(b, 1))
#define W3(a, b, c) (W2(a, b) | C(c, 2))
#define W4(a, b, c, d) (W3(a, b, c) | C(d, 3))
#define W5(a, b, c, d, e) (W4(a, b, c, d) | C(e, 4))
#define W6(a, b, c, d, e, f) (W5(a, b, c, d, e) | C(f, 5))
#define W7(a, b, c, d, e, f, g) (W6(a, b, c, d, e, f) | C(g, 6))
#define W8(a, b, c, d, e, f, g, h) (W7(a, b, c, d, e, f, g) | C(h, 7))
#define LOW(w, n) ((w) & ((n) == 8 ? ~0ULL : ((1ULL << (8 * (n))) - 1)))

/* Method from the request line's first 8 bytes; *path_off is where the path begins. */
static __always_inline u8 parse_method(u64 h, int len, int *path_off)
{
    *path_off = 0;
    if (len < 5)
        return METHOD_OTHER;
    if (LOW(h, 4) == W4('G', 'E', 'T', ' ')) { *path_off = 4; return METHOD_GET; }
    if (LOW(h, 5) == W5('P', 'O', 'S', 'T', ' ')) { *path_off = 5; return METHOD_POST; }
    if (LOW(h, 5) == W5('H', 'E', 'A', 'D', ' ')) { *path_off = 5; return METHOD_HEAD; }
    if (LOW(h, 4) == W4('P', 'U', 'T', ' ')) { *path_off = 4; return METHOD_PUT; }
    if (LOW(h, 7) == W7('D', 'E', 'L', 'E', 'T', 'E', ' ')) { *path_off = 7; return METHOD_DELETE; }
    if (h == W8('O', 'P', 'T', 'I', 'O', 'N', 'S', ' ')) { *path_off = 8; return METHOD_OPTIONS; }
    if (LOW(h, 6) == W6('P', 'A', 'T', 'C', 'H', ' ')) { *path_off = 6; return METHOD_PATCH; }
    if (h == W8('C', 'O', 'N', 'N', 'E', 'C', 'T', ' ')) { *path_off = 8; return METHOD_CONNECT; }
    if (LOW(h, 6) == W6('T', 'R', 'A', 'C', 'E', ' ')) { *path_off = 6; return METHOD_TRACE; }
    return METHOD_OTHER;
}

#define PATH_WORDS 6

/* The path's first bytes as far as the request line's first 8 bytes hold them
 * (3 after POST; methods longer than POST always read it): 0 when classify_path
 * cannot match, so that most requests skip reading the path. */
static __always_inline int maybe_gen_ai_path(u64 p)
{
    u64 w = LOW(p, 3);
    return w == W3('/', 'v', '1') || w == W3('/', 'v', '2') || w == W3('/', 'g', 'e') || w == W3('/', 'c', 'o') ||
           w == W3('/', 'a', 'p');
}

/* Generative-AI operation from the path's first bytes (the endpoints of
 * OpenAI-compatible servers, TGI, Ollama, llama.cpp, Triton's generate). */
static __always_inline u8 classify_path(const u64 *p, int n)
{
    u64 w0 = p[0], w1 = p[1], w2 = p[2];
    if (n >= 20 && w0 == W8('/', 'v', '1', '/', 'c', 'h', 'a', 't') && w1 == W8('/', 'c', 'o', 'm', 'p', 'l', 'e', 't') &&
        LOW(w2, 4) == W4('i', 'o', 'n', 's'))
        return OP_CHAT;
    if (n >= 15 && w0 == W8('/', 'v', '1', '/', 'c', 'o', 'm', 'p') && LOW(w1, 7) == W7('l', 'e', 't', 'i', 'o', 'n', 's'))
        return OP_TEXT_COMPLETION;
    if (n >= 14 && w0 == W8('/', 'v', '1', '/', 'e', 'm', 'b', 'e') && LOW(w1, 6) == W6('d', 'd', 'i', 'n', 'g', 's'))
        return OP_EMBEDDINGS;
    if (n >= 9 && w0 == W8('/', 'g', 'e', 'n', 'e', 'r', 'a', 't') && LOW(w1, 1) == 'e')
        return OP_TEXT_COMPLETION;  /* TGI /generate, /generate_stream */
    if (n >= 11 && w0 == W8('/', 'c', 'o', 'm', 'p', 'l', 'e', 't') && LOW(w1, 3) == W3('i', 'o', 'n'))
        return OP_TEXT_COMPLETION;  /* llama.cpp /completion */
    if (n >= 9 && w0 == W8('/', 'a', 'p', 'i', '/', 'c', 'h', 'a') && LOW(w1, 1) == 't')
        return OP_CHAT | OP_NDJSON;             /* Ollama */
    if (n >= 13 && w0 == W8('/', 'a', 'p', 'i', '/', 'g', 'e', 'n') && LOW(w1, 5) == W5('e', 'r', 'a', 't', 'e'))
        return OP_TEXT_COMPLETION | OP_NDJSON;
    if (n >= 10 && w0 == W8('/', 'a', 'p', 'i', '/', 'e', 'm', 'b') && LOW(w1, 2) == W2('e', 'd'))
        return OP_EMBEDDINGS;
    if (n >= 11 && w0 == W8('/', 'v', '2', '/', 'm', 'o', 'd', 'e') && LOW(w1, 3) == W3('l', 's', '/')) {
        /* Triton: /v2/models/<name>[/versions/<v>]/generate[_stream] */
        const u8 *b = (const u8 *)p;
        for (int i = 11; i < PATH_WORDS * 8 - 4; i++) {
            if (i + 4 > n)
                break;
            if (b[i] == '/' && b[i + 1] == 'g' && b[i + 2] == 'e' && b[i + 3] == 'n')
                return OP_TEXT_COMPLETION;
        }
    }
    return OP_NONE;
}

/* 1 when v == 0, 0 otherwise, without a branch: BPF has no set-on-condition
 * instruction, so a compare becomes a jump, and every jump in a long loop is
 * a state the verifier must keep. The barrier stops clang from turning the
 * arithmetic back into a compare. */
static __always_inline u64 is_zero(u64 v)
{
    u64 t = v | -v;
    asm volatile("" : "+r"(t));
    t = (t >> 63) ^ 1;
    asm volatile("" : "+r"(t));  /* nor may clang know it is 0 or 1 (it would turn masks into branches) */
    return t;
}

/* SWAR: the high bit of each byte of w that is 0 is set (and maybe that of a 0x01 byte above a 0;
 * every candidate is checked exactly afterwards). */
#define ZERO_BYTES(w) (((w) - 0x0101010101010101ULL) & ~(w) & 0x8080808080808080ULL)
#define EVERY_BYTE(c) (0x0101010101010101ULL * (u8)(c))

/* n at most max, bounded where the verifier can see it (clang may otherwise fold the bound into a form
 * the verifier cannot follow). */
static __always_inline u64 bounded(u64 n, u64 max)
{
    if (n > max)
        n = max;
    asm volatile("" : "+r"(n));
    if (n > max)
        n = max;
    return n;
}

/* The number (decimal, at most 10 digits, after an optional space) at data[at], if it ends inside the
 * buffer (before end); *found says whether there was one. */
static __always_inline u32 stated_number(struct scratch *s, u64 at, u64 end, u32 *found)
{
    *found = 0;
    if (at == 0 || at > SCAN_LEAD + SSE_SCAN_MAX)
        return 0;
    if (s->data[at] == ' ')
        at++;
    u64 v = 0;
    u32 digits = 0;
#pragma unroll
    for (int i = 0; i < 10; i++) {
        u8 ch = s->data[at + i];
        if (ch < '0' || ch > '9')
            break;
        v = v * 10 + (ch - '0');
        digits++;
    }
    if (digits == 0 || at + digits >= end)
        return 0;  /* no number, or one the buffer may have cut */
    *found = 1;
    return v > 0xffffffffULL ? 0xffffffffU : (u32)v;
}

/* Response bytes are scanned in two passes, each its own program (reached by tail calls) so that the
 * verifier walks each loop once:
 *  1. find_events() reads the buffer's first SSE_SCAN_MAX bytes into the scratch map and finds the
 *     events: `data:` lines (at the buffer's start or after a '\n') other than `data: [DONE]`, and with
 *     ndjson JSON objects at a line start (Ollama's API). It notes the words that may hold a mark or a
 *     count (rare in token events).
 *  2. find_marks() looks closer at those words. An event is a token unless it shows a mark of a chunk
 *     that carries no output text: `"content":""`, `"text":""`, `"response":""` (the role-only first
 *     chunk of OpenAI-style streams; Ollama's final object), `"delta":{}` (a finish-only chunk),
 *     `"choices":[]` (a usage-only chunk), `"special":true` (TGI's special tokens), `"done":true`
 *     (Ollama's final object). A mark belongs to the last event begun before its word: an event's first
 *     mark lies at least 9 bytes after its line start, so never in the word of its line start. The
 *     output-token count is the last `"completion_tokens":N` (OpenAI usage), `"output_tokens":N`,
 *     `"generated_tokens":N` (TGI) or `"eval_count":N` (Ollama) seen.
 * The passes go 8 bytes at a time and look closer only at words holding a byte that may begin
 * something; the checks at a word's 8 offsets are branch-free: every jump in a long loop is a state
 * the verifier must keep. */
static __always_inline int find_events(u64 ptr, u32 len, u64 ndjson)
{
    u32 zero = 0;
    struct scratch *s = scratch_buf.lookup(&zero);
    if (!s)
        return 0;
    u64 n = bounded(len, SSE_SCAN_MAX);
    s->events = 0;
    s->rare = 0;
    s->end = SCAN_LEAD;
    *(u64 *)&s->data[0] = 0;
    *(u64 *)&s->data[8] = (u64)'\n' << 56;  /* data[SCAN_LEAD - 1] */
    if (bpf_probe_read_user(&s->data[SCAN_LEAD], n, (void *)ptr) != 0)
        return 0;
    *(u64 *)&s->data[SCAN_LEAD + n] = 0;  /* bytes past the buffer read as 0, not as an earlier write's */
    *(u64 *)&s->data[SCAN_LEAD + n + 8] = 0;
    u64 end = SCAN_LEAD + n;  /* one past the buffer's last byte */
    s->end = end;
    u64 events = 0;
#pragma clang loop unroll(disable)
    for (u32 word = 1; word < (SCAN_LEAD + SSE_SCAN_MAX) / 8; word++) {
        if (word * 8 >= end)
            break;
        u64 w = *(u64 *)&s->data[word * 8];
        u64 next = *(u64 *)&s->data[word * 8 + 1];  /* each byte's successor */
        u64 prev = *(u64 *)&s->data[word * 8 - 1];  /* each byte's predecessor */
        /* a mark (`[]`, `""`, `{}`, `:t`, `t"}`) or a count (`_t`, `_c`) may begin here */
        if ((ZERO_BYTES(w ^ EVERY_BYTE('[')) & ZERO_BYTES(next ^ EVERY_BYTE(']'))) |
            (ZERO_BYTES(prev ^ EVERY_BYTE('t')) & ZERO_BYTES(w ^ EVERY_BYTE('"')) & ZERO_BYTES(next ^ EVERY_BYTE('}'))) |
            (ZERO_BYTES(w ^ EVERY_BYTE('"')) & ZERO_BYTES(next ^ EVERY_BYTE('"'))) |
            (ZERO_BYTES(w ^ EVERY_BYTE('{')) & ZERO_BYTES(next ^ EVERY_BYTE('}'))) |
            (ZERO_BYTES(w ^ EVERY_BYTE(':')) & ZERO_BYTES(next ^ EVERY_BYTE('t'))) |
            (ZERO_BYTES(w ^ EVERY_BYTE('_')) & (ZERO_BYTES(next ^ EVERY_BYTE('t')) | ZERO_BYTES(next ^ EVERY_BYTE('c'))))) {
            /* the count lives in the map, not a register: an index the verifier would have to follow */
            u32 i = s->rare;
            if (i < RARE_WORDS) {
                s->rare_word[i & (RARE_WORDS - 1)] = word;
                s->rare_events[i & (RARE_WORDS - 1)] = events;
            }
            s->rare = i + 1;
        }
        if (ZERO_BYTES(w ^ EVERY_BYTE('\n'))) {
#pragma unroll
            for (u32 b = 0; b < 8; b++) {
                /* '\n' 'd' 'a' 't' 'a' ':' at p (its ':' inside the buffer), not [DONE]; or '\n' '{' */
                u32 p = word * 8 + b;
                u64 x = *(u64 *)&s->data[p];
                u64 is_data = is_zero((x ^ W6('\n', 'd', 'a', 't', 'a', ':')) & 0xffffffffffffULL);
                u64 c6 = (x >> 48) & 0xff, c7 = x >> 56;
                u64 is_done = is_zero(c6 ^ '[') | (is_zero(c6 ^ ' ') & is_zero(c7 ^ '['));
                u64 room = end - (p + 6);  /* negative when the ':' would be past the buffer */
                asm volatile("" : "+r"(room));
                u64 object_room = end - (p + 2);
                asm volatile("" : "+r"(object_room));
                u64 is_object = ndjson & is_zero((x & 0xffff) ^ W2('\n', '{')) & ((object_room >> 63) ^ 1);
                events += (is_data & (is_done ^ 1) & ((room >> 63) ^ 1)) | is_object;
            }
        }
    }
    s->events = events;
    return 1;
}

/* The second pass (see find_events()): *tokens, and the stated output-token count if any. */
static __always_inline void find_marks(struct scratch *s, u32 *tokens, u32 *usage, u32 *has_usage)
{
    u64 end = s->end, events = s->events;
    u32 rare = s->rare;
    u64 marked = 0;     /* bit i: event i showed a mark (the first 64 events) */
    s->usage_at = 0;
#pragma clang loop unroll(disable)
    for (u32 k = 0; k < RARE_WORDS; k++) {
        if (k >= rare)
            break;
        u64 word = s->rare_word[k];
        u64 owner = s->rare_events[k];  /* its marks belong to event owner - 1 */
        asm volatile("" : "+r"(word));
        if (word < 1 || word >= (SCAN_LEAD + SSE_SCAN_MAX) / 8)
            continue;
        u64 mark = 0, usage_at = 0, usage_seen = 0;
#pragma clang loop unroll(disable)
        for (u64 b = 0; b < 8; b++) {
            u64 p = word * 8 + b;
            u64 x = *(u64 *)&s->data[p];
            u64 at8 = *(u64 *)&s->data[p - 8], at7 = *(u64 *)&s->data[p - 7], at6 = *(u64 *)&s->data[p - 6];
            u64 after = *(u64 *)&s->data[p + 1];
            u64 c0 = x & 0xff, c1 = (x >> 8) & 0xff, pair = x & 0xffff;
            u64 empty_choices = (is_zero(at7 ^ W8('o', 'i', 'c', 'e', 's', '"', ':', '[')) |
                                 (is_zero(at8 ^ W8('o', 'i', 'c', 'e', 's', '"', ':', ' ')) & is_zero(c0 ^ '['))) &
                                is_zero(c1 ^ ']');
            u64 empty_text = (is_zero(at8 ^ W8('o', 'n', 't', 'e', 'n', 't', '"', ':')) |
                              is_zero(at8 ^ W8('n', 't', 'e', 'n', 't', '"', ':', ' ')) |
                              is_zero((at8 >> 8) ^ W7('"', 't', 'e', 'x', 't', '"', ':')) |
                              is_zero(at8 ^ W8('"', 't', 'e', 'x', 't', '"', ':', ' ')) |
                              is_zero(at8 ^ W8('s', 'p', 'o', 'n', 's', 'e', '"', ':')) |
                              is_zero(at8 ^ W8('o', 'u', 't', 'p', 'u', 't', '"', ':'))) &
                             is_zero(pair ^ W2('"', '"'));
            /* `"assistant"}` with its closing quote at p: a delta with a role and no content */
            u64 role_only = is_zero(at8 ^ W8('s', 's', 'i', 's', 't', 'a', 'n', 't')) & is_zero(pair ^ W2('"', '}'));
            u64 empty_delta = (is_zero(at8 ^ W8('"', 'd', 'e', 'l', 't', 'a', '"', ':')) |
                               is_zero(at8 ^ W8('d', 'e', 'l', 't', 'a', '"', ':', ' '))) &
                              is_zero(pair ^ W2('{', '}'));
            u64 flagged = is_zero(at6 ^ W8('"', 'd', 'o', 'n', 'e', '"', ':', 't')) |
                          (is_zero(at7 ^ W8('p', 'e', 'c', 'i', 'a', 'l', '"', ':')) & is_zero(c1 ^ 't'));
            u64 room = end - (p + 2);  /* negative when the mark's last byte would be past the buffer */
            asm volatile("" : "+r"(room));
            mark |= (empty_choices | empty_text | empty_delta | flagged | role_only) & ((room >> 63) ^ 1);
            /* `_tokens":` after `completion`, `generated`, `"output`; `"eval_count":` (its '_' at p) */
            u64 tokens_count = is_zero(after ^ W8('t', 'o', 'k', 'e', 'n', 's', '"', ':')) &
                               (is_zero(at8 ^ W8('m', 'p', 'l', 'e', 't', 'i', 'o', 'n')) |
                                is_zero(at8 ^ W8('e', 'n', 'e', 'r', 'a', 't', 'e', 'd')) |
                                is_zero((at8 >> 8) ^ W7('"', 'o', 'u', 't', 'p', 'u', 't')));
            u64 eval_count = is_zero((at6 >> 8) ^ W7('"', 'e', 'v', 'a', 'l', '_', 'c')) &
                             is_zero(LOW(after, 7) ^ W7('c', 'o', 'u', 'n', 't', '"', ':')) & is_zero(c0 ^ '_');
            u64 counted = tokens_count | eval_count;
            usage_at ^= (usage_at ^ (p + 9 - eval_count)) & -counted;  /* its number: the last one seen */
            usage_seen |= counted;
        }
        /* kept in the map, not a register: a position the verifier need not follow through the loop */
        u64 old = s->usage_at;
        s->usage_at = old ^ ((old ^ usage_at) & -usage_seen);
        u64 event = owner - 1;
        u64 valid = (is_zero(owner) ^ 1) & is_zero(event >> 6);
        marked |= (mark & valid) << (event & 63);
    }
    u64 unmarked_events = events < 64 ? events : 64;
    u64 in_range = unmarked_events == 64 ? ~0ULL : ((1ULL << unmarked_events) - 1);
    u32 with_marks = __builtin_popcountll(marked & in_range);
    *tokens = events > with_marks ? events - with_marks : 0;
    *usage = stated_number(s, s->usage_at, end, has_usage);
}

/* ---- the end of a response ------------------------------------------------ */

/* A response head is searched in its first HEAD_SCAN_MAX bytes for where it ends and for the body length
 * it states, with the words of the scratch map. Both are found by a pattern's first and last bytes at once
 * (two loads per word, the SWAR zero-byte test on each), then checked whole: `Content-Length:` as `-length:`
 * (its '-' and the ':' 7 bytes on; other headers that match, such as `Accept-Ranges:`, fail the check) and
 * the blank line as "\r\n\r\n" ('\r' and the '\n' 3 bytes on). */
#define HEAD_SCAN_MAX 512
#define LOWER_CASE EVERY_BYTE(0x20)  /* or'ed into letters: case does not matter in header names */
#define BODY_UNKNOWN 0xffffffffffffffffULL

struct response_head {
    u64 length;        /* bytes of the head with its blank line; 0: it does not end in the bytes searched */
    u64 body_length;   /* Content-Length, or BODY_UNKNOWN */
};

static __always_inline u64 head_word(struct scratch *s, u64 at)
{
    return *(u64 *)(s->data + (at & (SSE_SCAN_MAX - 1)));  /* a mask, not a compare: no branch to walk */
}

/* The lowest byte of a ZERO_BYTES() mask that is set, as a byte index (mask != 0). */
static __always_inline u64 first_byte(u64 mask)
{
    u64 low = mask & -mask;
    return (((low - 1) & EVERY_BYTE(1)) * EVERY_BYTE(1) >> 56) - 1;
}

/* The decimal number at s->data[at] (after optional spaces), at most 15 digits, before end; BODY_UNKNOWN
 * where there is none. */
static __always_inline u64 head_number(struct scratch *s, u64 at, u64 end)
{
    u64 v = 0, digits = 0, more = 1;
#pragma unroll
    for (int i = 0; i < 2; i++)
        at += is_zero(s->data[(at & (SSE_SCAN_MAX - 1))] ^ ' ');
#pragma unroll
    for (int i = 0; i < 15; i++) {
        /* branch-free, as in the scans: 15 digits that each may end the number would be 2^15 paths */
        s64 d = (s64)s->data[((at + i) & (SSE_SCAN_MAX - 1))] - '0';
        asm volatile("" : "+r"(d));  /* else clang compares the byte again, with a jump */
        u64 digit = ((u64)(d - 10) >> 63) & (((u64)d >> 63) ^ 1);  /* 0 <= d <= 9 */
        u64 inside = (u64)(at + i - end) >> 63;                     /* at + i < end */
        more &= digit & inside;
        asm volatile("" : "+r"(more));
        u64 mask = -more;
        asm volatile("" : "+r"(mask));
        v = ((v * 10 + (u64)d) & mask) | (v & ~mask);
        digits += more;
    }
    return digits ? v : BODY_UNKNOWN;
}

static __always_inline struct response_head read_head(u64 ptr, u32 len)
{
    struct response_head head = {.length = 0, .body_length = BODY_UNKNOWN};
    u32 zero = 0;
    struct scratch *s = scratch_buf.lookup(&zero);
    if (!s)
        return head;
    u64 n = bounded(len, HEAD_SCAN_MAX);
    if (n < 16 || bpf_probe_read_user(s->data, n, (void *)ptr) != 0)
        return head;
    u32 last = *(u32 *)(s->data + ((n - 4) & (SSE_SCAN_MAX - 1)));
    u64 head_alone = last == W4('\r', '\n', '\r', '\n') && n == len;  /* the head in a buffer of its own */
    /* Past n the scratch holds older bytes: a match counts only within the n read. The loops take their
     * bound from the map and leave what they find there: a bound in a register would be narrowed at each
     * exit of a loop (the verifier learns n <= at), and the code after it walked once per exit. */
    *(volatile u64 *)&s->limit = n;
    *(volatile u64 *)&s->found = head_alone ? n : 0;
#pragma clang loop unroll(disable)
    for (u64 at = 0; at < HEAD_SCAN_MAX; at += 8) {
        if (at >= *(volatile u64 *)&s->limit || head_alone)
            break;
        u64 blank = ZERO_BYTES(head_word(s, at) ^ EVERY_BYTE('\r')) &
                    ZERO_BYTES(head_word(s, at + 3) ^ EVERY_BYTE('\n'));
        if (blank) {
            u64 p = at + first_byte(blank);
            if (p + 4 <= *(volatile u64 *)&s->limit && LOW(head_word(s, p), 4) == W4('\r', '\n', '\r', '\n')) {
                *(volatile u64 *)&s->found = p + 4;
                break;
            }
        }
    }
    if (*(volatile u64 *)&s->found == 0)
        return head;  /* the head goes on past the bytes searched */
    *(volatile u64 *)&s->limit = *(volatile u64 *)&s->found;
    *(volatile u64 *)&s->found = 0;
#pragma clang loop unroll(disable)
    for (u64 at = 8; at < HEAD_SCAN_MAX; at += 8) {
        if (at >= *(volatile u64 *)&s->limit)
            break;
        u64 length_colon = ZERO_BYTES(head_word(s, at) ^ EVERY_BYTE('-')) &
                           ZERO_BYTES(head_word(s, at + 7) ^ EVERY_BYTE(':'));
        if (length_colon) {
            u64 p = at + first_byte(length_colon);  /* the '-' of what may be Content-Length */
            if (p + 8 < *(volatile u64 *)&s->limit && (head_word(s, p - 7) | LOWER_CASE) == W8('c', 'o', 'n', 't', 'e', 'n', 't', '-') &&
                LOW(head_word(s, p + 1) | LOWER_CASE, 7) == W7('l', 'e', 'n', 'g', 't', 'h', ':')) {
                *(volatile u64 *)&s->found = p + 8;
                break;
            }
        }
    }
    u64 end = *(volatile u64 *)&s->limit;
    head.length = end;
    if (*(volatile u64 *)&s->found != 0)
        head.body_length = head_number(s, *(volatile u64 *)&s->found, end);
    return head;
}

/* ---- events to user space ------------------------------------------------- */

/* Bytes to copy into a capture. */
static __always_inline u64 capture_len(u64 n)
{
    return bounded(n, CAPTURE_BYTES < CAPTURE_MAX ? CAPTURE_BYTES : CAPTURE_MAX);
}

/* A capture record of connection c's current request, reserved with its
 * header filled and no data yet (len 0); NULL, counted, when the ring is full. */
static __always_inline struct capture_event *new_capture(struct conn_state *c, u32 part)
{
    struct capture_event *e = events.ringbuf_reserve(sizeof(struct capture_event));
    if (!e) {
        count_ringbuf_full();
        return 0;
    }
    e->type = EVENT_CAPTURE;
    e->pid = c->pid;
    e->conn = c->id;
    e->seq = c->seq;
    e->part = part;
    e->len = 0;
    e->pad = 0;
    return e;
}

static __always_inline void emit_capture(struct conn_state *c, u32 part, u64 ptr, u32 len, int tail)
{
    struct capture_event *e = new_capture(c, part);
    if (!e)
        return;
    u64 n = capture_len(len);
    u64 src = tail ? ptr + len - n : ptr;
    if (bpf_probe_read_user(e->data, n, (void *)src) == 0)
        e->len = n;
    events.ringbuf_submit(e, ringbuf_wakeup_flags(sizeof(*e), RINGBUF_PAGES));
}

static __always_inline void remember_last_write(u64 *k, struct conn_state *c, u64 ptr, u32 len)
{
    /* last_writes values are too big for the stack: inserted from a zeroed map value. */
    u32 zero = 0;
    struct last_write *empty = last_write_init.lookup(&zero);
    if (!empty)
        return;
    struct last_write *w = last_writes.lookup(k);
    if (!w) {
        last_writes.update(k, empty);
        w = last_writes.lookup(k);
        if (!w)
            return;
    }
    u64 n = capture_len(len);
    w->seq = c->seq;
    w->len = 0;
    if (bpf_probe_read_user(w->data, n, (void *)(ptr + len - n)) == 0)
        w->len = n;
}

static __always_inline void emit_last_write(u64 *k, struct conn_state *c)
{
    struct last_write *w = last_writes.lookup(k);
    if (!w || w->seq != c->seq || w->len == 0)
        return;
    struct capture_event *e = new_capture(c, PART_RESPONSE_LAST);
    if (!e)
        return;
    u64 n = capture_len(w->len);
    if (bpf_probe_read_kernel(e->data, n, w->data) == 0)
        e->len = n;
    events.ringbuf_submit(e, ringbuf_wakeup_flags(sizeof(*e), RINGBUF_PAGES));
    w->len = 0;
}

/* ---- requests --------------------------------------------------------------- */

/* The second word of a struct req_key (port, status, method, op, slot). */
#define KEY_WORD(k) (*(u64 *)&(k)->port)
#define SLOT_STATE_WORD(state) ((u64)(state) << 48)

/* The slot of key's series in series_keys and http_hist, a free one claimed for it if it has none;
 * SERIES_SLOTS when its slots are all taken. */
static __always_inline u32 http_series(const struct req_key *key)
{
    u64 word = KEY_WORD(key) | SLOT_STATE_WORD(SERIES_USED);  /* key->slot is 0 */
    u32 home = ((key->cgroup ^ word) * 0x9E3779B97F4A7C15ULL) >> (64 - SERIES_BITS);
#pragma unroll
    for (u32 i = 0; i < SERIES_PROBES; i++) {
        u32 slot = (home + i) & (SERIES_SLOTS - 1);
        struct req_key *s = series_keys.lookup(&slot);
        if (!s)
            return SERIES_SLOTS;
        if (KEY_WORD(s) == word && s->cgroup == key->cgroup)
            return slot;
        if (KEY_WORD(s) == SLOT_STATE_WORD(SERIES_FREE) &&
            __sync_val_compare_and_swap(&KEY_WORD(s), SLOT_STATE_WORD(SERIES_FREE),
                                        SLOT_STATE_WORD(SERIES_CLAIMED)) == SLOT_STATE_WORD(SERIES_FREE)) {
            s->cgroup = key->cgroup;
            KEY_WORD(s) = word;  /* after the cgroup: a slot showing its key has all of it */
            return slot;
        }
    }
    return SERIES_SLOTS;
}

/* Output tokens of the request in progress: what its answer stated, else its token events. */
static __always_inline u32 output_tokens_of(struct conn_state *c)
{
    return (c->flags & REQ_USAGE) ? c->usage_tokens : c->tokens;
}

/* A finished generative-AI request into its histograms and token count (key: its series). Time to first
 * token and per output token come from the token events' times (a stated count may include tokens that
 * wrote no text, such as the end-of-sequence one). */
static __always_inline void add_gen_ai_metrics(struct req_key *key, struct conn_state *c, u64 start, u64 duration)
{
    u32 zero = 0;
    struct hist_value *z = zero_hist.lookup(&zero);
    if (!z)
        return;
    struct hist_value *h = genai_hist.lookup_or_try_init(key, z);
    if (h)
        hist_add(h, GENAI_DURATION_BUCKET(duration), duration);
    else
        stat_add(STAT_INF_METRICS_FULL, 1);
    if (c->tokens > 0) {
        u64 ttft = c->first_token > start ? c->first_token - start : 0;
        h = ttft_hist.lookup_or_try_init(key, z);
        if (h)
            hist_add(h, TTFT_BUCKET(ttft), ttft);
    }
    u32 out = output_tokens_of(c);
    if (out > 0) {
        u64 zero64 = 0;
        u64 *t = output_tokens.lookup_or_try_init(key, &zero64);
        if (t)
            *t += out;
    }
    if (c->tokens > 1) {
        u64 tpot = (c->last_token - c->first_token) / (c->tokens - 1);
        h = tpot_hist.lookup_or_try_init(key, z);
        if (h)
            hist_add(h, TPOT_BUCKET(tpot), tpot);
    }
}

/* The request in progress on c is over: into the histograms, and to user space if sampled. */
static __always_inline void finish_request(u64 *k, struct conn_state *c, u64 now)
{
    if (c->req_start == 0)
        return;
    u64 start = c->req_start, resp_start = c->resp_start;
    /* Whatever comes next, this request is over: the next read begins another. */
    c->req_start = 0;
    c->resp_start = 0;
    if (c->flags & REQ_UNPARSED)
        return;  /* counted when it began; not a request we can name */
    u64 end = c->resp_end ? c->resp_end : now;
    u64 duration = end > start ? end - start : 0;
    struct req_key key = {.cgroup = c->cgroup, .port = c->port, .status = c->status, .method = c->method, .op = c->op};
    stat_add(STAT_INF_REQUESTS, 1);
    if (c->status == 0)
        stat_add(STAT_INF_NO_RESPONSE, 1);
    u32 series = http_series(&key);
    struct hist_value *h = http_hist.lookup(&series);
    if (h)
        hist_add(h, HTTP_BUCKET(duration), duration);
    else
        stat_add(STAT_INF_METRICS_FULL, 1);
    if (c->op != OP_NONE)
        add_gen_ai_metrics(&key, c, start, duration);
    if (!(c->flags & REQ_SAMPLED))
        return;
    emit_last_write(k, c);
    struct request_event *e = events.ringbuf_reserve(sizeof(struct request_event));
    if (!e) {
        count_ringbuf_full();
        return;
    }
    e->type = EVENT_REQUEST;
    e->pid = c->pid;
    e->conn = c->id;
    e->seq = c->seq;
    e->pad0 = 0;
    e->req_start = start;
    e->resp_start = resp_start;
    e->resp_end = c->resp_end;
    e->first_token = c->first_token;
    e->last_token = c->last_token;
    e->end = end;
    e->req_bytes = c->req_bytes;
    e->resp_bytes = c->resp_bytes;
    e->tokens = c->tokens;
    e->port = c->port;
    e->status = c->status;
    e->method = c->method;
    e->op = c->op;
    e->flags = c->flags;
    e->family = c->family;
    e->client_port = c->client_port;
    e->pad = 0;
    e->cgroup = c->cgroup;
    e->read_start = c->read_start;
    e->output_tokens = output_tokens_of(c);
    e->pad2 = 0;
    __builtin_memcpy(e->client_addr, c->client_addr, 16);
    __builtin_memcpy(e->comm, c->comm, sizeof(e->comm));
    events.ringbuf_submit(e, ringbuf_wakeup_flags(sizeof(*e), RINGBUF_PAGES));
}

static __always_inline void begin_request(struct conn_state *c, u64 start)
{
    c->req_start = start;
    c->read_start = start;
    c->resp_start = 0;
    c->resp_end = 0;
    c->usage_tokens = 0;
    c->line_len = 0;
    c->end_after_scan = 0;
    c->body_counted = 0;
    c->first_token = 0;
    c->last_token = 0;
    c->req_bytes = 0;
    c->resp_bytes = 0;
    c->tokens = 0;
    c->status = 0;
    c->method = METHOD_OTHER;
    c->op = OP_NONE;
    c->flags = 0;
    c->reads = 0;
    c->writes = 0;
    c->seq++;
}

/* A request we can name takes a span from the budget (now: the current time;
 * a request's own start may be older than the budget's last refill). */
static __always_inline void sample_request(struct conn_state *c, u64 now)
{
    if (span_budget_take(now))
        c->flags |= REQ_SAMPLED;
}

/* A request whose answer begins now but whose bytes came in an earlier read,
 * with the one answered before it (pipelining): it started at that read. */
static __always_inline void begin_pipelined_request(struct conn_state *c, u64 now)
{
    begin_request(c, c->last_read);
    c->flags |= REQ_PIPELINED;
    sample_request(c, now);
}

/* Method and generative-AI operation from the request's first bytes as far as they came (c->line); while
 * they may still be incomplete (a request line sent in pieces), REQ_LINE_PENDING asks for another look at
 * the next read. 0 when the bytes are not an HTTP/1.x request. */
static __always_inline int classify_request(struct conn_state *c)
{
    u32 n = c->line_len;
    u64 head = *(u64 *)c->line;
    int path_off = 0;
    c->method = parse_method(head, n, &path_off);
    c->op = OP_NONE;
    c->flags &= ~(REQ_LINE_PENDING | REQ_NDJSON);
    if (path_off == 0) {
        if (n >= 8)
            return 0;
        c->flags |= REQ_LINE_PENDING;  /* shorter than the longest method: more may come */
        return 1;
    }
    if (path_off > 5 || maybe_gen_ai_path(head >> (8 * path_off))) {
        u64 path[PATH_WORDS] = {};
        bpf_probe_read_kernel(path, sizeof(path), c->line + (path_off & 15));
        u8 op = classify_path(path, (int)n - path_off);
        c->op = op & ~OP_NDJSON;
        if (op & OP_NDJSON)
            c->flags |= REQ_NDJSON;
        if (op == OP_NONE && n < LINE_MAX)
            c->flags |= REQ_LINE_PENDING;  /* a path that may yet name an operation */
    }
    return 1;
}

/* What on_read() asks of its caller. */
#define READ_DONE 0
#define READ_LET_GO 1  /* the connection does not speak HTTP/1.x: stop following it */

static __always_inline int on_read(u64 *k, struct conn_state *c, u64 ptr, u32 len, u64 now)
{
    if (c->resp_start != 0)
        finish_request(k, c, now);  /* a read begun before the response ended (e.g. Go's background read) */
    if (c->req_start != 0 && c->resp_start == 0 && (c->flags & REQ_UNPARSED)) {
        /* Unanswered bytes that were not a request line are often what an earlier
         * request left (a body the server read after answering, e.g. a 401 sent
         * before reading the upload): a read that begins a request line begins
         * the next request instead of joining them. */
        u64 line = 0;
        int line_path_off = 0;
        bpf_probe_read_user(&line, sizeof(line), (void *)ptr);
        if (parse_method(line, len, &line_path_off) != METHOD_OTHER)
            c->req_start = 0;
    }
    if (c->req_start == 0) {
        /* The request began when its first byte arrived, where the kernel told (it may have waited in the
         * socket's queue); else at this read. */
        u64 arrival = c->arrival;
        int arrived = arrival != 0 && arrival <= now;
        begin_request(c, arrived ? arrival : now);
        c->read_start = now;
        c->arrival = 0;
        if (arrived)
            c->flags |= REQ_ARRIVAL;
        u64 n = bounded(len, LINE_MAX);
        if (bpf_probe_read_user(c->line, n, (void *)ptr) == 0)
            c->line_len = n;
        if (!classify_request(c)) {
            if (c->seq == 1 && !c->seeded) {
                /* Its first bytes are not HTTP/1.x (TLS, HTTP/2, another protocol): counted once, let go. */
                stat_add(STAT_INF_UNPARSED, 1);
                u64 zero64 = 0;
                u16 port = c->port;
                u64 *u = unparsed.lookup_or_try_init(&port, &zero64);
                if (u)
                    *u += 1;
                return READ_LET_GO;
            }
            c->flags |= REQ_UNPARSED;  /* leftover bytes of an earlier request (see above): not measured */
        }
        if (!(c->flags & REQ_UNPARSED))
            sample_request(c, now);  /* bytes that are not HTTP get no span: no budget, no captures */
    } else if ((c->flags & REQ_LINE_PENDING) && c->line_len < LINE_MAX) {
        /* more of a request line that came in pieces */
        u32 have = c->line_len & (LINE_MAX - 1);
        u32 n = LINE_MAX - have;
        if (n > len)
            n = len;
        n &= LINE_MAX - 1;
        if (n > 0 && bpf_probe_read_user(c->line + have, n, (void *)ptr) == 0) {
            c->line_len = have + n;
            if (!classify_request(c))
                c->flags |= REQ_UNPARSED;  /* its line began like a method and went on otherwise */
        }
    }
    c->last_read = now;
    if ((c->flags & REQ_SAMPLED) && c->reads < CAPTURED_READS) {
        /* Heads while the request is shorter than the capture (they join up: a split
         * request line); past that, the end of each read: a body sent on its own, or
         * a long body's end, where OpenAI clients put "model". */
        int head = c->req_bytes < CAPTURE_BYTES;
        if (head)
            emit_capture(c, PART_REQUEST_HEAD, ptr, len, 0);
        if (!head || len > CAPTURE_BYTES)
            emit_capture(c, PART_REQUEST_TAIL, ptr, len, 1);
    }
    c->req_bytes += len;
    if (c->reads < 255)
        c->reads++;
    return READ_DONE;
}

/* What written() does after on_write(). */
#define WRITE_DONE 0
#define WRITE_SCAN 1      /* search the write for `data:` events */
#define WRITE_UPGRADED 2  /* 101 Switching Protocols: what follows is not HTTP/1.x, stop following */
#define WRITE_HEAD 3      /* a response head: read what it says of the body's length (scan_response_head) */
#define WRITE_HEAD_SCAN 4 /* the same, then search the write for events */
#define STATUS_SWITCHING_PROTOCOLS 101
#define STATUS_NO_CONTENT 204
#define STATUS_NOT_MODIFIED 304
#define LAST_CHUNK W5('0', '\r', '\n', '\r', '\n')

/* The status of a status line at the write's start (its first 16 bytes: words), or 0. */
static __always_inline u16 status_line(const u64 *words, u32 len)
{
    const u8 *head = (const u8 *)words;
    if (len < 12 || LOW(words[0], 5) != W5('H', 'T', 'T', 'P', '/') || head[8] != ' ')
        return 0;
    u8 h = head[9] - '0', t = head[10] - '0', u = head[11] - '0';
    if (h < 1 || h > 5 || t > 9 || u > 9)
        return 0;
    return h * 100 + t * 10 + u;
}

/* Whether the buffer ends with the last chunk of a chunked body. */
static __always_inline int ends_with_last_chunk(u64 ptr, u32 len)
{
    u64 end = 0;
    return len >= 5 && bpf_probe_read_user(&end, 5, (void *)(ptr + len - 5)) == 0 && end == LAST_CHUNK;
}

/* A response head went out in a write (its first buffer: ptr, len; total bytes in all; whole: all of them
 * went out, or will). 1 when the response is complete with it; else, where the head states its length,
 * the body's bytes still to come are counted down by the next writes. */
static __always_inline int head_written(struct conn_state *c, u16 status, u64 ptr, u32 len, u64 total, int whole)
{
    struct response_head head = read_head(ptr, len);
    if (head.length == 0 || !whole)
        return 0;  /* its end lies past the bytes searched, or this write may go out in parts: left to what follows */
    u64 body = total - head.length;
    if (c->method == METHOD_HEAD || status == STATUS_NO_CONTENT || status == STATUS_NOT_MODIFIED)
        return 1;  /* no body, whatever the head says */
    if (head.body_length != BODY_UNKNOWN) {
        if (body >= head.body_length)
            return 1;
        c->body_left = head.body_length - body;
        c->body_counted = 1;
        return 0;
    }
    return len == total && len > head.length + 5 && ends_with_last_chunk(ptr, len);  /* head and chunked body */
}

/* More of a body whose length the head stated went out. */
static __always_inline int body_written(struct conn_state *c, u64 total, int whole)
{
    if (!whole) {
        c->body_counted = 0;  /* it may go out in parts, the rest written again: the count would be wrong */
        return 0;
    }
    if (total < c->body_left) {
        c->body_left -= total;
        return 0;
    }
    c->body_counted = 0;
    return 1;
}

/* A write of connection c went out: its first buffer (ptr, len; has_bytes: readable user bytes, else only
 * a length, as with sendfile), total bytes in all, whole: all of them (not only asked to). The response
 * ends here when its length is reached (Content-Length, the last chunk, a status without a body);
 * otherwise at the next read, an EAGAIN read, close, or the idle flush. */
static __always_inline int on_write(u64 *k, struct conn_state *c, u64 ptr, u32 len, u64 total, int whole,
                                    u64 start, u64 now, int has_bytes)
{
    u64 words[2] = {};
    u16 status = 0;
    if (has_bytes) {
        bpf_probe_read_user(words, sizeof(words), (void *)ptr);
        status = status_line(words, len);
    }
    if (c->req_start == 0) {
        /* No request open. A final status line answers one read earlier with the
         * one just answered (pipelined), whose end (a chunked body's last chunk,
         * or an EAGAIN read) closed the previous request. Anything else: the
         * server spoke first, nothing to answer. */
        if (status < 200 || c->last_read == 0)
            return WRITE_DONE;
        begin_pipelined_request(c, now);
    }
    if (status != 0 && status < 200 && status != STATUS_SWITCHING_PROTOCOLS) {
        c->resp_bytes += total;  /* 100 Continue and friends: the final response is still to come */
        return WRITE_DONE;
    }
    if (status != 0 && c->resp_start != 0) {
        /* A second response with no read between: pipelined requests, read together earlier. */
        finish_request(k, c, now);
        begin_pipelined_request(c, now);
    }
    int first = c->resp_start == 0;
    if (first) {
        c->resp_start = start;
        c->status = status;
    }
    c->resp_end = now;
    c->resp_bytes += total;
    if (status == STATUS_SWITCHING_PROTOCOLS) {
        /* WebSocket and other upgrades: the request ends with its 101; the frames after it are not requests */
        if (c->flags & REQ_SAMPLED)
            emit_capture(c, PART_RESPONSE_HEAD, ptr, len, 0);
        finish_request(k, c, now);
        return WRITE_UPGRADED;
    }
    int complete = 0;
    if (status != 0) {
        c->body_counted = 0;  /* what the head says is read by scan_response_head, after this (gen-AI paths) */
    } else if (c->body_counted) {
        complete = body_written(c, total, whole);
    } else if (has_bytes && ends_with_last_chunk(ptr, len)) {
        if (len == 5 || !(c->op != OP_NONE || (c->flags & REQ_SSE))) {
            /* the last chunk alone, or ending a body not searched for events: complete now, not at the
             * next request, which may be long in coming on a kept-alive connection */
            if (c->writes < 2 && (c->flags & REQ_SAMPLED))
                emit_capture(c, PART_RESPONSE_HEAD, ptr, len, 0);
            finish_request(k, c, now);
            return WRITE_DONE;
        }
        complete = 1;  /* the last events and the last chunk in one write: counted first, then finished */
    }
    if (!has_bytes) {
        if (complete)
            finish_request(k, c, now);
        return WRITE_DONE;
    }
    /* Server-Sent Events: scanned on gen-AI paths and once a response showed them;
     * elsewhere only a write that begins with an event (after a chunk-size line) is. */
    int scan = c->op != OP_NONE || (c->flags & REQ_SSE);
    if (!scan && !first) {
        u64 data_colon = W5('d', 'a', 't', 'a', ':');
        if (LOW(words[0], 5) == data_colon)
            scan = 1;
#pragma unroll
        for (int i = 1; i < 10; i++) {
            /* a chunk-size line of up to 8 hex digits, then the event: "\ndata:" at byte i */
            u64 at = i < 8 ? (words[0] >> (8 * i)) | (words[1] << (64 - 8 * i)) : words[1] >> (8 * (i - 8));
            if (LOW(at, 6) == (C('\n', 0) | (data_colon << 8)))
                scan = 1;
        }
    }
    if (c->flags & REQ_SAMPLED) {
        if (c->writes < 2)
            emit_capture(c, PART_RESPONSE_HEAD, ptr, len, 0);
        if (c->writes >= 1 && !scan)
            remember_last_write(k, c, ptr, len);
    }
    if (c->writes < 255)
        c->writes++;
    if (status != 0 && c->op != OP_NONE)
        return scan ? WRITE_HEAD_SCAN : WRITE_HEAD;  /* read for the body's length on gen-AI paths only (the cost) */
    if (complete) {
        if (scan) {
            c->end_after_scan = 1;  /* finished by the scan's last program, once the events are counted */
            return WRITE_SCAN;
        }
        finish_request(k, c, now);
        return WRITE_DONE;
    }
    return scan;
}

/* Token counting runs in its own program, reached by a tail call from the
 * write exits that need it: its long loop is verified once, not once per
 * path through the write handling. It scans one buffer of the write per run
 * and tail-calls itself for the next: the last SSE_SCAN_MAX bytes of a longer
 * buffer (where a JSON answer states its usage), then the write's next iovec
 * (a server may write the head, a chunk-size line and the events as separate
 * buffers of one writev). */
struct scan_args {
    u64 key;
    u64 ptr;        /* the buffer scanned in this run */
    u64 start;      /* when the write began */
    u64 iov_array;  /* the write's struct iovec array (0: not vectored) */
    u64 remaining;  /* bytes of the write after this buffer */
    u32 len;        /* bytes of this buffer */
    u8 iov_next;    /* index of the iovec after this buffer */
    u8 iov_in_kernel;  /* iov_array is the kernel's copy (BTF send hook), not user memory */
    u8 tail_pass;   /* this run looks at the buffer's last bytes, for the usage only */
    u8 scan;        /* (head) search the write for events after the head */
    u8 whole;       /* all the write's bytes went out (or will), not only asked to */
    u8 pad[7];
};
BPF_PERCPU_ARRAY(scan_input, struct scan_args, 1);
/* Programs reached by tail calls, in the order of SCAN_FUNCTIONS (ebpftool/tracers/inference.py). */
#define SCAN_EVENTS 0
#define SCAN_MARKS 1
#define SCAN_HEAD 2
#define SCAN_FINISH 3
BPF_PROG_ARRAY(scan_prog, 4);

/* A response head was written: the length of its body, if it says. Then the write's events, if asked. */
int scan_response_head(void *ctx)
{
    u32 zero = 0;
    struct scan_args *a = scan_input.lookup(&zero);
    if (!a)
        return 0;
    u64 k = a->key;
    struct conn_state *c = find_conn(k);
    if (!c)
        return 0;
    int complete = head_written(c, c->status, a->ptr, a->len, a->len + a->remaining, a->whole);
    if (a->scan) {
        c->end_after_scan = complete;
        scan_prog.call(ctx, SCAN_EVENTS);
    } else if (complete) {
        /* in a program of its own: the head's loops leave many states, each of which would walk it */
        scan_prog.call(ctx, SCAN_FINISH);
    }
    return 0;
}

/* The response of a->key is complete with the write just seen. */
int finish_written_response(void *ctx)
{
    u32 zero = 0;
    struct scan_args *a = scan_input.lookup(&zero);
    if (!a)
        return 0;
    u64 k = a->key;
    struct conn_state *c = find_conn(k);
    if (c)
        finish_request(&k, c, c->resp_end);
    return 0;
}

int scan_sse_events(void *ctx)
{
    u32 zero = 0;
    struct scan_args *a = scan_input.lookup(&zero);
    if (!a)
        return 0;
    struct conn_state *c = find_conn(a->key);
    if (!c)
        return 0;
    u32 len = a->len;
    u64 tail = a->tail_pass & (len > SSE_SCAN_MAX);
    u64 skip = (len - SSE_SCAN_MAX) & -tail;  /* a tail pass scans the buffer's last SSE_SCAN_MAX bytes */
    asm volatile("" : "+r"(skip));
    if (find_events(a->ptr + skip, len - skip, (c->flags / REQ_NDJSON) & 1))
        scan_prog.call(ctx, SCAN_MARKS);
    return 0;
}

int scan_sse_marks(void *ctx)
{
    u32 zero = 0;
    struct scan_args *a = scan_input.lookup(&zero);
    struct scratch *s = scratch_buf.lookup(&zero);
    if (!a || !s)
        return 0;
    u64 k = a->key;
    struct conn_state *c = find_conn(k);
    if (!c)
        return 0;
    u32 tokens = 0, usage = 0, has_usage = 0;
    find_marks(s, &tokens, &usage, &has_usage);
    u32 events = s->events;
    u32 len = a->len;
    if (!a->tail_pass) {
        if (tokens || (events && !(c->flags & REQ_NDJSON))) {
            if (!(c->flags & REQ_SSE)) {
                c->flags |= REQ_SSE;
                if (c->op == OP_NONE)
                    c->op = OP_STREAM;
            }
        }
        if (tokens) {
            if (c->first_token == 0)
                c->first_token = a->start;
            c->last_token = a->start;
            c->tokens += tokens;
        }
        /* The last buffer with events (or of a plain answer) is kept for its usage and model; [DONE]
         * and the chunked-encoding trailer after it are not. */
        if ((c->flags & REQ_SAMPLED) && (events || !(c->flags & REQ_SSE)))
            remember_last_write(&k, c, a->ptr, len);
    }
    if (has_usage) {
        c->usage_tokens = usage;
        c->flags |= REQ_USAGE;
    }
    if (!a->tail_pass && len > SSE_SCAN_MAX) {
        a->tail_pass = 1;
        scan_prog.call(ctx, SCAN_EVENTS);
    } else if (a->iov_array != 0 && a->remaining != 0 && a->iov_next < IOV_SCAN_MAX) {
        struct user_iov iov = {};
        void *at = (void *)(a->iov_array + (u64)a->iov_next * sizeof(struct user_iov));
        long err = a->iov_in_kernel ? bpf_probe_read_kernel(&iov, sizeof(iov), at)
                                    : bpf_probe_read_user(&iov, sizeof(iov), at);
        u64 n = iov.len < a->remaining ? iov.len : a->remaining;
        if (err == 0 && n > 0) {
            a->ptr = iov.base;
            a->len = n;
            a->remaining -= n;
            a->iov_next++;
            a->tail_pass = 0;
            scan_prog.call(ctx, SCAN_EVENTS);
        }
    }
    /* the scan of this write ends here (a tail call that was made does not return) */
    if (c->end_after_scan) {
        c->end_after_scan = 0;
        finish_request(&k, c, c->resp_end);
    }
    return 0;
}

/* Run by user space (BPF_PROG_TEST_RUN) for a connection whose response went
 * quiet (args: key, the resp_end user space saw): a server that neither reads
 * again nor closes after a Content-Length answer would otherwise hold its last
 * request until the connection's next request. Only if nothing moved since. */
int flush_idle_request(struct bpf_raw_tracepoint_args *ctx)
{
    u64 k = ctx->args[0];
    struct conn_state *c = find_conn(k);
    if (!c || c->req_start == 0 || c->resp_start == 0 || c->resp_end != ctx->args[1])
        return 0;
    finish_request(&k, c, bpf_ktime_get_ns());
    return 1;
}

/* The user buffer holding the first bytes moved; for vectored calls, *iov_array
 * is the struct iovec array (else 0). */
static __always_inline u64 first_buffer(u32 how, u64 ptr, long ret, u32 *len, u64 *iov_array)
{
    *len = ret;
    *iov_array = 0;
    if (how == BUF_PLAIN)
        return ptr;
    if (how == BUF_NONE)
        return 0;
    u64 iov_ptr = ptr;
    if (how == BUF_MSG) {
        /* struct user_msghdr: msg_name, msg_namelen (+pad), msg_iov */
        if (bpf_probe_read_user(&iov_ptr, sizeof(iov_ptr), (void *)(ptr + 16)) != 0)
            return 0;
    }
    *iov_array = iov_ptr;
    struct user_iov iov = {};
    if (bpf_probe_read_user(&iov, sizeof(iov), (void *)iov_ptr) != 0)
        return 0;
    if (iov.len < *len)
        *len = iov.len;
    return iov.base;
}

static __always_inline void forget_conn(u64 *k);  /* per way in, below */

/* A write that went out: the state machine, then the event count (tail call) if needed.
 * start: when the write began (syscall entry, or the socket hook's own time); now: when it ended.
 * From the write's first buffer (ptr, len; 0: no user bytes) of ret bytes in all (whole: all of them went
 * out or will, not only asked to); iov_array: its
 * struct iovec array for vectored writes (else 0), in user memory or (iov_in_kernel) the kernel's copy. */
static __always_inline int written_buffer(void *ctx, u64 *k, struct conn_state *c, u64 ptr, u32 len, u64 ret,
                                          int whole, u64 iov_array, int iov_in_kernel, u64 start, u64 now)
{
    int next = on_write(k, c, ptr, ptr ? len : (u32)ret, ret, whole, start, now, ptr != 0 && len > 0);
    if (next == WRITE_UPGRADED)
        forget_conn(k);
    if (next != WRITE_SCAN && next != WRITE_HEAD && next != WRITE_HEAD_SCAN)
        return 0;
    u32 zero = 0;
    struct scan_args *in = scan_input.lookup(&zero);
    if (!in)
        return 0;
    in->key = *k;
    in->ptr = ptr;
    in->start = start;
    in->iov_array = iov_array;
    in->remaining = ret > len ? ret - len : 0;
    in->len = len;
    in->iov_next = 1;
    in->iov_in_kernel = iov_in_kernel;
    in->tail_pass = 0;
    in->scan = next != WRITE_HEAD;
    in->whole = whole;
    scan_prog.call(ctx, next == WRITE_SCAN ? SCAN_EVENTS : SCAN_HEAD);
    return 0;
}

/* The same, from the syscall's buffer argument (how, arg: see first_buffer()). */
static __always_inline int written(void *ctx, u64 *k, struct conn_state *c, u32 how, u64 arg, long ret,
                                   u64 start, u64 now)
{
    u32 len = 0;
    u64 iov_array = 0;
    u64 ptr = first_buffer(how, arg, ret, &len, &iov_array);
    return written_buffer(ctx, k, c, ptr, len, ret, 1, iov_array, 0, start, now);  /* ret: what went out */
}

static __always_inline void count_accepted(u16 port)
{
    stat_add(STAT_INF_ACCEPTED, 1);
    u64 zero64 = 0;
    u64 *n = accepted.lookup_or_try_init(&port, &zero64);
    if (n)
        *n += 1;
}

#if IO_HOOKS_SOCK
/* ---- socket hooks --------------------------------------------------------------- */

#define EAGAIN 11
#define TCP_ESTABLISHED 1
#define TCP_SYN_RECV 3
#define TCP_FIN_WAIT1 4
#define TCP_CLOSE 7
#define TCP_LAST_ACK 9
#define IPPROTO_TCP 6
#define SYSCALL_REGS_OFFSET_MAX (1 << 20)  /* far above any kernel stack size: a wrong measure is dropped */

#if RECV_HOOK_BTF
/* bpf_rdonly_cast(obj, btf_id) (a kfunc, Linux 6.2+): the verifier turns the number obj into a read-only
 * pointer to the kernel type btf_id and the call into nothing; loads through it are fault-safe. BCC
 * cannot emit a kfunc call, so this calls the placeholder helper number KFUNC_RDONLY_CAST (the way C
 * calls a helper: through its number as a function pointer), which ebpftool/core/bpf.py rewrites into
 * the kfunc call when it loads the program. */
static void *(*rdonly_cast)(u64 obj, u32 btf_id) = (void *)KFUNC_RDONLY_CAST;

/* Where the current task's saved syscall registers lie. task_pt_regs() is the top of the task's kernel
 * stack: task->stack plus a constant of the kernel's build (THREAD_SIZE less its padding and the struct),
 * which user space measures once by running calibrate_syscall_regs (BPF_PROG_TEST_RUN) against
 * bpf_task_pt_regs(); the hooks then add it, sparing that helper call (~20 ns). 0: not measured. */
BPF_ARRAY(syscall_regs_offset, u64, 1);

int calibrate_syscall_regs(struct bpf_raw_tracepoint_args *ctx)
{
    void *task = bpf_get_current_task_btf();
    u64 regs = (u64)bpf_task_pt_regs(task);
    u64 stack = *(u64 *)(task + TASK_STACK_OFF);
    u32 zero = 0;
    u64 *offset = syscall_regs_offset.lookup(&zero);
    if (offset && regs > stack && regs - stack < SYSCALL_REGS_OFFSET_MAX)
        *offset = regs - stack;
    return 0;
}

static __always_inline struct pt_regs *syscall_regs(void)
{
    void *task = bpf_get_current_task_btf();
    u32 zero = 0;
    u64 *offset = syscall_regs_offset.lookup(&zero);
    if (!offset || *offset == 0)
        return (struct pt_regs *)bpf_task_pt_regs(task);
    return rdonly_cast(*(u64 *)(task + TASK_STACK_OFF) + *offset, PT_REGS_BTF_ID);
}
#else
static __always_inline struct pt_regs *syscall_regs(void)
{
    return CURRENT_SYSCALL_REGS();
}
#endif

/* The buffer of the read or write syscall this socket operation is part of:
 * *how says how to find the bytes, 0 when the caller is not one of these
 * syscalls (sendfile, splice, io_uring: counted, not parsed). */
static __always_inline u64 syscall_buffer(u32 *how)
{
    struct pt_regs *regs = syscall_regs();
    u64 buf = regs->si;
    *how = BUF_NONE;
    switch (regs->orig_ax) {
    case NR_READ: case NR_WRITE: case NR_RECVFROM: case NR_SENDTO:
        *how = BUF_PLAIN;
        return buf;
    case NR_READV: case NR_WRITEV:
        *how = BUF_IOV;
        return buf;
    case NR_RECVMSG: case NR_SENDMSG:
        *how = BUF_MSG;
        return buf;
    }
    return 0;
}

/* A counting filter in front of conns: every socket operation of the system
 * asks whether its socket is watched, and nearly all are not. An array slot
 * (one inlined lookup, in a 64 KiB array that stays in cache) answers most of
 * them; only a slot that counts some watched socket costs the table's probes.
 * A slot counts the connections in the table whose address hashes there, so
 * it is never 0 while one of its sockets is watched. */
#define CONN_FILTER_BITS 14
BPF_ARRAY(conn_filter, u32, 1 << CONN_FILTER_BITS);

/* Fibonacci hashing of a socket's address: its top bits index the filter and
 * the connection table. */
#define SOCKET_HASH(sk, bits) (((u64)(sk) * 0x9E3779B97F4A7C15ULL) >> (64 - (bits)))

static __always_inline u32 conn_filter_slot(u64 sk)
{
    return SOCKET_HASH(sk, CONN_FILTER_BITS);
}

static __always_inline void conn_filter_add(u64 sk, s32 n)
{
    u32 slot = conn_filter_slot(sk);
    u32 *count = conn_filter.lookup(&slot);
    if (count)
        __sync_fetch_and_add(count, n);
}

/* 0: sk is certainly not watched (its slot counts no watched socket). */
static __always_inline int maybe_watched(u64 sk)
{
    u32 slot = conn_filter_slot(sk);
    u32 *count = conn_filter.lookup(&slot);
    return count && *count != 0;
}

/* The connection table: a socket's state lies in one of the CONN_PROBES slots
 * from its home slot (a hash of its address), its key field holding the
 * socket's address; 0 marks a free slot. The TCP state hook and the seeding
 * hook insert, claiming a free slot by compare-and-swap; a connection is let go
 * at close, at an upgrade, or at its first read by an unwatched process, by
 * whichever CPU swaps its key from the socket's address to CONN_CLAIMED first,
 * so only one of them frees the slot and counts it out. With 8 probes a table
 * kept below a quarter full loses no connection (a simulation of random
 * arrivals and departures: ~2% at half full, ~17% at three quarters). */
#define CONN_PROBES 8

static __always_inline u32 conn_home(u64 sk)
{
    return SOCKET_HASH(sk, CONN_TABLE_BITS);
}

/* sk's state, or NULL; *slot_out: its slot. */
static __always_inline struct conn_state *find_conn_in(u64 sk, u32 *slot_out)
{
    u32 home = conn_home(sk);
#pragma unroll
    for (u32 i = 0; i < CONN_PROBES; i++) {
        u32 slot = (home + i) & (MAX_CONNS - 1);
        struct conn_state *c = conns.lookup(&slot);
        if (c && c->key == sk) {
            *slot_out = slot;
            return c;
        }
    }
    return 0;
}

static __always_inline struct conn_state *find_conn(u64 sk)
{
    u32 slot;
    return find_conn_in(sk, &slot);
}

static __always_inline void mark_slot(u32 slot, int used)
{
    u32 word = slot / 64;
    u64 *bits = conn_used.lookup(&word);
    if (!bits)
        return;
    if (used)
        __sync_fetch_and_or(bits, 1ULL << (slot % 64));
    else
        __sync_fetch_and_and(bits, ~(1ULL << (slot % 64)));
}

/* A free slot for sk, claimed (key CONN_CLAIMED) and counted; NULL when all
 * of sk's slots are taken. */
static __always_inline struct conn_state *claim_conn(u64 sk)
{
    u32 home = conn_home(sk);
#pragma unroll
    for (u32 i = 0; i < CONN_PROBES; i++) {
        u32 slot = (home + i) & (MAX_CONNS - 1);
        struct conn_state *c = conns.lookup(&slot);
        if (c && c->key == 0 && __sync_val_compare_and_swap(&c->key, 0, CONN_CLAIMED) == 0) {
            mark_slot(slot, 1);
            conn_filter_add(sk, 1);
            return c;
        }
    }
    return 0;
}

static __always_inline void forget_connection(u64 sk)
{
    u32 slot = 0;
    struct conn_state *c = find_conn_in(sk, &slot);
    if (c && __sync_val_compare_and_swap(&c->key, sk, CONN_CLAIMED) == sk) {
        /* this CPU owns the slot until it stores 0: nobody else counts it out or takes it meanwhile */
        mark_slot(slot, 0);
        conn_filter_add(sk, -1);
        c->key = 0;
    }
    last_writes.delete(&sk);
}

static __always_inline void forget_conn(u64 *k)
{
    forget_connection(*k);
}

/* The watched connection of socket sk, or NULL. Its first read or write says
 * which process serves it (and, with --pid/--comm, whether it is watched). */
static __always_inline struct conn_state *sock_conn(u64 sk)
{
    if (!maybe_watched(sk))
        return 0;
    struct conn_state *c = find_conn(sk);
    if (!c || c->pid != 0)
        return c;
    u32 pid = bpf_get_current_pid_tgid() >> 32;
#if FILTER_PIDS
    if (!watched_pids.lookup(&pid)) {
        forget_connection(sk);
        return 0;
    }
#endif
    c->pid = pid;
    c->cgroup = bpf_get_current_cgroup_id();
    bpf_get_current_comm(c->comm, sizeof(c->comm));
#if FILTER_PIDS
    if (!c->seeded)
        count_accepted(c->port);  /* only now is it known to be a watched process's */
#endif
    return c;
}

#if SEND_HOOK_BTF || RECV_HOOK_BTF
/* The BTF tracepoints' socket argument is a typed pointer, on which the verifier allows no arithmetic,
 * and the connection table hashes the socket's address: stored in a map and read back, it is a plain
 * number. */
BPF_PERCPU_ARRAY(sock_address, u64, 1);

static __always_inline u64 address_of(u64 typed_pointer)
{
    u32 zero = 0;
    u64 *scratch = sock_address.lookup(&zero);
    if (!scratch)
        return 0;
    *(volatile u64 *)scratch = typed_pointer;
    return *(volatile u64 *)scratch;
}
#endif

#if RECV_HOOK_BTF
/* When the read returned: TCP's own clock of the socket (tcp_sock.tcp_clock_cache, CLOCK_MONOTONIC
 * like bpf_ktime_get_ns()), which the read refreshed as it copied the bytes out (tcp_recvmsg ->
 * tcp_rcv_space_adjust -> tcp_mstamp_refresh), a few hundred ns before this hook: no clock read here
 * (a helper call, ~45 ns on this benchmark's CPU). Only for sockets in the connection table: TCP. */
static __always_inline u64 read_time(u64 sk)
{
    void *tp = rdonly_cast(sk, TCP_SOCK_BTF_ID);
    return *(u64 *)(tp + TCP_CLOCK_CACHE_OFF);
}
#else
static __always_inline u64 read_time(u64 sk)
{
    return bpf_ktime_get_ns();
}
#endif

/* A read of socket sk returned ret (bytes, or an error) with these recv() flags. */
static __always_inline int socket_read(u64 sk, int ret, u64 flags)
{
    if (ret <= 0 && ret != -EAGAIN)
        return 0;
    struct conn_state *c = sock_conn(sk);
    if (!c)
        return 0;
    if (ret < 0) {
        /* The server reads again after it began answering: the answer is complete
         * (an idle keep-alive connection must not hold its last request back). It
         * ended at its last write (resp_end, set with resp_start): no clock read. */
        if (c->resp_start != 0)
            finish_request(&sk, c, c->resp_end);
        return 0;
    }
    if (flags & RECV_NOT_FROM_STREAM)
        return 0;  /* a peek's bytes will be read again; the error queue holds the socket's own timestamps */
    u64 now = read_time(sk);
    u32 how, len = 0;
    u64 arg = syscall_buffer(&how);
    u64 iov_array;
    u64 ptr = first_buffer(how, arg, ret, &len, &iov_array);
    if (ptr && len && on_read(&sk, c, ptr, len, now) == READ_LET_GO)
        forget_connection(sk);
    return 0;
}

#if RECV_HOOK_BTF
/* The read side on the sock_recv_length BTF tracepoint (loaded by user space as tp_btf, like the send
 * side): TP_PROTO(struct sock *sk, int ret, int flags). */
int recv_sock_recv_length(u64 *ctx)
{
    u64 sk = address_of(ctx[0]);
    return socket_read(sk, (int)ctx[1], ctx[2]);
}
#else
RAW_TRACEPOINT_PROBE(sock_recv_length)
{
    /* TP_PROTO(struct sock *sk, int ret, int flags) */
    return socket_read(ctx->args[0], (int)ctx->args[1], ctx->args[2]);
}
#endif

#if SEND_HOOK_BTF
/* The send side on the tcp_sendmsg_locked BTF tracepoint (loaded by user space as tp_btf; BCC cannot):
 * TP_PROTO(const struct sock *sk, const struct msghdr *msg, const struct sk_buff *skb, int size_goal),
 * typed pointers whose fields are loaded directly. The write's buffer comes from msg's iterator, with no
 * register look-up and no user-memory read of the iovec (on this benchmark's CPU that is 2 helper calls
 * per response write instead of 5). The tracepoint fires in each turn of tcp_sendmsg_locked's copy loop,
 * before the bytes are copied, so:
 *  - only a write's first turn counts (the iterator has not advanced: iov_offset 0; a vectored write
 *    whose earlier turns ended exactly at an iovec's end looks like a new write, whose bytes were not
 *    seen before: one more write of the response, nothing counted twice);
 *  - a turn that will wait for send-buffer space (no room in the queue's last skb and the socket's
 *    queue at its limit, as sk_stream_memory_free() tells) is skipped: it either fails with EAGAIN and
 *    is written again later, or fires again when space came, both seen then;
 *  - the write's length is what it asks to send (a partial write's rest comes as a write of its own).
 * Offsets are -D parameters from the running kernel's BTF (ebpftool/tracers/inference.py). */
int send_tcp_sendmsg(u64 *ctx)
{
    u64 sk = address_of(ctx[0]);
    struct conn_state *c = sock_conn(sk);
    if (!c)
        return 0;
    void *msg = (void *)ctx[1];
    if (*(u64 *)(msg + MSG_ITER_OFFSET_OFF) != 0)
        return 0;  /* a later turn of the copy loop */
    void *skb = (void *)ctx[2];
    int room = skb ? (int)ctx[3] - (int)*(u32 *)(skb + SKB_LEN_OFF) : 0;
    void *sock = (void *)ctx[0];
    int queued = *(int *)(sock + SK_WMEM_QUEUED_OFF), limit = *(int *)(sock + SK_SNDBUF_OFF);
    if (room <= 0 && queued >= limit)
        return 0;  /* this turn waits for space: seen when the write goes, or again when it is retried */
    u8 type = *(u8 *)(msg + MSG_ITER_TYPE_OFF);
    u64 count = *(u64 *)(msg + MSG_ITER_COUNT_OFF);
    u64 p = *(u64 *)(msg + MSG_ITER_UBUF_OFF);  /* ITER_UBUF: the buffer; ITER_IOVEC: the kernel's iovec array */
    u64 ptr = 0, iov_array = 0;
    u32 len = count;
    if (type == ITER_UBUF_TYPE) {
        ptr = p;
    } else if (type == ITER_IOVEC_TYPE) {
        /* a typed pointer to the kernel's copy of the iovec array: loaded directly */
        ptr = *(u64 *)p;
        u64 first_len = *(u64 *)(p + 8);
        len = first_len < count ? first_len : count;
        iov_array = p;
    }
    u64 now = bpf_ktime_get_ns();  /* the write's bytes are being queued: start and end are one time */
    /* A write the send buffer has room for goes out whole; a larger one may go out in part, its rest
     * written again (and seen again): its length is then no count of the response's bytes. */
    int whole = (s64)count <= (s64)limit - queued;
    return written_buffer(ctx, &sk, c, ptr, len, count, whole, iov_array, 1, now, now);
}
#else
RAW_TRACEPOINT_PROBE(sock_send_length)
{
    int ret = (int)ctx->args[1];
    if (ret <= 0)
        return 0;
    u64 sk = ctx->args[0];
    struct conn_state *c = sock_conn(sk);
    if (!c)
        return 0;
    u32 how;
    u64 arg = syscall_buffer(&how);
    u64 now = bpf_ktime_get_ns();  /* the hook runs once the bytes went out: start and end are one time */
    return written(ctx, &sk, c, how, arg, ret, now, now);
}
#endif

/* Follows socket sk from now (one that is followed already starts afresh);
 * 0 when its slots are all taken. */
static __always_inline int watch_connection(u64 sk, u16 port, u16 client_port, u16 family, const u8 *v4,
                                            const u8 *v6, u8 seeded)
{
    struct conn_state *slot = find_conn(sk);
    if (!slot)
        slot = claim_conn(sk);
    if (!slot)
        return 0;
    struct conn_state c = {};
    c.key = sk;
    c.id = ((u64)bpf_get_prandom_u32() << 32) ^ bpf_ktime_get_ns();
    c.port = port;
    c.client_port = client_port;
    c.family = family;
    c.seeded = seeded;
    if (family == 2)
        __builtin_memcpy(c.client_addr, v4, 4);
    else
        __builtin_memcpy(c.client_addr, v6, 16);
    *slot = c;
    last_writes.delete(&sk);
    return 1;
}

/* Connections of watched ports that found no slot, per port. */
BPF_PERCPU_HASH(untracked, u16, u64, 1024);

/* A server-side connection on a watched port is established: watched from now.
 * The server's close (or a reset) ends it. */
TRACEPOINT_PROBE(sock, inet_sock_set_state)
{
    if (args->protocol != IPPROTO_TCP)
        return 0;
    u64 sk = (u64)args->skaddr;
    if (args->newstate == TCP_ESTABLISHED) {
        if (args->oldstate != TCP_SYN_RECV)
            return 0;  /* an outgoing connection */
        u16 port = args->sport;
        if (!watched_ports.lookup(&port))
            return 0;
#if !FILTER_PIDS
        count_accepted(port);  /* at its handshake: also a connection that never sends a byte */
#endif
        if (!watch_connection(sk, port, args->dport, args->family, args->daddr, args->daddr_v6, 0)) {
            u64 zero64 = 0;
            u64 *n = untracked.lookup_or_try_init(&port, &zero64);
            if (n)
                *n += 1;
        }
        return 0;
    }
    if (args->newstate != TCP_FIN_WAIT1 && args->newstate != TCP_LAST_ACK && args->newstate != TCP_CLOSE)
        return 0;
    if (!maybe_watched(sk))
        return 0;  /* every TCP socket of the node closes through here */
    struct conn_state *c = find_conn(sk);
    if (!c)
        return 0;
    finish_request(&sk, c, bpf_ktime_get_ns());
    forget_connection(sk);
    return 0;
}

#if SEED_CONNECTIONS
/* Connections established before the tracer: found at their next read (this
 * fires inside it, before sock_recv_length). Attached only while user space
 * knows of such connections: it runs at every TCP read of the system. */
TRACEPOINT_PROBE(tcp, tcp_rcv_space_adjust)
{
    u16 port = args->sport;
    if (!watched_ports.lookup(&port))
        return 0;
    u64 sk = (u64)args->skaddr;
    if (maybe_watched(sk) && find_conn(sk))
        return 0;
#if FILTER_PIDS
    u32 pid = bpf_get_current_pid_tgid() >> 32;
    if (!watched_pids.lookup(&pid))
        return 0;
#endif
    /* A connection that finds no slot is tried again at its next read: not counted here, where it would be
     * counted once per read (user space reports those never found). */
    if (watch_connection(sk, port, args->dport, args->family, args->daddr, args->daddr_v6, 1))
        stat_add(STAT_INF_SEEDED, 1);
    return 0;
}
#endif

#if ARRIVAL_HOOK
/* Bytes arrived on a socket (sock:sk_data_ready, Linux 6.7+; TCP signals it as it queues them). On a
 * watched connection with no request open, or whose response has begun, they are the next request's
 * first: it began now, though the server may read it much later (it waits in the socket's queue). */
static __always_inline int bytes_arrived(u64 sk)
{
    if (!maybe_watched(sk))
        return 0;
    struct conn_state *c = find_conn(sk);
    if (c && c->arrival == 0 && (c->req_start == 0 || c->resp_start != 0))
        c->arrival = read_time(sk);  /* TCP's clock of the socket: refreshed as it took the segment in */
    return 0;
}

#if RECV_HOOK_BTF
/* On the BTF tracepoint (loaded by user space as tp_btf): TP_PROTO(const struct sock *sk). */
int arrival_sk_data_ready(u64 *ctx)
{
    return bytes_arrived(address_of(ctx[0]));
}
#else
RAW_TRACEPOINT_PROBE(sk_data_ready)
{
    return bytes_arrived(ctx->args[0]);
}
#endif
#endif

#else
/* ---- syscall hooks: accept ------------------------------------------------------- */

static __always_inline struct conn_state *find_conn(u64 k)
{
    return conns.lookup(&k);
}

static __always_inline void forget_conn(u64 *k)
{
    conns.delete(k);
    last_writes.delete(k);
}

static __always_inline int accept_enter(s32 lfd, u64 sockaddr)
{
    u64 id = bpf_get_current_pid_tgid();
    u32 pid = id >> 32;
#if FILTER_PIDS
    if (!watched_pids.lookup(&pid))
        return 0;
#endif
    struct conn_key lk = {.pid = pid, .fd = lfd};
    u16 *port = listeners.lookup(&lk);
#if FILTER_PORTS
    if (!port)
        return 0;
#endif
    struct accept_args a = {.sockaddr = sockaddr, .lfd = lfd, .port = port ? *port : 0};
    u32 tid = id;
    accepting.update(&tid, &a);
    return 0;
}

static __always_inline int accept_exit(long ret)
{
    u64 id = bpf_get_current_pid_tgid();
    u32 tid = id;
    struct accept_args *a = accepting.lookup(&tid);
    if (!a)
        return 0;
    struct accept_args args = *a;
    accepting.delete(&tid);
    if (ret < 0)
        return 0;
    u64 k = current_key((s32)ret);
    struct conn_state c = {};
    c.key = k;
    c.id = ((u64)bpf_get_prandom_u32() << 32) ^ bpf_ktime_get_ns();  /* (pid, fd) is reused by later connections */
    c.pid = k >> 32;
    c.cgroup = bpf_get_current_cgroup_id();
    bpf_get_current_comm(c.comm, sizeof(c.comm));
    c.port = args.port;
    if (args.sockaddr) {
        u16 family = 0;
        bpf_probe_read_user(&family, sizeof(family), (void *)args.sockaddr);
        u16 port_be = 0;
        bpf_probe_read_user(&port_be, sizeof(port_be), (void *)(args.sockaddr + 2));
        c.client_port = (port_be >> 8) | ((port_be & 0xff) << 8);
        if (family == 2) {
            c.family = 2;
            bpf_probe_read_user(c.client_addr, 4, (void *)(args.sockaddr + 4));
        } else if (family == 10) {
            c.family = 10;
            bpf_probe_read_user(c.client_addr, 16, (void *)(args.sockaddr + 8));
        }
    }
    conns.update(&k, &c);
    last_writes.delete(&k);
    count_accepted(c.port);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_accept4) { return accept_enter(args->fd, (u64)args->upeer_sockaddr); }
TRACEPOINT_PROBE(syscalls, sys_exit_accept4) { return accept_exit(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_accept) { return accept_enter(args->fd, (u64)args->upeer_sockaddr); }
TRACEPOINT_PROBE(syscalls, sys_exit_accept) { return accept_exit(args->ret); }

/* ---- reads and writes --------------------------------------------------------- */

/* Entry: one lookup for an unwatched fd, then nothing. */
static __always_inline int io_enter(int is_write, s32 fd, u64 ptr, u32 how)
{
    u64 k = current_key(fd);
    struct conn_state *c = conns.lookup(&k);
    if (!c)
        return 0;
    /* The server reads again after it began answering: the answer is complete
     * (an idle keep-alive connection must not hold its last request back). */
    u64 now = bpf_ktime_get_ns();
    if (!is_write && c->resp_start != 0)
        finish_request(&k, c, now);
    struct io_args *a = inflight.task_storage_get(bpf_get_current_task_btf(), 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
    if (!a)
        return 0;
    a->ptr = ptr;
    a->ts = now;
    a->fd = fd;
    a->how = how;
    a->is_write = is_write;
    a->active = 1;
    return 0;
}

/* At a syscall's exit: the watched connection its entry recorded, or NULL.
 * Clears the in-flight record either way, and skips failed calls. */
static __always_inline struct conn_state *finished_io(int is_write, long ret, struct io_args *a, u64 *k)
{
    struct io_args *ap = inflight.task_storage_get(bpf_get_current_task_btf(), 0, 0);
    if (!ap || !ap->active || ap->is_write != is_write)
        return 0;
    *a = *ap;
    ap->active = 0;
    if (ret <= 0)
        return 0;
    *k = current_key(a->fd);
    struct conn_state *c = conns.lookup(k);
    if (c && c->cgroup == 0)
        c->cgroup = bpf_get_current_cgroup_id();  /* seeded from /proc: its process's cgroup, seen from here */
    return c;
}

static __always_inline int read_exit(long ret)
{
    struct io_args a;
    u64 k;
    struct conn_state *c = finished_io(0, ret, &a, &k);
    if (!c)
        return 0;
    u32 len = 0;
    u64 iov_array;
    u64 ptr = first_buffer(a.how, a.ptr, ret, &len, &iov_array);
    if (!ptr || len == 0)
        return 0;
    if (on_read(&k, c, ptr, len, bpf_ktime_get_ns()) == READ_LET_GO)
        forget_conn(&k);
    return 0;
}

static __always_inline int write_exit(void *ctx, long ret)
{
    struct io_args a;
    u64 k;
    struct conn_state *c = finished_io(1, ret, &a, &k);
    if (!c)
        return 0;
    return written(ctx, &k, c, a.how, a.ptr, ret, a.ts, bpf_ktime_get_ns());
}

TRACEPOINT_PROBE(syscalls, sys_enter_read) { return io_enter(0, args->fd, (u64)args->buf, BUF_PLAIN); }
TRACEPOINT_PROBE(syscalls, sys_exit_read) { return read_exit(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_recvfrom)
{
    return (args->flags & RECV_NOT_FROM_STREAM) ? 0 : io_enter(0, args->fd, (u64)args->ubuf, BUF_PLAIN);
}
TRACEPOINT_PROBE(syscalls, sys_exit_recvfrom) { return read_exit(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_readv) { return io_enter(0, args->fd, (u64)args->vec, BUF_IOV); }
TRACEPOINT_PROBE(syscalls, sys_exit_readv) { return read_exit(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_recvmsg)
{
    return (args->flags & RECV_NOT_FROM_STREAM) ? 0 : io_enter(0, args->fd, (u64)args->msg, BUF_MSG);
}
TRACEPOINT_PROBE(syscalls, sys_exit_recvmsg) { return read_exit(args->ret); }

TRACEPOINT_PROBE(syscalls, sys_enter_write) { return io_enter(1, args->fd, (u64)args->buf, BUF_PLAIN); }
TRACEPOINT_PROBE(syscalls, sys_exit_write) { return write_exit(args, args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_sendto) { return io_enter(1, args->fd, (u64)args->buff, BUF_PLAIN); }
TRACEPOINT_PROBE(syscalls, sys_exit_sendto) { return write_exit(args, args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_writev) { return io_enter(1, args->fd, (u64)args->vec, BUF_IOV); }
TRACEPOINT_PROBE(syscalls, sys_exit_writev) { return write_exit(args, args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_sendmsg) { return io_enter(1, args->fd, (u64)args->msg, BUF_MSG); }
TRACEPOINT_PROBE(syscalls, sys_exit_sendmsg) { return write_exit(args, args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_sendfile64) { return io_enter(1, args->out_fd, 0, BUF_NONE); }
TRACEPOINT_PROBE(syscalls, sys_exit_sendfile64) { return write_exit(args, args->ret); }

TRACEPOINT_PROBE(syscalls, sys_enter_close)
{
    u64 k = current_key(args->fd);
    struct conn_state *c = conns.lookup(&k);
    if (!c)
        return 0;
    finish_request(&k, c, bpf_ktime_get_ns());
    conns.delete(&k);
    last_writes.delete(&k);
    return 0;
}
#endif
