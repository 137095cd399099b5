/* Layouts shared by bpf/agents/ and ebpftool/tracers/agents/ (parsed by ebpftool.core.cstruct): the
 * connection table's key and value, and the ring buffer's event. */

#define AGENTS_CHUNK 4096           /* bytes of plaintext one event carries at most */
#define AGENTS_WRITE_CHUNKS 4       /* of one write, at most this many events (16 KiB) */
#define AGENTS_READ_CHUNKS 16       /* of one read, at most this many events (64 KiB) */
#define AGENTS_REQUEST_BYTES 16384  /* of one request (its writes from `POST `), bytes copied at most */
#define AGENTS_MAX_CONNS 65536      /* connections remembered (an LRU table: the idle ones go first) */

/* How a connection's plaintext is seen. */
#define VIA_TLS 1      /* OpenSSL's SSL_read / SSL_write: the connection is its SSL object */
#define VIA_SOCKET 2   /* a connect()ed TCP socket: the connection is its fd (syscall hooks) or its address (socket hooks) */

/* What an event is. */
#define EV_WRITE 1     /* bytes the client wrote */
#define EV_READ 2      /* bytes the client read */
#define EV_CLOSE 3     /* the connection ended (close(), SSL_free) while in a call */

/* A connection's state in the table. */
#define CONN_CLIENT 1   /* a client's HTTP/1 connection between calls: each write is checked for `POST ` */
#define CONN_IN_CALL 2  /* from a write that began with `POST `: its bytes go to user space */
#define CONN_IGNORED 3  /* not an HTTP/1 client (a server's side, TLS ciphertext, another protocol) */

/* Tracer-specific slots of the shared stats array (STAT_TRACER_BASE = 2). */
#define STAT_AGENTS_BYTES_NOT_COPIED 2  /* bytes of calls beyond the copy bounds (lengths still sent) */
#define STAT_AGENTS_CALLS_STARTED 3     /* writes that began with `POST ` on a client connection */
#define STAT_AGENTS_DROPS_APPLIED 4     /* connections user space let go (not an LLM or MCP call) */

struct conn_key {
    __u32 tgid;
    __u32 via;      /* VIA_* */
    __u64 id;       /* the SSL object's address, or the fd */
};

struct conn_state {
    __u32 state;          /* CONN_* */
    __u32 call;           /* calls begun on the connection (`POST ` writes): user space names a call by it */
    __u32 seq;            /* events sent for the connection: a gap tells user space one was lost */
    __u32 request_left;   /* bytes of the current request still to be copied */
    __u16 port;           /* the server's port (sockets: from connect() or SYN_SENT; TLS: 0, unknown here) */
    __u16 pad;
    __u32 pad2;
};

struct agent_event {
    __u64 ts;        /* bpf_ktime_get_ns() at the read's or write's return (CLOCK_MONOTONIC) */
    __u64 id;        /* conn_key.id */
    __u32 tgid;
    __u32 tid;
    __u32 call;      /* conn_state.call */
    __u32 seq;       /* conn_state.seq of this event */
    __u32 len;       /* bytes the read or write moved in all */
    __u32 offset;    /* where this event's data starts in them */
    __u32 size;      /* bytes of data here */
    __u8 kind;       /* EV_* */
    __u8 via;        /* VIA_* */
    __u8 starts;     /* this write began a call (`POST `) */
    __u8 last;       /* the last event of this read or write */
    __u16 port;
    __u16 pad;
    char comm[16];
    __u8 data[AGENTS_CHUNK];
};

/* The user-space request to let go of a connection's call (drop_calls map): its call number. */
struct drop_request {
    __u32 call;
    __u32 pad;
};

struct comm_name {
    char name[16];
};
