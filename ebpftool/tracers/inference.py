"""`ebpftool inference`: HTTP/1.x requests an inference server answers, from socket or syscall tracepoints.

The kernel (bpf/inference/) follows each watched connection: request
start, response start and end, status, method, generative-AI operation and
`data:` events, and puts every finished request into histogram maps, so the
metrics are exact at any request rate. Requests within the span budget also
come to user space with bounded captures of their bytes, which
ebpftool.tracers.http_parse turns into span attributes (path, model, usage).

Two ways in (`--hooks`): the socket hooks (raw tracepoints sock_recv_length /
sock_send_length, a connection watched from its handshake on a watched port)
cost an unwatched socket one hash lookup and other syscalls nothing; the syscall
hooks (enter/exit of read, write and accept, the fallback for kernels without
those tracepoints or for other architectures) cost every read and write of the
node two tracepoint hits. With --pid/--comm, user space finds the watched
processes' listening ports (syscall hooks: sockets) in /proc at start and each
interval, so servers and workers started later are picked up within one interval;
connections open before the tracer started are followed from their next request.
"""
from __future__ import annotations

import ipaddress
import os
import platform
import random
import sys
import time
from collections import OrderedDict, defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from ebpftool.core import k8s
from ebpftool.core.bpf import (BpfProgram, bucket_macro, kfunc_defines, merge_hist, run_raw_tracepoint_program,
                               seconds_to_ns)
from ebpftool.core.btf import KIND_FUNC, KIND_TYPEDEF, Btf, BtfError
from ebpftool.core.cstruct import cstring, decode, load_header
from ebpftool.core.tracer import Tracer, TracerOptions
from ebpftool.errors import EbpftoolError
from ebpftool.export import semconv as sc
from ebpftool.export.model import MetricPoint, SpanEvent, SpanKind, SpanRecord, counter, histogram
from ebpftool.export.pipeline import Telemetry
from ebpftool.tracers import http_parse
from ebpftool.tracers.tls_libs import TlsUprobes

STRUCTS, H = load_header("inference/inference.h")
DEFAULT_CAPTURE_BYTES = 512
DEFAULT_MAX_CONNECTIONS = 65536
MAX_CONNECTIONS_RANGE = (64, 262144)  # the socket hooks' table is preallocated: ~150 bytes a connection
MIN_CAPTURE_BYTES = 64
PENDING_CAPTURES_MAX = 20000  # sampled requests whose captures wait for their end event
EXE_CACHE_MAX = 4096  # processes whose executable name is remembered (pids come and go)
# A response with no write for this long, on a connection neither read nor closed since, is over:
# its request is finished then (the span ends at its last write all the same). Long enough for
# the pauses of a streamed answer between tokens.
IDLE_RESPONSE_NS = 5_000_000_000
# A stream may go quiet far longer: the headers of a generative-AI answer go out when the request is queued,
# the first token after queueing and prefill; a stream pauses between events. Finishing it early would cut it.
IDLE_STREAM_RESPONSE_NS = 120_000_000_000
SYSCALL_TRACEPOINTS = tuple(
    f"syscalls:sys_{side}_{call}"
    for call in ("accept4", "accept", "read", "recvfrom", "readv", "recvmsg", "write", "sendto", "writev",
                 "sendmsg", "sendfile64")
    for side in ("enter", "exit")
) + ("syscalls:sys_enter_close",)
SOCKET_RAW_TRACEPOINTS = ("sock_recv_length", "sock_send_length")
SOCKET_TRACEPOINTS = ("sock:sock_recv_length", "sock:sock_send_length", "sock:inet_sock_set_state")
SEED_TRACEPOINT = "tcp:tcp_rcv_space_adjust"
# Where the kernel has it (Linux 6.7+), a request begins when its first byte arrives, not when the server
# reads it: the socket hooks watch TCP signal queued bytes (ARRIVAL_HOOK in bpf/inference/hooks_socket.bpf.h).
ARRIVAL_TRACEPOINT = "sock:sk_data_ready"
ARRIVAL_RAW_TRACEPOINT = "sk_data_ready"  # its program: raw_tracepoint__sk_data_ready
ARRIVAL_BTF_FUNCTION = "arrival_sk_data_ready"  # or, with the BTF read hook, this tp_btf program
# The socket hooks' send side where the kernel allows BTF raw tracepoints: the write's buffer from its typed
# struct msghdr, with no register look-up or user-memory read of the iovec (bpf/inference/hooks_socket.bpf.h, SEND_HOOK_BTF).
SEND_BTF_TRACEPOINT = "tcp_sendmsg_locked"
SEND_BTF_FUNCTION = "send_tcp_sendmsg"  # its program in bpf/inference/hooks_socket.bpf.h
# The read side there too where the kernel also has the bpf_rdonly_cast kfunc (Linux 6.2+): a read is timed
# by TCP's own clock of the socket, which the read just refreshed, instead of a clock helper (RECV_HOOK_BTF).
RECV_BTF_TRACEPOINT = "sock_recv_length"
RECV_BTF_FUNCTION = "recv_sock_recv_length"
# Seconds between scans of /proc for libssl copies not hooked yet (each reads every process's maps).
TLS_RESCAN_S = 30.0

# The programs reached by tail calls from a response write, in their order in the scan_prog array: the two
# passes over its bytes for events, the reading of a response head, and the end of a response so found.
SCAN_FUNCTIONS = ("scan_sse_events", "scan_sse_marks", "scan_response_head", "finish_written_response")
HOOKS = ("auto", "socket", "socket-raw", "syscall")


def btf_hook_defines() -> dict[str, int]:
    """The BTF socket hooks' defines: the send side's, and the read side's where the kernel allows it."""
    btf = Btf.vmlinux()  # parsed once for both (~55 ms)
    defines = send_hook_btf_defines(btf)
    try:
        defines |= recv_hook_btf_defines(btf)
    except BtfError:
        pass  # no bpf_rdonly_cast (Linux < 6.2): reads stay on the raw tracepoint, timed by the clock helper
    return defines


