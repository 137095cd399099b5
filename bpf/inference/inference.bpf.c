/* ebpftool inference: HTTP/1.x requests served on watched sockets, measured
 * from tracepoints, aggregated in maps.
 *
 * Two ways in (IO_HOOKS_SOCK), one state machine:
 *  - socket hooks (default where the kernel has them): raw tracepoints
 *    sock_recv_length / sock_send_length fire once per socket read or write,
 *    after it moved its bytes, with the socket's address; a connection is
 *    watched from its TCP handshake on a watched port (sock:inet_sock_set_state),
 *    and the syscall's buffer is found in the task's saved registers. An
 *    unwatched socket costs one inlined array lookup (a counting filter in
 *    front of conns); other syscalls cost nothing.
 *  - syscall hooks (fallback): enter/exit tracepoints of the read, write and
 *    accept syscalls, a connection keyed by (pid, fd) from its accept() on a
 *    listening socket in the listeners map (filled by user space from /proc).
 * Connections open before the tracer are found at their next read: from /proc
 * by user space (syscall hooks), or by the tcp_rcv_space_adjust tracepoint,
 * attached only while such connections exist (socket hooks).
 * Per connection, a state machine follows reads and writes:
 *   - a read when no request is open, or after its response began, starts a
 *     request (and finishes the previous one);
 *   - a write starting with a status line ("HTTP/1.x NNN") starts the response;
 *     one while a response is already under way is a pipelined request's;
 *   - writes carrying `data:` events (Server-Sent Events) are tokens;
 *   - the server's close finishes the request in progress.
 * A finished request goes into histograms (duration; for generative-AI requests
 * time to first token and time per output token) whatever the span budget; a
 * sampled one also goes to user space with bounded captures of its bytes.
 *
 * The parts (joined by the loader in this order):
 *   words.bpf.h          byte and word helpers of the parsers
 *   maps.bpf.h           maps every way in shares
 *   events.bpf.h         captures to user space
 *   requests.bpf.h       a request's life: begin, sample, finish into the histograms
 *   sse.bpf.h            tokens of streamed answers (SSE, newline-delimited JSON)
 *   http2.bpf.h          HTTP/2: a connection that begins with the client preface, its frames walked and
 *                        its bytes (DATA past its first bytes left out) sent to user space in order
 *   http1.bpf.h          HTTP/1.x: request line, response head, the read/write state machine
 *   response_programs.bpf.h  the tail-called programs of a response write, the idle flush
 *   io.bpf.h             a read's or write's buffer, a write handed on
 *   conn_table.bpf.h, hooks_socket.bpf.h   the socket hooks' way in
 *   hooks_tls.bpf.h      TLS: OpenSSL's uprobes hand plaintext to the same state machine (socket hooks)
 *   hooks_syscall.bpf.h  the syscalls' way in
 * A new way in (a TLS library's uprobes) is a hooks file calling on_read()/written_buffer(); a new
 * protocol is a file beside http1.bpf.h that the hooks hand a connection's bytes to.
 *
 * Compile-time parameters (from ebpftool/tracers/inference.py):
 *   IO_HOOKS_SOCK  1: socket hooks (x86-64 syscall registers); 0: syscall hooks
 *   SEED_CONNECTIONS 1: attach the tcp_rcv_space_adjust program (socket hooks)
 *   ARRIVAL_HOOK   1: a request begins when its first byte arrives (sock:sk_data_ready; socket hooks, or
 *                  syscall hooks with SYSCALL_SOCKETS)
 *   SYSCALL_SOCKETS 1: the syscall hooks find the socket behind a connection's fd (TASK_FILES_OFF,
 *                  FILES_FDT_OFF, FDT_FD_OFF, FDT_MAX_FDS_OFF, FILE_PRIVATE_DATA_OFF, SOCKET_SK_OFF and
 *                  the SK_*_OFFSET of ebpftool/core/btf.py, from the kernel's BTF)
 *   TLS_HOOKS      1: TLS connections' plaintext from the TLS library's uprobes (socket hooks)
 *   IO_PROGRAMS, TLS_PROGRAMS  which programs this text defines (both by default): the hooks' and the
 *                  programs they tail-call (1, 0), or the TLS uprobes' and their tail-called twins (0, 1).
 *                  With the compile cache the loader compiles the two halves side by side, each in a
 *                  process of its own, and loads them as one module: the maps are the same declarations
 *                  (ebpftool/core/bpf.py, BpfProgram's parts)
 *   SEND_HOOK_BTF  1: writes seen on the tcp_sendmsg_locked BTF tracepoint, not sock_send_length (socket
 *                  hooks; with MSG_ITER_*_OFF, SKB_LEN_OFF, SK_WMEM_QUEUED_OFF, SK_SNDBUF_OFF, ITER_*_TYPE)
 *   RECV_HOOK_BTF  1: reads seen on the sock_recv_length BTF tracepoint, timed by TCP's clock of the socket
 *                  (socket hooks; with TCP_SOCK_BTF_ID, TCP_CLOCK_CACHE_OFF, KFUNC_RDONLY_CAST)
 *   FILTER_PORTS   1: only connections accepted on listeners in the listeners map (syscall hooks;
 *                  the socket hooks always take the ports from watched_ports)
 *   FILTER_PIDS    1: only processes in watched_pids
 *   CAPTURE_BYTES  bytes captured per part (<= CAPTURE_MAX)
 *   MAX_CONNS, CONN_TABLE_BITS  connections followed at once (1 << CONN_TABLE_BITS)
 *   RINGBUF_PAGES  size of the event ring buffer
 *   HTTP_BUCKET(v), GENAI_DURATION_BUCKET(v), TTFT_BUCKET(v), TPOT_BUCKET(v)
 */
