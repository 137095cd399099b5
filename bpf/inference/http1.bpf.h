/* HTTP/1.x: the request line (method, generative-AI operation), the response head (status, where the
 * answer ends), and the state machine that follows a connection's reads and writes. */

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
    /* the Responses API and Anthropic's Messages API (vLLM, llama.cpp, Ollama and SGLang serve them), the
     * path alone: /v1/responses/ID (a stored answer) and /v1/messages/count_tokens generate nothing */
    u64 after_responses = (w1 >> 40) & 0xff, after_messages = (w1 >> 32) & 0xff;
    if (n >= 14 && w0 == W8('/', 'v', '1', '/', 'r', 'e', 's', 'p') && LOW(w1, 5) == W5('o', 'n', 's', 'e', 's') &&
        (after_responses == ' ' || after_responses == '?'))
        return OP_CHAT;
    if (n >= 13 && w0 == W8('/', 'v', '1', '/', 'm', 'e', 's', 's') && LOW(w1, 4) == W4('a', 'g', 'e', 's') &&
        (after_messages == ' ' || after_messages == '?'))
        return OP_CHAT;
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

/* Whether the first n (< 8) bytes of head could begin a request line: a method's capital letters, maybe
 * with its space last ("GET "). A few bytes that cannot (a body's last bytes, "{}", sent after its answer)
 * are not a request to wait for. */
static __always_inline int may_begin_method(u64 head, u32 n)
{
#pragma unroll
    for (u32 i = 0; i < 7; i++) {
        u8 b = head >> (8 * i);
        if (i < n && (b < 'A' || b > 'Z') && !(b == ' ' && i >= 3 && i + 1 == n))
            return 0;
    }
    return 1;
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
        if (n >= 8 || !may_begin_method(head, n))
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
#define READ_H2 2      /* an HTTP/2 connection: the caller hands the read's bytes to h2_bytes() */

static __always_inline int on_read(u64 *k, struct conn_state *c, u64 ptr, u32 len, u64 now)
{
    if (c->proto == PROTO_H2)
        return READ_H2;
    if (c->resp_start != 0)
        finish_request(k, c, now);  /* a read begun before the response ended (e.g. Go's background read) */
    if (c->req_start != 0 && c->resp_start == 0 && (c->flags & REQ_UNPARSED)) {
        /* Unanswered bytes that were not a request line are often what an earlier
         * request left (a body the server read after answering, e.g. a 401 sent
         * before reading the upload): a read that begins a request line begins
         * the next request instead of joining them. */
        u64 line = 0;
        int line_path_off = 0;
        read_user(&line, sizeof(line), (void *)ptr);
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
        if (read_user(c->line, n, (void *)ptr) == 0)
            c->line_len = n;
#if TLS_HOOKS
        /* A TLS record (a handshake; mid-stream, application data), whose first read may be its 5-byte
         * header: the plaintext comes through the TLS library's hooks (hooks_tls.bpf.h), and the socket
         * hooks no longer parse this connection's bytes. */
        if (c->line_len >= 2 && c->line[1] == 0x03 && (c->line[0] == TLS_RECORD_HANDSHAKE ||
                                                        (c->seeded && c->line[0] == TLS_RECORD_APPLICATION_DATA))) {
            c->tls = TLS_BIO_UNKNOWN;
            c->req_start = 0;
            c->seq = 0;
            c->arrival = 0;
            arrival_sync(c);
            stat_add(STAT_INF_TLS, 1);
            return READ_DONE;
        }
#endif
        if (!classify_request(c)) {
            if (c->seq == 1 && !c->seeded && h2_preface(c->line, c->line_len)) {
                h2_begin(c, now, H2_PREFACE_LEN, 0);
                return READ_H2;
            }
            if (c->seq == 1 && !c->seeded && h2_preface_start(c->line, c->line_len)) {
                /* a first read shorter than the preface's line: classified again with the next */
                c->flags |= REQ_LINE_PENDING | REQ_UNPARSED;
                c->last_read = now;
                return READ_DONE;
            }
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
        if (n > 0 && read_user(c->line + have, n, (void *)ptr) == 0) {
            c->line_len = have + n;
            if (c->seq == 1 && !c->seeded && have < 14 && h2_preface(c->line, c->line_len)) {
                h2_begin(c, now, H2_PREFACE_LEN - have, 0);  /* the preface came in pieces */
                return READ_H2;
            }
            if (c->seq == 1 && !c->seeded && h2_preface_start(c->line, c->line_len))
                c->flags |= REQ_LINE_PENDING | REQ_UNPARSED;  /* more of it to come */
            else if (!classify_request(c))
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
    if (n < 16 || read_user(s->data, n, (void *)ptr) != 0)
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

/* What written() does after on_write(). */
#define WRITE_DONE 0
#define WRITE_SCAN 1      /* search the write for `data:` events */
#define WRITE_SWITCHED 2  /* 101 Switching Protocols: an h2c Upgrade goes on as HTTP/2, any other is let go */
#define WRITE_HEAD 3      /* a response head: read what it says of the body's length (scan_response_head) */
#define WRITE_HEAD_SCAN 4 /* the same, then search the write for events */
#define WRITE_FINISH 5    /* the response is complete with this write: finished by finish_written_response, a
                           * program of its own (inlined at every end found, the request's finish would make the
                           * write hooks several times larger to compile and verify) */
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
    return len >= 5 && read_user(&end, 5, (void *)(ptr + len - 5)) == 0 && end == LAST_CHUNK;
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
        read_user(words, sizeof(words), (void *)ptr);
        status = status_line(words, len);
    }
    if (status == 0 && c->seq == 1 && (c->flags & (REQ_UNPARSED | REQ_LINE_PENDING)) == (REQ_UNPARSED | REQ_LINE_PENDING))
        return WRITE_DONE;  /* the client preface is still arriving in pieces: the server's own preface (SETTINGS) */
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
        arrival_sync(c);  /* bytes arriving from now on begin the next request */
    }
    c->resp_end = now;
    c->resp_bytes += total;
    if (status == STATUS_SWITCHING_PROTOCOLS) {
        /* the request ends with its 101 (WebSocket and other upgrades) or goes on as HTTP/2's stream 1 (h2c):
         * which, the caller's switched_protocols() tells */
        if (c->flags & REQ_SAMPLED)
            emit_capture(c, PART_RESPONSE_HEAD, ptr, len, 0);
        return WRITE_SWITCHED;
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
            return WRITE_FINISH;
        }
        complete = 1;  /* the last events and the last chunk in one write: counted first, then finished */
    }
    if (!has_bytes)
        return complete ? WRITE_FINISH : WRITE_DONE;
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
        return WRITE_FINISH;
    }
    return scan ? WRITE_SCAN : WRITE_DONE;
}
