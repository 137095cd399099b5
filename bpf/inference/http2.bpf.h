/* HTTP/2 (prior knowledge h2c, or h2 inside TLS): a connection whose first read is the client preface is an
 * HTTP/2 connection; so is one whose HTTP/1.1 request asked for an h2c Upgrade that the server's 101 took. Its header blocks can only be decoded in order and in full (HPACK: each block refers to
 * the blocks before it, RFC 7541), so the kernel does not parse requests here: it walks the frame headers of
 * every read and write and hands user space each direction's bytes in order, all of them but the DATA
 * payload past its first H2_DATA_PEEK bytes (and, from the server, before its last H2_DATA_TAIL: a skip count
 * stands for those), in h2_bytes_event records. A connection user space put in h2_whole_data (one that carries
 * a generative-AI stream: its events are counted in user space) has its server DATA sent whole.
 * User space (ebpftool/tracers/inference/http2.py) decodes the streams, their times and gRPC messages.
 * These records are not under the span budget: a lost one loses the connection's header table for user
 * space. From then on nothing more of it is sent (H2_MUTED) and its streams are measured here instead, with
 * what the kernel can read without the header table (h2_kernel_frame): start, end, a static-table method and
 * :status. The streams open at that moment are counted as lost in user space.
 *
 * A direction's walk state (conn_state.h2_*) carries across reads, writes and iovecs: the bytes still to
 * come of the current frame, of them those to copy, and a frame header split between buffers. */

#define H2_PREFACE_LEN 24
#define H2_FRAME_HEADER 9
#define H2_TYPE_DATA 0
#define H2_TYPE_HEADERS 1
#define H2_TYPE_PRIORITY 2
#define H2_TYPE_RST_STREAM 3
#define H2_FLAG_END_STREAM 0x1
#define H2_FLAG_PADDED 0x8
#define H2_FLAG_PRIORITY 0x20
#define H2_MUTED 3                  /* conn_state.h2_lost: records lost, nothing more sent, streams measured here */
#define H2_UNWALKED(dir) (4 << (dir))  /* conn_state.h2_lost: the direction's frames are no longer found */
#define H2_TYPE_PING 6
#define H2_TYPE_WINDOW_UPDATE 8
#define H2_TURNS 16          /* turns of one run of the walk program: frame headers, payload parts, buffers, records */
#define H2_RUNS 15           /* runs of it (tail calls) for one read or write: H2_TURNS * H2_RUNS turns in all; with
                              * the measuring program between runs, 2 tail calls a run: within the kernel's 33 */
#define H2_IOV_MAX 64        /* buffers of a vectored read or write walked (gRPC and nginx write many) */
#define H2_NOTES 16          /* frames of muted connections one run notes (a frame takes two turns at least) */

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
            c->h2_lost = H2_MUTED;  /* user space will not know this connection: measured here */
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
    /* The streams of the read that found the preface are timed by arrival_last, noted since the connection
     * began; after an Upgrade, arrivals are noted from now on. */
    if (upgrade_start)
        c->arrival_last = 0;
    c->proto = PROTO_H2;
    c->req_start = 0;
    c->flags = 0;
    arrival_sync(c);
    c->h2_pass[H2_FROM_CLIENT] = preface_left;
    c->h2_pass[H2_FROM_SERVER] = 0;
    c->h2_next[H2_FROM_CLIENT] = 0;
    c->h2_copy[H2_FROM_CLIENT] = 0;
    c->h2_next[H2_FROM_SERVER] = 0;
    c->h2_copy[H2_FROM_SERVER] = 0;
    c->h2_tail[0] = c->h2_tail[1] = 0;
    c->h2_have[0] = c->h2_have[1] = 0;
    c->h2_drop[0] = c->h2_drop[1] = 0;
    c->h2_lost = 0;
    c->h2_seq_known = 0;
    stat_add(STAT_INF_H2, 1);
    h2_conn_event(c, EVENT_H2_OPEN, now, upgrade_start);
}

