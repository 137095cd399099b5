/* HTTP/2 (prior knowledge h2c, or h2 inside TLS): a connection whose first read is the client preface is an
 * HTTP/2 connection; so is one whose HTTP/1.1 request asked for an h2c Upgrade that the server's 101 took. Its header blocks can only be decoded in order and in full (HPACK: each block refers to
 * the blocks before it, RFC 7541), so the kernel does not parse requests here: it walks the frame headers of
 * every read and write and hands user space each direction's bytes in order, all of them but the DATA
 * payload past its first H2_DATA_PEEK bytes (a skip count stands for those), in h2_bytes_event records.
 * User space (ebpftool/tracers/inference/http2.py) decodes the streams, their times and gRPC messages.
 * These records are not under the span budget: a lost one loses the connection's header table, and its
 * streams are counted as lost (h2_lost, STAT_INF_H2_LOST), not guessed.
 *
 * A direction's walk state (conn_state.h2_*) carries across reads, writes and iovecs: the bytes still to
 * come of the current frame, of them those to copy, and a frame header split between buffers. */

#define H2_PREFACE_LEN 24
#define H2_FRAME_HEADER 9
#define H2_TYPE_DATA 0
#define H2_TYPE_PRIORITY 2
#define H2_TYPE_PING 6
#define H2_TYPE_WINDOW_UPDATE 8
#define H2_TURNS 32          /* turns of one run of the walk program: frame headers, payload parts, buffers, records */
#define H2_RUNS 8            /* runs of it (tail calls) for one read or write: H2_TURNS * H2_RUNS turns in all */
#define H2_IOV_MAX 64        /* buffers of a vectored read or write walked (gRPC and nginx write many) */

/* The record being filled: what a walk sends gathers here and goes out when it is full, when a skip count
 * ends it, and when the walk ends (one record per read or write mostly, whatever frames are left out of it).
 * The spill room lets the verifier see that bytes added at any fill below H2_CHUNK stay inside. */
struct h2_record {
    struct h2_bytes_event e;
    u8 spill[H2_CHUNK];
};
BPF_PERCPU_ARRAY(h2_scratch, struct h2_record, 1);
struct h2_header {
    u8 b[32];   /* a frame header being read: up to 8 bytes kept from the previous buffer, then the rest */
};
BPF_PERCPU_ARRAY(h2_header_buf, struct h2_header, 1);

#define H2_PREFACE_0 W8('P', 'R', 'I', ' ', '*', ' ', 'H', 'T')
#define H2_PREFACE_1 W6('T', 'P', '/', '2', '.', '0')

/* Whether the first bytes of a connection are HTTP/2's client preface ("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
 * as far as the 14 bytes of its request line. */
static __always_inline int h2_preface(const u8 *line, u32 n)
{
    if (n < 14)
        return 0;
    u64 w0 = *(const u64 *)line, w1 = *(const u64 *)(line + 8);
    return w0 == H2_PREFACE_0 && LOW(w1, 6) == H2_PREFACE_1;
}

/* Whether n (< 14) first bytes of a connection may begin the client preface (a first read cut short). */
static __always_inline int h2_preface_start(const u8 *line, u32 n)
{
    if (n == 0 || n >= 14)
        return 0;
    u64 w0 = *(const u64 *)line, w1 = *(const u64 *)(line + 8);
    u64 mask0 = n >= 8 ? ~0ULL : (1ULL << (8 * n)) - 1;
    u64 mask1 = n <= 8 ? 0 : (1ULL << (8 * (n - 8))) - 1;
    return (w0 & mask0) == (H2_PREFACE_0 & mask0) && (w1 & mask1) == (H2_PREFACE_1 & mask1);
}

/* The connection's name and place, to user space (EVENT_H2_OPEN, EVENT_H2_CLOSE); upgrade_start: when the
 * request of an h2c Upgrade began (0: none), its seq and first bytes (c->line) go with it. */
