/* ebpftool agents: the plaintext of the HTTP/1 calls a node's processes make to LLM APIs and MCP servers,
 * handed to user space on a ring buffer of its own; user space parses each call (ebpftool/tracers/agents).
 *
 * Why the parsing is not in the kernel (docs/agents.md, "How the kernel side works"): LLM calls are rare
 * (a few per second per agent) and each costs its caller hundreds of milliseconds and money, so reading
 * each one in Python costs nothing that matters; what must stay cheap is everything else a node does, and
 * that leaves these programs after one lookup.
 *
 * Only outgoing connections, two ways in:
 *  - TLS: uprobes on OpenSSL's SSL_read / SSL_read_ex / SSL_write / SSL_write_ex (or the implementation
 *    they share: ebpftool/tracers/inference/tls_libs.py places them), in every libssl on the node. A
 *    connection is (tgid, SSL object). It is a client's when its first plaintext write is an HTTP/1 request;
 *    one whose first plaintext was read (a server's side) or written as anything else is ignored.
 *  - cleartext (Ollama, vLLM on a local port), one of two hooks (the plan, ebpftool/tracers/agents/plans.py):
 *    the socket hooks (Linux 6.3+, x86-64): a TCP socket entering SYN_SENT (sock:inet_sock_set_state, in the
 *    context of the connect() that sent it) makes (tgid, socket) a candidate; the raw sock_send_length /
 *    sock_recv_length tracepoints fire at each socket write and read, whose buffer is the syscall's (its
 *    saved registers), and nothing else of the node's syscalls pays. Or the syscall tracepoints: connect()
 *    of an AF_INET/AF_INET6 socket makes (tgid, fd) a candidate; write/sendto/writev/sendmsg and
 *    read/recvfrom/readv/recvmsg follow. Either way its first write decides as above (a TLS handshake is not
 *    HTTP: such a socket is ignored, its plaintext comes through the uprobes); of an iovec array, the first
 *    AGENTS_IOV_PARTS buffers are read.
 * A client connection is in a call from a write that begins with `POST `; from then on its writes (up to
 * AGENTS_REQUEST_BYTES of a request) and reads (up to AGENTS_READ_CHUNKS * AGENTS_CHUNK of each) go to user
 * space with their lengths and times. User space lets go of a call that is no LLM or MCP call (drop_calls);
 * the next `POST ` starts again. Lost events are counted (the shared stats) and each event has a sequence
 * number per connection, so user space knows which call lost one.
 *
 * Compile-time parameters (ebpftool/tracers/agents/tracer.py):
 *   FILTER_PROCESSES  1: only processes in watched_pids or with a name in watched_comms make connections
 *   AGENTS_CLEARTEXT  cleartext connections too: 2 through the socket hooks, 1 the syscall tracepoints (0: TLS
 *                     only)
 *   RINGBUF_PAGES     size of the ring buffer
 */
#include <uapi/linux/ptrace.h>
#include "agents.h"

#ifndef FILTER_PROCESSES
#define FILTER_PROCESSES 0
#endif
#ifndef RINGBUF_PAGES
#define RINGBUF_PAGES 256
#endif
#ifndef AGENTS_CLEARTEXT
#define AGENTS_CLEARTEXT 1
#endif

#define CONN_NEW 4          /* a connect()ed socket before its first write (not in agents.h: kernel only) */
#define CONN_H2 5           /* a client's HTTP/2 connection (its first write the client preface, or the preface after
                             * an h2c Upgrade): every byte of it goes to user space, which reads its streams
                             * (ebpftool/tracers/agents/http2.py) */
#define AF_INET_ 2
#define AF_INET6_ 10
#define ERR_INPROGRESS 115  /* a non-blocking connect() under way (asyncio, every event loop) */

BPF_RINGBUF_OUTPUT(agent_events, RINGBUF_PAGES);
BPF_TABLE("lru_hash", struct conn_key, struct conn_state, conns, AGENTS_MAX_CONNS);
BPF_HASH(drop_calls, struct conn_key, struct drop_request, 4096);   /* written by user space */
BPF_PERCPU_ARRAY(scratch, struct agent_event, 1);                    /* an event is too big for the stack */
BPF_HASH(watched_pids, u32, u8, 16384);                              /* FILTER_PROCESSES: by tgid ... */
BPF_HASH(watched_comms, struct comm_name, u8, 64);                   /* ... or by the thread's name */