/* A record of the connection was lost: nothing more of it is sent (user space gives it up), its streams are
 * measured here from now on. Counted once. */
static __always_inline void h2_mute(struct conn_state *c)
{
    if (!(c->h2_lost & H2_MUTED))
        stat_add(STAT_INF_H2_LOST, 1);
    c->h2_lost |= H2_MUTED;
}

/* A direction's frames are no longer found (a walk bound): muted, and that direction not walked again. */
static __always_inline void h2_lose(struct conn_state *c, u32 dir)
{
    h2_mute(c);
    if (!(c->h2_lost & H2_UNWALKED(dir)))
        stat_add(STAT_INF_H2_UNWALKED, 1);
    c->h2_lost |= H2_UNWALKED(dir);
}

/* Streams of muted connections, measured here: from the client's HEADERS to the server's END_STREAM (or an
 * RST_STREAM). Without the header table, the method is read where the block begins with a static-table
 * :method (GET 0x82, POST 0x83: clients put :method first) and the status where the server's block begins
 * with a static-table :status (0x88-0x8e) or a literal one of three plain digits; else _OTHER and
 * H2_STATUS_UNKNOWN. */
struct h2_stream_key {
    u64 conn;
    u32 stream;
    u32 pad;
};
struct h2_stream_state {
    u64 start;
    u16 status;   /* 0: no final status yet */
    u8 method;
    u8 pad[5];
};
BPF_TABLE("lru_hash", struct h2_stream_key, struct h2_stream_state, h2_kernel_streams, MAX_CONNS);

/* The :status at the start of a response header block (its first bytes, little-endian), 0 for a 1xx. */
static __always_inline u16 h2_block_status(u64 b)
{
    u8 first = b & 0xff;
    /* the static table's :status entries (RFC 7541 appendix A: indexes 8-14) */
    if (first == 0x88) return 200;
    if (first == 0x89) return 204;
    if (first == 0x8a) return 206;
    if (first == 0x8b) return 304;
    if (first == 0x8c) return 400;
    if (first == 0x8d) return 404;
    if (first == 0x8e) return 500;
    /* literal, its name :status (static index 8), with incremental indexing / without / never indexed, a
     * plain (not Huffman) value of 3 bytes */
    if ((first == 0x48 || first == 0x08 || first == 0x18) && ((b >> 8) & 0xff) == 3) {
        u8 d0 = (b >> 16) & 0xff, d1 = (b >> 24) & 0xff, d2 = (b >> 32) & 0xff;
        if (d0 >= '1' && d0 <= '5' && d1 >= '0' && d1 <= '9' && d2 >= '0' && d2 <= '9') {
            u16 v = (d0 - '0') * 100 + (d1 - '0') * 10 + (d2 - '0');
            return v < 200 ? 0 : v;
        }
    }
    return H2_STATUS_UNKNOWN;
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
    u64 next;       /* conn_state.h2_next, h2_copy, h2_have, h2_tail of the direction walked */
    u64 copy;
    u64 have;
    u64 tail;
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
    u64 arrival;    /* client bytes: when the latest of them arrived (0: not known) */
    u64 arrival_first; /* client bytes: when the first of them arrived, where first_end is known (else 0) */
    u64 first_end;  /* where in the read the bytes that came at arrival_first end (0: none) */
    u64 base;       /* where in the read the current buffer begins */
    u64 rec_first;  /* bytes of the record being filled that came at arrival_first */
    u64 drop;       /* the current frame is left out whole (conn_state.h2_drop) */
    u64 drop_from;  /* where in this buffer the bytes to send end: the left-out frame's header (or the buffer's start) */
    u64 fill;       /* bytes in the record being filled (h2_scratch) */
    u64 mute;       /* the connection is muted (H2_MUTED): nothing is sent, streams are measured here */
    u64 peek;       /* muted: a frame header just read, to be measured at the next turn where its payload
                     * begins (nginx writes a frame's header and its payload as two iovecs): 1 | type << 8 |
                     * flags << 16, its stream id, where its header block begins in its payload, how long */
    u64 peek_sid;
    u64 peek_off;
    u64 peek_len;
    u64 whole;      /* server bytes of a connection in h2_whole_data: DATA frames sent whole */
    u64 notes_n;    /* muted: frames of this run to measure after its turns (h2_measure_notes) */
    u64 notes_begun; /* of them, the client's HEADERS (streams begun) */
    struct h2_note {
        u64 block;  /* where its header block's first bytes are (0: not looked at) */
        u32 sid;
        u8 type;
        u8 flags;
        u8 room;
        u8 early;   /* the frame began in the bytes that came at arrival_first */
    } notes[H2_NOTES];
};
BPF_PERCPU_ARRAY(h2_walks, struct h2_walk, 1);
/* Connections (conn_state.id, as the records name them) whose server DATA frames go to user space whole, set
 * by user space once a stream of theirs is a generative-AI request (ebpftool/tracers/inference/h2_streams.py):
 * a stream's events packed into one long frame (a proxy relaying tokens that came back to back) are all
 * counted there. */