static __always_inline void h2_conn_event(struct conn_state *c, u32 type, u64 now, u64 upgrade_start)
{
    struct h2_open_event *e = events.ringbuf_reserve(sizeof(struct h2_open_event));
    if (!e) {
        count_ringbuf_full();
        if (type == EVENT_H2_OPEN)
            c->h2_lost = 3;  /* user space will not know this connection: nothing of it is sent */
        return;
    }
    e->type = type;
    e->pid = c->pid;
    e->conn = c->id;
    e->ts = now;
    e->cgroup = c->cgroup;
    e->port = c->port;
    e->client_port = c->client_port;
    e->family = c->family;
    e->tls = c->tls != 0;
    e->lost = c->h2_lost;
    __builtin_memcpy(e->client_addr, c->client_addr, sizeof(e->client_addr));
    __builtin_memcpy(e->comm, c->comm, sizeof(e->comm));
    e->upgrade_start = upgrade_start;
    e->upgrade_seq = c->seq;
    e->pad = 0;
    if (upgrade_start) {
        e->line_len = c->line_len < LINE_MAX ? c->line_len : LINE_MAX;
        __builtin_memcpy(e->line, c->line, LINE_MAX);
    } else {
        e->line_len = 0;
        __builtin_memset(e->line, 0, LINE_MAX);
    }
    events.ringbuf_submit(e, ringbuf_wakeup_flags(sizeof(*e), RINGBUF_PAGES));
}

/* From now on an HTTP/2 connection, the client preface's last `preface_left` bytes still to come (in the
 * read under way, or the next): the preface is not sent to user space (its reader starts at the frames).
 * upgrade_start: see h2_conn_event(). */
static __always_inline void h2_begin(struct conn_state *c, u64 now, u32 preface_left, u64 upgrade_start)
{
    c->proto = PROTO_H2;
    c->req_start = 0;
    c->flags = 0;
    c->h2_pass[H2_FROM_CLIENT] = preface_left;
    c->h2_pass[H2_FROM_SERVER] = 0;
    c->h2_next[H2_FROM_CLIENT] = 0;
    c->h2_copy[H2_FROM_CLIENT] = 0;
    c->h2_next[H2_FROM_SERVER] = 0;
    c->h2_copy[H2_FROM_SERVER] = 0;
    c->h2_have[0] = c->h2_have[1] = 0;
    c->h2_drop[0] = c->h2_drop[1] = 0;
    c->h2_lost = 0;
    c->h2_seq_known = 0;
    stat_add(STAT_INF_H2, 1);
    h2_conn_event(c, EVENT_H2_OPEN, now, upgrade_start);
}

/* A direction's frames are lost from here: counted once, nothing more of them is sent. */
static __always_inline void h2_lose(struct conn_state *c, u32 dir)
{
    if (!(c->h2_lost & (1 << dir)))
        stat_add(STAT_INF_H2_LOST, 1);
    c->h2_lost |= 1 << dir;
}

/* Where a walk stands, in a map value rather than in registers: at the head of each turn of its loop the
 * verifier then finds the same state whichever way the turn before went (values it cannot know), and walks
 * each turn once instead of once per way there. */
struct h2_walk {
    u64 p;          /* the buffer walked */
    u64 n;          /* its bytes */
    u64 pos;        /* the walk's place in it */
    u64 win;        /* its first byte not sent yet */
    u64 remaining;  /* bytes of the read or write after this buffer */
    u64 next;       /* conn_state.h2_next, h2_copy, h2_have of the direction walked */
    u64 copy;
    u64 have;
    u64 iov_i;      /* the index of the next iovec */
    u64 done;       /* 1: every byte walked; 2: stopped (lost); 3: the next buffer is next_p, next_n */
    u64 next_p;
    u64 next_n;
    u64 key;        /* the connection's (find_conn) */
    u64 iov_array;  /* the read's or write's struct iovec array (0: one buffer) */
    u64 iov_in_kernel;
    u64 now;
    u64 dir;
    u64 runs;
    u64 arrival;    /* client bytes: when the first of them arrived (0: not known) */
    u64 drop;       /* the current frame is left out whole (conn_state.h2_drop) */
    u64 drop_from;  /* where in this buffer the bytes to send end: the left-out frame's header (or the buffer's start) */
    u64 fill;       /* bytes in the record being filled (h2_scratch) */
};
BPF_PERCPU_ARRAY(h2_walks, struct h2_walk, 1);
#define V(x) (*(volatile u64 *)&(x))