static __always_inline u64 bounded(u64 n, u64 max)
{
    if (n > max)
        n = max;
    asm volatile("" : "+r"(n));   /* keep the bound where the verifier sees it */
    if (n > max)
        n = max;
    return n;
}

/* Whether the current process's connections are followed (checked once per connection, at its start). */
static __always_inline int watched(u32 tgid)
{
#if FILTER_PROCESSES
    if (watched_pids.lookup(&tgid))
        return 1;
    struct comm_name name = {};
    bpf_get_current_comm(&name.name, sizeof(name.name));
    return watched_comms.lookup(&name) != 0;
#else
    return 1;
#endif
}

/* The HTTP/1 request methods as little-endian words of their first bytes (method and space). */
#define METHOD_NONE 0
#define METHOD_OTHER 1
#define METHOD_POST 2
#define METHOD_H2 3       /* HTTP/2's client preface, "PRI * HTTP/2.0..." */
#define HAS(w, word, nbytes) (((w) & (~0ULL >> (64 - 8 * (nbytes)))) == (word))

static __always_inline int http_method(u64 buf, u64 len)
{
    u64 w = 0;
    if (len < 4 || read_user(&w, bounded(len, 8), (void *)buf) != 0)
        return METHOD_NONE;
    if (HAS(w, 0x2054534f50ULL, 5))              /* "POST " */
        return METHOD_POST;
    if (w == 0x5448202a20495250ULL)              /* "PRI * HT" */
        return METHOD_H2;
    if (HAS(w, 0x20544547ULL, 4) || HAS(w, 0x20545550ULL, 4) || HAS(w, 0x2044414548ULL, 5) ||
        HAS(w, 0x204843544150ULL, 6) || HAS(w, 0x204554454c4544ULL, 7) || HAS(w, 0x20534e4f4954504fULL, 8))
        return METHOD_OTHER;                     /* GET, PUT, HEAD, PATCH, DELETE, OPTIONS */
    return METHOD_NONE;
}

/* `copy` bytes at user address buf to user space, in events of up to AGENTS_CHUNK bytes, the first at `at`
 * in the read or write (of `len` bytes moved in all: a vectored one sends a buffer at a time). `final`: no
 * buffer follows, so the last event is marked; a final send of nothing is one empty event. */
static __always_inline void send_bytes(struct conn_key *k, struct conn_state *c, u8 kind, u8 starts, u64 buf,
                                       u32 len, u32 copy, u32 at, u8 final, u64 now, u32 max_chunks)
{
    if (copy == 0 && !final)
        return;
    u32 zero = 0;
    struct agent_event *e = scratch.lookup(&zero);
    if (!e)
        return;
    e->ts = now;
    e->id = k->id;
    e->tgid = k->tgid;
    e->tid = (u32)bpf_get_current_pid_tgid();
    e->call = c->call;
    e->len = len;
    e->kind = kind;
    e->via = k->via;
    e->starts = starts;
    e->port = c->port;
    bpf_get_current_comm(&e->comm, sizeof(e->comm));
    u32 off = 0;
    for (u32 i = 0; i < max_chunks; i++) {
        u32 n = copy - off;
        if (n > AGENTS_CHUNK)
            n = AGENTS_CHUNK;
        e->offset = at + off;
        e->size = n;
        e->last = final && off + n >= copy;
        e->seq = c->seq++;
        if (n && read_user(e->data, bounded(n, AGENTS_CHUNK), (void *)(buf + off)) != 0)
            e->size = 0;   /* unreadable: user space fills the gap as not copied */
        u64 size = __builtin_offsetof(struct agent_event, data) + e->size;
        if (agent_events.ringbuf_output(e, bounded(size, sizeof(*e)), ringbuf_wakeup_flags(size, RINGBUF_PAGES)) != 0)
            count_ringbuf_full();
        off += n;
        if (off >= copy)
            break;
    }
}

/* User space asked to let go of this call (no LLM or MCP call): the connection waits for its next `POST `. */
static __always_inline int let_go(struct conn_key *k, struct conn_state *c)
{
    struct drop_request *d = drop_calls.lookup(k);
    if (!d)
        return 0;
    u32 call = d->call;
    drop_calls.delete(k);
    if (call != c->call)
        return 0;   /* an earlier call's request: a new call began since */
    c->state = CONN_CLIENT;
    stat_add(STAT_AGENTS_DROPS_APPLIED, 1);
    return 1;
}