BPF_TABLE("lru_hash", u64, u8, h2_whole_data, 4096);
#define V(x) (*(volatile u64 *)&(x))

#define H2_BLOCK_PEEK 64  /* bytes of a request header block looked at for its :method */
#define H2_BLOCK_FIELDS 6 /* fields looked at */
struct h2_block_peek {
    u8 b[H2_BLOCK_PEEK * 2];
};
BPF_PERCPU_ARRAY(h2_block_buf, struct h2_block_peek, 1);

/* The :method of a request header block whose first bytes (room of them, <= H2_BLOCK_PEEK) are at user
 * address block: the static GET (0x82) or POST (0x83) among its first fields, passing over indexed fields
 * and literals with an indexed name and a value of under 127 bytes (what clients put before :method:
 * h2load its :path, :scheme and :authority); else METHOD_OTHER. Branch-free, as the scans are: it runs in
 * each turn of h2_measure_notes' loop, where every jump is a state the verifier keeps. */
static __always_inline u8 h2_block_method(u64 block, u64 room)
{
    u32 zero = 0;
    struct h2_block_peek *buf = h2_block_buf.lookup(&zero);
    room = bounded(room, H2_BLOCK_PEEK);
    if (!buf || room == 0 || read_user(buf->b, room, (void *)block) != 0)
        return METHOD_OTHER;
    u64 at = 0, method = METHOD_OTHER, done = 0;
#pragma unroll
    for (int i = 0; i < H2_BLOCK_FIELDS; i++) {
        done |= (room - at - 1) >> 63;   /* at >= room (both < 2^63) */
        asm volatile("" : "+r"(done));
        u64 x = buf->b[at & (H2_BLOCK_PEEK - 1)];
        u64 len = buf->b[(at + 1) & (H2_BLOCK_PEEK - 1)] & 0x7f;
        u64 get = is_zero(x ^ 0x82), post = is_zero(x ^ 0x83);
        u64 hit = (get | post) & (done ^ 1);
        method += hit * (get * METHOD_GET + post * METHOD_POST - METHOD_OTHER);
        done |= hit;
        /* a literal with an indexed name: 01nnnnnn (incremental indexing), 0000nnnn / 0001nnnn (without
         * indexing / never indexed), then the value's length (7 bits, H flag) and the value; a literal name,
         * :method as a literal, a longer index or value end the look */
        u64 indexed = x >> 7;
        u64 incremental = is_zero((x & 0xc0) ^ 0x40), plain = is_zero(x & 0xe0);
        u64 name = (x & 0x3f) * incremental + (x & 0x0f) * plain;
        u64 stop = is_zero(name) | is_zero(name ^ 2) | is_zero(name ^ 0x3f) | (plain & is_zero(name ^ 0x0f)) |
                   is_zero(len ^ 0x7f);
        done |= (indexed ^ 1) & stop;
        at += indexed + (indexed ^ 1) * (2 + len);
        at &= 2 * H2_BLOCK_PEEK - 1;
        asm volatile("" : "+r"(at));
    }
    return method;
}