/* The record filled so far goes to user space, with `skip` bytes not copied after it; 0 when lost. */
static __always_inline int h2_flush(struct conn_state *c, u32 dir, struct h2_walk *w, u64 skip)
{
    u32 zero = 0;
    struct h2_record *r = h2_scratch.lookup(&zero);
    if (!r)
        return 0;
    u64 fill = bounded(V(w->fill), H2_CHUNK);
    V(w->fill) = 0;
    struct h2_bytes_event *e = &r->e;
    e->type = EVENT_H2_BYTES;
    e->pid = c->pid;
    e->conn = c->id;
    e->ts = V(w->now);
    e->len = fill;
    e->skip = skip;
    e->from_server = dir;
    e->arrival = V(w->arrival);
    u64 size = offsetof(struct h2_bytes_event, data) + fill;
    if (events.ringbuf_output(e, bounded(size, sizeof(*e)), ringbuf_wakeup_flags(size, RINGBUF_PAGES)) != 0) {
        count_ringbuf_full();
        return 0;
    }
    return 1;
}

/* len (<= H2_CHUNK) bytes at user address src added to the record (sent first if they do not fit); 0 when
 * lost. */
static __always_inline int h2_append(struct conn_state *c, u32 dir, struct h2_walk *w, u64 src, u64 len)
{
    if (len == 0)
        return 1;
    if (V(w->fill) + len > H2_CHUNK && !h2_flush(c, dir, w, 0))
        return 0;
    u32 zero = 0;
    struct h2_record *r = h2_scratch.lookup(&zero);
    if (!r)
        return 0;
    u64 fill = V(w->fill) & (H2_CHUNK - 1);
    u64 n = bounded(len, H2_CHUNK);
    if (bpf_probe_read_user(r->e.data + fill, n, (void *)src) != 0)
        return 0;
    V(w->fill) = fill + n;
    return 1;
}

/* One turn of a walk: walks a payload part or a frame header, or moves to the next buffer; what it has to
 * send (bytes, or a count of bytes skipped) goes at its end, from one place (the verifier walks each
 * turn's ways through once per turn: few ways, short ones). */
