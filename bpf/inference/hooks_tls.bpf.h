/* The way in through a TLS library (TLS_HOOKS): uprobes on OpenSSL's SSL_read / SSL_read_ex / SSL_write /
 * SSL_write_ex (1.1.1 and 3.x) hand the plaintext of connections the socket hooks follow to the same
 * state machine. A connection is known to be TLS from its first bytes (a handshake record); from then on
 * the socket hooks never parse its bytes (they are ciphertext) but tell which socket a library call uses.
 * The probes sit where the kernel emulates the probed instruction (ebpftool/tracers/inference/tls_libs.py):
 * for OpenSSL 1.1.1 and 3.x on the implementation SSL_read and SSL_read_ex share (and SSL_write's), with
 * SSL_read_ex's arguments, so tls_read_ex_enter and tls_read_exit see the calls of both.
 * Two ways a library meets its socket:
 *  - socket BIO (nginx, Python's ssl sockets): the library reads and writes the socket inside its calls.
 *    A read: SSL_read's entry notes the call; the socket reads inside it tie the SSL object to its socket;
 *    at its return the plaintext goes to on_read() (an SSL_read served from records read earlier finds
 *    the socket through the SSL object). A write: SSL_write's entry notes the call; its first socket write
 *    hands the plaintext to the state machine there (a tracepoint program, so the tail-called scans run as
 *    for cleartext); the later writes of the same call (more records) are skipped.
 *  - memory BIO (asyncio's and uvloop's TLS: uvicorn, aiohttp, vLLM): the application reads the ciphertext
 *    from the socket and feeds it to the library; it calls SSL_write and then writes the ciphertext the
 *    library produced. The SSL object is tied to its socket at SSL_do_handshake (or SSL_accept), which
 *    the application calls right after reading the handshake's bytes from that socket on the same
 *    thread (its SSL_reads may come later, behind other connections' reads). A connection whose first
 *    SSL_read met no socket inside it is TLS_MEMORY_BIO from then on; an SSL_write's plaintext goes to the state
 *    machine at its return (the application writes the ciphertext soon after, maybe with others'), the
 *    scans run as uprobe programs (scan_prog_tls).
 * SSL_free forgets the SSL object's socket (an address the allocator gives the next connection).
 * Both ways in use this: a connection's key is its socket (socket hooks) or its (pid, fd) (syscall hooks),
 * whose file defines tls_conn(key) and forget_conn(&key) and calls the tls_* helpers from its hooks.
 * A request starts when its first encrypted byte arrived (sk_data_ready), as in cleartext. The arrival of
 * a handshake record read outside a read call (ClientHello; TLS 1.2's key exchange) is dropped; that of
 * the client's last flight (TLS 1.3: its Finished, with the first request right behind it) is kept; an
 * SSL_read that gives no plaintext drops it (nothing that arrived was a request). Uprobes fire in
 * every process that maps the library: a call on a socket that is not followed costs a hash update and
 * delete. */

struct tls_call {
    u64 ssl;       /* the SSL object */
    u64 buf;       /* the plaintext buffer */
    u64 count_at;  /* SSL_read_ex / SSL_write_ex: where the library stores the bytes moved (size_t *) */
    u64 key;       /* the connection the call used (its key), once a hook inside it saw its socket */
    u32 len;       /* bytes asked for (read: the buffer's room; write: the plaintext's length) */
    u8 is_write;
    u8 handed;     /* write: the plaintext went to the state machine */
    u8 active;     /* the call is under way (the entry's probe ran, its return's not yet) */
    u8 pad;
    u64 last_read_key; /* the TLS connection this thread last read outside a call (a memory BIO's tie) */
};

/* Per thread: the library call under way, and the TLS connection it last read outside a call. Task
 * storage, not hashes keyed by thread id: no update and delete per call, and a thread's entry goes with it. */
BPF_TASK_STORAGE(tls_calls, struct tls_call);
BPF_TABLE("lru_hash", u64, u64, tls_sockets, MAX_CONNS);     /* SSL object -> its connection's key */