/* A write returned on connection k, its first bytes at buf (first_len of them in that buffer): the
 * connection's state when the write is to be sent (the connection is in a call), else NULL. *starts: this
 * write began the call. */
static __always_inline struct conn_state *write_in_call(struct conn_key *k, u64 buf, u64 first_len, u8 *starts)
{
    struct conn_state *c = conns.lookup(k);
    if (c && c->state == CONN_IGNORED)
        return 0;   /* the common case for every connection that is not a client's HTTP/1 or HTTP/2 */
    if (c && c->state == CONN_H2)
        return c;   /* every write of an HTTP/2 connection */
    int method = http_method(buf, first_len);
    u32 state = method == METHOD_H2 ? CONN_H2 : method != METHOD_NONE ? CONN_CLIENT : CONN_IGNORED;
    if (!c) {
        if (k->via != VIA_TLS)
            return 0;   /* a socket is followed from its connect() only */
        struct conn_state fresh = {.state = watched(k->tgid) ? state : CONN_IGNORED};
        conns.update(k, &fresh);
        c = conns.lookup(k);
        if (!c || c->state == CONN_IGNORED)
            return 0;
    } else if (c->state == CONN_NEW) {
        c->state = state;
        if (c->state == CONN_IGNORED)
            return 0;
    } else if (method == METHOD_H2) {
        /* the preface on an HTTP/1 connection: the server took the h2c Upgrade (RFC 7540 3.2) its request
         * asked for. A call of its own for user space (the request's may have been let go), which reads the
         * connection whole from here as any HTTP/2 one */
        c->state = CONN_H2;
        c->call++;
        *starts = 1;
        return c;
    }
    if (c->state == CONN_H2) {
        c->call = 1;   /* one "call" for the connection's life: user space tells its streams apart */
        *starts = 1;
        return c;
    }
    if (method == METHOD_POST) {
        c->state = CONN_IN_CALL;
        c->call++;
        c->request_left = AGENTS_REQUEST_BYTES;
        *starts = 1;
        stat_add(STAT_AGENTS_CALLS_STARTED, 1);
    }
    if (c->state != CONN_IN_CALL || let_go(k, c))
        return 0;
    return c;
}

/* A read returned on connection k: its state when the read is to be sent (in a call), else NULL. */
static __always_inline struct conn_state *read_in_call(struct conn_key *k)
{
    struct conn_state *c = conns.lookup(k);
    if (!c) {
        if (k->via == VIA_TLS) {
            /* plaintext read before any was written: a server's side of TLS */
            struct conn_state ignored = {.state = CONN_IGNORED};
            conns.update(k, &ignored);
        }
        return 0;
    }
    if (c->state == CONN_NEW) {
        c->state = CONN_IGNORED;   /* the server spoke first: not HTTP */
        return 0;
    }
    if (c->state == CONN_H2)
        return c;
    if (c->state != CONN_IN_CALL || let_go(k, c))
        return 0;
    return c;
}

/* Of a request's write of `moved` bytes, how many to copy (what is left of the request's bound, at most max;
 * of an HTTP/2 connection's write, at most max). */
static __always_inline u32 request_copy(struct conn_state *c, u64 moved, u32 max)
{
    if (c->state == CONN_H2)
        return (u32)bounded(moved, max);
    u32 copy = (u32)bounded(moved, c->request_left);
    copy = (u32)bounded(copy, max);
    c->request_left -= copy;
    return copy;
}

/* A write of `moved` bytes from one buffer returned on connection k. */
static __always_inline void on_write(struct conn_key *k, u64 buf, u64 moved)
{
    u8 starts = 0;
    struct conn_state *c = write_in_call(k, buf, moved, &starts);
    if (!c)
        return;
    u32 len = (u32)bounded(moved, 0xffffffff);
    /* an HTTP/1 request's writes are bounded by AGENTS_REQUEST_BYTES in all; an HTTP/2 connection's as reads are
     * (its frames must stay whole for user space to follow them) */
    u32 copy = request_copy(c, moved, (c->state == CONN_H2 ? AGENTS_READ_CHUNKS : AGENTS_WRITE_CHUNKS) * AGENTS_CHUNK);
    if (len > copy)
        stat_add(STAT_AGENTS_BYTES_NOT_COPIED, len - copy);
    send_bytes(k, c, EV_WRITE, starts, buf, len, copy, 0, 1, bpf_ktime_get_ns(), AGENTS_READ_CHUNKS);
}