static __always_inline void h2_turn(struct conn_state *c, u32 dir, struct h2_walk *w, u64 iov_array, int iov_in_kernel,
                                    u64 now)
{
    u64 p = V(w->p), n = V(w->n), pos = V(w->pos), win = V(w->win);
    u64 send = 0, skip = 0;  /* bytes from win to send, bytes after them skipped */
    u64 dropped = 0;         /* bytes of a frame left out whole, passed over after the bytes sent */
    if (pos - win >= H2_CHUNK) {
        send = H2_CHUNK;  /* a long run of bytes to send: one record's worth */
    } else if (pos >= n) {
        /* this buffer is walked: what is left of it is sent (up to a frame left out), then the next */
        send = V(w->drop) ? V(w->drop_from) - win : pos - win;
        u64 remaining = V(w->remaining), i = V(w->iov_i);
        if (remaining == 0) {
            V(w->done) = 1;
        } else if (iov_array == 0 || i >= H2_IOV_MAX) {
            V(w->done) = 2;
        } else {
            u64 len = 0;
            u64 next_p = nth_iovec(iov_array, iov_in_kernel, i, remaining, &len);
            V(w->next_p) = next_p;
            V(w->next_n) = len;
            V(w->remaining) = remaining - len;
            V(w->iov_i) = i + 1;
            V(w->done) = next_p || !len ? 3 : 2;  /* 3: go on with the next buffer once this one is sent */
        }
    } else {
        u64 avail = n - pos, next = V(w->next);
        if (next > 0) {
            /* inside a frame's payload (or the preface): its bytes to send, then those to skip */
            u64 copy = V(w->copy);
            if (copy > 0) {
                u64 k = copy < avail ? copy : avail;
                V(w->pos) = pos + k;
                V(w->copy) = copy - k;
                V(w->next) = next - k;
                return;
            }
            skip = next < avail ? next : avail;
            V(w->next) = next - skip;
            if (V(w->drop)) {
                /* a frame left out whole: the bytes before its header are sent, its own are passed over */
                send = V(w->drop_from) - win;
                dropped = skip;
                skip = 0;
                if (next == dropped)
                    V(w->drop) = 0;
            } else {
                send = pos - win;
            }
        } else {
            /* a frame header at pos (its first `have` bytes in the previous buffer, kept in h2_hdr) */
            u32 zero = 0;
            struct h2_header *hdr = h2_header_buf.lookup(&zero);
            if (!hdr) {
                V(w->done) = 2;
                return;
            }
            u64 have = V(w->have);  /* 0 to 8 bytes of the header came before */
            if (have > 8)
                have = 8;
            u64 take = H2_FRAME_HEADER - have;
            if (take > avail)
                take = avail;
            take &= 15;
            *(u64 *)hdr->b = *(u64 *)(c->h2_hdr + 8 * dir);
            if (take == 0 || bpf_probe_read_user(hdr->b + have, take, (void *)(p + pos)) != 0) {
                V(w->done) = 2;
                return;
            }
            V(w->pos) = pos + take;
            if (have + take < H2_FRAME_HEADER) {
                /* the buffer ends inside the header: kept for the next */
                *(u64 *)(c->h2_hdr + 8 * dir) = *(u64 *)hdr->b;
                V(w->have) = have + take;
                return;
            }
            V(w->have) = 0;
            next = ((u64)hdr->b[0] << 16) | ((u64)hdr->b[1] << 8) | hdr->b[2];
            u8 type = hdr->b[3];
            V(w->next) = next;
            V(w->copy) = type == H2_TYPE_DATA ? (next < H2_DATA_PEEK ? next : H2_DATA_PEEK) : next;
            /* Flow control, pings and priorities say nothing of a stream's request or answer (gRPC sends a
             * WINDOW_UPDATE and a PING or two per call): left out whole, header too, where the header lies
             * in this buffer and the bytes before it fit one record. User space reads the frames around. */
            if ((type == H2_TYPE_WINDOW_UPDATE || type == H2_TYPE_PING || type == H2_TYPE_PRIORITY) && have == 0 &&
                next > 0 && pos + H2_FRAME_HEADER - win < H2_CHUNK) {
                V(w->drop) = 1;
                V(w->drop_from) = pos;
                V(w->copy) = 0;
            }
            return;
        }
    }
    if (!h2_append(c, dir, w, p + win, send) || (skip && !h2_flush(c, dir, w, skip))) {
        V(w->done) = 2;
        return;
    }
    if (V(w->done) == 3) {
        V(w->p) = V(w->next_p);
        V(w->n) = V(w->next_n);
        V(w->pos) = 0;
        V(w->win) = 0;
        V(w->drop_from) = 0;
        V(w->done) = 0;
        return;
    }
    if (dropped) {
        V(w->pos) = pos + dropped;
        V(w->win) = pos + dropped;
        V(w->drop_from) = pos + dropped;  /* (a frame left out that goes on in the next buffer starts it) */
        return;
    }
    V(w->win) = win + send + skip;
    V(w->pos) = pos + skip;
}

/* The walk runs in its own program, reached by a tail call (its loop is verified once, not once per way
 * into it), loaded once per type of program that starts it: the read hook's, the write hook's, the TLS
 * uprobes'. It tail-calls itself for more turns. Each program refers to one of the arrays only (via is a
 * constant where it is used): the kernel ties a program array to the type of the first program that
 * refers to it. */
#define H2_VIA_READ 0
#define H2_VIA_WRITE 1
#define H2_VIA_TLS 2
BPF_PROG_ARRAY(h2_prog_read, 1);
BPF_PROG_ARRAY(h2_prog_write, 1);
#if TLS_HOOKS
BPF_PROG_ARRAY(h2_prog_tls, 1);
#endif

static __always_inline void h2_continue(void *ctx, u64 via)
{
    if (via == H2_VIA_READ)
        h2_prog_read.call(ctx, 0);
    else if (via == H2_VIA_WRITE)
        h2_prog_write.call(ctx, 0);
#if TLS_HOOKS
    else
        h2_prog_tls.call(ctx, 0);
#endif
}