static __always_inline int tls_enter(struct pt_regs *ctx, u8 is_write, int ex)
{
    struct tls_call *call = tls_calls.task_storage_get(bpf_get_current_task_btf(), 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
    if (!call)
        return 0;
    call->ssl = PT_REGS_PARM1(ctx);
    call->buf = PT_REGS_PARM2(ctx);
    call->len = (u32)bounded(PT_REGS_PARM3(ctx), 0x7fffffff);
    call->count_at = ex ? PT_REGS_PARM4(ctx) : 0;
    call->key = 0;
    call->is_write = is_write;
    call->handed = 0;
    call->active = 1;
    return 0;
}

#if TLS_PROGRAMS
int tls_read_enter(struct pt_regs *ctx) { return tls_enter(ctx, 0, 0); }
int tls_read_ex_enter(struct pt_regs *ctx) { return tls_enter(ctx, 0, 1); }
int tls_write_enter(struct pt_regs *ctx) { return tls_enter(ctx, 1, 0); }
int tls_write_ex_enter(struct pt_regs *ctx) { return tls_enter(ctx, 1, 1); }
#endif

/* A socket hook on a TLS connection: what it saw is ciphertext. Ties the library's call under way on this
 * thread, if any, to the socket; the call, or NULL. */
static __always_inline struct tls_call *tls_socket_seen(u64 key, struct conn_state *c)
{
    struct tls_call *call = tls_calls.task_storage_get(bpf_get_current_task_btf(), 0, 0);
    if (!call || !call->active)
        return 0;
    c->tls = TLS_SOCKET_BIO;  /* the library's own call reads or writes the socket */
    if (call->key != key) {
        /* once per call: a call that reads or writes many records meets the same socket each time */
        call->key = key;
        tls_sockets.update(&call->ssl, &key);
    }
    return call;
}

/* Bytes read on a TLS connection (ciphertext). 1 when outside a read call: the handshake (either BIO), or
 * the application's own read (memory BIO), whose SSL_read comes next: this thread's last TLS socket. */
static __always_inline int tls_read_outside_call(u64 key, struct conn_state *c)
{
    struct tls_call *call = tls_socket_seen(key, c);
    if (call && !call->is_write)
        return 0;
    struct tls_call *thread = call ? call : tls_calls.task_storage_get(bpf_get_current_task_btf(), 0,
                                                                       BPF_LOCAL_STORAGE_GET_F_CREATE);
    if (thread)
        thread->last_read_key = key;
    return 1;
}

/* Whether ciphertext read outside any library call is a handshake flight and nothing more (its arrival is no
 * request's): it begins with a handshake or change-cipher-spec record and holds no application data past the
 * flight's own encrypted Finished (TLS 1.3's is an application-data record after the change cipher spec,
 * TLS 1.2's a handshake record). A client may send its first request right behind its Finished, and the
 * server's handshake read then takes both: that arrival is the request's. */
static __always_inline int tls_handshake_only(u64 ptr, u32 len)
{
    u32 off = 0;
    u8 ccs = 0, finished = 0;
#pragma unroll
    for (int i = 0; i < 4; i++) {
        u8 h[5] = {};
        if (off + 5 > len || read_user(h, 5, (void *)(ptr + off)) != 0)
            return 1;
        u8 type = h[0];
        if (i == 0 && type != TLS_RECORD_HANDSHAKE && type != TLS_RECORD_CHANGE_CIPHER_SPEC)
            return 0;
        if (type == TLS_RECORD_CHANGE_CIPHER_SPEC) {
            ccs = 1;
        } else if (type == TLS_RECORD_APPLICATION_DATA) {
            if (!ccs || finished)
                return 0;
            finished = 1;
        } else if (type == TLS_RECORD_HANDSHAKE && ccs) {
            finished = 1;
        }
        off += 5 + ((u32)h[3] << 8 | h[4]);
    }
    return 1;
}

/* A ciphertext read of a TLS connection whose library is not known yet: an application-data record read
 * outside any library call is noted (tls_closed counts the connection if no plaintext ever came). */
static __always_inline void tls_note_data(struct conn_state *c, u64 ptr)
{
    u8 record = 0;
    if (c->tls == TLS_BIO_UNKNOWN && !c->tls_data_seen && ptr &&
        read_user(&record, 1, (void *)ptr) == 0 && record == TLS_RECORD_APPLICATION_DATA)
        c->tls_data_seen = 1;
}

/* A TLS connection ends: one that carried application data no library call ever met is counted per port
 * (its requests were invisible: TLS without a known library). */
static __always_inline void tls_closed(struct conn_state *c)
{
    if (c->tls != TLS_BIO_UNKNOWN || !c->tls_data_seen)
        return;
    u64 zero64 = 0;
    u16 port = c->port;
    u64 *n = tls_unknown.lookup_or_try_init(&port, &zero64);
    if (n)
        *n += 1;
}

/* A write on a TLS connection (socket BIO): the plaintext of the write call under way (*buf, *len) goes to
 * the state machine, once: 1 when it is to go now. */
static __always_inline int tls_write_plaintext(u64 key, struct conn_state *c, u64 *buf, u64 *len)
{
    struct tls_call *call = tls_socket_seen(key, c);
    if (!call || !call->is_write || call->handed)
        return 0;  /* the handshake, an alert, a memory BIO's ciphertext, or more records of a write handed on */
    call->handed = 1;
    *buf = call->buf;
    *len = call->len;
    return 1;
}

/* The call under way on this thread, ended: a copy in *done, and the bytes it moved (0: none or failed).
 * The _ex calls (and their shared implementation) store the count where their entry noted (count_at); the
 * others return it: one return program serves both (each is thousands of instructions to compile). */
static __always_inline u64 tls_call_done(struct pt_regs *ctx, struct tls_call *done)
{
    struct tls_call *call = tls_calls.task_storage_get(bpf_get_current_task_btf(), 0, 0);
    if (!call || !call->active)
        return 0;
    *done = *call;
    call->active = 0;
    int ret = (int)PT_REGS_RC(ctx);   /* an int: -1 leaves rax's upper half zero (mov to eax), a large long */
    u64 moved = 0;
    if (done->count_at) {
        /* SSL_*_ex return 1; the internal function that SSL_read and SSL_read_ex share (tls_libs.py), > 0 */
        if (ret <= 0 || read_user(&moved, sizeof(moved), (void *)done->count_at) != 0)
            return 0;
    } else if (ret > 0) {
        moved = ret;
    }
    return moved <= done->len ? moved : 0;
}

/* A memory BIO's first read call on an SSL object no handshake call tied (Node.js drives the server's
 * handshake with SSL_read itself): the application fed it the ciphertext it just read on this thread, so
 * the object is that connection's. 0 where this thread read no TLS connection outside a call. */
static __always_inline u64 tls_tie_at_first_read(u64 ssl)
{
    struct tls_call *thread = tls_calls.task_storage_get(bpf_get_current_task_btf(), 0, 0);
    if (!thread || thread->last_read_key == 0)
        return 0;
    u64 key = thread->last_read_key;
    struct conn_state *c = tls_conn(key);
    if (!c || c->tls != TLS_BIO_UNKNOWN)
        return 0;
    tls_sockets.update(&ssl, &key);
    return key;
}

/* SSL_read / SSL_read_ex returned: the plaintext it gave goes to the state machine. */
static __always_inline int tls_read_return(struct pt_regs *ctx)
{
    struct tls_call done = {};
    u64 moved = tls_call_done(ctx, &done);
    u64 key = done.key;
    if (key == 0) {
        u64 *known = tls_sockets.lookup(&done.ssl);  /* records read earlier, or a memory BIO's */
        if (known)
            key = *known;
        else
            key = tls_tie_at_first_read(done.ssl);
        if (key == 0)
            return 0;
    }
    struct conn_state *c = tls_conn(key);
    if (!c || !c->tls)
        return 0;
    if (done.key == 0 && c->tls == TLS_BIO_UNKNOWN)
        c->tls = TLS_MEMORY_BIO;  /* its first read call met no socket: the application reads it */
    if (moved == 0) {
        /* Nothing to read: what arrived was not a request's (the handshake's end) */
        if (c->req_start == 0 || c->resp_start != 0)
            c->arrival = 0;
        return 0;
    }
    u64 now = bpf_ktime_get_ns();
    int next = on_read(&key, c, done.buf, (u32)moved, now);
    if (next == READ_LET_GO)
        forget_conn(&key);
    else if (next == READ_H2)
        h2_bytes(ctx, H2_VIA_TLS, &key, c, H2_FROM_CLIENT, done.buf, moved, moved, 0, 0, now);
    return 0;
}

#if TLS_PROGRAMS
int tls_read_exit(struct pt_regs *ctx) { return tls_read_return(ctx); }  /* SSL_read's and SSL_read_ex's */
#endif

/* SSL_write / SSL_write_ex returned. With a socket BIO its plaintext went on at its first socket write;
 * with a memory BIO it goes on now. */
static __always_inline int tls_write_return(struct pt_regs *ctx)
{
    struct tls_call done = {};
    u64 moved = tls_call_done(ctx, &done);
    if (moved == 0 || done.key != 0 || done.handed)
        return 0;
    u64 *known = tls_sockets.lookup(&done.ssl);
    if (!known)
        return 0;
    u64 key = *known;
    struct conn_state *c = tls_conn(key);
    if (!c || c->tls != TLS_MEMORY_BIO)
        return 0;
    u64 now = bpf_ktime_get_ns();
    return written_buffer(ctx, &key, c, done.buf, (u32)moved, moved, 1, 0, 0, now, now, 1);
}

#if TLS_PROGRAMS
int tls_write_exit(struct pt_regs *ctx) { return tls_write_return(ctx); }  /* SSL_write's and SSL_write_ex's */

/* SSL_do_handshake / SSL_accept: with a memory BIO, the application fed the library the ciphertext it just
 * read from the socket, on this thread; the later calls on this SSL object (whose reads may be deferred
 * behind other connections' reads) use that socket. With a socket BIO a call's own reads bind it again. */
int tls_handshake_enter(struct pt_regs *ctx)
{
    u64 ssl = PT_REGS_PARM1(ctx);
    struct tls_call *thread = tls_calls.task_storage_get(bpf_get_current_task_btf(), 0, 0);
    if (!thread || thread->last_read_key == 0)
        return 0;
    u64 key = thread->last_read_key;
    struct conn_state *c = tls_conn(key);
    if (c && c->tls && c->tls != TLS_SOCKET_BIO)
        tls_sockets.update(&ssl, &key);
    return 0;
}

/* SSL_free: the object's address will be another connection's. */
int tls_free_enter(struct pt_regs *ctx)
{
    u64 ssl = PT_REGS_PARM1(ctx);
    tls_sockets.delete(&ssl);
    return 0;
}
#endif
