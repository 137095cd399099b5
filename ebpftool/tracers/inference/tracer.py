"""`ebpftool inference`: requests an inference server answers (HTTP/1.x, HTTP/2, gRPC; clear or OpenSSL's TLS),
from socket or syscall tracepoints (and uprobes on libssl).

The kernel (bpf/inference/) follows each watched connection: request
start, response start and end, status, method, generative-AI operation and
`data:` events, and puts every finished request into histogram maps, so the
metrics are exact at any request rate (metrics.py). Requests within the span
budget also come to user space with bounded captures of their bytes, which
become spans (spans.py, parsers.py). How it hooks in is its plan (plans.py).

With --pid/--comm, user space finds the watched processes' listening ports
(syscall hooks: sockets) in /proc at start and each interval, so servers and
workers started later are picked up within one interval; connections open
before the tracer started are followed from their next request (watch.py).
"""
from __future__ import annotations

import os
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable

from ebpftool.core.bpf import (BpfProgram, bucket_macro, in_background, in_threads, kernel_allows_uprobe_multi,
                               run_raw_tracepoint_program, seconds_to_ns)
from ebpftool.core.cstruct import field_reader
from ebpftool.core.plan import Plan, usable
from ebpftool.core.tracer import TracerOptions
from ebpftool.core.text import printable
from ebpftool.enrich import k8s
from ebpftool.errors import EbpftoolError
from ebpftool import semconv as sc
from ebpftool.tracers.base import BpfTracer
from ebpftool.tracers.inference import plans
from ebpftool.tracers.inference.h2_streams import InferenceHttp2
from ebpftool.tracers.inference.figures import InferenceSummary, InferenceView, ServerRates, headline
from ebpftool.tracers.inference.metrics import InferenceMetrics
from ebpftool.tracers.inference.plans import (ARRIVAL_BTF_FUNCTION, ARRIVAL_RAW_TRACEPOINT, ARRIVAL_TRACEPOINT,
                                              RECV_BTF_FUNCTION, RECV_BTF_TRACEPOINT, SCAN_FUNCTIONS, SEED_TRACEPOINT,
                                              SEND_BTF_FUNCTION, SEND_BTF_TRACEPOINT, SOCKET_RAW_TRACEPOINTS,
                                              PROGRAM_PARTS, SWITCHED_FUNCTION, SYSCALL_TRACEPOINTS)
from ebpftool.tracers.inference.records import H, STRUCTS
from ebpftool.tracers.inference.spans import InferenceSpans
from ebpftool.tracers.inference.tls_libs import OVER_LIMIT, TLS_PROGRAMS, TlsUprobes
from ebpftool.tracers.inference.watch import InferenceWatch

# Seconds between scans of /proc for libssl copies not hooked yet (each reads every process's maps).
TLS_RESCAN_S = 30.0

DEFAULT_CAPTURE_BYTES = 512
DEFAULT_MAX_CONNECTIONS = 65536
MAX_CONNECTIONS_RANGE = (64, 262144)  # the socket hooks' table is preallocated, one slot per connection
MIN_CAPTURE_BYTES = 64
# A response with no write for this long, on a connection neither read nor closed since, is over:
# its request is finished then (the span ends at its last write all the same). Long enough for
# the pauses of a streamed answer between tokens.
IDLE_RESPONSE_NS = 5_000_000_000
# A stream may go quiet far longer: the headers of a generative-AI answer go out when the request is queued,
# the first token after queueing and prefill; a stream pauses between events. Finishing it early would cut it.
IDLE_STREAM_RESPONSE_NS = 120_000_000_000


@dataclass
class InferenceOptions(TracerOptions):
    ports: list[int] = field(default_factory=list)
    pids: list[int] = field(default_factory=list)
    comms: list[str] = field(default_factory=list)
    capture_bytes: int = DEFAULT_CAPTURE_BYTES
    hooks: str = "auto"   # socket | socket-raw | syscall | auto (socket where the kernel allows it)
    max_connections: int = DEFAULT_MAX_CONNECTIONS  # followed at once (a power of two)


