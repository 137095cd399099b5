"""`ebpftool agents`: every LLM API call (and MCP request) the node's processes make, from the client side.

The kernel (bpf/agents/agents.bpf.c) hands over the plaintext of outgoing HTTP/1 calls only: a connection
enters a call at a write that begins with `POST ` and everything else leaves its programs after one lookup.
Here each call's bytes, with the kernel's times, go through the parsers of this package (ClientConnection:
requests and answers paired in order), and each finished call becomes metrics (measure.py; exact for every
call) and a CLIENT span within the span budget. A connection whose requests are no LLM or MCP call is let go
(the drop_calls map): the kernel stops copying it until its next `POST `.

The plaintext (prompts, keys in headers) crosses into this process's memory and no further: the parsers keep
names and numbers only.
"""
from __future__ import annotations

import os
import re
import time
from collections import deque
from dataclasses import dataclass, field

from ebpftool.core import procfs
from ebpftool.core.bpf import STAT_RINGBUF_FULL, BpfProgram
from ebpftool.core.histograms import Histogram, quantile
from ebpftool.core.plan import usable
from ebpftool.core.tracer import SpanAllowance, TracerOptions
from ebpftool.enrich import k8s
from ebpftool.errors import EbpftoolError
from ebpftool import semconv as sc
from ebpftool.export.model import MetricPoint, SpanKind, SpanRecord
from ebpftool.tracers.agents import go_tls, plans
from ebpftool.tracers.agents.connection import ClientConnection
from ebpftool.tracers.agents.events import EV_CLOSE, EV_READ, EV_WRITE, H, VIA_TLS, Io, Reassembler
from ebpftool.tracers.agents.figures import AgentsSummary, AgentsView, CallerRow
from ebpftool.tracers.agents.http2 import ClientH2Connection, is_preface
from ebpftool.tracers.agents.measure import CallMetrics, Measured, Process, span_attributes, span_name
from ebpftool.tracers.agents.prices import PriceTable
from ebpftool.tracers.base import BpfTracer
from ebpftool.tracers.inference.plans import raw_tp_regs_missing
from ebpftool.tracers.inference.tls_libs import TlsUprobes

REQUEST_CAPTURE = H["AGENTS_REQUEST_BYTES"]   # of a request, what the parsers read (what the kernel copies)
IDLE_SECONDS = 600          # a connection in a call with no event this long is given up (memory bound)
MAX_CONNECTIONS = 4096      # connections parsed at once; past it the idlest is given up
LIBRARY_SCAN_SECONDS = 10   # how often new libssl files (a container started since) are looked for
_HOST_PORT = re.compile(rb"\r\nhost:[ \t]*(?:\[[^\]\r\n]*\]|[^:\r\n]*):(\d{1,5})[ \t]*\r\n", re.IGNORECASE)
HTTPS_PORT = 443
COMM_LEN = 15               # bytes of a process name the kernel keeps (TASK_COMM_LEN less its NUL)
# The live view's figures are over the calls finished in the last minute: LLM calls come seconds apart, and
# over one interval an agent between two calls would vanish from the view (and a pipe's last frame be empty).
VIEW_WINDOW_S = 60.0
VIEW_CALLS_MAX = 65536      # calls the window holds at most (past it, the oldest leave early)


@dataclass
class AgentsOptions(TracerOptions):
    pids: list[int] = field(default_factory=list)     # only these processes (and their children) ...
    comms: list[str] = field(default_factory=list)    # ... or processes of these names; neither: all
    prices: PriceTable | None = None                  # None: no cost
    cleartext: bool = True                            # also cleartext connections (socket hooks or syscalls)
    hooks: str = "auto"                               # cleartext's way in: socket | syscall | auto (plans.HOOKS)
    go_tls: bool = True                               # also Go executables' own TLS (go_tls.py)


@dataclass
class _Conn:
    """A connection user space is parsing, or has let go of."""
    parser: ClientConnection | ClientH2Connection | None = None
    port: int = 0                  # the server's port
    let_go_at: int = 0             # the call number it was let go at: that call's events are ignored
    last_t: float = 0.0