/* A frame header of a muted connection (type, flags, stream id); block: where its header block's first bytes
 * are in user memory (0: not in this buffer), room: how many of them are there. */
static __always_inline void h2_kernel_frame(struct conn_state *c, u32 dir, struct h2_walk *w, u64 type, u64 flags,
                                            u32 sid, u64 block, u64 room, u64 early)
{
    if (type != H2_TYPE_HEADERS && type != H2_TYPE_RST_STREAM && !(type == H2_TYPE_DATA && (flags & H2_FLAG_END_STREAM)))
        return;
    struct h2_stream_key key = {.conn = c->id, .stream = sid, .pad = 0};
    u64 now = V(w->now);
    if (dir == H2_FROM_CLIENT && type == H2_TYPE_HEADERS) {
        if (h2_kernel_streams.lookup(&key))
            return;  /* the request's trailers */
        u64 arrival = early && V(w->arrival_first) ? V(w->arrival_first) : V(w->arrival);
        struct h2_stream_state st = {.start = arrival ? arrival : now, .status = 0,
                                     .method = block ? h2_block_method(block, room) : METHOD_OTHER};
        h2_kernel_streams.update(&key, &st);
        return;
    }
    struct h2_stream_state *st = h2_kernel_streams.lookup(&key);
    if (!st)
        return;  /* begun before the connection was muted (counted lost in user space), or pushed */
    if (dir == H2_FROM_SERVER && type == H2_TYPE_HEADERS && st->status == 0) {
        /* the response's block: its first bytes read for the :status */
        u64 first = 0, n = bounded(room, 8);
        if (block && n && read_user(&first, n, (void *)block) == 0)
            st->status = h2_block_status(first);
        else
            st->status = H2_STATUS_UNKNOWN;
    }
    if (type != H2_TYPE_RST_STREAM && (dir != H2_FROM_SERVER || !(flags & H2_FLAG_END_STREAM)))
        return;
    struct req_key k = {.cgroup = c->cgroup, .port = c->port, .status = st->status,
                        .method = st->method | METHOD_H2 | (c->tls ? METHOD_TLS : 0), .op = OP_NONE};
    http_duration_add(&k, now > st->start ? now - st->start : 0);
    stat_add(STAT_INF_H2_KERNEL, 1);
    h2_kernel_streams.delete(&key);
}

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
    e->arrival_first = V(w->arrival_first);
    u64 first = V(w->rec_first);
    e->first_len = first < fill ? first : fill;
    V(w->rec_first) = 0;
    u64 size = offsetof(struct h2_bytes_event, data) + fill;
    if (events.ringbuf_output(e, bounded(size, sizeof(*e)), ringbuf_wakeup_flags(size, RINGBUF_PAGES)) != 0) {
        count_ringbuf_full();
        return 0;
    }
    return 1;
}

/* len (<= H2_CHUNK) bytes at user address src added to the record (sent first if they do not fit), the
 * first `early` of them came at arrival_first; 0 when lost. */
static __always_inline int h2_append(struct conn_state *c, u32 dir, struct h2_walk *w, u64 src, u64 len, u64 early)
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
    if (read_user(r->e.data + fill, n, (void *)src) != 0)
        return 0;
    V(w->fill) = fill + n;
    V(w->rec_first) += early;
    return 1;
}

/* Whether the frame whose header ends at pos of the current buffer began in the bytes that came at
 * arrival_first. */
static __always_inline u64 h2_began_early(struct h2_walk *w, u64 pos)
{
    return V(w->base) + pos < V(w->first_end) + H2_FRAME_HEADER;
}

