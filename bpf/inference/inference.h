/* Layouts shared by bpf/inference/ (inference.bpf.c and its parts) and ebpftool/tracers/inference.py
 * (parsed by ebpftool.core.cstruct): connection state, metric keys and the
 * ring-buffer records. */

#define CAPTURE_MAX 1024        /* bytes one capture record can hold (the --capture-bytes ceiling) */
#define SSE_SCAN_MAX 1024      /* bytes of one response write searched for `data:` events */
#define CAPTURED_READS 16       /* reads of one sampled request that are captured (head or tail) */
#define LINE_MAX 64             /* first bytes of a request kept to classify it (its line may come in pieces) */
#define LINE_BUF 128            /* room for them: a piece of up to LINE_MAX - 1 bytes is added at up to LINE_MAX - 1 */
#define IOV_SCAN_MAX 4          /* buffers of a vectored response write searched for events */

/* Request methods the kernel recognises; anything else is METHOD_OTHER (`_OTHER`). */
#define METHOD_OTHER 0
#define METHOD_GET 1
#define METHOD_HEAD 2
#define METHOD_POST 3
#define METHOD_PUT 4
#define METHOD_DELETE 5
#define METHOD_OPTIONS 6
#define METHOD_PATCH 7
#define METHOD_CONNECT 8
#define METHOD_TRACE 9
#define METHOD_TLS 0x80        /* with a method, in req_key and request_event: the request came over TLS */
#define METHOD_H2 0x40         /* with a method, in req_key: an HTTP/2 stream measured in the kernel (http2.bpf.h) */
#define H2_STATUS_UNKNOWN 1    /* req_key.status of such a stream whose :status the kernel could not read */

/* Generative-AI operation, from the request path (or a streamed answer on another path). */
#define OP_NONE 0
#define OP_CHAT 1              /* /v1/chat/completions, /api/chat, /v1/responses, /v1/messages */
#define OP_TEXT_COMPLETION 2   /* /v1/completions, /completion, /generate*, /api/generate, /v2/models/... */
#define OP_EMBEDDINGS 3        /* /v1/embeddings, /api/embed* */
#define OP_STREAM 4            /* any other path answered with `data:` events */
#define OP_NDJSON 0x80         /* with an operation, from classify_path: the answer streams JSON lines (Ollama) */

/* conn_state.flags / request_event.flags */
#define REQ_SAMPLED 1      /* within the span budget: captures and a request event are sent */
#define REQ_SSE 2          /* the response carried `data:` events */
#define REQ_UNPARSED 4     /* the first bytes were not an HTTP/1.x request line */
#define REQ_PIPELINED 8    /* began with its response: its bytes came in an earlier read (method unknown) */
#define REQ_USAGE 16       /* the response stated its output tokens (usage.completion_tokens, eval_count, ...) */
#define REQ_NDJSON 32      /* the answer streams newline-delimited JSON objects (Ollama's API), not SSE */
#define REQ_LINE_PENDING 64 /* the request line is still arriving: classified again at the next read */
#define REQ_ARRIVAL 128    /* req_start is when its first byte arrived (sk_data_ready), not its first read */

/* capture_event.part */
#define PART_REQUEST_HEAD 0   /* a read of the request while it is shorter than the capture */
#define PART_REQUEST_TAIL 1   /* last bytes of a later or longer read of the request (a body, its end) */
#define PART_RESPONSE_HEAD 2  /* first bytes of the first two writes of the response */
#define PART_RESPONSE_LAST 3  /* last bytes of the last write carrying data (the usage chunk) */

#define EVENT_CAPTURE 1
#define EVENT_REQUEST 2
#define EVENT_H2_OPEN 3       /* an HTTP/2 connection began (struct h2_open_event) */
#define EVENT_H2_BYTES 4      /* bytes of an HTTP/2 connection, one direction (struct h2_bytes_event) */
#define EVENT_H2_CLOSE 5      /* an HTTP/2 connection ended (struct h2_open_event, its flags) */

