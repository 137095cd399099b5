/* The way in through a TLS library (TLS_HOOKS): uprobes on OpenSSL's SSL_read / SSL_read_ex / SSL_write /
 * SSL_write_ex (1.1.1 and 3.x) hand the plaintext of connections the socket hooks follow to the same
 * state machine. A connection is known to be TLS from its first bytes (a handshake record); from then on
 * the socket hooks never parse its bytes (they are ciphertext) but tell which socket the library's call
 * under way on this thread uses:
 *  - a read: SSL_read's entry notes the call; the socket reads inside it tie the SSL object to its socket;
 *    at its return the plaintext goes to on_read() (an SSL_read served from records read earlier finds
 *    the socket through the SSL object);
 *  - a write: SSL_write's entry notes the call; its first socket write hands the plaintext to the state
 *    machine there (a tracepoint program, so the tail-called scans run as for cleartext); the later
 *    writes of the same call (more records) are skipped.
 * A request starts when its first encrypted byte arrived (sk_data_ready), as in cleartext; the arrival
 * of handshake bytes is dropped. Uprobes fire in every process that maps the library: a call on a
 * socket that is not followed costs a hash update and delete. */

struct tls_call {
    u64 ssl;       /* the SSL object */
    u64 buf;       /* the plaintext buffer */
    u64 count_at;  /* SSL_read_ex / SSL_write_ex: where the library stores the bytes moved (size_t *) */
    u64 sk;        /* the socket the call used, once a socket hook inside it saw it */
    u32 len;       /* bytes asked for (read: the buffer's room; write: the plaintext's length) */
    u8 is_write;
    u8 handed;     /* write: the plaintext went to the state machine */
    u16 pad;
};

BPF_HASH(tls_calls, u64, struct tls_call, 16384);            /* per thread: the library call under way */
BPF_TABLE("lru_hash", u64, u64, tls_sockets, MAX_CONNS);     /* SSL object -> its socket */

static __always_inline int tls_enter(struct pt_regs *ctx, u8 is_write, int ex)
{
    struct tls_call call = {};
    call.ssl = PT_REGS_PARM1(ctx);
    call.buf = PT_REGS_PARM2(ctx);
    call.len = (u32)bounded(PT_REGS_PARM3(ctx), 0x7fffffff);
    call.count_at = ex ? PT_REGS_PARM4(ctx) : 0;
    call.is_write = is_write;
    u64 tid = bpf_get_current_pid_tgid();
    tls_calls.update(&tid, &call);
    return 0;
}

int tls_read_enter(struct pt_regs *ctx) { return tls_enter(ctx, 0, 0); }
int tls_read_ex_enter(struct pt_regs *ctx) { return tls_enter(ctx, 0, 1); }
int tls_write_enter(struct pt_regs *ctx) { return tls_enter(ctx, 1, 0); }
int tls_write_ex_enter(struct pt_regs *ctx) { return tls_enter(ctx, 1, 1); }

/* A socket hook on a TLS connection: what it saw is ciphertext. Ties the library's call under way on this
 * thread, if any, to the socket; the call, or NULL. */
static __always_inline struct tls_call *tls_socket_seen(u64 sk)
{
    u64 tid = bpf_get_current_pid_tgid();
    struct tls_call *call = tls_calls.lookup(&tid);
    if (!call)
        return 0;
    if (call->sk != sk) {
        /* once per call: a call that reads or writes many records meets the same socket each time */
        call->sk = sk;
        tls_sockets.update(&call->ssl, &sk);
    }
    return call;
}

/* Bytes read on a TLS connection (ciphertext). Outside a read call (the handshake), their arrival is not
 * a request's. */
static __always_inline void tls_read_seen(u64 sk, struct conn_state *c)
{
    struct tls_call *call = tls_socket_seen(sk);
    if (!call || call->is_write)
        c->arrival = 0;
}

/* A write on a TLS connection: the plaintext of the write call under way goes to the state machine, once. */
static __always_inline int tls_written(void *ctx, u64 sk, struct conn_state *c, u64 now)
{
    struct tls_call *call = tls_socket_seen(sk);
    if (!call || !call->is_write || call->handed)
        return 0;  /* the handshake, an alert, or more records of a write already handed on */
    call->handed = 1;
    return written_buffer(ctx, &sk, c, call->buf, call->len, call->len, 1, 0, 0, now, now);
}

/* SSL_read / SSL_read_ex returned: the plaintext it gave goes to the state machine. */
static __always_inline int tls_read_return(struct pt_regs *ctx, int ex)
{
    u64 tid = bpf_get_current_pid_tgid();
    struct tls_call *call = tls_calls.lookup(&tid);
    if (!call)
        return 0;
    struct tls_call done = *call;
    tls_calls.delete(&tid);
    long ret = PT_REGS_RC(ctx);
    u64 moved = 0;
    if (ex) {
        if (ret != 1 || bpf_probe_read_user(&moved, sizeof(moved), (void *)done.count_at) != 0)
            return 0;
    } else if (ret > 0) {
        moved = ret;
    }
    if (moved == 0 || moved > done.len)
        return 0;
    u64 sk = done.sk;
    if (sk == 0) {
        u64 *known = tls_sockets.lookup(&done.ssl);  /* plaintext of records an earlier call read */
        if (!known)
            return 0;
        sk = *known;
    }
    struct conn_state *c = sock_conn(sk);
    if (!c || !c->tls)
        return 0;
    if (on_read(&sk, c, done.buf, (u32)moved, bpf_ktime_get_ns()) == READ_LET_GO)
        forget_connection(sk);
    return 0;
}

int tls_read_exit(struct pt_regs *ctx) { return tls_read_return(ctx, 0); }
int tls_read_ex_exit(struct pt_regs *ctx) { return tls_read_return(ctx, 1); }

/* SSL_write / SSL_write_ex returned: its call is over (its plaintext went on at its first socket write). */
int tls_write_exit(struct pt_regs *ctx)
{
    u64 tid = bpf_get_current_pid_tgid();
    tls_calls.delete(&tid);
    return 0;
}