/* A muted frame noted (peek: see h2_walk.peek) for h2_measure_notes. */
static __always_inline void h2_note(struct h2_walk *w, u64 peek, u64 block, u64 room, u64 early)
{
    u64 i = V(w->notes_n);
    if (i >= H2_NOTES)
        return;  /* (a run's turns cannot walk more frames) */
    struct h2_note *note = &w->notes[i & (H2_NOTES - 1)];
    note->block = block;
    note->sid = V(w->peek_sid);
    note->type = (peek >> 8) & 0xff;
    note->flags = (peek >> 16) & 0xff;
    note->room = room;
    note->early = early;
    V(w->notes_n) = i + 1;
    if (V(w->dir) == H2_FROM_CLIENT && note->type == H2_TYPE_HEADERS)
        V(w->notes_begun) += 1;
}

/* The frames a run noted, measured (h2_kernel_frame), in order. */
static __always_inline void h2_measure_notes(struct conn_state *c, u32 dir, struct h2_walk *w)
{
#pragma clang loop unroll(disable)
    for (u64 i = 0; i < H2_NOTES; i++) {
        if (i >= V(w->notes_n))
            break;
        struct h2_note *note = &w->notes[i & (H2_NOTES - 1)];
        h2_kernel_frame(c, dir, w, note->type, note->flags, note->sid, note->block, note->room, note->early);
    }
    V(w->notes_n) = 0;
    V(w->notes_begun) = 0;
}

/* One turn of a walk: walks a payload part or a frame header, or moves to the next buffer; what it has to
 * send (bytes, or a count of bytes skipped) goes at its end, from one place (the verifier walks each
 * turn's ways through once per turn: few ways, short ones). */