/* One read (dir H2_FROM_CLIENT) or write (H2_FROM_SERVER) of HTTP/2 connection *k: its first buffer (ptr,
 * len), total bytes in all, and for vectored calls the struct iovec array (in user memory, or the kernel's
 * copy). The walk program walks its frame headers and sends its bytes (h2_append, h2_flush) in order. The caller's
 * last act: the tail call does not come back. */
static __always_inline void h2_bytes(void *ctx, u64 via, u64 *k, struct conn_state *c, u32 dir, u64 ptr, u64 len,
                                     u64 total, u64 iov_array, int iov_in_kernel, u64 now)
{
    dir &= 1;
    if (c->h2_lost & (1 << dir))
        return;
    u32 zero = 0;
    struct h2_walk *w = h2_walks.lookup(&zero);
    if (!w)
        return;
    u64 n = len < total ? len : total, pos = 0;
    u64 pass = c->h2_pass[dir];
    if (pass) {
        /* bytes of this call that are no frames (see conn_state.h2_pass): walked over, not sent */
        c->h2_pass[dir] = pass > total ? pass - total : 0;
        if (pass >= total)
            return;
        if (pass > n) {
            h2_lose(c, dir);  /* reaching past the first buffer: not followed */
            return;
        }
        pos = pass;
    }
    w->p = ptr;
    w->n = n;
    w->pos = pos;
    w->win = pos;
    w->remaining = total - n;
    w->next = c->h2_next[dir];
    w->copy = c->h2_copy[dir];
    w->have = c->h2_have[dir];
    w->iov_i = 1;
    w->done = 0;
    w->drop = c->h2_drop[dir];
    w->drop_from = pos;
    w->fill = 0;
    w->key = *k;
    w->iov_array = iov_array;
    w->iov_in_kernel = iov_in_kernel;
    w->now = now;
    w->dir = dir;
    w->runs = 0;
    /* The client's bytes began to arrive (sk_data_ready) before this read returned: a stream whose request
     * begins in them started then, though the server read it later. The next arrival is noted afresh. */
    u64 arrival = 0;
    if (dir == H2_FROM_CLIENT) {
        arrival = c->arrival <= now ? c->arrival : 0;
        c->arrival = 0;
    }
    w->arrival = arrival;
    h2_continue(ctx, via);
    h2_lose(c, dir);  /* no walk program: not loaded */
}

static __always_inline int h2_walk_in(void *ctx, u64 via)
{
    u32 zero = 0;
    struct h2_walk *w = h2_walks.lookup(&zero);
    if (!w)
        return 0;
    struct conn_state *c = find_conn(w->key);
    if (!c)
        return 0;
    u32 dir = w->dir & 1;
    u64 iov_array = w->iov_array, now = w->now;
    int iov_in_kernel = w->iov_in_kernel != 0;
#pragma clang loop unroll(disable)
    for (int i = 0; i < H2_TURNS; i++) {
        if (V(w->done))
            break;
        h2_turn(c, dir, w, iov_array, iov_in_kernel, now);
    }
    if (V(w->done) == 0 && ++w->runs < H2_RUNS)
        h2_continue(ctx, via);  /* more turns (the tail call does not come back when it is made) */
    if (V(w->done) == 1 && V(w->fill) && !h2_flush(c, dir, w, 0))
        V(w->done) = 2;
    if (V(w->done) != 1) {
        h2_lose(c, dir);  /* more frames or buffers than a walk takes, or a record that found no room */
        return 0;
    }
    c->h2_next[dir] = V(w->next);
    c->h2_copy[dir] = V(w->copy);
    c->h2_have[dir] = V(w->have);
    c->h2_drop[dir] = V(w->drop) != 0;
    return 0;
}

/* The walk programs (H2_FUNCTIONS in ebpftool/tracers/inference/plans.py), one per type of caller. */
int h2_walk_read(void *ctx) { return h2_walk_in(ctx, H2_VIA_READ); }
int h2_walk_write(void *ctx) { return h2_walk_in(ctx, H2_VIA_WRITE); }
#if TLS_HOOKS
int h2_walk_tls(struct pt_regs *ctx) { return h2_walk_in(ctx, H2_VIA_TLS); }
#endif