/* Tracer-specific slots of the shared stats array (STAT_TRACER_BASE = 2). */
#define STAT_INF_ACCEPTED 2      /* connections accepted on watched sockets */
#define STAT_INF_UNPARSED 3      /* connections whose first bytes were not HTTP/1.x (let go) */
#define STAT_INF_REQUESTS 4      /* requests finished (measured) */
#define STAT_INF_NO_RESPONSE 5   /* requests closed without a response */
#define STAT_INF_SEEDED 6        /* connections open before the tracer, found at their first read since */
#define STAT_INF_METRICS_FULL 7  /* finished requests a metric map had no room for (a series per container: Pods churn) */
#define STAT_INF_TLS 8           /* connections that began with a TLS handshake (their plaintext: TLS_HOOKS) */
#define STAT_INF_H2 9            /* HTTP/2 connections: begun with the client preface, or by an h2c Upgrade (http2.bpf.h) */
#define STAT_INF_H2_LOST 10      /* HTTP/2 connections whose records were lost (ring buffer full): measured in the kernel after */
#define STAT_INF_H2_KERNEL 11    /* HTTP/2 streams measured in the kernel (on connections whose records were lost) */
#define STAT_INF_H2_UNWALKED 12  /* HTTP/2 connection directions whose frames were no longer found (walk bounds) */
#define STAT_INF_H2_BEGUN 13     /* the client's HEADERS frames walked and sent to user space (streams begun there,
                                  * but for a request's trailers), or noted and not measured (no measuring program
                                  * yet): what user space did not measure was lost */
#define STAT_INF_SWITCH_UNREAD 14 /* 101s written before the program that reads them was loaded (the start's first
                                   * moments): an h2c Upgrade among them not followed */