def send_hook_btf_defines(btf: Btf | None = None) -> dict[str, int]:
    """Offsets and enum values the BTF send hook loads, from the running kernel's BTF (BtfError if absent)."""
    btf = btf or Btf.vmlinux()
    btf.type_id(KIND_TYPEDEF, f"btf_trace_{SEND_BTF_TRACEPOINT}")  # the tracepoint exists
    return {"MSG_ITER_TYPE_OFF": btf.member("msghdr", "msg_iter.iter_type").offset,
            "MSG_ITER_OFFSET_OFF": btf.member("msghdr", "msg_iter.iov_offset").offset,
            "MSG_ITER_UBUF_OFF": btf.member("msghdr", "msg_iter.ubuf").offset,
            "MSG_ITER_COUNT_OFF": btf.member("msghdr", "msg_iter.count").offset,
            "SKB_LEN_OFF": btf.member("sk_buff", "len").offset,
            "SK_WMEM_QUEUED_OFF": btf.member("sock", "sk_wmem_queued").offset,
            "SK_SNDBUF_OFF": btf.member("sock", "sk_sndbuf").offset,
            "ITER_UBUF_TYPE": btf.enum_value("iter_type", "ITER_UBUF"),
            "ITER_IOVEC_TYPE": btf.enum_value("iter_type", "ITER_IOVEC")}


def recv_hook_btf_defines(btf: Btf | None = None) -> dict[str, int]:
    """What the BTF read hook needs from the running kernel's BTF (BtfError if something is absent)."""
    btf = btf or Btf.vmlinux()
    btf.type_id(KIND_TYPEDEF, f"btf_trace_{RECV_BTF_TRACEPOINT}")
    btf.type_id(KIND_FUNC, "bpf_rdonly_cast")
    return {"RECV_HOOK_BTF": 1, "TCP_SOCK_BTF_ID": btf.struct_id("tcp_sock"),
            "TCP_CLOCK_CACHE_OFF": btf.member("tcp_sock", "tcp_clock_cache").offset,
            "PT_REGS_BTF_ID": btf.struct_id("pt_regs"), "TASK_STACK_OFF": btf.member("task_struct", "stack").offset,
            **kfunc_defines()}


METHOD_NAMES = {H[f"METHOD_{m}"]: m for m in http_parse.METHODS}
OPERATIONS = {H["OP_CHAT"]: "chat", H["OP_TEXT_COMPLETION"]: "text_completion",
              H["OP_EMBEDDINGS"]: "embeddings", H["OP_STREAM"]: "generate_content"}
TCP_LISTEN, TCP_ESTABLISHED = 0x0A, 0x01
NO_RESPONSE = "no_response"  # error.type of a request closed before any response
GEN_AI_METRIC_MAPS = ("genai_hist", "ttft_hist", "tpot_hist", "output_tokens")  # hash maps keyed by struct req_key


@dataclass
class InferenceOptions(TracerOptions):
    ports: list[int] = field(default_factory=list)
    pids: list[int] = field(default_factory=list)
    comms: list[str] = field(default_factory=list)
    capture_bytes: int = DEFAULT_CAPTURE_BYTES
    hooks: str = "auto"   # socket | socket-raw | syscall | auto (socket where the kernel allows it)
    max_connections: int = DEFAULT_MAX_CONNECTIONS  # followed at once (a power of two)


# --- /proc: which sockets belong to whom --------------------------------------------------------
@dataclass(frozen=True)
class TcpSocket:
    local_port: int
    state: int
    remote_addr: str
    remote_port: int


def parse_proc_net_tcp(text: str) -> dict[int, TcpSocket]:
    """inode -> socket from the text of /proc/<pid>/net/tcp or tcp6."""
    out = {}
    for line in text.splitlines()[1:]:
        f = line.split()
        if len(f) < 10:
            continue
        try:
            local_port = int(f[1].rsplit(":", 1)[1], 16)
            raddr_hex, rport_hex = f[2].rsplit(":", 1)
            remote_port, state = int(rport_hex, 16), int(f[3], 16)
            if local_port > 0xFFFF or remote_port > 0xFFFF or state > 0xFF:
                continue  # not a line the kernel writes (it prints 4 hex digits per port, 2 for the state)
            out[int(f[9])] = TcpSocket(local_port, state, _hex_addr(raddr_hex), remote_port)
        except (ValueError, IndexError):
            continue
    return out


def _hex_addr(h: str) -> str:
    """An address as /proc/net/tcp writes it (32-bit words in host order) to text."""
    raw = b"".join(int(h[i:i + 8], 16).to_bytes(4, "little") for i in range(0, len(h), 8))
    return format_address(raw, 2 if len(raw) == 4 else 10)


def format_address(raw: bytes, family: int) -> str:
    if family == 2:
        return str(ipaddress.IPv4Address(raw[:4]))
    if family == 10:
        addr = ipaddress.IPv6Address(raw[:16])
        return str(addr.ipv4_mapped or addr)
    return ""


