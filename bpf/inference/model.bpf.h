/* The model a generative-AI answer names, for its metrics: OpenAI-compatible servers, vLLM, llama.cpp and
 * Ollama put `"model":"NAME"` near the start of the answer's JSON (the first SSE event, or the whole
 * answer), Triton's generate `"model_name":"NAME"`. The first buffer of an answer's body that the event
 * scan looks at is searched once per request (its first MODEL_SCAN_MAX bytes, the head's included); the name becomes an id (FNV-1a,
 * top bit set) that keys the generative-AI metrics, and its bytes go to model_names once, for user space. */

#define MODEL_SCAN_MAX 512
#define MODEL_ID_BIT 0x80000000U
#define FNV32_OFFSET 2166136261U
#define FNV32_PRIME 16777619U

BPF_HASH(model_names, u32, struct model_name, 256);   /* model id -> its name (the first 256 names) */

static __always_inline u64 model_word(struct scratch *s, u64 at)
{
    return *(u64 *)(s->data + (at & (MODEL_SCAN_MAX - 1)));
}

/* The id of the model named in the first bytes of buffer ptr (len bytes), MODEL_NONE where none is; 0 when
 * the buffer is a response head alone (the next buffer is looked at). */
static __always_inline u32 find_model(u64 ptr, u32 len)
{
    u32 zero = 0;
    struct scratch *s = scratch_buf.lookup(&zero);
    if (!s)
        return MODEL_NONE;
    u64 n = bounded(len, MODEL_SCAN_MAX);
    if (n < 16 || read_user(s->data, n, (void *)ptr) != 0)
        return MODEL_NONE;
    /* the loop's bound and result live in the map (see read_head in http1.bpf.h) */
    *(volatile u64 *)&s->end = n;
    *(volatile u64 *)&s->usage_at = 0;
#pragma clang loop unroll(disable)
    for (u64 at = 0; at < MODEL_SCAN_MAX - 16; at++) {
        if (at + 16 > *(volatile u64 *)&s->end)
            break;
        u64 w = model_word(s, at);
        if (w == W8('"', 'm', 'o', 'd', 'e', 'l', '"', ':')) {
            *(volatile u64 *)&s->usage_at = at + 8;
            break;
        }
        if (w == W8('"', 'm', 'o', 'd', 'e', 'l', '_', 'n') && LOW(model_word(s, at + 8), 6) == W6('a', 'm', 'e', '"', ':', '"')) {
            *(volatile u64 *)&s->usage_at = at + 13;
            break;
        }
    }
    u64 at = *(volatile u64 *)&s->usage_at;
    if (at == 0)  /* a response head written alone: the answer's first bytes are still to come */
        return LOW(model_word(s, 0), 5) == W5('H', 'T', 'T', 'P', '/') ? 0 : MODEL_NONE;
    u64 end = *(volatile u64 *)&s->end;
#pragma unroll
    for (int i = 0; i < 2; i++)   /* `"model": "x"` */
        at += s->data[at & (MODEL_SCAN_MAX - 1)] == ' ';
    if (s->data[at & (MODEL_SCAN_MAX - 1)] != '"')
        return MODEL_NONE;
    at++;
    u32 hash = FNV32_OFFSET, n_name = 0, closed = 0;
#pragma clang loop unroll(disable)
    for (u32 i = 0; i < MODEL_NAME_MAX; i++) {
        if (at + i >= end)
            break;
        u8 b = s->data[(at + i) & (MODEL_SCAN_MAX - 1)];
        if (b == '"') {
            closed = 1;
            break;
        }
        if (b == '\\' || b < ' ')
            break;   /* an escaped name: not counted as one */
        hash = (hash ^ b) * FNV32_PRIME;
        n_name++;
    }
    if (!closed || n_name == 0)
        return MODEL_NONE;
    u32 id = hash | MODEL_ID_BIT;
    if (!model_names.lookup(&id)) {
        struct model_name name = {.len = n_name};
        bpf_probe_read_kernel(name.name, MODEL_NAME_MAX, s->data + (at & (MODEL_SCAN_MAX - 1)));
        model_names.insert(&id, &name);
    }
    return id;
}