/* conn_state.tls */
#define TLS_BIO_UNKNOWN 1  /* TLS, how the library meets the socket not known yet */
#define TLS_SOCKET_BIO 2   /* the library reads and writes the socket inside its calls (nginx, Python's ssl sockets) */
#define TLS_MEMORY_BIO 3   /* the application moves the ciphertext itself, apart from the calls (asyncio, uvloop) */
#define TLS_RECORD_HANDSHAKE 0x16  /* a TLS record's content type: handshake */
#define TLS_RECORD_APPLICATION_DATA 0x17
#define TLS_RECORD_CHANGE_CIPHER_SPEC 0x14  /* sent only within a handshake: TLS 1.2's, and TLS 1.3's before the client's
                                           * encrypted Finished (middlebox compatibility, OpenSSL's, Go's and
                                           * rustls' default), whose record type is application data's */

/* Key of the listeners map (syscall hooks): a file descriptor of a process. A
 * connection is known by a u64 (conn_state.key, the key of last_writes): the
 * socket's kernel address with the socket hooks, pid << 32 | fd with the
 * syscall hooks. The socket hooks' conns is a table whose free slots have key 0
 * and whose slots being filled have key CONN_CLAIMED. */
#define CONN_CLAIMED 1
struct conn_key {
    __u32 pid;
    __s32 fd;
};

/* One watched connection and the request in progress on it. Times are
 * bpf_ktime_get_ns(); 0 means "not yet". */
struct conn_state {
    __u64 key;           /* what finds it: the socket's address (socket hooks; 0: a free table slot) or pid << 32 | fd */
    __u64 id;            /* names the connection in events (never a kernel address) */
    __u64 req_start;     /* the first read of the request returned */
    __u64 last_read;     /* the latest read returned: where a pipelined request began */
    __u64 resp_start;    /* the first write of the response was issued */
    __u64 resp_end;      /* the latest write of the response returned */
    __u64 first_token;   /* the first write carrying a `data:` event was issued */
    __u64 last_token;    /* the latest write carrying a `data:` event was issued */
    __u64 req_bytes;
    __u64 resp_bytes;
    __u32 tokens;        /* events carrying output text (not [DONE], role-only, finish-only or usage-only chunks) */
    __u32 seq;           /* requests begun on this connection */
    __u16 port;          /* the server's (listening) port */
    __u16 status;        /* response status code; 0 until a status line was written */
    __u8 method;
    __u8 op;
    __u8 flags;
    __u8 family;         /* 2 AF_INET, 10 AF_INET6, 0 unknown */
    __u16 client_port;
    __u8 reads;          /* reads of this request so far (saturates) */
    __u8 writes;         /* writes of this response so far (saturates) */
    __u8 client_addr[16];
    __u32 pid;           /* the process serving it; 0 until its first read or write (socket hooks) */
    __u64 cgroup;        /* its cgroup v2 id (bpf_get_current_cgroup_id): its container, its Pod; 0 until known */
    char comm[16];
    __u64 arrival;       /* the first byte of the next request arrived (sk_data_ready); 0: not seen */
    __u64 read_start;    /* the first read of the request returned (req_start is its arrival where known) */
    __u32 usage_tokens;  /* output tokens the response stated (valid with REQ_USAGE) */
    __u32 model;         /* the model its answer names (model_names), MODEL_NONE where it names none; 0: not looked */
    __u8 line_len;       /* bytes of line */
    __u8 seeded;         /* open before the tracer started: its first bytes may be the middle of anything */
    __u8 end_after_scan; /* the write being scanned ends the response (its last chunk): finish it after the scan */
    __u8 body_counted;   /* body_left counts the bytes still to come of a body whose length the head stated */
    __u8 tls;            /* its bytes are TLS (TLS_BIO_UNKNOWN, TLS_SOCKET_BIO, TLS_MEMORY_BIO): the plaintext comes from the library's hooks */
    __u8 sock_known;     /* syscall hooks: its socket is in sock_conns (its arrivals are seen) */
    __u8 proto;          /* PROTO_HTTP1, PROTO_H2 (beside the fields every request touches: one cache line less) */
    __u8 line[LINE_BUF]; /* the request's first bytes (line_len of them), to classify it */
    __u64 body_left;     /* bytes of the response's body still to come (valid with body_counted) */
    /* HTTP/2 (proto PROTO_H2): per direction (H2_FROM_CLIENT, H2_FROM_SERVER), where the frames stand */
    __u32 h2_next[2];    /* bytes until the next frame header (the rest of a frame, or of the client preface) */
    __u32 h2_copy[2];    /* of them, the bytes still to copy to user space first (the rest are skipped) */
    __u8 h2_hdr[16];     /* a frame header split between buffers: its first h2_have[dir] bytes at 8 * dir */
    __u8 h2_have[2];
    __u8 h2_lost;        /* H2_MUTED: records lost, nothing more is sent; H2_UNWALKED(dir): frames no longer found */
    __u32 h2_walked_seq; /* BTF send hook: TCP's sequence number after the bytes walked (valid with h2_seq_known) */
    /* per direction: bytes to come that are no frames, passed over and not sent: the client preface; a
     * 101's head (h2c Upgrade); the rest of a partial write, walked already (BTF send hook) */
    __u32 h2_pass[2];
    __u8 h2_seq_known;
    __u8 tls_data_seen;  /* a TLS application-data record was read outside any library call (see tls_unknown) */
    __u8 h2_drop[2];     /* per direction: the rest of the current frame is left out (a frame user space needs not) */
    __u16 h2_tail[2];    /* per direction: the current DATA frame's last bytes to copy after those skipped */
    __u32 slot;          /* socket hooks: its slot in the connection table (and in conn_arrivals) */
    __u32 arrival_first_queued; /* with ARRIVAL_QUEUED: the bytes the socket held when `arrival` was noted (on
                          * HTTP/2, from the next read's first byte: the frames that begin in them came then);
                          * in the padding after slot, so that the state stays 384 bytes, six cache lines */
    __u64 arrival_last;  /* the latest bytes arrived (sk_data_ready) before the next read, kept only before the
                          * connection's first request began and on HTTP/2 connections: a read of many frames
                          * is timed by its last bytes, so that no stream in it starts before it was sent */
};
#define ARRIVAL_QUEUED (1U << 31)  /* conn_state.arrival_first_queued holds a count (its low 31 bits) */

/* conn_state.proto */
#define PROTO_HTTP1 0
#define PROTO_H2 1
#define H2_FROM_CLIENT 0
#define H2_FROM_SERVER 1
#define H2_CHUNK 4096        /* bytes one h2_bytes_event can hold */
#define H2_DATA_PEEK 512     /* bytes of each DATA frame sent to user space (gRPC message prefixes); the rest are skipped
                              * (but on connections in h2_whole_data: http2.bpf.h) */
#define H2_DATA_TAIL 512     /* and the last bytes of each DATA frame from the server (a stream's usage chunk, a JSON
                              * answer's usage: where answers state their tokens) */

/* An HTTP/2 connection began or ended: what names it (EVENT_H2_OPEN, EVENT_H2_CLOSE). */
struct h2_open_event {
    __u32 type;
    __u32 pid;
    __u64 conn;          /* conn_state.id */
    __u64 ts;
    __u64 cgroup;
    __u16 port;
    __u16 client_port;
    __u8 family;
    __u8 tls;
    __u8 lost;           /* EVENT_H2_CLOSE: conn_state.h2_lost */
    __u8 line_len;       /* EVENT_H2_OPEN of an h2c Upgrade: bytes of line */
    __u8 client_addr[16];
    char comm[16];
    /* EVENT_H2_OPEN of an h2c Upgrade (RFC 7540 3.2): the HTTP/1.1 request that asked for it is stream 1;
     * when it began (req_start), its place on the connection (seq) and its first bytes (conn_state.line) */
    __u64 upgrade_start; /* 0: the connection began with the client preface */
    __u32 upgrade_seq;
    __u32 pad;
    __u8 line[LINE_MAX];
};

/* Bytes of one direction of an HTTP/2 connection, in order: `len` bytes copied, then `skip` bytes that
 * were not (DATA past its first H2_DATA_PEEK bytes, and before a server frame's last H2_DATA_TAIL). ts: the read's return or the write; arrival: see there. */
struct h2_bytes_event {
    __u32 type;
    __u32 pid;
    __u64 conn;
    __u64 ts;
    __u32 len;
    __u32 skip;
    __u8 from_server;
    __u8 pad[3];
    __u32 first_len;     /* client bytes: of those copied, the first first_len came at arrival_first */
    __u64 arrival;       /* client bytes: when the latest of the read's arrived (sk_data_ready), where known; else 0 */
    __u64 arrival_first; /* client bytes: when the read's first bytes arrived, where the kernel knows where those end */
    __u8 data[H2_CHUNK];
};

/* Key of every metric map: one series per server cgroup (container), port,
 * method, status and operation. Servers in different Pods often listen on the
 * same port, each in its own network namespace. Also the key of a slot of the
 * series table (http_hist's series, bpf/inference/requests.bpf.h), where `slot` says
 * whether it holds the key (0 in the hash maps' keys). */
#define SERIES_FREE 0
#define SERIES_USED 1      /* the slot holds this key */
#define SERIES_CLAIMED 2   /* a CPU is filling the slot in */
struct req_key {
    __u64 cgroup;
    __u16 port;
    __u16 status;
    __u8 method;
    __u8 op;
    __u16 slot;
    __u32 model;         /* the generative-AI metrics' model (conn_state.model); not part of an HTTP series */
    __u32 pad;
};

/* conn_state.model, req_key.model: an id of the model name (a hash with the top bit set: never 0 or
 * MODEL_NONE), its name in model_names. */
#define MODEL_NONE 1
#define MODEL_NAME_MAX 64
struct model_name {
    __u32 len;
    char name[MODEL_NAME_MAX];
};

/* Bytes of a sampled request or response, sent while it happens. */
struct capture_event {
    __u32 type;
    __u32 pid;
    __u64 conn;          /* conn_state.id */
    __u32 seq;
    __u32 part;
    __u32 len;
    __u32 pad;
    __u8 data[CAPTURE_MAX];
};

/* A sampled request, sent when it ends (next request, pipelined response, or close). */
struct request_event {
    __u32 type;
    __u32 pid;
    __u64 conn;          /* conn_state.id */
    __u32 seq;
    __u32 pad0;
    __u64 req_start;
    __u64 resp_start;
    __u64 resp_end;
    __u64 first_token;
    __u64 last_token;
    __u64 end;           /* resp_end, or the close of a request never answered */
    __u64 req_bytes;
    __u64 resp_bytes;
    __u32 tokens;
    __u16 port;
    __u16 status;
    __u8 method;
    __u8 op;
    __u8 flags;
    __u8 family;
    __u16 client_port;
    __u16 pad;
    __u8 client_addr[16];
    __u64 cgroup;        /* conn_state.cgroup */
    char comm[16];
    __u64 read_start;    /* the request's first read (req_start is its arrival where known) */
    __u32 output_tokens; /* what the response stated (REQ_USAGE), else its token events */
    __u32 pad2;
};

/* last_write map value: the tail of the latest write of a sampled response carrying data. */
struct last_write {
    __u32 seq;
    __u32 len;
    __u8 data[CAPTURE_MAX];
};