def _may_fail(load: Callable[[], int]) -> int | None:
    """A load ahead of need: a refusal is left for the attach to meet."""
    try:
        return load()
    except Exception:  # OSError from our loader, bare Exception from BCC's
        return None


# said once the rare paths' programs are in place (tests that need them wait for it)
LATER_PROGRAMS_LOADED = "h2c Upgrade and muted HTTP/2 connections followed"


class InferenceTracer(InferenceWatch, InferenceSpans, InferenceHttp2, InferenceMetrics, BpfTracer):
    name = "inference"

    def __init__(self, telemetry, options: InferenceOptions | None = None,
                 notify: Callable[[str], None] | None = None) -> None:
        super().__init__(telemetry, options or InferenceOptions())
        self.opts: InferenceOptions = self.options
        self.notify = notify or (lambda msg: print(f"inference: {printable(msg)}", file=sys.stderr, flush=True))
        self.prog: BpfProgram | None = None
        self._capture_t = STRUCTS["capture_event"]
        self._capture_fields = field_reader(self._capture_t, "conn", "seq", "part", "len")
        self._capture_data_at = self._capture_t.data.offset  # the captured bytes, sliced from the record
        self._request_t = STRUCTS["request_event"]
        self._pending: OrderedDict[tuple[int, int], list[tuple[int, bytes]]] = OrderedDict()
        self._exe: dict[int, str] = {}
        self.spans_sent = 0
        self.unparsable_captures = 0
        self.watched_listeners = 0
        self.plan: Plan | None = None                    # the attach plan in use (plans.PLANS)
        self.hooks = ""                                   # the hooks in use: socket | syscall
        self.btf_hooks: list[tuple[str, str]] = []       # (tracepoint, program) of the hooks on BTF tracepoints
        self.arrival_hook = False                         # requests begin at their first byte's arrival
        self._arrival_port_words: list[int] | None = None  # syscall hooks: the ports whose arrivals are noted
        self.last_points: list | None = None              # the latest collect()'s metric points (cumulative)
        self._started_at = time.monotonic()
        self._server_rates = ServerRates()                # the live view's per-server figures
        self._figures_at = self._started_at
        self.tls: TlsUprobes | None = None                # libssl files with the TLS uprobes
        self._tls_scanned = time.monotonic()
        self._preexisting: dict[str, set[int]] = {}       # netns -> inodes of connections open at start
        self._seeding = False
        self._flush_fd = -1
        self._later_programs: list = []                   # (array, slot, load) of the rare paths' programs
        self._later_loaded = None                         # their loading, once the probes are attached
        self._last_rate_at = 0.0
        self._last_requests = 0
        self.request_rate = 0.0
        self.cgroups = k8s.CgroupPaths()                  # the serving processes' Pods and containers
        self._cgroups_in_maps: set[int] = set()           # cgroup ids of the metric maps' keys, as last read
        self._cgroups_gone: set[int] = set()              # of those, the ones found gone at the last collect
        self._model_names: dict[int, str | None] = {}     # the kernel's model ids (model.bpf.h) -> names
        self._h2_init()                                   # HTTP/2 connections and their streams (h2_streams.py)

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
        if o.hooks not in plans.HOOKS:
            raise EbpftoolError(f"--hooks {o.hooks!r}: one of {', '.join(plans.HOOKS)}")
        lo, hi = MAX_CONNECTIONS_RANGE
        n = o.max_connections
        if not lo <= n <= hi or n & (n - 1):
            raise EbpftoolError(f"--max-connections {n}: a power of two between {lo} and {hi}")

    def start(self) -> None:
        """Compile and load the first plan --hooks allows that the kernel has what it needs for (probed
        without compiling); should the kernel refuse it at load all the same, the next one."""
        o = self.opts
        features, btf_defines = plans.kernel_features()
        candidates, why_not = usable(plans.HOOK_CHOICES[o.hooks], features, BpfProgram.tracepoint_exists)
        if not candidates:
            raise EbpftoolError(f"--hooks {o.hooks}: " + "; ".join(why_not))
        for plan, fallback in zip(candidates, [*candidates[1:], None]):
            try:
                self._load(plan, plans.plan_defines(plan, btf_defines))
                self._started_at = self._figures_at = time.monotonic()  # rates: over the time traced
                return
            except EbpftoolError as exc:
                if fallback is None:
                    raise
                self.notify(f"{plan.description}: refused ({str(exc)[-200:]}); using {fallback.description}")

    def _load(self, plan: Plan, plan_defines: dict[str, int]) -> None:
        o = self.opts
        socket_hooks = bool(plan_defines["IO_HOOKS_SOCK"])
        btf_hooks = bool(plan_defines["SEND_HOOK_BTF"])
        preexisting = self._preexisting_connections() if socket_hooks else {}
        defines = {
            **plan_defines,
            "SEED_CONNECTIONS": int(bool(preexisting)),
            # The syscall hooks see arrivals where they can find a connection's socket (SYSCALL_SOCKETS).
            "ARRIVAL_HOOK": int((socket_hooks or bool(plan_defines.get("SYSCALL_SOCKETS")))
                                and BpfProgram.tracepoint_exists(ARRIVAL_TRACEPOINT)),
            "TLS_HOOKS": 1,
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
        prog = BpfProgram("inference/inference.bpf.c", defines, macros, parts=PROGRAM_PARTS).load()
        bpf = prog.bpf
        try:
            def scan_program(function: str) -> Callable[[], int]:
                if btf_hooks:
                    # A tail call stays within one program type and, for tracing programs, one attach point.
                    return lambda: prog.load_btf_tracepoint(SEND_BTF_TRACEPOINT, function)
                kind = bpf.RAW_TRACEPOINT if socket_hooks else bpf.TRACEPOINT
                return lambda: bpf.load_func(function, kind).fd
            def read_program(function: str) -> Callable[[], int]:
                if defines.get("RECV_HOOK_BTF"):
                    return lambda: prog.load_btf_tracepoint(RECV_BTF_TRACEPOINT, function)
                kind = bpf.RAW_TRACEPOINT if socket_hooks else bpf.TRACEPOINT
                return lambda: bpf.load_func(function, kind).fd
            btf_attached = [(SEND_BTF_TRACEPOINT, SEND_BTF_FUNCTION)] if btf_hooks else []
            if defines.get("RECV_HOOK_BTF"):
                btf_attached.append((RECV_BTF_TRACEPOINT, RECV_BTF_FUNCTION))
                if defines["ARRIVAL_HOOK"]:  # timed by TCP's clock, as reads are
                    btf_attached.append((ARRIVAL_RAW_TRACEPOINT, ARRIVAL_BTF_FUNCTION))
            # the HTTP/2 walk (http2.bpf.h), one per type of program that reaches it: the read hook's, the write
            # hook's, the TLS uprobes'
            def tls_twin(function: str) -> Callable[[], int]:
                # Reached by tail calls from the TLS uprobes' programs, which the kernel allows only between
                # programs of one expected attach type: uprobe_multi where the kernel has its links (all the TLS
                # programs are then links), else the perf-event uprobes' plain type.
                if kernel_allows_uprobe_multi():
                    return lambda: prog.load_uprobe_multi_program(function)
                return lambda: bpf.load_func(function, bpf.KPROBE).fd
            # (array, slot, program): the walk in slot 0 of each array
            h2_arrays = [("h2_prog_read", 0, read_program("h2_walk_read")),
                         ("h2_prog_write", 0, scan_program("h2_walk_write"))]
            if defines["TLS_HOOKS"]:
                h2_arrays.append(("h2_prog_tls", 0, tls_twin("h2_walk_tls")))
            # Programs of rare paths (an h2c Upgrade's 101; a muted HTTP/2 connection's frames, slot 1 of the walk
            # arrays) load after the probes are attached, off the start's path; until then those paths fall back
            # (the connection let go; the frames unmeasured, the streams counted as not measured)
            self._later_programs = [("scan_prog", len(SCAN_FUNCTIONS), scan_program(SWITCHED_FUNCTION)),
                                    ("h2_prog_read", 1, read_program("h2_measure_read")),
                                    ("h2_prog_write", 1, scan_program("h2_measure_write"))]
            if defines["TLS_HOOKS"]:
                self._later_programs.append(("h2_prog_tls", 1, tls_twin("h2_measure_tls")))
            loads = [scan_program(f) for f in SCAN_FUNCTIONS] + [load for _array, _slot, load in h2_arrays]
            if defines["TLS_HOOKS"]:
                # the scans' twins, reached from the TLS uprobes, and those uprobes' programs (hooks_tls.bpf.h),
                # each as the uprobes it will be attached as
                loads += [tls_twin(f"{f}_tls") for f in SCAN_FUNCTIONS]
                loads += [lambda f=f: _may_fail(lambda: prog.load_uprobe_program(f)) for f in TLS_PROGRAMS]
            # every other program loaded here, in the same batch: the verifier's work on every CPU at once
            flush_at = len(loads)
            loads.append(lambda: bpf.load_func("flush_idle_request", bpf.RAW_TRACEPOINT).fd)
            if defines.get("RECV_HOOK_BTF"):
                loads.append(lambda: bpf.load_func("calibrate_syscall_regs", bpf.RAW_TRACEPOINT).fd)
            # the hooks' own programs first: the largest (the send hook's ~11,000 instructions) end last otherwise
            hooks_first = [lambda tp=tp, f=f: prog.load_btf_tracepoint(tp, f) for tp, f in btf_attached]
            fds = prog.load_side_by_side(hooks_first + loads)[len(hooks_first):]
            for slot in range(len(SCAN_FUNCTIONS)):
                bpf["scan_prog"][slot] = fds[slot]
            for i, (array, slot, _load) in enumerate(h2_arrays):
                bpf[array][slot] = fds[len(SCAN_FUNCTIONS) + i]
            twins = len(SCAN_FUNCTIONS) + len(h2_arrays)
            if defines["TLS_HOOKS"]:
                for slot in range(len(SCAN_FUNCTIONS)):
                    bpf["scan_prog_tls"][slot] = fds[twins + slot]
            self._flush_fd = fds[flush_at]
            if defines.get("RECV_HOOK_BTF"):
                # where syscall registers lie from a task's stack, measured before any hook runs (see there)
                run_raw_tracepoint_program(fds[flush_at + 1], [0])
            for tracepoint, function in btf_attached:
                prog.attach_btf_tracepoint(tracepoint, function)
        except Exception as exc:
            prog.close()
            if isinstance(exc, EbpftoolError):
                raise
            raise EbpftoolError(f"the kernel refused the SSE event counter of bpf/inference: {exc}") from exc
        self.prog = prog
        self.programs.append(prog)
        self._later_loaded = in_background(self._load_later_programs)
        self.plan = plan
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
            if defines["ARRIVAL_HOOK"]:
                prog.probes.append(f"raw_tracepoint:{ARRIVAL_RAW_TRACEPOINT}")
                self.arrival_hook = True
        self.tls = TlsUprobes()
        self._attach_tls()
        prog.open_ring_buffer("events", self._on_event)
        self._scan(seed_connections=True)

    def _attach_tls(self) -> None:
        """TLS: uprobes on every libssl not attached yet (hooks_tls.bpf.h); a file refused is said once, those
        over the limit of files in one line."""
        if self.tls is not None:
            refused_before = set(self.tls.refused)
            for path in self.tls.attach_new(self.prog):
                self.notify(f"TLS: uprobes on {path}")
            refused = sorted(self.tls.refused.keys() - refused_before)
            over_limit = [path for path in refused if self.tls.refused[path] == OVER_LIMIT]
            for path in refused:
                if self.tls.refused[path] != OVER_LIMIT:
                    self.notify(f"TLS: no uprobes on {path}: {self.tls.refused[path]}")
            if over_limit:
                self.notify(f"TLS: no uprobes on {len(over_limit)} more libssl files: {OVER_LIMIT}")

    @property
    def send_hook_btf(self) -> bool:
        """Socket hooks: writes seen on SEND_BTF_TRACEPOINT."""
        return (SEND_BTF_TRACEPOINT, SEND_BTF_FUNCTION) in self.btf_hooks

    @property
    def recv_hook_btf(self) -> bool:
        """Socket hooks: reads seen on RECV_BTF_TRACEPOINT."""
        return (RECV_BTF_TRACEPOINT, RECV_BTF_FUNCTION) in self.btf_hooks

    def _followed_connections(self) -> list:
        """The kernel's conn_state of every connection followed now."""
        conns = self.prog["conns"]
        if self.hooks == "syscall":
            return [c for _k, c in self.prog.batch_items("conns")]
        # The socket hooks' table has a slot per possible connection: only the slots conn_used marks are read.
        states = (conns[conns.Key(slot)] for slot in self.prog.used_slots("conn_used"))
        return [c for c in states if c.key > H["CONN_CLAIMED"]]

    def _load_later_programs(self) -> None:
        """The rare paths' programs (_load), loaded side by side once the probes are attached."""
        bpf = self.prog.bpf
        try:
            fds = in_threads([load for _array, _slot, load in self._later_programs], 2)
        except Exception as exc:  # BCC raises bare Exception: those paths keep their fallbacks
            self.notify(f"HTTP/2's h2c Upgrade and muted-connection programs not loaded: {str(exc)[-200:]}")
            return
        for (array, slot, _load), fd in zip(self._later_programs, fds):
            bpf[array][slot] = fd
        self.notify(LATER_PROGRAMS_LOADED)

    def stop(self) -> None:
        if self._later_loaded is not None:
            self._later_loaded.result()   # not closed under a load still running
        super().stop()

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

    # -- figures and summary -----------------------------------------------------------------------
    def figures(self) -> InferenceView:
        """The live view: per server, the interval since the previous view, from the latest export's points."""
        now = time.monotonic()
        view = InferenceView(self.request_rate)
        if self.last_points is not None:
            view.servers = self._server_rates.rows(self.last_points, now - self._figures_at)[:20]
        self._figures_at = now
        return view

    def summary(self) -> InferenceSummary:
        out = InferenceSummary(self.plan.name if self.plan else "-", self.hooks == "socket", self.watched_listeners)
        if self.prog is None or self.prog.bpf is None:
            return out
        st = self.prog.stats()
        out.connections_accepted = st[H["STAT_INF_ACCEPTED"]]
        if self.hooks == "socket":
            out.connections_seeded = st[H["STAT_INF_SEEDED"]]
            out.connections_untracked = sum(sum(v) for v in self.prog["untracked"].values())
        out.requests = st[H["STAT_INF_REQUESTS"]]
        out.requests_not_in_metrics = st[H["STAT_INF_METRICS_FULL"]]
        out.requests_without_response = st[H["STAT_INF_NO_RESPONSE"]]
        out.connections_unparsed = st[H["STAT_INF_UNPARSED"]]
        if self.tls is not None:
            out.connections_tls = st[H["STAT_INF_TLS"]]
            out.tls_libraries = len(self.tls.attached)
        out.connections_tls_unknown = sum(sum(v) for v in self.prog["tls_unknown"].values())
        out.connections_h2 = st[H["STAT_INF_H2"]]
        out.h2_streams = self.h2_streams
        out.h2_connections_lost = st[H["STAT_INF_H2_LOST"]] + self.h2_given_up
        out.h2_streams_lost = self.h2_streams_lost(st[H["STAT_INF_H2_BEGUN"]])
        out.h2_streams_kernel = st[H["STAT_INF_H2_KERNEL"]]
        out.h2_directions_unwalked = st[H["STAT_INF_H2_UNWALKED"]]
        out.switches_unread = st[H["STAT_INF_SWITCH_UNREAD"]] or None
        out.spans_sent = self.spans_sent
        if self.last_points is not None:
            out.headline = headline(self.last_points, time.monotonic() - self._started_at)
        return out