class AgentsTracer(BpfTracer):
    name = "agents"

    def __init__(self, telemetry, options: AgentsOptions | None = None) -> None:
        super().__init__(telemetry, options or AgentsOptions())
        self.options: AgentsOptions
        self.prog: BpfProgram | None = None
        self.plan = None
        self.metrics = CallMetrics(self.options.prices)
        self._wire = Reassembler()
        self._conns: dict[tuple[int, int, int], _Conn] = {}
        self._processes: dict[int, Process] = {}
        self._tls = TlsUprobes()   # the libssl files attached (the inference tracer's bookkeeping)
        self._go = go_tls.GoTlsUprobes()  # the Go executables attached (crypto/tls)
        # why Go's TLS is not followed here (None: it is)
        self.go_tls_refused = go_tls.supported() if self.options.go_tls else "not asked for (--no-go-tls)"
        self._last_library_scan = 0.0
        self._spans = SpanAllowance(self.options.span_rate)
        self.spans_sent = 0
        self.spans_unsampled = 0
        self.calls_lost = 0
        self.let_go = 0
        self.events_unhandled = 0
        self._recent: deque[tuple[float, Measured]] = deque(maxlen=VIEW_CALLS_MAX)   # calls of the view's window
        self._view = AgentsView()
        self._started = time.monotonic()

    # -- start -------------------------------------------------------------------------------
    def start(self) -> None:
        if self.options.hooks not in plans.HOOKS:
            raise EbpftoolError(f"--hooks {self.options.hooks!r}: one of {', '.join(plans.HOOKS)}")
        wanted = plans.HOOK_CHOICES[self.options.hooks] if self.options.cleartext else (plans.TLS_ONLY,)
        features = {"uprobe": True, "ringbuf": True, "raw_tp_regs": not raw_tp_regs_missing()}
        ok, why_not = usable(wanted, features, BpfProgram.tracepoint_exists, unknown_ok=True)
        if not ok:
            raise EbpftoolError(f"the agents tracer cannot run here: {'; '.join(why_not)}")
        self.plan = ok[0]
        filtered = bool(self.options.pids or self.options.comms)
        prog = BpfProgram("agents/agents.bpf.c", {**self.plan.defines, "FILTER_PROCESSES": int(filtered),
                                                  "RINGBUF_PAGES": self.options.ringbuf_pages,
                                                  **self.options.budget_defines()})
        t0 = time.monotonic()
        prog.load()
        self.compile_seconds = time.monotonic() - t0
        self.prog = prog
        self.programs.append(prog)
        prog.probes.extend(f"tracepoint:{tp}" for tp in self.plan.tracepoints)  # BCC attached them at load
        if filtered:
            self._watch()
        prog.open_ring_buffer("agent_events", self._on_event)
        self._attach_libraries()

    def _attach_libraries(self) -> None:
        """The TLS uprobes on every libssl (and OpenSSL-exporting executable) not attached yet."""
        self._last_library_scan = time.monotonic()
        self._tls.attach_new(self.prog, programs=plans.TLS_PROGRAMS)
        if self.go_tls_refused is None:
            self._go.attach_new(self.prog)

    def _watch(self) -> None:
        """--pid/--comm: the processes whose new connections the kernel follows (it also matches a new
        process's name itself, between these scans)."""
        o = self.options
        roots = set(o.pids)
        if o.comms:
            wanted = {name[:COMM_LEN] for name in o.comms}   # the kernel keeps 15 bytes of a name
            for pid in procfs.pids():
                comm = procfs.read_text(f"/proc/{pid}/comm")
                if comm and comm.strip() in wanted:
                    roots.add(pid)
        self.prog.set_config("watched_pids", procfs.descendants(roots))
        comms = self.prog["watched_comms"]
        if o.comms and len(comms) == 0:
            for name in o.comms:
                comms[comms.Key(name.encode()[:COMM_LEN])] = comms.Leaf(1)

    # -- the kernel's events -----------------------------------------------------------------
    def _on_event(self, raw: bytes) -> None:
        try:
            self._handle(raw)
        except Exception:  # bytes from the wire: one bad event must not stop the ring buffer's reading
            self.events_unhandled += 1

    def _handle(self, raw: bytes) -> None:
        key, io, lost = self._wire.feed(raw)
        conn = self._conns.get(key)
        if lost and conn is not None and conn.parser is not None:
            self.calls_lost += 1
            conn.parser = None    # its bytes are no longer whole: given up until the next `POST `
        if io is None:
            return
        if io.kind == EV_CLOSE:
            if conn is not None and conn.parser is not None:
                self._finished(io, conn, conn.parser.close(io.t))
            self._conns.pop(key, None)
            return
        if conn is None:
            conn = self._conns[key] = _Conn(last_t=time.monotonic())
        if io.call <= conn.let_go_at:
            return                # events of a call let go of, sent before the kernel knew
        conn.last_t = time.monotonic()
        if conn.parser is None:
            if not (io.kind == EV_WRITE and io.starts):
                return            # mid-call (its start was lost or let go of): wait for the next `POST `
            # HTTP/2 (the kernel sends such a connection whole from its preface on) or HTTP/1
            kind = ClientH2Connection if is_preface(io.data) else ClientConnection
            conn.parser = kind(capture=REQUEST_CAPTURE)
            self._process(io)     # named now, while it runs (it may be gone when its call ends)
        if io.kind == EV_WRITE:
            if io.starts:
                conn.port = self._port_of(io)
            conn.parser.request(io.data, io.t)
            if not io.port and conn.parser.port:
                conn.port = conn.parser.port    # HTTP/2 over TLS: the port its requests' :authority names
        elif io.kind == EV_READ:
            done = conn.parser.response(io.data, io.t)
            self._finished(io, conn, done)
            if not conn.parser.can_let_go:
                return
            waiting = conn.parser.waiting_calls()
            if (waiting or done) and all(ex.call is None for ex in done) and all(c is None for c in waiting):
                self._let_go(io, conn)

    @staticmethod
    def _port_of(io: Io) -> int:
        """The server's port: the kernel's (a socket's connect()), else Host's, else HTTPS's for TLS."""
        if io.port:
            return io.port
        m = _HOST_PORT.search(io.data[:8192])
        if m:
            return int(m.group(1))
        return HTTPS_PORT if io.key[1] == VIA_TLS else 0

    def _let_go(self, io: Io, conn: _Conn) -> None:
        """No LLM or MCP call on this connection now: the kernel stops copying it until its next `POST `."""
        conn.parser = None
        conn.let_go_at = io.call
        self.let_go += 1
        tgid, via, ident = io.key
        try:
            table = self.prog["drop_calls"]
            table[table.Key(tgid, via, ident)] = table.Leaf(io.call, 0)
        except Exception:  # the map full (4096 requests pending): the kernel keeps copying, user space ignores
            pass

    def _finished(self, io: Io, conn: _Conn, exchanges) -> None:
        for ex in exchanges:
            m = self.metrics.record(ex, self._process(io), conn.port)
            if m is None:
                continue
            self._recent.append((time.monotonic(), m))
            self._span(m)

    def _process(self, io: Io) -> Process:
        pid = io.key[0]
        p = self._processes.get(pid)
        if p is None:
            p = self._processes[pid] = Process(pid, procfs.executable_name(pid, io.comm),
                                               k8s.workload_attributes_of_process(pid))
        return p

    # -- spans -------------------------------------------------------------------------------
    def _span(self, m: Measured) -> None:
        """A CLIENT span within --span-rate (a token bucket here: the kernel sends every call's bytes, the
        metrics need them all); the rest are counted."""
        if not self._spans.take(self.span_shift):   # thinned under --max-cpu (core/cpu_budget.py)
            self.spans_unsampled += 1
            return
        ex = m.exchange
        end = ex.start + ex.duration
        self.telemetry.emit_span(SpanRecord(
            span_name(m), self.clock.to_wall_ns(int(ex.start * 1e9)), self.clock.to_wall_ns(int(end * 1e9)),
            SpanKind.CLIENT, span_attributes(m), error=m.error_type is not None,
            status_message=m.error_type or ""))
        self.spans_sent += 1

    # -- each interval -----------------------------------------------------------------------
    def collect(self) -> list[MetricPoint]:
        self._update_view()
        return self.metrics.points()

    def tick(self) -> None:
        if self.options.pids or self.options.comms:
            self._watch()
        if time.monotonic() - self._last_library_scan >= LIBRARY_SCAN_SECONDS:
            self._attach_libraries()
        self._end_calls_of_gone_processes()
        self._forget_idle()
        self._processes = {pid: p for pid, p in self._processes.items() if os.path.exists(f"/proc/{pid}")}

    def _end_calls_of_gone_processes(self) -> None:
        """A process that exited (or was killed) in a call: its calls end now, as a close would end them (an
        answer under way is cut, a request never answered has no answer), rather than never."""
        alive: dict[int, bool] = {}
        now = time.monotonic()   # CLOCK_MONOTONIC, the kernel's event clock
        for key, conn in list(self._conns.items()):
            tgid = key[0]
            if tgid not in alive:
                alive[tgid] = os.path.exists(f"/proc/{tgid}")
            if alive[tgid]:
                continue
            if conn.parser is not None:
                io = Io(EV_CLOSE, key, conn.let_go_at, False, now, b"", 0, conn.port, tgid, "")
                self._finished(io, conn, conn.parser.close(now))
            del self._conns[key]
            self._wire.forget(key)

    def _forget_idle(self) -> None:
        """Connections quiet for IDLE_SECONDS, and the idlest past MAX_CONNECTIONS, are given up."""
        now = time.monotonic()
        idle = {k for k, c in self._conns.items() if now - c.last_t > IDLE_SECONDS}
        over = len(self._conns) - len(idle) - MAX_CONNECTIONS
        if over > 0:
            by_age = sorted((c.last_t, k) for k, c in self._conns.items() if k not in idle)
            idle.update(k for _t, k in by_age[:over])
        for k in idle:
            self._conns.pop(k, None)
            self._wire.forget(k)

    def finish_pending(self) -> None:
        if self.prog is not None:
            self.prog.consume()

    def drops(self) -> dict[str, int]:
        lost = sum(p.stats()[STAT_RINGBUF_FULL] for p in self.programs if p.bpf is not None)
        return {"events_lost": lost, "spans_unsampled": self.spans_unsampled, **self.unreadable_events()}

    # -- terminal ----------------------------------------------------------------------------
    def _update_view(self) -> None:
        """The calling processes over the last VIEW_WINDOW_S seconds (since the start, in the first minute)."""
        now = time.monotonic()
        while self._recent and self._recent[0][0] < now - VIEW_WINDOW_S:
            self._recent.popleft()
        elapsed = max(min(now - self._started, VIEW_WINDOW_S), 1e-3)
        by_process: dict[str, list[Measured]] = {}
        for _t, m in self._recent:
            if m.is_mcp:
                continue
            name = f"{m.attributes.get(sc.PROCESS_EXECUTABLE_NAME)} ({m.attributes.get(sc.PROCESS_PID)})"
            by_process.setdefault(name, []).append(m)
        rows = []
        for name, calls in by_process.items():
            durations = _histogram([m.exchange.duration for m in calls])
            ttfc = _histogram([m.exchange.time_to_first_chunk for m in calls
                               if m.exchange.answer is not None and m.exchange.answer.streamed
                               and m.exchange.time_to_first_chunk is not None])
            tokens = sum((m.exchange.answer.input_tokens or 0) + (m.exchange.answer.output_tokens_or_chunks or 0)
                         for m in calls if m.exchange.answer is not None)
            rows.append(CallerRow(name, len(calls) / elapsed, quantile(0.5, durations), quantile(0.99, durations),
                                  quantile(0.5, ttfc), tokens / elapsed,
                                  sum(m.cost or 0.0 for m in calls) / elapsed * 3600,
                                  sum(1 for m in calls if m.error_type)))
        rows.sort(key=lambda r: -r.calls_per_second)
        self._view = AgentsView(sum(r.calls_per_second for r in rows), rows)

    def figures(self) -> AgentsView:
        return self._view

    def summary(self) -> AgentsSummary:
        stats = self.prog.stats() if self.prog is not None and self.prog.bpf is not None else None
        m = self.metrics
        return AgentsSummary(
            calls=m.calls, calls_failed=m.calls_failed, mcp_requests=m.mcp_calls, input_tokens=m.input_tokens,
            output_tokens=m.output_tokens, cost_usd=m.cost_usd, hooks=self.plan.name if self.plan else "",
            libraries_traced=len(self._tls.attached), go_executables_traced=len(self._go.attached),
            go_tls_refused=self.go_tls_refused or "",
            calls_lost=self.calls_lost + self.events_unhandled,
            bytes_not_copied=stats[H["STAT_AGENTS_BYTES_NOT_COPIED"]] if stats else 0,
            connections_let_go=self.let_go)


def _histogram(values: list[float]) -> Histogram | None:
    """The exact values as a histogram whose buckets are the values themselves (quantile() needs one)."""
    if not values:
        return None
    values = sorted(values)
    return Histogram(tuple(values), [1] * len(values) + [0], values[0], values[-1])