/* A read of `moved` bytes into one buffer returned on connection k. */
static __always_inline void on_read(struct conn_key *k, u64 buf, u64 moved)
{
    struct conn_state *c = read_in_call(k);
    if (!c)
        return;
    u32 len = (u32)bounded(moved, 0xffffffff);
    u32 copy = (u32)bounded(moved, AGENTS_READ_CHUNKS * AGENTS_CHUNK);
    if (len > copy)
        stat_add(STAT_AGENTS_BYTES_NOT_COPIED, len - copy);
    send_bytes(k, c, EV_READ, 0, buf, len, copy, 0, 1, bpf_ktime_get_ns(), AGENTS_READ_CHUNKS);
}

/* Connection k ended (close(), SSL_free): a call under way ends with it. */
static __always_inline void on_close(struct conn_key *k)
{
    struct conn_state *c = conns.lookup(k);
    if (!c)
        return;
    if (c->state == CONN_IN_CALL)
        send_bytes(k, c, EV_CLOSE, 0, 0, 0, 0, 0, 1, bpf_ktime_get_ns(), 1);
    conns.delete(k);
    drop_calls.delete(k);
}

/* -- TLS: OpenSSL ------------------------------------------------------------------------------------ */

struct tls_args {
    u64 ssl;
    u64 buf;
    u64 count_at;   /* SSL_read_ex / SSL_write_ex (and their shared implementation): where the count goes */
    u32 len;
    u8 is_write;
    u8 active;
    u16 pad;
};
/* Per thread: the library call under way (task storage: no update and delete per call). */
BPF_TASK_STORAGE(tls_calls, struct tls_args);