static __always_inline void h2_turn(struct conn_state *c, u32 dir, struct h2_walk *w, u64 iov_array, int iov_in_kernel,
                                    u64 now)
{
    u64 p = V(w->p), n = V(w->n), pos = V(w->pos), win = V(w->win);
    if (V(w->peek) && pos < n) {
        /* a muted connection's frame whose payload begins here: noted, to be measured after the run's turns
         * (h2_measure_notes; in the loop, its ways would multiply the verifier's), with where its header
         * block's first bytes are in this buffer */
        u64 peek = V(w->peek), at = pos + V(w->peek_off), len = V(w->peek_len);
        V(w->peek) = 0;
        u64 room = len < H2_BLOCK_PEEK ? len : H2_BLOCK_PEEK;
        h2_note(w, peek, len && at < n ? p + at : 0, at + room <= n ? room : n - at, h2_began_early(w, pos));
    }
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
            u64 tail = V(w->tail);  /* a server DATA frame's last bytes, copied after those skipped */
            skip = next - tail < avail ? next - tail : avail;
            V(w->next) = next - skip;
            if (tail && next - skip == tail) {
                V(w->copy) = tail;
                V(w->tail) = 0;
            }
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
            /* clang knows take <= 9 and would drop the mask, leaving the verifier the compare against avail,
             * which verifiers before ~6.7 do not carry over to take (Linux 6.1 refused the read's size) */
            asm volatile("" : "+r"(take));
            take &= 15;
            *(u64 *)hdr->b = *(u64 *)(c->h2_hdr + 8 * dir);
            if (take == 0 || read_user(hdr->b + have, take, (void *)(p + pos)) != 0) {
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
            if (V(w->mute)) {
                /* nothing to send: the frame is passed over, its stream measured at the next turn */
                u64 flags = hdr->b[4];
                u64 off = ((flags & H2_FLAG_PADDED) ? 1 : 0) + ((flags & H2_FLAG_PRIORITY) ? 5 : 0);
                V(w->peek) = 1 | ((u64)type << 8) | (flags << 16);
                V(w->peek_sid) = (((u32)hdr->b[5] << 24) | ((u32)hdr->b[6] << 16) | ((u32)hdr->b[7] << 8) |
                                  hdr->b[8]) & 0x7fffffff;
                V(w->peek_off) = off;
                V(w->peek_len) = next > off ? next - off : 0;
                V(w->copy) = 0;
                V(w->tail) = 0;
                return;
            }
            if (dir == H2_FROM_CLIENT && type == H2_TYPE_HEADERS)
                stat_add(STAT_INF_H2_BEGUN, 1);  /* (unless the record holding it is lost: see there) */
            V(w->copy) = type == H2_TYPE_DATA ? (next < H2_DATA_PEEK ? next : H2_DATA_PEEK) : next;
            /* from the server, a longer DATA frame's last bytes too; one a little longer is sent whole, as is
             * every one of a connection in h2_whole_data */
            u64 whole = V(w->whole);
            if (type == H2_TYPE_DATA && dir == H2_FROM_SERVER && next > H2_DATA_PEEK)
                V(w->copy) = next <= H2_DATA_PEEK + H2_DATA_TAIL || whole ? next : H2_DATA_PEEK;
            V(w->tail) = type == H2_TYPE_DATA && dir == H2_FROM_SERVER && next > H2_DATA_PEEK + H2_DATA_TAIL &&
                         !whole ? H2_DATA_TAIL : 0;
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
    /* of the bytes sent, those before first_end came at arrival_first */
    u64 first_end = V(w->first_end), at = V(w->base) + win;
    u64 early = at < first_end ? (first_end - at < send ? first_end - at : send) : 0;
    if (!V(w->mute) && (!h2_append(c, dir, w, p + win, send, early) || (skip && !h2_flush(c, dir, w, skip)))) {
        /* a record found no room: user space gives the connection up, the walk goes on measuring here */
        h2_mute(c);
        V(w->mute) = 1;
        V(w->fill) = 0;
    }
    if (V(w->done) == 3) {
        V(w->base) += n;
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
/* Each array: the walk (slot 0), and the measuring of a muted connection's frames a run noted (slot 1, its
 * loop verified apart from the walk's). */
#define H2_SLOT_WALK 0
#define H2_SLOT_MEASURE 1
BPF_PROG_ARRAY(h2_prog_read, 2);
BPF_PROG_ARRAY(h2_prog_write, 2);
#if TLS_HOOKS
BPF_PROG_ARRAY(h2_prog_tls, 2);
#endif

static __always_inline void h2_continue(void *ctx, u64 via, u32 slot)
{
    if (via == H2_VIA_READ)
        h2_prog_read.call(ctx, slot);
    else if (via == H2_VIA_WRITE)
        h2_prog_write.call(ctx, slot);
#if TLS_HOOKS
    else
        h2_prog_tls.call(ctx, slot);
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
    if (c->h2_lost & H2_UNWALKED(dir))
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
    w->tail = c->h2_tail[dir];
    w->have = c->h2_have[dir];
    w->iov_i = 1;
    w->done = 0;
    w->drop = c->h2_drop[dir];
    w->drop_from = pos;
    w->fill = 0;
    w->mute = (c->h2_lost & H2_MUTED) != 0;
    u64 id = c->id;
    w->whole = dir == H2_FROM_SERVER && h2_whole_data.lookup(&id) != NULL;
    w->peek = 0;
    w->notes_n = 0;
    w->notes_begun = 0;
    w->key = *k;
    w->iov_array = iov_array;
    w->iov_in_kernel = iov_in_kernel;
    w->now = now;
    w->dir = dir;
    w->runs = 0;
    /* The client's bytes arrived (sk_data_ready) before this read returned: a stream whose request is in them
     * started then, though the server read it later. A read may hold frames that arrived apart (a preface
     * sent at connect and the first call's HEADERS, a PING and then HEADERS; HEADERS, then a message's DATA):
     * it is timed by the latest arrival, so that no stream starts before its bytes came, but for the frames
     * that begin within the bytes the socket held at the first arrival noted since the last read (a socket
     * read, where the hook counted them): those came then. The next arrival is noted afresh. */
    u64 arrival = 0, arrival_first = 0, first_end = 0;
    if (dir == H2_FROM_CLIENT) {
        u64 last = c->arrival_last, first = c->arrival;
        u32 queued = c->arrival_first_queued;
        arrival = last && last <= now ? last : (first <= now ? first : 0);
        if (via == H2_VIA_READ && first && first < arrival && (queued & ARRIVAL_QUEUED)) {
            arrival_first = first;
            first_end = queued & ~ARRIVAL_QUEUED;
        }
        c->arrival = 0;
        c->arrival_last = 0;
        c->arrival_first_queued = 0;
    }
    w->arrival = arrival;
    w->arrival_first = arrival_first;
    w->first_end = first_end;
    w->base = 0;
    w->rec_first = 0;
    h2_continue(ctx, via, H2_SLOT_WALK);
    h2_lose(c, dir);  /* no walk program: not loaded */
}

/* The end of a run of the walk: its noted frames measured (by the measuring program, which comes back here),
 * then more turns, or the walk's end: its last record sent and where the frames stand kept. */
static __always_inline int h2_run_end(void *ctx, u64 via, struct conn_state *c, u32 dir, struct h2_walk *w)
{
    if (V(w->done) == 1 && V(w->peek)) {
        /* its payload is in the next read or write: its header block not looked at */
        h2_note(w, V(w->peek), 0, 0, h2_began_early(w, V(w->pos)));
        V(w->peek) = 0;
    }
    if (V(w->notes_n))
        h2_continue(ctx, via, H2_SLOT_MEASURE);  /* (the tail call does not come back when it is made) */
    if (V(w->notes_n)) {
        /* no measuring program (loaded after the start): the streams begun in these frames are not measured,
         * counted as begun for user space, which did not measure them */
        stat_add(STAT_INF_H2_BEGUN, V(w->notes_begun));
        V(w->notes_n) = 0;
        V(w->notes_begun) = 0;
    }
    if (V(w->done) == 0 && ++w->runs < H2_RUNS)
        h2_continue(ctx, via, H2_SLOT_WALK);  /* more turns */
    if (V(w->done) == 1 && V(w->fill) && !V(w->mute) && !h2_flush(c, dir, w, 0))
        h2_mute(c);  /* the last record found no room */
    if (V(w->done) != 1) {
        h2_lose(c, dir);  /* more frames or buffers than a walk takes: where the next frame begins is lost */
        return 0;
    }
    c->h2_next[dir] = V(w->next);
    c->h2_copy[dir] = V(w->copy);
    c->h2_tail[dir] = V(w->tail);
    c->h2_have[dir] = V(w->have);
    c->h2_drop[dir] = V(w->drop) != 0;
    return 0;
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
    return h2_run_end(ctx, via, c, dir, w);
}

static __always_inline int h2_measure_in(void *ctx, u64 via)
{
    u32 zero = 0;
    struct h2_walk *w = h2_walks.lookup(&zero);
    if (!w)
        return 0;
    struct conn_state *c = find_conn(w->key);
    if (!c)
        return 0;
    u32 dir = w->dir & 1;
    h2_measure_notes(c, dir, w);
    return h2_run_end(ctx, via, c, dir, w);
}

/* The walk programs (H2_FUNCTIONS in ebpftool/tracers/inference/plans.py), one per type of caller. */
#if H2_PROGRAMS
int h2_walk_read(void *ctx) { return h2_walk_in(ctx, H2_VIA_READ); }
int h2_walk_write(void *ctx) { return h2_walk_in(ctx, H2_VIA_WRITE); }
int h2_measure_read(void *ctx) { return h2_measure_in(ctx, H2_VIA_READ); }
int h2_measure_write(void *ctx) { return h2_measure_in(ctx, H2_VIA_WRITE); }
#endif
#if TLS_PROGRAMS
int h2_walk_tls(struct pt_regs *ctx) { return h2_walk_in(ctx, H2_VIA_TLS); }
int h2_measure_tls(struct pt_regs *ctx) { return h2_measure_in(ctx, H2_VIA_TLS); }
#endif
