/* A request's life, whatever its protocol: begun, sampled against the span budget, finished into the
 * histograms (exact whatever the budget) and, if sampled, sent to user space. */

static __always_inline void arrival_sync(struct conn_state *c);  /* the connection table's (conn_table*.bpf.h) */

/* The second word of a struct req_key (port, status, method, op, slot). */
#define KEY_WORD(k) (*(u64 *)&(k)->port)
#define SLOT_STATE_WORD(state) ((u64)(state) << 48)

/* The slot of key's series in series_keys and http_hist, a free one claimed for it if it has none;
 * SERIES_SLOTS when its slots are all taken. */
static __always_inline u32 http_series(const struct req_key *key)
{
    u64 word = KEY_WORD(key) | SLOT_STATE_WORD(SERIES_USED);  /* key->slot is 0 */
    u32 home = FIBONACCI_HASH(key->cgroup ^ word, SERIES_BITS);
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

/* A finished request's duration into its series of http.server.request.duration (counted when the series
 * table has no room). */
static __always_inline void http_duration_add(const struct req_key *key, u64 duration)
{
    u32 series = http_series(key);
    struct hist_value *h = http_hist.lookup(&series);
    if (h)
        hist_add(h, HTTP_BUCKET(duration), duration);
    else
        stat_add(STAT_INF_METRICS_FULL, 1);
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
    arrival_sync(c);
    if (c->flags & REQ_UNPARSED)
        return;  /* counted when it began; not a request we can name */
    u64 end = c->resp_end ? c->resp_end : now;
    u64 duration = end > start ? end - start : 0;
    struct req_key key = {.cgroup = c->cgroup, .port = c->port, .status = c->status, .method = c->method | (c->tls ? METHOD_TLS : 0),
                          .op = c->op, .model = c->model == MODEL_NONE ? 0 : c->model};
    stat_add(STAT_INF_REQUESTS, 1);
    if (c->status == 0)
        stat_add(STAT_INF_NO_RESPONSE, 1);
    http_duration_add(&key, duration);
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
    e->method = c->method | (c->tls ? METHOD_TLS : 0);
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
    c->model = 0;
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
    arrival_sync(c);
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