def all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def read_text(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def socket_fds(pid: int) -> dict[int, int]:
    """inode -> fd of the sockets pid holds."""
    out = {}
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return out
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            out[int(target[8:-1])] = int(fd)
    return out


class SocketTables:
    """TCP tables per network namespace, read once per scan (processes share namespaces)."""

    def __init__(self) -> None:
        self._by_ns: dict[str, dict[int, TcpSocket]] = {}

    @staticmethod
    def namespace_of(pid: int) -> str:
        try:
            return os.readlink(f"/proc/{pid}/ns/net")
        except OSError:
            return ""

    def of(self, pid: int) -> dict[int, TcpSocket]:
        ns = self.namespace_of(pid)
        if not ns:
            return {}
        if ns not in self._by_ns:
            table: dict[int, TcpSocket] = {}
            for name in ("tcp", "tcp6"):
                text = read_text(f"/proc/{pid}/net/{name}")
                if text:
                    table.update(parse_proc_net_tcp(text))
            self._by_ns[ns] = table
        return self._by_ns[ns]

    def by_namespace(self, only: set[str] | None = None) -> dict[str, dict[int, TcpSocket]]:
        """The table of every network namespace some process is in (of those in `only`, if given),
        in one pass over /proc that reads each namespace's table once."""
        out: dict[str, dict[int, TcpSocket]] = {}
        for pid in all_pids():
            ns = self.namespace_of(pid)
            if ns and ns not in out and (only is None or ns in only):
                out[ns] = self.of(pid)
                if only is not None and len(out) == len(only):
                    break
        return out


def process_family(roots: Iterable[int]) -> set[int]:
    """roots and their descendants (server workers are often forked children)."""
    children: dict[int, list[int]] = defaultdict(list)
    for pid in all_pids():
        stat = read_text(f"/proc/{pid}/stat")
        if stat:
            try:
                children[int(stat.rsplit(")", 1)[1].split()[1])].append(pid)
            except (IndexError, ValueError):
                continue
    out, todo = set(), list(roots)
    while todo:
        p = todo.pop()
        if p not in out:
            out.add(p)
            todo.extend(children.get(p, ()))
    return out


class InferenceTracer(Tracer):
    name = "inference"

    def __init__(self, telemetry: Telemetry, options: InferenceOptions | None = None,
                 notify: Callable[[str], None] | None = None) -> None:
        super().__init__(telemetry, options or InferenceOptions())
        self.opts: InferenceOptions = self.options
        self.notify = notify or (lambda msg: print(f"inference: {msg}", file=sys.stderr, flush=True))
        self.prog: BpfProgram | None = None
        self._capture_t = STRUCTS["capture_event"]
        self._request_t = STRUCTS["request_event"]
        self._pending: OrderedDict[tuple[int, int], list[tuple[int, bytes]]] = OrderedDict()
        self._exe: dict[int, str] = {}
        self.spans_sent = 0
        self.unparsable_captures = 0
        self.watched_listeners = 0
        self.hooks = ""                                   # the hooks in use: socket | syscall
        self.btf_hooks: list[tuple[str, str]] = []       # (tracepoint, program) of the hooks on BTF tracepoints
        self.arrival_hook = False                         # requests begin at their first byte's arrival
        self.tls: TlsUprobes | None = None                # libssl files with the TLS uprobes (socket hooks)
        self._tls_scanned = time.monotonic()
        self._preexisting: dict[str, set[int]] = {}       # netns -> inodes of connections open at start
        self._seeding = False
        self._flush_fd = -1
        self._last_rate_at = 0.0
        self._last_requests = 0
        self.request_rate = 0.0
        self.cgroups = k8s.CgroupPaths()                  # the serving processes' Pods and containers
        self._cgroups_in_maps: set[int] = set()           # cgroup ids of the metric maps' keys, as last read
        self._cgroups_gone: set[int] = set()              # of those, the ones found gone at the last collect

    # -- start -----------------------------------------------------------------------------------
    def validate(self) -> None:
        o = self.opts
        if not (o.ports or o.pids or o.comms):
            raise EbpftoolError("say what to watch: --port (a server's listening port), --pid or --comm")
        for p in o.ports:
            if not 0 < p < 65536:
                raise EbpftoolError(f"--port {p}: a TCP port is between 1 and 65535")
        for pid in o.pids:
            if not os.path.exists(f"/proc/{pid}"):
                raise EbpftoolError(f"--pid {pid}: no such process")
        for comm in o.comms:
            if not comm or len(comm) > 15:
                raise EbpftoolError(f"--comm {comm!r}: a process name is 1 to 15 characters (as in /proc/PID/comm)")
        if not MIN_CAPTURE_BYTES <= o.capture_bytes <= H["CAPTURE_MAX"]:
            raise EbpftoolError(f"--capture-bytes must be between {MIN_CAPTURE_BYTES} and {H['CAPTURE_MAX']}")
        if o.hooks not in HOOKS:
            raise EbpftoolError(f"--hooks {o.hooks!r}: one of {', '.join(HOOKS)}")
        lo, hi = MAX_CONNECTIONS_RANGE
        n = o.max_connections
        if not lo <= n <= hi or n & (n - 1):
            raise EbpftoolError(f"--max-connections {n}: a power of two between {lo} and {hi}")

    @staticmethod
    def socket_hooks_missing() -> str:
        """Why the socket hooks cannot be used here ('' when they can)."""
        if platform.machine() != "x86_64":
            return f"the socket hooks read x86-64 syscall registers; this is {platform.machine()}"
        missing = [tp for tp in SOCKET_TRACEPOINTS if not BpfProgram.tracepoint_exists(tp)]
        return f"the kernel lacks {', '.join(missing)}" if missing else ""

    def start(self) -> None:
        o = self.opts
        why_not = self.socket_hooks_missing() if o.hooks != "syscall" else "--hooks syscall"
        if why_not and o.hooks in ("socket", "socket-raw"):
            raise EbpftoolError(f"--hooks {o.hooks}: {why_not}")
        if not why_not:
            if o.hooks != "socket-raw":
                try:
                    self._load(socket_hooks=True, btf_hooks=btf_hook_defines())
                    return
                except (EbpftoolError, BtfError) as exc:
                    self.notify(f"the BTF socket hooks were refused ({str(exc)[-200:]}); using sock_recv_length "
                                "and sock_send_length")
            try:
                self._load(socket_hooks=True)
                return
            except EbpftoolError as exc:
                if o.hooks in ("socket", "socket-raw"):
                    raise
                self.notify(f"socket hooks refused ({str(exc)[-200:]}); using the syscall hooks")
        self._load(socket_hooks=False)

    def _load(self, socket_hooks: bool, btf_hooks: dict[str, int] | None = None) -> None:
        """btf_hooks: what the BTF socket hooks need (btf_hook_defines()), or None for the raw socket hooks."""
        o = self.opts
        preexisting = self._preexisting_connections() if socket_hooks else {}
        defines = {
            "IO_HOOKS_SOCK": int(socket_hooks),
            "SEND_HOOK_BTF": int(btf_hooks is not None),
            **(btf_hooks or {}),
            "SEED_CONNECTIONS": int(bool(preexisting)),
            "ARRIVAL_HOOK": int(socket_hooks and BpfProgram.tracepoint_exists(ARRIVAL_TRACEPOINT)),
            "TLS_HOOKS": int(socket_hooks),
            "FILTER_PORTS": int(bool(o.ports)),
            "FILTER_PIDS": int(bool(o.pids or o.comms)),
            "CAPTURE_BYTES": o.capture_bytes,
            "RINGBUF_PAGES": o.ringbuf_pages,
            "MAX_CONNS": o.max_connections,
            "CONN_TABLE_BITS": o.max_connections.bit_length() - 1,
            **o.budget_defines(),
        }
        macros = [
            bucket_macro("HTTP_BUCKET", seconds_to_ns(sc.HTTP_DURATION_BUCKETS)),
            bucket_macro("GENAI_DURATION_BUCKET", seconds_to_ns(sc.GEN_AI_REQUEST_DURATION_BUCKETS)),
            bucket_macro("TTFT_BUCKET", seconds_to_ns(sc.GEN_AI_TTFT_BUCKETS)),
            bucket_macro("TPOT_BUCKET", seconds_to_ns(sc.GEN_AI_TPOT_BUCKETS)),
        ]
        prog = BpfProgram("inference/inference.bpf.c", defines, macros).load()
        bpf = prog.bpf
        try:
            for slot, function in enumerate(SCAN_FUNCTIONS):
                if btf_hooks is not None:
                    # A tail call stays within one program type and, for tracing programs, one attach point.
                    bpf["scan_prog"][slot] = prog.load_btf_tracepoint(SEND_BTF_TRACEPOINT, function)
                else:
                    scan = bpf.load_func(function, bpf.RAW_TRACEPOINT if socket_hooks else bpf.TRACEPOINT)
                    bpf["scan_prog"][slot] = scan.fd
            self._flush_fd = bpf.load_func("flush_idle_request", bpf.RAW_TRACEPOINT).fd
            btf_attached = [] if btf_hooks is None else [(SEND_BTF_TRACEPOINT, SEND_BTF_FUNCTION)]
            if btf_hooks and btf_hooks.get("RECV_HOOK_BTF"):
                # where syscall registers lie from a task's stack, measured before any hook runs (see there)
                run_raw_tracepoint_program(bpf.load_func("calibrate_syscall_regs", bpf.RAW_TRACEPOINT).fd, [0])
                btf_attached.append((RECV_BTF_TRACEPOINT, RECV_BTF_FUNCTION))
                if defines["ARRIVAL_HOOK"]:  # timed by TCP's clock, as reads are
                    btf_attached.append((ARRIVAL_RAW_TRACEPOINT, ARRIVAL_BTF_FUNCTION))
            for tracepoint, function in btf_attached:
                prog.attach_btf_tracepoint(tracepoint, function)
        except Exception as exc:
            prog.close()
            if isinstance(exc, EbpftoolError):
                raise
            raise EbpftoolError(f"the kernel refused the SSE event counter of bpf/inference: {exc}") from exc
        self.prog = prog
        self.programs.append(prog)
        self.hooks = "socket" if socket_hooks else "syscall"
        self.btf_hooks = btf_attached
        if socket_hooks:
            on_btf = {"sock_send_length": self.send_hook_btf, "sock_recv_length": self.recv_hook_btf}
            prog.probes.extend(f"raw_tracepoint:{tp}" for tp in SOCKET_RAW_TRACEPOINTS if not on_btf[tp])
            prog.probes.append("tracepoint:sock:inet_sock_set_state")
            if defines["ARRIVAL_HOOK"]:
                if (ARRIVAL_RAW_TRACEPOINT, ARRIVAL_BTF_FUNCTION) not in btf_attached:
                    prog.probes.append(f"raw_tracepoint:{ARRIVAL_RAW_TRACEPOINT}")
                self.arrival_hook = True
            if preexisting:
                prog.probes.append(f"tracepoint:{SEED_TRACEPOINT}")
                self._preexisting, self._seeding = preexisting, True
            if o.ports:
                prog.set_config("watched_ports", o.ports)
                self.watched_listeners = len(o.ports)
        else:
            prog.probes.extend(f"tracepoint:{tp}" for tp in SYSCALL_TRACEPOINTS)
        if socket_hooks:
            self.tls = TlsUprobes()
            self._attach_tls()
        prog.open_ring_buffer("events", self._on_event)
        self._scan(seed_connections=True)

    def _attach_tls(self) -> None:
        """TLS: uprobes on every libssl not attached yet (hooks_tls.bpf.h)."""
        if self.tls is not None:
            for path in self.tls.attach_new(self.prog):
                self.notify(f"TLS: uprobes on {path}")

    @property
    def send_hook_btf(self) -> bool:
        """Socket hooks: writes seen on SEND_BTF_TRACEPOINT."""
        return (SEND_BTF_TRACEPOINT, SEND_BTF_FUNCTION) in self.btf_hooks

    @property
    def recv_hook_btf(self) -> bool:
        """Socket hooks: reads seen on RECV_BTF_TRACEPOINT."""
        return (RECV_BTF_TRACEPOINT, RECV_BTF_FUNCTION) in self.btf_hooks

    def _preexisting_connections(self) -> dict[str, set[int]]:
        """Established connections on the watched ports (of the watched processes) at start, per netns."""
        pids = self._watched_pids()
        out: dict[str, set[int]] = defaultdict(set)
        tables = SocketTables()
        if pids is None:
            # Port mode: each namespace's table says it all, without the processes' fds.
            ports = set(self.opts.ports)
            for ns, table in tables.by_namespace().items():
                out[ns] = {i for i, s in table.items() if s.state == TCP_ESTABLISHED and s.local_port in ports}
            return {ns: inodes for ns, inodes in out.items() if inodes}
        listening: dict[str, set[int]] = {}  # per namespace
        for pid, _fd, inode, s in self._owned_sockets(pids, tables):
            if s.state != TCP_ESTABLISHED:
                continue
            ns = tables.namespace_of(pid)
            if ns not in listening:
                listening[ns] = {x.local_port for x in tables.of(pid).values() if x.state == TCP_LISTEN}
            if s.local_port in listening[ns]:
                out[ns].add(inode)
        return dict(out)

    def _seeding_done(self, seeded: int) -> bool:
        """True once every connection open at start was found at a read (seeded: the kernel's count of
        them), or is closed."""
        if seeded >= sum(len(v) for v in self._preexisting.values()):
            return True
        found = SocketTables().by_namespace({ns for ns, inodes in self._preexisting.items() if inodes})
        for ns, inodes in self._preexisting.items():
            table = found.get(ns, {})
            self._preexisting[ns] = {i for i in inodes if i in table and table[i].state == TCP_ESTABLISHED}
        return not any(self._preexisting.values())

    # -- what to watch ------------------------------------------------------------------------------
    def _watched_pids(self) -> set[int] | None:
        o = self.opts
        if not (o.pids or o.comms):
            return None
        roots = set(o.pids)
        if o.comms:
            wanted = set(o.comms)
            for pid in all_pids():
                comm = read_text(f"/proc/{pid}/comm")
                if comm and comm.strip() in wanted:
                    roots.add(pid)
        return process_family(roots)

    def _scan(self, seed_connections: bool = False) -> None:
        """Tell the kernel the watched processes and their listening sockets (and, at start, open connections)."""
        pids = self._watched_pids()
        if pids is not None:
            self.prog.set_config("watched_pids", pids)
        if self.hooks == "socket":
            if pids is not None:
                # The ports the watched processes listen on (within --port, if given).
                owned = self._owned_sockets(pids, SocketTables())
                ports = {s.local_port for _pid, _fd, _inode, s in owned if s.state == TCP_LISTEN}
                self.prog.set_config("watched_ports", ports)
                self.watched_listeners = len(ports)
            return
        listeners = self.prog["listeners"]
        conns = self.prog["conns"]
        wanted: dict[tuple[int, int], int] = {}
        owned = list(self._owned_sockets(pids, SocketTables()))
        for pid, fd, _inode, s in owned:
            if s.state == TCP_LISTEN:
                wanted[(pid, fd)] = s.local_port
        # Accepted connections share a listener's port; the processes' own outgoing connections (to a
        # database, another service) do not, and are not served requests.
        served_ports = set(wanted.values())
        for pid, fd, _inode, s in owned:
            if s.state == TCP_ESTABLISHED and seed_connections and s.local_port in served_ports:
                self._seed_connection(conns, pid, fd, s)
        present = {(k.pid, k.fd) for k in listeners.keys()}
        for pid, fd in present - wanted.keys():
            listeners.pop(listeners.Key(pid, fd), None)
        for (pid, fd), port in wanted.items():
            if (pid, fd) not in present:
                listeners[listeners.Key(pid, fd)] = listeners.Leaf(port)
        self.watched_listeners = len(wanted)

    def _owned_sockets(self, pids: set[int] | None, tables: SocketTables):
        """(pid, fd, inode, socket) for the TCP sockets the watched processes (every process when pids is
        None) hold, on the --port ports if any were given."""
        ports = set(self.opts.ports)
        for pid in sorted(pids) if pids is not None else all_pids():
            sockets = tables.of(pid)
            if not sockets:
                continue
            for inode, fd in socket_fds(pid).items():
                s = sockets.get(inode)
                if s is not None and (not ports or s.local_port in ports):
                    yield pid, fd, inode, s

    def _forget_dead_processes(self) -> None:
        """Remove the kernel state of processes that died without closing their sockets (killed, crashed):
        the kernel closes their fds without a close() syscall, so nothing else would ever remove it."""
        alive: dict[int, bool] = {}

        def dead(pid: int) -> bool:
            if pid not in alive:
                alive[pid] = os.path.exists(f"/proc/{pid}")
            return not alive[pid]

        for name in ("conns", "last_writes"):
            self.prog.delete_keys(name, lambda k: dead(int(k.value) >> 32))
        # per thread: /proc/TID exists while the thread does
        self.prog.delete_keys("accepting", lambda k: dead(int(k.value)))

    @staticmethod
    def _seed_connection(conns, pid: int, fd: int, s: TcpSocket) -> None:
        """A connection accepted before the tracer started: followed from its next request."""
        key = conns.Key((pid << 32) | fd)
        leaf = conns.Leaf()
        leaf.key = key.value
        leaf.id = random.getrandbits(64)  # (pid, fd) is reused by later connections: the id must not be
        leaf.pid = pid  # its cgroup is taken in the kernel at its next read or write
        leaf.seeded = 1  # its next bytes may be the middle of a request: not a reason to let it go
        leaf.port = s.local_port
        leaf.client_port = s.remote_port
        addr = ipaddress.ip_address(s.remote_addr)
        leaf.family = 2 if addr.version == 4 else 10
        for i, b in enumerate(addr.packed):
            leaf.client_addr[i] = b
        conns[key] = leaf

    # -- spans -------------------------------------------------------------------------------------
    def _on_event(self, data: bytes) -> None:
        kind = int.from_bytes(data[:4], "little")
        if kind == H["EVENT_CAPTURE"]:
            e = decode(self._capture_t, data)
            key = (e.conn, e.seq)
            parts = self._pending.get(key)
            if parts is None:
                parts = self._pending[key] = []
                if len(self._pending) > PENDING_CAPTURES_MAX:
                    self._pending.popitem(last=False)
            parts.append((e.part, bytes(e.data[: min(e.len, H["CAPTURE_MAX"])])))
        elif kind == H["EVENT_REQUEST"]:
            e = decode(self._request_t, data)
            parts = self._pending.pop((e.conn, e.seq), [])
            self.telemetry.emit_span(self.span_of(e, parts))
            self.spans_sent += 1

    def exe(self, pid: int, comm: str = "") -> str:
        """process.executable.name: the base name of /proc/PID/exe (a thread's comm, such as Ray's
        `ray::IDLE`, names a thread, not the program); the comm only when the process is gone."""
        if pid not in self._exe:
            try:
                name = os.path.basename(os.readlink(f"/proc/{pid}/exe")).removesuffix(" (deleted)")
            except OSError:
                name = ""
            self._exe[pid] = name or comm or (read_text(f"/proc/{pid}/comm") or "").strip()
            if len(self._exe) > EXE_CACHE_MAX:
                self._exe.pop(next(iter(self._exe)))
        return self._exe[pid]

    def span_of(self, e, parts: list[tuple[int, bytes]]) -> SpanRecord:
        """One SERVER span from a request event and the captures of its bytes."""
        request_heads = [d for p, d in parts if p == H["PART_REQUEST_HEAD"]]
        request_tails = [d for p, d in parts if p == H["PART_REQUEST_TAIL"]]
        response_heads = [d for p, d in parts if p == H["PART_RESPONSE_HEAD"]]
        last = [d for p, d in parts if p == H["PART_RESPONSE_LAST"]]
        pipelined = bool(e.flags & H["REQ_PIPELINED"])
        # Heads are captured while the request is shorter than the capture: together, its first bytes.
        head = b"".join(request_heads)
        req = http_parse.parse_request(head) if request_heads and not pipelined else None
        if req is not None:
            for chunk in request_tails:
                http_parse.fill_body_fields(req, chunk)
        elif request_heads and not pipelined:
            self.unparsable_captures += 1
        method = METHOD_NAMES.get(e.method & ~H["METHOD_TLS"], http_parse.OTHER_METHOD)
        streamed = bool(e.flags & H["REQ_SSE"])
        path = req.path if req else None
        attrs: dict[str, Any] = {
            sc.HTTP_REQUEST_METHOD: method,
            sc.SERVER_PORT: e.port,
            sc.NETWORK_PROTOCOL_VERSION: req.version if req else "1.1",
            sc.URL_SCHEME: "https" if e.method & H["METHOD_TLS"] else "http",
            sc.PROCESS_PID: e.pid,
            sc.PROCESS_EXECUTABLE_NAME: self.exe(e.pid, cstring(e.comm)),
            **self.cgroups.workload_attributes(e.cgroup),
        }
        if path:
            attrs[sc.URL_PATH] = path
        client = format_address(bytes(e.client_addr), e.family)
        if client:
            attrs[sc.CLIENT_ADDRESS] = client
            attrs[sc.CLIENT_PORT] = e.client_port
        if pipelined:
            attrs[sc.EBPFTOOL_HTTP_PIPELINED] = True
        if e.status:
            attrs[sc.HTTP_RESPONSE_STATUS_CODE] = e.status
        error = e.status >= 500 or e.status == 0
        if error:
            attrs[sc.ERROR_TYPE] = str(e.status) if e.status else NO_RESPONSE
        if e.flags & H["REQ_ARRIVAL"] and e.read_start >= e.req_start:
            attrs[sc.EBPFTOOL_HTTP_QUEUE_TIME] = (e.read_start - e.req_start) / 1e9
        operation = OPERATIONS.get(e.op)
        if operation and path:  # the path the kernel may have seen only in part
            operation = http_parse.operation_name(path, streamed) or operation
        events = []
        if operation:
            attrs[sc.GEN_AI_OPERATION_NAME] = operation
            if req and req.model:
                attrs[sc.GEN_AI_REQUEST_MODEL] = req.model
            # The model near the start of an answer, the usage at its end: the first writes' captures
            # (after the response head) and the tail of the last write carrying data.
            body_heads = [http_parse.after_head(d) if i == 0 else d for i, d in enumerate(response_heads[:2])]
            usage = http_parse.parse_usage(b"".join(last[-1:]))
            head_usage = http_parse.parse_usage(b"".join(body_heads))
            model = head_usage.model or usage.model
            if model:
                attrs[sc.GEN_AI_RESPONSE_MODEL] = model
            input_tokens = usage.input_tokens if usage.input_tokens is not None else head_usage.input_tokens
            if input_tokens is not None:
                attrs[sc.GEN_AI_USAGE_INPUT_TOKENS] = input_tokens
            if e.flags & H["REQ_USAGE"] or e.tokens:
                attrs[sc.GEN_AI_USAGE_OUTPUT_TOKENS] = e.output_tokens  # as the kernel counted it for the metric
            if e.tokens:
                attrs[sc.EBPFTOOL_GEN_AI_TIME_TO_FIRST_TOKEN] = (e.first_token - e.req_start) / 1e9
                events.append(SpanEvent(sc.EBPFTOOL_GEN_AI_FIRST_TOKEN_EVENT, self.clock.to_wall_ns(e.first_token)))
            if e.tokens > 1:
                attrs[sc.EBPFTOOL_GEN_AI_TIME_PER_OUTPUT_TOKEN] = (e.last_token - e.first_token) / (e.tokens - 1) / 1e9
        name = f"{method} {http_parse.path_template(path)}" if path else method
        return SpanRecord(
            name, self.clock.to_wall_ns(e.req_start), self.clock.to_wall_ns(max(e.end, e.req_start)),
            kind=SpanKind.SERVER, attributes=attrs, events=events, error=error,
            status_message=(f"HTTP {e.status}" if e.status else "closed without a response") if error else "",
        )

    # -- metrics -------------------------------------------------------------------------------------
    def _key_attrs(self, k, gen_ai: bool) -> dict[str, Any]:
        attrs: dict[str, Any] = {sc.SERVER_PORT: k.port, **self.cgroups.workload_attributes(k.cgroup)}
        if gen_ai:
            attrs[sc.GEN_AI_OPERATION_NAME] = OPERATIONS.get(k.op, "generate_content")
        else:
            attrs[sc.HTTP_REQUEST_METHOD] = METHOD_NAMES.get(k.method & ~H["METHOD_TLS"], http_parse.OTHER_METHOD)
            attrs[sc.URL_SCHEME] = "https" if k.method & H["METHOD_TLS"] else "http"
            if k.status:
                attrs[sc.HTTP_RESPONSE_STATUS_CODE] = k.status
        if k.status >= 500 or k.status == 0:
            attrs[sc.ERROR_TYPE] = str(k.status) if k.status else NO_RESPONSE
        return attrs

    def _http_series(self) -> list[tuple[Any, Any]]:
        """(struct req_key, per-CPU histogram) of each filled slot of the kernel's series table."""
        hist = self.prog["http_hist"]
        return [(k, hist[hist.Key(slot)]) for slot, k in self.prog.batch_items("series_keys")
                if k.slot == H["SERIES_USED"]]

    def _histograms(self, series, metric: str, description: str, bounds, gen_ai: bool) -> list[MetricPoint]:
        """One point per attribute set from (struct req_key, per-CPU histogram) pairs; kernel keys that differ
        only in what is not exported (or slots of one key) are merged."""
        merged: dict[tuple, list] = {}
        nb = len(bounds) + 1
        for k, per_cpu in series:
            self._cgroups_in_maps.add(int(k.cgroup))
            count, total, lo, hi, buckets = merge_hist(per_cpu, nb)
            if not count:
                continue
            attrs = self._key_attrs(k, gen_ai)
            key = tuple(sorted(attrs.items()))
            if key not in merged:
                merged[key] = [attrs, count, total, lo, hi, buckets]
            else:
                m = merged[key]
                m[1] += count
                m[2] += total
                m[3] = min(m[3], lo)
                m[4] = max(m[4], hi)
                m[5] = [a + b for a, b in zip(m[5], buckets)]
        return [histogram(metric, "s", description, attrs, count=count, total=total / 1e9, minimum=lo / 1e9,
                          maximum=hi / 1e9, bucket_counts=buckets, bounds=bounds)
                for attrs, count, total, lo, hi, buckets in merged.values()]

    def _followed_connections(self) -> list:
        """The kernel's conn_state of every connection followed now."""
        conns = self.prog["conns"]
        if self.hooks == "syscall":
            return [c for _k, c in self.prog.batch_items("conns")]
        # The socket hooks' table has a slot per possible connection: only the slots conn_used marks are read.
        slots = []
        for word, bits in self.prog.batch_items("conn_used"):
            bits = int(getattr(bits, "value", bits))  # batch lookups give ints, the fallback ctypes values
            while bits:
                low = bits & -bits
                slots.append(word * 64 + low.bit_length() - 1)
                bits ^= low
        states = (conns[conns.Key(slot)] for slot in slots)
        return [c for c in states if c.key > H["CONN_CLAIMED"]]

    def finish_pending(self) -> None:
        """Tracing ends: every request whose response has begun is finished now (it ends at its last
        write), so an answer given on a quiet kept-alive connection is not lost."""
        if self.prog is not None and self.prog.bpf is not None:
            self._flush_idle_requests(everything=True)

    def _flush_idle_requests(self, everything: bool = False) -> None:
        """Finish requests whose response went quiet long ago (see IDLE_RESPONSE_NS), in the kernel."""
        now = time.monotonic_ns()  # bpf_ktime_get_ns() is CLOCK_MONOTONIC
        flushed = 0
        for c in self._followed_connections():
            # a stream under way, or a generative-AI answer that has written one part (its headers) and no
            # token yet; a plain answer (headers and body written) ends after IDLE_RESPONSE_NS
            streaming = bool(c.flags & H["REQ_SSE"]) or (c.op != H["OP_NONE"] and c.tokens == 0 and c.writes <= 1)
            idle_ns = IDLE_STREAM_RESPONSE_NS if streaming else IDLE_RESPONSE_NS
            if c.req_start and c.resp_start and c.resp_end and (everything or now - c.resp_end > idle_ns):
                try:
                    flushed += run_raw_tracepoint_program(self._flush_fd, [int(c.key), int(c.resp_end)])
                except OSError:
                    return
        if flushed:
            self.prog.consume()  # their span events, now

    def collect(self) -> list[MetricPoint]:
        if self.prog is None or self.prog.bpf is None:
            return []
        self._flush_idle_requests()
        points = self._histograms(self._http_series(), sc.HTTP_SERVER_REQUEST_DURATION,
                                  "Duration of HTTP server requests", sc.HTTP_DURATION_BUCKETS, gen_ai=False)
        points += self._histograms(self.prog["genai_hist"].items(), sc.GEN_AI_SERVER_REQUEST_DURATION,
                                   "Generative AI server request duration", sc.GEN_AI_REQUEST_DURATION_BUCKETS,
                                   gen_ai=True)
        points += self._histograms(self.prog["ttft_hist"].items(), sc.GEN_AI_SERVER_TIME_TO_FIRST_TOKEN,
                                   "Time to generate the first token (first `data:` event written)",
                                   sc.GEN_AI_TTFT_BUCKETS, gen_ai=True)
        points += self._histograms(self.prog["tpot_hist"].items(), sc.GEN_AI_SERVER_TIME_PER_OUTPUT_TOKEN,
                                   "Time per output token after the first (between `data:` events)",
                                   sc.GEN_AI_TPOT_BUCKETS, gen_ai=True)
        tokens: dict[tuple, list] = {}
        for k, per_cpu in self.prog["output_tokens"].items():
            attrs = {**self._key_attrs(k, gen_ai=True), sc.GEN_AI_TOKEN_TYPE: "output"}
            entry = tokens.setdefault(tuple(sorted(attrs.items())), [attrs, 0])
            entry[1] += sum(per_cpu)
        points += [counter(sc.EBPFTOOL_GEN_AI_OUTPUT_TOKENS, "{token}",
                           "Output tokens streamed (`data:` events other than [DONE])", n, attrs)
                   for attrs, n in tokens.values()]
        per_port = [
            ("unparsed", sc.EBPFTOOL_HTTP_UNPARSED_CONNECTIONS, "{connection}",
             "Connections whose first bytes were not HTTP/1.x (TLS, HTTP/2, another protocol): not followed further"),
            ("accepted", sc.EBPFTOOL_HTTP_CONNECTIONS, "{connection}", "Connections accepted on watched sockets"),
        ]
        if self.hooks == "socket":
            per_port.append(("untracked", sc.EBPFTOOL_HTTP_UNTRACKED_CONNECTIONS, "{connection}",
                             "Connections on watched ports not followed: no free slot in the connection table "
                             "(--max-connections)"))
        for name, metric, unit, description in per_port:
            for k, per_cpu in self.prog[name].items():
                points.append(counter(metric, unit, description, sum(per_cpu), {sc.SERVER_PORT: int(k.value)}))
        points.append(counter(sc.EBPFTOOL_HTTP_METRICS_DROPPED, "{request}",
                              "Finished requests left out of a duration histogram: its kernel map was full",
                              self.prog.stats()[H["STAT_INF_METRICS_FULL"]], {}))
        self._retire_gone_containers()
        return points

    def _retire_gone_containers(self) -> None:
        """A series per container means a key per container in the kernel's metric maps: those of containers
        gone since the previous collect (whose final counts that collect and this one exported) are deleted
        from the hash maps and their slots of the series table freed, so that Pods coming and going do not
        fill them. Their series end there."""
        gone = {i for i in self._cgroups_in_maps if self.cgroups.is_gone(i)}
        retire = gone & self._cgroups_gone
        self._cgroups_gone = gone - retire
        self._cgroups_in_maps = set()
        if not retire:
            return
        for name in GEN_AI_METRIC_MAPS:
            self.prog.delete_keys(name, lambda k: int(k.cgroup) in retire)
        keys, hist = self.prog["series_keys"], self.prog["http_hist"]
        for slot, k in self.prog.batch_items("series_keys"):
            if k.slot == H["SERIES_USED"] and int(k.cgroup) in retire:
                del hist[hist.Key(slot)]  # zeroed on every CPU, then the slot freed: a later key starts empty
                keys.clearitem(keys.Key(slot))
        for cgroup_id in retire:
            self.cgroups.forget(cgroup_id)

    # -- housekeeping --------------------------------------------------------------------------------
    def tick(self) -> None:
        if self.prog is None or self.prog.bpf is None:
            return
        self._scan()
        if self.tls is not None and time.monotonic() - self._tls_scanned > TLS_RESCAN_S:
            self._tls_scanned = time.monotonic()
            self._attach_tls()  # libssl copies of containers started since
        if self.hooks == "syscall":
            # The kernel closes a dead process's fds without a close() syscall; the socket hooks
            # see those closes (inet_sock_set_state), the syscall hooks do not.
            self._forget_dead_processes()
        st = self.prog.stats()
        if self._seeding and self._seeding_done(st[H["STAT_INF_SEEDED"]]):
            self.prog.bpf.detach_tracepoint(SEED_TRACEPOINT)
            self._seeding = False
        now = time.monotonic()
        requests = st[H["STAT_INF_REQUESTS"]]
        if self._last_rate_at:
            self.request_rate = (requests - self._last_requests) / max(now - self._last_rate_at, 1e-6)
        self._last_rate_at, self._last_requests = now, requests

    # -- view and summary ------------------------------------------------------------------------------
    def view(self) -> Any:
        from rich.table import Table

        table = Table(title=f"ebpftool inference: {self.request_rate:,.0f} requests/s")
        for col in ("port", "pod / container", "method", "status", "requests", "mean duration"):
            table.add_column(col, justify="right")
        if self.prog is None or self.prog.bpf is None:
            return table
        rows = []
        for p in self._histograms(self._http_series(), sc.HTTP_SERVER_REQUEST_DURATION, "", sc.HTTP_DURATION_BUCKETS,
                                  False):
            a = p.attributes
            workload = a.get(sc.K8S_POD_UID, "")[:8] or a.get(sc.CONTAINER_ID, "")[:12] or "-"
            rows.append((a[sc.SERVER_PORT], workload, a[sc.HTTP_REQUEST_METHOD],
                         a.get(sc.HTTP_RESPONSE_STATUS_CODE, "-"), p.count, p.sum / p.count if p.count else 0.0))
        for port, workload, method, status, n, mean in sorted(rows, key=lambda r: -r[4])[:20]:
            table.add_row(str(port), workload, method, str(status), f"{n:,}", f"{mean * 1000:.2f} ms")
        return table

    def summary(self) -> dict[str, Any]:
        # "socket": the send side on the BTF tracepoint; "socket-raw": on sock_send_length
        hooks = "socket-raw" if self.hooks == "socket" and not self.send_hook_btf else self.hooks
        out: dict[str, Any] = {"hooks": hooks or "-",
                               "listening ports watched" if self.hooks == "socket" else "listening sockets watched":
                               self.watched_listeners}
        if self.prog is None or self.prog.bpf is None:
            return out
        st = self.prog.stats()
        out["connections accepted"] = st[H["STAT_INF_ACCEPTED"]]
        if self.hooks == "socket":
            out["connections open at start, found"] = st[H["STAT_INF_SEEDED"]]
            out["connections not followed (table full)"] = sum(sum(v) for v in self.prog["untracked"].values())
        out["requests measured"] = st[H["STAT_INF_REQUESTS"]]
        out["requests left out of metrics (maps full)"] = st[H["STAT_INF_METRICS_FULL"]]
        out["requests closed without a response"] = st[H["STAT_INF_NO_RESPONSE"]]
        out["connections not HTTP/1.x (unparsed)"] = st[H["STAT_INF_UNPARSED"]]
        if self.tls is not None:
            out["connections in TLS"] = st[H["STAT_INF_TLS"]]
            out["TLS libraries hooked"] = len(self.tls.attached)
        out["spans sent"] = self.spans_sent
        return out
