/* Tokens of a streamed answer: Server-Sent Events and newline-delimited JSON in a response's bytes. */

/* The number (decimal, at most 10 digits, after an optional space) at data[at], if it ends inside the
 * buffer (before end); *found says whether there was one. */
static __always_inline u32 stated_number(struct scratch *s, u64 at, u64 end, u32 *found)
{
    *found = 0;
    /* one compare on a copy the verifier can follow (see find_marks(): Linux 6.1 lost at's bounds) */
    u64 at_less_one = at - 1;
    asm volatile("" : "+r"(at_less_one));
    if (at_less_one >= SCAN_LEAD + SSE_SCAN_MAX)
        return 0;
    at = at_less_one + 1;
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
 *     `"choices":[]` (a usage-only chunk), `"special":true` (TGI's special tokens), `"stop":true` (the
 *     last event of llama.cpp's own /completion, its content empty), `"done":true`
 *     (Ollama's final object). A mark belongs to the last event begun before its word: an event's first
 *     mark lies at least 9 bytes after its line start, so never in the word of its line start. The
 *     output-token count is the last `"completion_tokens":N` (OpenAI usage), `"output_tokens":N`,
 *     `"generated_tokens":N` (TGI) or `"eval_count":N` (Ollama) seen.
 *  An event whose `event:` line names one of the Responses API's events (`response.output_text.delta`,
 *  `response.created`, ...) or Anthropic's Messages API's (`content_block_delta`, `message_start`, ...,
 *  `ping`, `error`) is a token when that name ends in `delta`, `message_delta` (Anthropic's stop reason and
 *  usage) excepted, whatever its data shows: those APIs send many events that carry no text, and their
 *  names say which. Other names (`event: message`) change nothing. find_events() notes the words where such
 *  a line may begin or end (the first NAMED_WORDS), find_names() looks closer.
 * The passes go 8 bytes at a time and look closer only at words holding a byte that may begin
 * something; the checks at a word's 8 offsets are branch-free: every jump in a long loop is a state
 * the verifier must keep. */
/* 1 when an `event:` line's name, its first 8 bytes in w, is one of the Responses API's (`response.`...)
 * or Anthropic's Messages API's (`message_`..., `content_`..., `ping`, `error`). */
static __always_inline u64 known_event_name(u64 w)
{
    u64 end5 = (w >> 32) & 0xff, end6 = (w >> 40) & 0xff;
    return is_zero(w ^ W8('r', 'e', 's', 'p', 'o', 'n', 's', 'e')) |
           is_zero(w ^ W8('m', 'e', 's', 's', 'a', 'g', 'e', '_')) |
           is_zero(w ^ W8('c', 'o', 'n', 't', 'e', 'n', 't', '_')) |
           (is_zero(LOW(w, 4) ^ W4('p', 'i', 'n', 'g')) & (is_zero(end5 ^ '\n') | is_zero(end5 ^ '\r'))) |
           (is_zero(LOW(w, 5) ^ W5('e', 'r', 'r', 'o', 'r')) & (is_zero(end6 ^ '\n') | is_zero(end6 ^ '\r')));
}

/* 1 when a `data:` line (an event, not [DONE]) begins at p (x: the 8 bytes there), its ':' inside the buffer
 * (room: negative when it would be past it). */
static __always_inline u64 data_line_at(u64 x, u64 p, u64 end)
{
    u64 c6 = (x >> 48) & 0xff, c7 = x >> 56;
    u64 room = end - (p + 6);
    asm volatile("" : "+r"(room));
    return is_zero((x ^ W6('\n', 'd', 'a', 't', 'a', ':')) & 0xffffffffffffULL) &
           ((is_zero(c6 ^ '[') | (is_zero(c6 ^ ' ') & is_zero(c7 ^ '['))) ^ 1) & ((room >> 63) ^ 1);
}

/* 0: the buffer could not be read; 1: its events counted; 2: and words of named lines noted (find_names()). */
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
    if (read_user(&s->data[SCAN_LEAD], n, (void *)ptr) != 0)
        return 0;
    *(u64 *)&s->data[SCAN_LEAD + n] = 0;  /* bytes past the buffer read as 0, not as an earlier write's */
    *(u64 *)&s->data[SCAN_LEAD + n + 8] = 0;
    u64 end = SCAN_LEAD + n;  /* one past the buffer's last byte */
    s->end = end;
    u64 events = 0;
    s->names = 0;
    s->counts = 0;
    s->named = 0;
    s->named_token = 0;
#pragma clang loop unroll(disable)
    for (u32 word = 1; word < (SCAN_LEAD + SSE_SCAN_MAX) / 8; word++) {
        if (word * 8 >= end)
            break;
        u64 w = *(u64 *)&s->data[word * 8];
        u64 next = *(u64 *)&s->data[word * 8 + 1];  /* each byte's successor */
        u64 prev = *(u64 *)&s->data[word * 8 - 1];  /* each byte's predecessor */
        /* an `event:` line may begin here (`\ne`), or a line end after an `a` (`a\n`, `a\r`: `delta`) */
        u64 named = (ZERO_BYTES(w ^ EVERY_BYTE('\n')) & ZERO_BYTES(next ^ EVERY_BYTE('e'))) |
                    (ZERO_BYTES(w ^ EVERY_BYTE('a')) & (ZERO_BYTES(next ^ EVERY_BYTE('\n')) | ZERO_BYTES(next ^ EVERY_BYTE('\r'))));
        /* a count (`_t`, `_c`) may begin here */
        u64 counting = ZERO_BYTES(w ^ EVERY_BYTE('_')) & (ZERO_BYTES(next ^ EVERY_BYTE('t')) | ZERO_BYTES(next ^ EVERY_BYTE('c')));
        /* a mark (`[]`, `""`, `{}`, `:t`, `t"}`) or a count may begin here */
        u64 rare = (ZERO_BYTES(w ^ EVERY_BYTE('[')) & ZERO_BYTES(next ^ EVERY_BYTE(']'))) |
                   (ZERO_BYTES(prev ^ EVERY_BYTE('t')) & ZERO_BYTES(w ^ EVERY_BYTE('"')) & ZERO_BYTES(next ^ EVERY_BYTE('}'))) |
                   (ZERO_BYTES(w ^ EVERY_BYTE('"')) & ZERO_BYTES(next ^ EVERY_BYTE('"'))) |
                   (ZERO_BYTES(w ^ EVERY_BYTE('{')) & ZERO_BYTES(next ^ EVERY_BYTE('}'))) |
                   (ZERO_BYTES(w ^ EVERY_BYTE(':')) & ZERO_BYTES(next ^ EVERY_BYTE('t'))) | counting;
        if (rare | named) {
            /* the count lives in the map, not a register: an index the verifier would have to follow; a word
             * noted for a named line alone is written in the next slot, not kept (the marks' words are the
             * first RARE_WORDS of their own kinds) */
            u32 i = s->rare;
            if (i < RARE_WORDS) {
                s->rare_word[i & (RARE_WORDS - 1)] = word;
                s->rare_events[i & (RARE_WORDS - 1)] = events;
            }
            s->rare = i + (is_zero(rare) ^ 1);
            /* a named line's word, noted without a branch: written always, kept where the count moves on */
            u32 j = s->names;
            s->name_word[j & (NAMED_WORDS * 2 - 1)] = word;
            s->name_events[j & (NAMED_WORDS * 2 - 1)] = events;
            s->names = j + ((is_zero(named) ^ 1) & is_zero(j / NAMED_WORDS));
            /* a count's word, in a ring that keeps the last COUNT_WORDS (the last count stated wins: a JSON
             * answer states its usage near its end, after many words of the kinds above) */
            u32 m = s->counts;
            s->count_word[m & (COUNT_RING - 1)] = word;
            s->counts = m + (is_zero(counting) ^ 1);
        }
        if (ZERO_BYTES(w ^ EVERY_BYTE('\n'))) {
#pragma unroll
            for (u32 b = 0; b < 8; b++) {
                /* '\n' 'd' 'a' 't' 'a' ':' at p (its ':' inside the buffer), not [DONE]; or '\n' '{' */
                u32 p = word * 8 + b;
                u64 x = *(u64 *)&s->data[p];
                u64 object_room = end - (p + 2);
                asm volatile("" : "+r"(object_room));
                u64 is_object = ndjson & is_zero((x & 0xffff) ^ W2('\n', '{')) & ((object_room >> 63) ^ 1);
                events += data_line_at(x, p, end) | is_object;
            }
        }
    }
    s->events = events;
    return s->names ? 2 : 1;
}

/* Byte b of a word noted by find_events() (read back from the map: a value the verifier does not know),
 * as a position in [SCAN_LEAD - 1, SCAN_LEAD + SSE_SCAN_MAX - 2] by a mask it follows, not a compare
 * (which would split each turn's state in the callers' loops); *inside: 0 where the byte lies outside
 * that range (the buffer's last byte can neither begin a name nor end one, nor a count, inside it). */
static __always_inline u64 byte_of_noted_word(u64 word, u64 b, u64 *inside)
{
    u64 at = word * 8 + b;
    *inside = ((u64)(SCAN_LEAD - 2) - at) >> 63 & (at - (SCAN_LEAD + SSE_SCAN_MAX - 1)) >> 63;
    return SCAN_LEAD - 1 + ((at - (SCAN_LEAD - 1)) & (SSE_SCAN_MAX - 1));
}

/* The named events among the buffer's first 64 (see find_events()), in its own program (SCAN_NAMES): bit i
 * of s->named, event i has an `event:` line of a known name; of s->named_token, that name ends in `delta`
 * (not `message_delta`). A line belongs to the event whose `data:` line comes next: the events begun
 * before it. */
static __always_inline void find_names(struct scratch *s)
{
    u64 end = s->end, names = 0, tokens = 0;
    u64 count = s->names;
    /* branch-free but for the loops' own and their exit: a branch that came back into the loop would split
     * every later turn's state in two */
#pragma clang loop unroll(disable)
    for (u32 k = 0; k < NAMED_WORDS; k++) {
        if (k >= count)
            break;
        u64 word = s->name_word[k];
        u64 events = s->name_events[k];  /* begun before the word; those begun in it are added below */
#pragma clang loop unroll(disable)
        for (u64 b = 0; b < 8; b++) {
            u64 inside;
            u64 p = byte_of_noted_word(word, b, &inside);
            u64 x = *(u64 *)&s->data[p];
            u64 name = *(u64 *)&s->data[p + 7], spaced = *(u64 *)&s->data[p + 8];
            u64 room = end - (p + 7);  /* negative when the ':' would be past the buffer */
            asm volatile("" : "+r"(room));
            name ^= (name ^ spaced) & -is_zero((name & 0xff) ^ ' ');  /* after `event: ` or `event:` */
            u64 is_name = is_zero(LOW(x, 7) ^ W7('\n', 'e', 'v', 'e', 'n', 't', ':')) & ((room >> 63) ^ 1) &
                          known_event_name(name);
            /* `delta` ends a line at p (its '\n' at p + 1, or `\r\n`), not `message_delta` (p - 7, p - 12:
             * masked, which changes nothing for a noted word, p > 12, and keeps the index in bounds) */
            u64 last8 = *(u64 *)&s->data[(p - 7) & 1023];
            u64 c1 = (x >> 8) & 0xff, c2 = (x >> 16) & 0xff;
            u64 delta_end = is_zero((last8 >> 24) ^ W5('d', 'e', 'l', 't', 'a')) &
                            (is_zero(c1 ^ '\n') | (is_zero(c1 ^ '\r') & is_zero(c2 ^ '\n'))) &
                            (is_zero(*(u64 *)&s->data[(p - 12) & 1023] ^ W8('m', 'e', 's', 's', 'a', 'g', 'e', '_')) ^ 1);
            u64 slot = (is_zero(events >> 6) & inside) << (events & 63);
            names |= slot & -is_name;
            tokens |= slot & -delta_end;
            events += data_line_at(x, p, end);
        }
    }
    s->named = names;
    s->named_token = tokens & names;
}

/* The output-token count the buffer states last, looked for in the last COUNT_WORDS words find_events()
 * noted for a count: `_tokens":` after `completion`, `generated`, `"output`; `"eval_count":` (its '_' at
 * p). s->usage_at: where its number begins (0: none). Branch-free but for the loops, as find_names(). */
static __always_inline void find_count(struct scratch *s)
{
    u64 count = s->counts, usage_at = 0;
    u64 first = count > COUNT_WORDS ? count - COUNT_WORDS : 0;  /* the oldest of the last COUNT_WORDS */
    asm volatile("" : "+r"(first));
#pragma clang loop unroll(disable)
    for (u32 k = 0; k < COUNT_WORDS; k++) {
        u64 count_now = count;  /* hidden from clang in the loop, as rare in find_marks() */
        asm volatile("" : "+r"(count_now));
        if (first + k >= count_now)
            break;
        u64 word = s->count_word[(first + k) & (COUNT_RING - 1)];
#pragma clang loop unroll(disable)
        for (u64 b = 0; b < 8; b++) {
            u64 inside;
            u64 p = byte_of_noted_word(word, b, &inside);
            u64 x = *(u64 *)&s->data[p];
            u64 at8 = *(u64 *)&s->data[p - 8], at6 = *(u64 *)&s->data[p - 6];
            u64 after = *(u64 *)&s->data[p + 1];
            u64 tokens_count = is_zero(after ^ W8('t', 'o', 'k', 'e', 'n', 's', '"', ':')) &
                               (is_zero(at8 ^ W8('m', 'p', 'l', 'e', 't', 'i', 'o', 'n')) |
                                is_zero(at8 ^ W8('e', 'n', 'e', 'r', 'a', 't', 'e', 'd')) |
                                is_zero((at8 >> 8) ^ W7('"', 'o', 'u', 't', 'p', 'u', 't')));
            u64 eval_count = is_zero((at6 >> 8) ^ W7('"', 'e', 'v', 'a', 'l', '_', 'c')) &
                             is_zero(LOW(after, 7) ^ W7('c', 'o', 'u', 'n', 't', '"', ':')) & is_zero((x & 0xff) ^ '_');
            u64 counted = (tokens_count | eval_count) & inside;
            usage_at ^= (usage_at ^ (p + 9 - eval_count)) & -counted;  /* its number: the last one seen */
        }
    }
    s->usage_at = usage_at;
}

/* The second pass (see find_events()): *tokens, and the stated output-token count if any. */
static __always_inline void find_marks(struct scratch *s, u32 *tokens, u32 *usage, u32 *has_usage)
{
    u64 end = s->end, events = s->events;
    u32 rare = s->rare;
    u64 marked = 0;     /* bit i: event i showed a mark (the first 64 events) */
#pragma clang loop unroll(disable)
    for (u32 k = 0; k < RARE_WORDS; k++) {
        /* rare hidden from clang in the loop: knowing it, clang ends the loop when k equals min(rare,
         * RARE_WORDS), a bound Linux 6.1's verifier cannot follow (it went on past the array's end) */
        u32 rare_now = rare;
        asm volatile("" : "+r"(rare_now));
        if (k >= rare_now)
            break;
        /* The word's index less one, checked by one compare: clang merges `word < 1 || word >= N` into that
         * compare on a copy, which verifiers before ~6.10 do not relate to the word (no lower bound: Linux 6.1
         * refused the reads at p - 8). */
        u64 word_less_one = s->rare_word[k] - 1;
        u64 owner = s->rare_events[k];  /* its marks belong to event owner - 1 */
        asm volatile("" : "+r"(word_less_one));
        if (word_less_one >= (SCAN_LEAD + SSE_SCAN_MAX) / 8 - 1)
            continue;
        u64 mark = 0;
#pragma clang loop unroll(disable)
        for (u64 b = 0; b < 8; b++) {
            u64 p = word_less_one * 8 + 8 + b;
            u64 x = *(u64 *)&s->data[p];
            u64 at8 = *(u64 *)&s->data[p - 8], at7 = *(u64 *)&s->data[p - 7], at6 = *(u64 *)&s->data[p - 6];
            u64 c0 = x & 0xff, c1 = (x >> 8) & 0xff, pair = x & 0xffff;
            u64 empty_choices = (is_zero(at7 ^ W8('o', 'i', 'c', 'e', 's', '"', ':', '[')) |
                                 (is_zero(at8 ^ W8('o', 'i', 'c', 'e', 's', '"', ':', ' ')) & is_zero(c0 ^ '['))) &
                                is_zero(c1 ^ ']');
            /* `"content":""` marks no token only after `"role":"assistant",` (the role chunk): vLLM sends one
             * event per token, and a token whose text it holds back (a skipped special token, a character's
             * first bytes; the stop token at the end) as `"delta":{"content":""}`, which it counts. (p - 20,
             * p - 22: masked, which changes nothing where p > 22 and keeps the verifier's index in bounds) */
            u64 at20 = *(u64 *)&s->data[(p - 20) & 1023], at22 = *(u64 *)&s->data[(p - 22) & 1023];
            u64 empty_text = ((is_zero(at8 ^ W8('o', 'n', 't', 'e', 'n', 't', '"', ':')) &
                               is_zero(at20 ^ W8('s', 's', 'i', 's', 't', 'a', 'n', 't'))) |
                              (is_zero(at8 ^ W8('n', 't', 'e', 'n', 't', '"', ':', ' ')) &
                               is_zero(at22 ^ W8('s', 's', 'i', 's', 't', 'a', 'n', 't'))) |
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
                          is_zero(at6 ^ W8('"', 's', 't', 'o', 'p', '"', ':', 't')) |
                          (is_zero(at7 ^ W8('p', 'e', 'c', 'i', 'a', 'l', '"', ':')) & is_zero(c1 ^ 't'));
            u64 room = end - (p + 2);  /* negative when the mark's last byte would be past the buffer */
            asm volatile("" : "+r"(room));
            mark |= (empty_choices | empty_text | empty_delta | flagged | role_only) & ((room >> 63) ^ 1);
        }
        u64 event = owner - 1;
        u64 valid = (is_zero(owner) ^ 1) & is_zero(event >> 6);
        marked |= (mark & valid) << (event & 63);
    }
    u64 unmarked_events = events < 64 ? events : 64;
    u64 in_range = unmarked_events == 64 ? ~0ULL : ((1ULL << unmarked_events) - 1);
    u64 named = s->named, named_token = s->named_token;
    u64 not_tokens = (named & ~named_token) | (marked & ~named);  /* a name decides where there is one */
    u32 with_marks = __builtin_popcountll(not_tokens & in_range);
    *tokens = events > with_marks ? events - with_marks : 0;
    find_count(s);
    *usage = stated_number(s, s->usage_at, end, has_usage);
}