static __always_inline int tls_enter(struct pt_regs *ctx, u8 is_write, int ex)
{
    struct tls_args *a = tls_calls.task_storage_get(bpf_get_current_task_btf(), 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
    if (!a)
        return 0;
    a->ssl = PT_REGS_PARM1(ctx);
    a->buf = PT_REGS_PARM2(ctx);
    a->len = (u32)bounded(PT_REGS_PARM3(ctx), 0x7fffffff);
    a->count_at = ex ? PT_REGS_PARM4(ctx) : 0;
    a->is_write = is_write;
    a->active = 1;
    return 0;
}

int tls_read_enter(struct pt_regs *ctx) { return tls_enter(ctx, 0, 0); }
int tls_read_ex_enter(struct pt_regs *ctx) { return tls_enter(ctx, 0, 1); }
int tls_write_enter(struct pt_regs *ctx) { return tls_enter(ctx, 1, 0); }
int tls_write_ex_enter(struct pt_regs *ctx) { return tls_enter(ctx, 1, 1); }

/* is_write: a constant in each program, so each verifies only its own direction's path */
static __always_inline int tls_return(struct pt_regs *ctx, u8 is_write)
{
    struct tls_args *a = tls_calls.task_storage_get(bpf_get_current_task_btf(), 0, 0);
    if (!a || !a->active || a->is_write != is_write)
        return 0;
    a->active = 0;
    int ret = (int)PT_REGS_RC(ctx);   /* an int: -1 leaves rax's upper half zero (mov to eax), a large long */
    u64 moved = 0;
    if (a->count_at) {
        /* SSL_*_ex return 1 and store the count where their entry noted; their shared implementation returns
         * > 0. The others return it: one return program serves both. */
        if (ret <= 0 || read_user(&moved, sizeof(moved), (void *)a->count_at) != 0)
            return 0;
    } else if (ret > 0) {
        moved = ret;
    }
    if (moved == 0 || moved > a->len)
        return 0;
    struct conn_key k = {.tgid = bpf_get_current_pid_tgid() >> 32, .via = VIA_TLS, .id = a->ssl};
    if (is_write)
        on_write(&k, a->buf, moved);
    else
        on_read(&k, a->buf, moved);
    return 0;
}

int tls_read_exit(struct pt_regs *ctx) { return tls_return(ctx, 0); }
int tls_write_exit(struct pt_regs *ctx) { return tls_return(ctx, 1); }

/* SSL_free: the connection ends, and the object's address will be another's. */
int tls_free_enter(struct pt_regs *ctx)
{
    struct conn_key k = {.tgid = bpf_get_current_pid_tgid() >> 32, .via = VIA_TLS, .id = PT_REGS_PARM1(ctx)};
    on_close(&k);
    return 0;
}

/* -- TLS: Go's crypto/tls ----------------------------------------------------------------------------- */
/* Go links its TLS into each executable (no libssl): uprobes on crypto/tls.(*Conn).Write, Read and Close
 * there (ebpftool/tracers/agents/go_tls.py places them). Go's register ABI (Go 1.17+, amd64): a method's
 * receiver and arguments in rax, rbx, rcx, ...; its first result in rax; the running goroutine in r14.
 * Write(b []byte) (int, error): the connection in rax, b's data and length in rbx and rcx; Write moves all of
 * b or fails, so the bytes are taken at its entry. Read's count comes at its return, and Go moves goroutine
 * stacks, which a uretprobe's rewritten return address would break: its `ret` instructions are probed
 * instead, the buffer noted at entry per goroutine (a goroutine that blocks in Read may resume on another
 * thread). A connection is (tgid, *tls.Conn), as OpenSSL's is (tgid, SSL *). On amd64 only (the registers). */
struct go_read_key {
    u32 tgid;
    u32 pad;
    u64 goroutine;   /* r14: its g */
};
struct go_read {
    u64 conn;
    u64 buf;
    u64 len;
};
/* An LRU: net/http's read loop sits in Read on every idle pooled connection, so notes wait as long as they
 * do; past this many at once the longest-waiting go first (their next answer is then not seen). */
BPF_TABLE("lru_hash", struct go_read_key, struct go_read, go_reads, 16384);

int go_tls_write_enter(struct pt_regs *ctx)
{
    s64 len = (s64)ctx->cx;
    if (len <= 0)
        return 0;
    struct conn_key k = {.tgid = bpf_get_current_pid_tgid() >> 32, .via = VIA_TLS, .id = ctx->ax};
    on_write(&k, ctx->bx, (u64)len);
    return 0;
}

int go_tls_read_enter(struct pt_regs *ctx)
{
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    struct conn_key k = {.tgid = tgid, .via = VIA_TLS, .id = ctx->ax};
    struct conn_state *c = conns.lookup(&k);
    if (c && c->state == CONN_IGNORED)
        return 0;   /* a server's side, or no HTTP: nothing noted */
    /* Noted even before the connection's first write: net/http's client reads (its readLoop) from the start,
     * while another goroutine writes the request. Whether the bytes are sent is decided at the return. */
    struct go_read_key rk = {.tgid = tgid, .goroutine = ctx->r14};
    struct go_read r = {.conn = ctx->ax, .buf = ctx->bx, .len = ctx->cx};
    go_reads.update(&rk, &r);
    return 0;
}

int go_tls_read_return(struct pt_regs *ctx)
{
    struct go_read_key rk = {.tgid = bpf_get_current_pid_tgid() >> 32, .goroutine = ctx->r14};
    struct go_read *noted = go_reads.lookup(&rk);
    if (!noted)
        return 0;
    struct go_read r = *noted;
    go_reads.delete(&rk);
    s64 n = (s64)ctx->ax;
    if (n <= 0 || (u64)n > r.len)
        return 0;
    struct conn_key k = {.tgid = rk.tgid, .via = VIA_TLS, .id = r.conn};
    on_read(&k, r.buf, (u64)n);
    return 0;
}

int go_tls_close_enter(struct pt_regs *ctx)
{
    struct conn_key k = {.tgid = bpf_get_current_pid_tgid() >> 32, .via = VIA_TLS, .id = ctx->ax};
    on_close(&k);
    return 0;
}

#if AGENTS_CLEARTEXT
/* -- cleartext: what both ways in share ------------------------------------------------------------- */
/* How a syscall gives its buffer. */
#define BUF_PLAIN 0   /* write, read, sendto, recvfrom: one buffer */
#define BUF_IOV 1     /* writev, readv: an iovec array and its count */
#define BUF_MSG 2     /* sendmsg, recvmsg: a user_msghdr, whose msg_iov and msg_iovlen are at 16 and 24 */
#define MSG_PEEK_ 2

/* Vectored I/O (writev, sendmsg, readv, recvmsg) of `ret` bytes on connection k: the first AGENTS_IOV_PARTS
 * buffers, each clipped to what the call moved (a short one fills them in order), up to AGENTS_IOV_CHUNKS
 * events each; the rest is sent as not copied. buf: the iovec array (BUF_IOV, count of them) or the
 * user_msghdr (BUF_MSG). */
#define AGENTS_IOV_PARTS 2
#define AGENTS_IOV_CHUNKS 4

struct user_iovec {
    u64 base;
    u64 len;
};

static __always_inline void vectored_io(struct conn_key *k, u8 how, u64 buf, u64 count, long ret, u8 is_write)
{
    u64 iov = buf;
    if (how == BUF_MSG &&
        (read_user(&iov, sizeof(iov), (void *)buf + 16) != 0 ||
         read_user(&count, sizeof(count), (void *)buf + 24) != 0))
        return;
    struct user_iovec v[AGENTS_IOV_PARTS] = {};
    #pragma unroll
    for (int i = 0; i < AGENTS_IOV_PARTS; i++) {
        if (i >= count || read_user(&v[i], sizeof(v[i]), (void *)(iov + i * sizeof(v[i]))) != 0)
            break;
    }
    u8 starts = 0;
    struct conn_state *c = is_write ? write_in_call(k, v[0].base, v[0].len < (u64)ret ? v[0].len : (u64)ret, &starts)
                                    : read_in_call(k);
    if (!c)
        return;
    u32 len = (u32)bounded(ret, 0xffffffff);
    u32 max = AGENTS_IOV_PARTS * AGENTS_IOV_CHUNKS * AGENTS_CHUNK;
    u32 budget = is_write ? request_copy(c, ret, max) : (u32)bounded(ret, max);
    if (len > budget)
        stat_add(STAT_AGENTS_BYTES_NOT_COPIED, len - budget);
    u64 now = bpf_ktime_get_ns();
    u32 done = 0;
    #pragma unroll
    for (int i = 0; i < AGENTS_IOV_PARTS; i++) {
        u32 take = (u32)bounded(v[i].len, AGENTS_IOV_CHUNKS * AGENTS_CHUNK);
        if (take > budget - done)
            take = budget - done;
        u8 final = i == AGENTS_IOV_PARTS - 1 || done + take >= budget;
        send_bytes(k, c, is_write ? EV_WRITE : EV_READ, starts, v[i].base, len, take, done, final, now,
                   AGENTS_IOV_CHUNKS);
        done += take;
        if (final)
            break;
    }
}
#endif

#if AGENTS_CLEARTEXT == 2
/* -- cleartext: the socket hooks ------------------------------------------------------------------- */
/* Socket reads and writes only (not every syscall of the node, as an enabled syscall tracepoint makes them):
 * a socket that is no candidate leaves after one lookup. */
#define TCP_SYN_SENT_ 2
#define TCP_FIN_WAIT1_ 4
#define TCP_CLOSE_ 7
#define TCP_LAST_ACK_ 9
#define IPPROTO_TCP_ 6

/* SYN_SENT: tcp_v4_connect() / tcp_v6_connect() set it in the task that called connect(), so the current
 * process is the connection's. Our side's close (FIN_WAIT1, or LAST_ACK after the peer's FIN) runs in the
 * task that closes; a connect() that failed goes from SYN_SENT to CLOSE. A socket whose end the kernel saw
 * elsewhere (a reset, in softirq) is left to the table's LRU, and to the next connect() of its address. */
TRACEPOINT_PROBE(sock, inet_sock_set_state)
{
    if (args->protocol != IPPROTO_TCP_)
        return 0;
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    struct conn_key k = {.tgid = tgid, .via = VIA_SOCKET, .id = (u64)args->skaddr};
    if (args->newstate == TCP_SYN_SENT_) {
        if (!watched(tgid))
            return 0;
        struct conn_state fresh = {.state = CONN_NEW, .port = args->dport};
        conns.update(&k, &fresh);
    } else if (args->newstate == TCP_FIN_WAIT1_ || args->newstate == TCP_LAST_ACK_ ||
               (args->newstate == TCP_CLOSE_ && args->oldstate == TCP_SYN_SENT_)) {
        on_close(&k);
    }
    return 0;
}

/* A read or write of `ret` bytes on socket sk returned, inside the syscall whose buffer its saved registers
 * give (sendfile, splice and io_uring have none: not followed). */
static __always_inline int socket_io(u64 sk, int ret, u8 is_write)
{
    struct conn_key k = {.tgid = bpf_get_current_pid_tgid() >> 32, .via = VIA_SOCKET, .id = sk};
    struct conn_state *c = conns.lookup(&k);
    if (!c || c->state == CONN_IGNORED || (!is_write && c->state == CONN_CLIENT))
        return 0;   /* every socket that is not a client's HTTP/1 in a call (or before its first write) */
    struct pt_regs *regs = CURRENT_SYSCALL_REGS();
    u64 nr = regs->orig_ax, buf = regs->si;
    if (nr == (is_write ? NR_WRITE : NR_READ) || nr == (is_write ? NR_SENDTO : NR_RECVFROM)) {
        if (is_write)
            on_write(&k, buf, ret);
        else
            on_read(&k, buf, ret);
    } else if (nr == (is_write ? NR_WRITEV : NR_READV)) {
        vectored_io(&k, BUF_IOV, buf, regs->dx, ret, is_write);
    } else if (nr == (is_write ? NR_SENDMSG : NR_RECVMSG)) {
        vectored_io(&k, BUF_MSG, buf, 0, ret, is_write);
    }
    return 0;
}

/* TP_PROTO(struct sock *sk, int ret, int flags) */
RAW_TRACEPOINT_PROBE(sock_send_length)
{
    int ret = (int)ctx->args[1];
    return ret > 0 ? socket_io(ctx->args[0], ret, 1) : 0;
}

RAW_TRACEPOINT_PROBE(sock_recv_length)
{
    int ret = (int)ctx->args[1];
    if (ret <= 0 || ((int)ctx->args[2] & RECV_NOT_FROM_STREAM))
        return 0;   /* a peek's bytes are read again; the error queue holds the socket's own timestamps */
    return socket_io(ctx->args[0], ret, 0);
}
#endif /* AGENTS_CLEARTEXT == 2 */

/* -- cleartext: syscalls ----------------------------------------------------------------------------- */
/* Where the socket hooks are missing (before Linux 6.3, not x86-64): an enabled syscall tracepoint costs every
 * write and read of the node ~0.2 us here, whatever the program does; the TLS uprobes cost only the calls of
 * OpenSSL. */
#if AGENTS_CLEARTEXT == 1

struct connect_args {
    u32 fd;
    u16 port;
    u16 pad;
};
BPF_HASH(connecting, u64, struct connect_args, 4096);   /* per thread: a TCP connect() in flight */

TRACEPOINT_PROBE(syscalls, sys_enter_connect)
{
    u16 family = 0, port = 0;
    if (read_user(&family, sizeof(family), args->uservaddr) != 0 ||
        (family != AF_INET_ && family != AF_INET6_))
        return 0;
    u64 id = bpf_get_current_pid_tgid();
    if (!watched(id >> 32))
        return 0;
    read_user(&port, sizeof(port), (void *)args->uservaddr + 2);   /* sin_port, sin6_port */
    struct connect_args a = {.fd = (u32)args->fd, .port = (u16)((port >> 8) | (port << 8))};
    connecting.update(&id, &a);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_connect)
{
    u64 id = bpf_get_current_pid_tgid();
    struct connect_args *a = connecting.lookup(&id);
    if (!a)
        return 0;
    struct connect_args done = *a;
    connecting.delete(&id);
    if (args->ret != 0 && args->ret != -ERR_INPROGRESS)
        return 0;
    struct conn_key k = {.tgid = id >> 32, .via = VIA_SOCKET, .id = done.fd};
    struct conn_state fresh = {.state = CONN_NEW, .port = done.port};
    conns.update(&k, &fresh);
    return 0;
}

struct io_args {
    u64 buf;
    u64 count;    /* BUF_IOV: the iovecs */
    u32 fd;
    u8 is_write;
    u8 active;
    u8 how;
    u8 pad;
};
/* Per thread: a read or write on a followed socket in flight (the exit of every such syscall looks here). */
BPF_TASK_STORAGE(inflight, struct io_args);

static __always_inline int io_enter(u32 fd, u64 buf, u64 count, u8 is_write, u8 how)
{
    struct conn_key k = {.tgid = bpf_get_current_pid_tgid() >> 32, .via = VIA_SOCKET, .id = fd};
    struct conn_state *c = conns.lookup(&k);
    if (!c || c->state == CONN_IGNORED || (!is_write && c->state == CONN_CLIENT))
        return 0;
    struct io_args *io = inflight.task_storage_get(bpf_get_current_task_btf(), 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
    if (!io)
        return 0;
    io->buf = buf;
    io->count = count;
    io->fd = fd;
    io->is_write = is_write;
    io->how = how;
    io->active = 1;
    return 0;
}

/* The syscall in flight on this thread, ended with `ret`: its arguments, or NULL (none followed, failed, or
 * another kind: is_write and vectored are constants in each program, so each verifies only its own path). */
static __always_inline struct io_args *io_done(long ret, u8 is_write, u8 vectored)
{
    struct io_args *io = inflight.task_storage_get(bpf_get_current_task_btf(), 0, 0);
    if (!io || !io->active || io->is_write != is_write || (io->how != BUF_PLAIN) != vectored)
        return 0;
    io->active = 0;
    return ret > 0 ? io : 0;
}

static __always_inline int io_exit(long ret, u8 is_write)
{
    struct io_args *io = io_done(ret, is_write, 0);
    if (!io)
        return 0;
    struct conn_key k = {.tgid = bpf_get_current_pid_tgid() >> 32, .via = VIA_SOCKET, .id = io->fd};
    if (is_write)
        on_write(&k, io->buf, ret);
    else
        on_read(&k, io->buf, ret);
    return 0;
}

static __always_inline int iov_exit(long ret, u8 is_write)
{
    struct io_args *io = io_done(ret, is_write, 1);
    if (!io)
        return 0;
    struct conn_key k = {.tgid = bpf_get_current_pid_tgid() >> 32, .via = VIA_SOCKET, .id = io->fd};
    vectored_io(&k, io->how, io->buf, io->count, ret, is_write);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_write) { return io_enter(args->fd, (u64)args->buf, 0, 1, BUF_PLAIN); }
TRACEPOINT_PROBE(syscalls, sys_exit_write) { return io_exit(args->ret, 1); }
TRACEPOINT_PROBE(syscalls, sys_enter_sendto) { return io_enter(args->fd, (u64)args->buff, 0, 1, BUF_PLAIN); }
TRACEPOINT_PROBE(syscalls, sys_exit_sendto) { return io_exit(args->ret, 1); }
TRACEPOINT_PROBE(syscalls, sys_enter_writev) { return io_enter(args->fd, (u64)args->vec, args->vlen, 1, BUF_IOV); }
TRACEPOINT_PROBE(syscalls, sys_exit_writev) { return iov_exit(args->ret, 1); }
TRACEPOINT_PROBE(syscalls, sys_enter_sendmsg) { return io_enter(args->fd, (u64)args->msg, 0, 1, BUF_MSG); }
TRACEPOINT_PROBE(syscalls, sys_exit_sendmsg) { return iov_exit(args->ret, 1); }
TRACEPOINT_PROBE(syscalls, sys_enter_read) { return io_enter(args->fd, (u64)args->buf, 0, 0, BUF_PLAIN); }
TRACEPOINT_PROBE(syscalls, sys_exit_read) { return io_exit(args->ret, 0); }
TRACEPOINT_PROBE(syscalls, sys_enter_recvfrom)
{
    if (args->flags & MSG_PEEK_)
        return 0;   /* read again later */
    return io_enter(args->fd, (u64)args->ubuf, 0, 0, BUF_PLAIN);
}
TRACEPOINT_PROBE(syscalls, sys_exit_recvfrom) { return io_exit(args->ret, 0); }
TRACEPOINT_PROBE(syscalls, sys_enter_readv) { return io_enter(args->fd, (u64)args->vec, args->vlen, 0, BUF_IOV); }
TRACEPOINT_PROBE(syscalls, sys_exit_readv) { return iov_exit(args->ret, 0); }
TRACEPOINT_PROBE(syscalls, sys_enter_recvmsg)
{
    if (args->flags & MSG_PEEK_)
        return 0;
    return io_enter(args->fd, (u64)args->msg, 0, 0, BUF_MSG);
}
TRACEPOINT_PROBE(syscalls, sys_exit_recvmsg) { return iov_exit(args->ret, 0); }

TRACEPOINT_PROBE(syscalls, sys_enter_close)
{
    struct conn_key k = {.tgid = bpf_get_current_pid_tgid() >> 32, .via = VIA_SOCKET, .id = args->fd};
    on_close(&k);
    return 0;
}
#endif /* AGENTS_CLEARTEXT == 1 */