#include <uapi/linux/ptrace.h>
#include "inference.h"

#ifndef IO_HOOKS_SOCK
#define IO_HOOKS_SOCK 0
#endif
#ifndef SEED_CONNECTIONS
#define SEED_CONNECTIONS 0
#endif
#ifndef ARRIVAL_HOOK
#define ARRIVAL_HOOK 0
#endif
#ifndef SYSCALL_SOCKETS
#define SYSCALL_SOCKETS 0
#endif
#ifndef TLS_HOOKS
#define TLS_HOOKS 0
#endif
#ifndef IO_PROGRAMS
#define IO_PROGRAMS 1
#endif
#ifndef H2_PROGRAMS
#define H2_PROGRAMS IO_PROGRAMS
#endif
#ifndef TLS_PROGRAMS
#define TLS_PROGRAMS TLS_HOOKS
#endif
#ifndef SEND_HOOK_BTF
#define SEND_HOOK_BTF 0
#endif
#ifndef RECV_HOOK_BTF
#define RECV_HOOK_BTF 0
#endif
#ifndef FILTER_PORTS
#define FILTER_PORTS 0
#endif
#ifndef FILTER_PIDS
#define FILTER_PIDS 0
#endif
#ifndef CAPTURE_BYTES
#define CAPTURE_BYTES 512
#endif
#ifndef RINGBUF_PAGES
#define RINGBUF_PAGES 256
#endif
#ifndef MAX_CONNS
#define MAX_CONNS 65536  /* 1 << CONN_TABLE_BITS: the socket hooks' connection table is indexed by a hash's bits */
#define CONN_TABLE_BITS 16
#endif

/* The parts, each a file of this folder. The loader joins them into one text (BCC rewrites map calls
 * only in its main text), with #line markers so that errors name the right file and line. */
#include "words.bpf.h"
#include "maps.bpf.h"
#include "events.bpf.h"
#include "requests.bpf.h"
#include "sse.bpf.h"
#include "http2.bpf.h"
#include "http1.bpf.h"
#include "model.bpf.h"
#include "response_programs.bpf.h"
#include "io.bpf.h"
/* The connection table of the way in (each part is joined once, where it first appears: a part used by
 * both ways in is included outside their #if). */
#if IO_HOOKS_SOCK
#include "conn_table.bpf.h"
#else
#include "conn_table_fd.bpf.h"
#endif
#if TLS_HOOKS
#include "hooks_tls.bpf.h"
#endif
#if IO_PROGRAMS && IO_HOOKS_SOCK
#include "hooks_socket.bpf.h"
#elif IO_PROGRAMS
#include "hooks_syscall.bpf.h"
#endif
