"""`ebpftool net`: bytes per zone pair and per process, cross-zone cost, retransmits and RTT.

The kernel (bpf/net/net.bpf.c) sums bytes per TCP socket and folds closed sockets
into a per-(process, address pair) map; once per interval this tracer reads
those maps (cost: one read per open socket and per closed address pair, never
per byte or per packet), maps addresses to zones (zones.py)
and exports cumulative metrics per zone pair and process.

Counting: every byte a process on this node sends is exported once as
`transmit` from the local end's zone to the remote end's zone; bytes it
receives are exported as `receive` from the remote zone to the local one.
Summed over nodes, `transmit` counts each byte once, at its sender.
"""
from __future__ import annotations

import contextlib
import ctypes
import math
import os
import platform
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from ebpftool.core import procfs
from ebpftool.core.bpf import (STAT_SLOTS, BpfProgram, HistSum, bucket_macro, kernel_allows_raw_tracepoints, merge_hist,
                               run_raw_tracepoint_program, seconds_to_ns)
from ebpftool.core.btf import Btf, BtfError, sock_field_offsets
from ebpftool.core.clock import kernel_hz
from ebpftool.core.cstruct import cstring, decode
from ebpftool.core.histograms import Histogram, quantile
from ebpftool.core.plan import Plan, usable
from ebpftool.core.series import Retirement
from ebpftool.core.tracer import TracerOptions
from ebpftool.enrich import k8s
from ebpftool.errors import EbpftoolError
from ebpftool import semconv as sc
from ebpftool.export.model import MetricPoint, SpanKind, SpanRecord, counter, seconds_histogram
from ebpftool.tracers.base import BpfTracer
from ebpftool.tracers.net import plans
from ebpftool.tracers.net.figures import (NetSummary, NetView, PairSummary, PairView, ZonePairRow, rtt_histogram,
                                         rtt_since, top_processes)
from ebpftool.tracers.net.flows import (DEFINES, STRUCTS, FlowGroup, ProcessIdentity, Totals, address_from_bytes,
                                        direction_attrs, group_of, group_points, k8s_attrs, zone_attrs)
from ebpftool.tracers.net.plans import IO_TRACEPOINTS, KPROBE_FUNCTIONS, OPTIONAL_TRACEPOINTS, RAW_TRACEPOINTS, \
    REQUIRED_TRACEPOINTS
from ebpftool.tracers.net.zones import Zone, ZoneMap, cost_usd, is_inter_zone

Flow = STRUCTS["flow"]
# Where the socket hooks run inside the sending syscall (raw tracepoints, kprobes), an unconnected UDP
# socket's destination is read from the sendto()/sendmsg() arguments: the x86-64 syscall registers.
UDP_DEST_FROM_SYSCALL = int(platform.machine() == "x86_64")
RTT_SAMPLE_SECONDS = 0.01   # about one RTT sample per socket per 10 ms (in kernel ticks): tcp_probe fires per segment
# A socket in CLOSE this long whose destroy was never seen is folded by user space instead.
STALE_CLOSE_SECONDS = 30
SPAN_NAME = "tcp connection"
# ebpftool.network.map.full, per kernel map: the stats slot that counts its misses
MAP_FULL_STATS = {"flows": "NET_STAT_FLOWS_FULL", "closed": "NET_STAT_CLOSED_FULL", "rtt_peers": "NET_STAT_RTT_PEERS_FULL"}


@dataclass
class NetOptions(TracerOptions):
    zones: ZoneMap = field(default_factory=ZoneMap)
    top_flows: int = 0          # > 0: also export the N open connections with the most bytes, with addresses
    spans: bool = False         # a span per closed TCP connection (through the span budget)
    node_name: str | None = field(default_factory=k8s.node_name)  # source/destination.k8s.node.name


def recv_flags_parameter() -> int:
    """Where the kprobe fallback's recvmsg functions take their flags (1-based, NET_RECV_FLAGS_PARM): 4 since
    Linux 5.19, 5 before (a `noblock` came first), from the kernel's BTF; 0 when they disagree or BTF cannot
    say (a MSG_PEEK read is then counted, as bcc's tcptop counts it)."""
    at = set()
    for function, entry, _ret, required in KPROBE_FUNCTIONS:
        if entry == "kprobe_recv_entry":
            try:
                at.add(Btf.vmlinux().param_index(function, "flags") + 1)
            except BtfError:
                if required:   # (the others may be in a module's BTF, or absent, as their kprobes may be)
                    return 0
    return at.pop() if len(at) == 1 and at <= {4, 5} else 0


def net_program(options: NetOptions, present: dict[str, bool], io_defines: dict[str, int]) -> BpfProgram:
    """bpf/net/net.bpf.c with its compile-time parameters (not loaded yet). present: which of
    OPTIONAL_TRACEPOINTS the kernel has; io_defines: NET_RAW_IO / NET_KPROBE_IO and the BTF offsets."""
    defines = {
        "NET_UDP_DEST": UDP_DEST_FROM_SYSCALL if io_defines.get("NET_RAW_IO") or io_defines.get("NET_KPROBE_IO") else 0,
        **io_defines,
        "RTT_SAMPLE_JIFFIES": max(1, math.ceil(RTT_SAMPLE_SECONDS * kernel_hz())),
        "NET_SPANS": int(options.spans),
        "RINGBUF_PAGES": options.ringbuf_pages if options.spans else 1,
        **{OPTIONAL_TRACEPOINTS[tp]: int(ok) for tp, ok in present.items()},
        "NET_RETRANSMIT_HAS_ERR": int(present.get("tcp:tcp_retransmit_skb", False)
                                      and BpfProgram.tracepoint_has_field("tcp:tcp_retransmit_skb", "err")),
        **options.budget_defines(),
    }
    return BpfProgram("net/net.bpf.c", defines, macros=[bucket_macro("RTT_BUCKET", seconds_to_ns(sc.TCP_RTT_BUCKETS))])


class NetTracer(BpfTracer):
    name = "net"

    def __init__(self, telemetry, options: NetOptions | None = None) -> None:
        super().__init__(telemetry, options or NetOptions())
        self.options: NetOptions
        self.zones = self.options.zones
        self.prog: BpfProgram | None = None
        self._closed: dict[FlowGroup, Totals] = defaultdict(Totals)    # drained from the kernel, final
        self._reported: dict[FlowGroup, Totals] = {}                   # what was exported last (high water)
        self._rtt: dict[tuple[Zone, Zone], HistSum] = {}               # zone pair -> its RTT histogram (ns)
        self._stats = [0] * STAT_SLOTS
        self._processes: dict[int, ProcessIdentity] = {}   # pids of the records read since the last collect
        self._seen_pids: set[int] = set()
        self._stale: list[Any] = []             # flows closed long ago, never destroyed: folded at the next tick
        self._fold_stale_fd: int | None = None  # fold_stale_flow, where the kernel loads it
        self._last_collect = time.monotonic()
        self._pairs: dict[tuple[str, str], PairView] = {}
        self._rtt_seen: dict[tuple[str, str], Histogram] = {}   # zone pair's RTT histogram at the last view
        self.retirement = Retirement()           # when the groups of gone processes end
        self._retired_pairs: dict[tuple[str, str], PairView] = {}  # what retired groups sent, per zone pair
        self.series_retired = 0                 # groups retired because their process was gone
        self.plan: Plan | None = None  # the attach plan in use (plans.PLANS)
        self.io_hooks = ""          # how bytes and RTT are read: the plan's name
        self.raw_io_refused = ""    # why not the raw tracepoints, when not
        self.spans_sent = 0

    # -- start -------------------------------------------------------------------------------
    def start(self) -> None:
        """The first plan the kernel allows (raw tracepoints where it gives struct sock's offsets and loads raw
        tracepoint programs), compiled once; the ordinary tracepoints if it refuses the raw ones all the same."""
        missing = [tp for tp in REQUIRED_TRACEPOINTS if not BpfProgram.tracepoint_exists(tp)]
        present = {tp: BpfProgram.tracepoint_exists(tp) for tp in OPTIONAL_TRACEPOINTS}
        if missing and set(missing) <= set(IO_TRACEPOINTS):
            self._start_with_kprobes(missing, present)
            return
        if missing:
            raise EbpftoolError(f"this kernel lacks the tracepoint(s) {', '.join(missing)} that byte counting needs")
        try:
            offsets = sock_field_offsets()
        except BtfError as exc:
            offsets = {}
            self.raw_io_refused = str(exc)
        features = {"btf_sock_offsets": bool(offsets), "raw_tp": kernel_allows_raw_tracepoints()}
        if offsets and not features["raw_tp"]:
            self.raw_io_refused = "the kernel refused a raw tracepoint program"
        candidates, _why = usable((plans.RAW, plans.TRACEPOINTS), features, BpfProgram.tracepoint_exists)
        for plan in candidates:
            try:
                self._load(plan, present, {**plan.defines, **(offsets if plan is plans.RAW else {})})
                return
            except EbpftoolError as exc:
                if plan is plans.TRACEPOINTS:
                    raise
                self.raw_io_refused = str(exc)[-200:]

    def _start_with_kprobes(self, missing: list[str], present: dict[str, bool]) -> None:
        """Kernels before 6.3 (no sock_send_length/sock_recv_length): bytes from kprobes on the protocols'
        sendmsg/recvmsg, with the socket fields read at BTF offsets as on the raw path."""
        lacking = f"this kernel lacks the tracepoint(s) {', '.join(missing)} that byte counting needs"
        if not BpfProgram.kprobes_available():
            raise EbpftoolError(f"{lacking}, and has no kprobes for the fallback")
        try:
            offsets = sock_field_offsets()
        except BtfError as exc:
            raise EbpftoolError(f"{lacking}, and the kprobe fallback needs struct sock offsets from BTF: {exc}") from exc
        io = {**plans.KPROBES.defines, **offsets, "NET_RECV_FLAGS_PARM": recv_flags_parameter()}
        try:
            self._load(plans.KPROBES, present, io)
        except EbpftoolError:
            # Before 5.15 there is no bpf_task_pt_regs: no UDP destinations from the syscall, but bytes still.
            self._load(plans.KPROBES, present, {**io, "NET_UDP_DEST": 0})
        for function, entry, ret, required in KPROBE_FUNCTIONS:
            try:
                self.prog.attach_kprobe(function, entry)
                self.prog.attach_kprobe(function, ret, ret=True)
            except Exception as exc:
                if required:
                    raise EbpftoolError(f"{lacking}, and the kprobe fallback could not attach to {function}: "
                                        f"{exc}") from exc

    def _load(self, plan: Plan, present: dict[str, bool], io_defines: dict[str, int]) -> None:
        o = self.options
        prog = net_program(o, present, io_defines)
        t0 = time.monotonic()
        prog.load()
        self.compile_seconds = time.monotonic() - t0
        self.prog = prog
        self.programs.append(prog)
        try:
            self._fold_stale_fd = prog.bpf.load_func("fold_stale_flow", prog.bpf.RAW_TRACEPOINT).fd
        except Exception:  # no raw tracepoint programs here: such flows wait for their address's reuse
            self._fold_stale_fd = None
        self.plan = plan
        self.io_hooks = plan.name
        # BCC attaches TRACEPOINT_PROBE functions itself when loading; record them for the report.
        kprobes = bool(io_defines.get("NET_KPROBE_IO"))
        attached = [tp for tp in (*REQUIRED_TRACEPOINTS, *(tp for tp, ok in present.items() if ok))
                    if not (kprobes and tp in IO_TRACEPOINTS)]
        raw = ("tcp:tcp_probe",) if kprobes else RAW_TRACEPOINTS if io_defines["NET_RAW_IO"] else ()
        self.prog.probes.extend(f"raw_tracepoint:{tp.split(':')[1]}" if tp in raw else f"tracepoint:{tp}"
                                for tp in attached)
        if o.spans:
            self.prog.open_ring_buffer("conn_events", self._on_connection)

    # -- spans -------------------------------------------------------------------------------
    def _on_connection(self, data: bytes) -> None:
        f = decode(Flow, data)
        g = self._group(f)
        local = address_from_bytes(f.family, f.laddr)
        remote = address_from_bytes(f.family, f.raddr)
        attrs: dict[str, Any] = {
            sc.NETWORK_TRANSPORT: "tcp", sc.NETWORK_TYPE: g.network_type,
            sc.NETWORK_LOCAL_ADDRESS: str(local) if local else "", sc.NETWORK_LOCAL_PORT: f.sport,
            sc.NETWORK_PEER_ADDRESS: str(remote) if remote else "", sc.NETWORK_PEER_PORT: f.dport,
            sc.PROCESS_PID: g.pid, sc.PROCESS_EXECUTABLE_NAME: g.executable,
            sc.EBPFTOOL_NETWORK_CONNECTION_SENT_BYTES: int(f.tx_bytes),
            sc.EBPFTOOL_NETWORK_CONNECTION_RECEIVED_BYTES: int(f.rx_bytes),
            sc.EBPFTOOL_NETWORK_CONNECTION_RETRANSMITS: int(f.retransmits),
            **zone_attrs(g.local_zone, g.remote_zone), **k8s_attrs(g, True, self.options.node_name),
        }
        if f.segs_out or f.segs_in:  # counted where the raw tracepoints run (BTF offsets)
            attrs[sc.EBPFTOOL_NETWORK_CONNECTION_SENT_SEGMENTS] = int(f.segs_out)
            attrs[sc.EBPFTOOL_NETWORK_CONNECTION_RECEIVED_SEGMENTS] = int(f.segs_in)
        if f.srtt_us:
            attrs[sc.EBPFTOOL_NETWORK_TCP_SRTT] = f.srtt_us / 1e6
        self.telemetry.emit_span(SpanRecord(
            SPAN_NAME, self.clock.to_wall_ns(f.start_ns), self.clock.to_wall_ns(f.end_ns),
            SpanKind.CLIENT if f.is_client else SpanKind.SERVER, attrs))
        self.spans_sent += 1

    # -- reading the maps --------------------------------------------------------------------
    def _process(self, pid: int, comm) -> ProcessIdentity:
        """The process's executable name while it runs (procfs.executable_name: the kernel saw the comm of
        whichever thread did the I/O, e.g. a gRPC worker), else the comm the kernel recorded; and the Pod it
        runs in, from its cgroup. Read once per pid while the kernel's maps hold records of it: a record
        regrouped at every collect must land in the same group each time."""
        self._seen_pids.add(pid)
        known = self._processes.get(pid)
        if known is None:
            cgroup = procfs.read_text(f"/proc/{pid}/cgroup")
            if cgroup is None:  # gone
                known = ProcessIdentity(cstring(comm), None)
            else:
                known = ProcessIdentity(procfs.executable_name(pid, cstring(comm)), k8s.pod_uid_of_cgroup(cgroup))
            self._processes[pid] = known
        return known

    def _forget_unseen_processes(self) -> None:
        """A pid with no record in the maps this collect read will only come back as a new process (its
        own records were all drained): forgetting it bounds the cache and gives a reused pid a fresh look."""
        self._processes = {pid: p for pid, p in self._processes.items() if pid in self._seen_pids}
        self._seen_pids = set()

    def _group(self, rec) -> FlowGroup:
        """The export key of a struct flow or struct agg_key."""
        return group_of(self.zones, rec.family, rec.protocol, rec.laddr, rec.raddr, rec.pid,
                        self._process(int(rec.pid), rec.comm))

    def _agg_groups(self, table, into: dict[FlowGroup, Totals]) -> None:
        for k, v in table.items():
            into[self._group(k)].add(v)

    def _flip_and_drain(self) -> dict[FlowGroup, Totals]:
        """Drain the aggregate map nobody writes, make it the one written, and read the other.

        The map drained now was retired one interval ago, so no BPF program is
        still adding to it; the one just retired is only read (it is drained
        next time), as `pending`.
        """
        gen_table = self.prog["generation"]
        active = int(gen_table[ctypes.c_int(0)].value)
        idle = self.prog[f"closed{1 - active}"]
        self._agg_groups(idle, self._closed)
        # Keys first, then deletes: deleting while iterating makes each next-key search start over.
        for key in list(idle.keys()):
            del idle[key]
        gen_table[ctypes.c_int(0)] = ctypes.c_uint32(1 - active)
        pending: dict[FlowGroup, Totals] = defaultdict(Totals)
        self._agg_groups(self.prog[f"closed{active}"], pending)
        return pending

    def _live_flows(self) -> list[tuple[FlowGroup, Any]]:
        """Open sockets (the table's occupied slots); also notes those closed long ago whose destroy the kernel
        program missed."""
        live = []
        stale_before = time.monotonic_ns() - STALE_CLOSE_SECONDS * 1_000_000_000
        self._stale = []
        table = self.prog["flows"]
        for slot in self.prog.used_slots("flow_used"):
            f = table[table.Key(slot)]
            if f.sk <= DEFINES["NET_FLOW_CLAIMED"] or not f.start_ns:
                continue   # taken out, or being filled in, since the bitmap was read
            live.append((self._group(f), f))
            if f.end_ns and f.end_ns < stale_before:
                self._stale.append(f)
        return live

    def _drain_rtt(self) -> None:
        """Fold the per-address-pair RTT histograms into per-zone-pair ones and empty the map.

        A sample added between the read and the delete of its key is lost; the
        histogram is a sample (one per socket per RTT_SAMPLE_SECONDS) anyway.
        """
        table = self.prog["rtt_hist"]
        nb = len(sc.TCP_RTT_BUCKETS) + 1
        for key, per_cpu in list(table.items()):
            hist = merge_hist(per_cpu, nb)
            table.__delitem__(key)
            if not hist.count:
                continue
            lz, rz = self.zones.flow_zones(address_from_bytes(key.family, key.laddr),
                                           address_from_bytes(key.family, key.raddr))
            acc = self._rtt.get((lz, rz))
            if acc is None:
                self._rtt[(lz, rz)] = hist
            else:
                acc.add(hist)

    # -- collect -----------------------------------------------------------------------------
    def collect(self) -> list[MetricPoint]:
        """Totals = drained closed flows + the aggregate map being retired + open sockets.

        A socket closing while this runs is briefly in neither place (the
        kernel deletes the flow, then adds it to the aggregate map); keeping
        the high-water mark of each figure hides that dip, and the next
        interval has the exact value.
        """
        pending = self._flip_and_drain()
        live = self._live_flows()
        groups: dict[FlowGroup, Totals] = defaultdict(Totals)
        for source in (self._closed, pending):
            for g, t in source.items():
                groups[g].add(t)
        for g, f in live:
            # Not yet attributed (established, no I/O yet: pid 0; opened before the tracer, addresses not
            # yet seen): its group would change later, leaving a second series behind. Counted once it is
            # attributed, or when it closes.
            if f.pid and f.has_addrs:
                groups[g].add(Totals.of_flow(f))
        for g, t in groups.items():
            prev = self._reported.get(g)
            if prev is not None:
                t.high_water(prev)
            self._reported[g] = t
        self._drain_rtt()
        self._stats = self.prog.stats()
        points = group_points(self.zones, self._reported, self.options.node_name)
        retire = self._gone_groups(set(pending) | {g for g, _f in live})
        points.extend(self._rtt_points())
        points.extend(self._top_flow_points(live))
        points.append(counter(sc.EBPFTOOL_NETWORK_FLOW_IO_LOST, "By",
                              "Bytes not attributed to a flow because a kernel map was full",
                              self._stats[DEFINES["NET_STAT_BYTES_LOST"]], {sc.EBPFTOOL_TRACER: self.name}))
        for map_name, slot in MAP_FULL_STATS.items():
            points.append(counter(sc.EBPFTOOL_NETWORK_MAP_FULL, "{event}",
                                  "Events that found a kernel map full: I/O of a socket with no flow entry (its "
                                  "bytes go to the per-process sums), a closed flow with no aggregate entry (its "
                                  "figures are lost), an RTT sample with no histogram",
                                  self._stats[DEFINES[slot]], {sc.EBPFTOOL_TRACER: self.name, sc.EBPFTOOL_MAP: map_name}))
        self._update_view()
        self._retire(retire)
        self._forget_unseen_processes()
        return points

    def _gone_groups(self, active: set[FlowGroup]) -> set[FlowGroup]:
        """Groups to retire after this collect: their process has exited and they had no open socket
        and nothing to drain at this collect and the one before, so this collect and the one before
        exported their final totals (and a scrape read them, with a Prometheus endpoint: see
        core/series.Retirement). A socket outliving its process keeps its group: it is in `live` while
        open and in `pending` when it closes."""
        gone = {g for g in self._reported
                if g.pid and g not in active and not os.path.exists(f"/proc/{g.pid}")}
        return self.retirement.update(gone)

    def _retire(self, groups: set[FlowGroup]) -> None:
        """Their series end: the tracer forgets them (the kernel's aggregate maps were already drained of
        them), and what they sent stays in the per-zone-pair totals of the view and summary."""
        for g in groups:
            t = self._reported.pop(g)
            self._closed.pop(g, None)
            self._add_to_zone_pair(self._retired_pairs, g, t)
        self.series_retired += len(groups)

    def _add_to_zone_pair(self, pairs: dict[tuple[str, str], PairView], g: FlowGroup, t: Totals) -> PairView:
        """Add what group g sent (its totals t: bytes, their cross-zone cost, retransmits) to its zone pair's
        view in pairs (made if absent); that view."""
        key = (g.local_zone.name, g.remote_zone.name)
        pv = pairs.setdefault(key, PairView(is_inter_zone(g.local_zone, g.remote_zone)))
        pv.total += t.tx_bytes
        pv.cost += cost_usd(t.tx_bytes, g.local_zone, g.remote_zone, self.zones)
        pv.retransmits += t.retransmits
        return pv

    def tick(self) -> None:
        """Have the kernel fold sockets closed STALE_CLOSE_SECONDS ago that were never destroyed (as far as we
        saw) as a destroy would (fold_stale_flow, which leaves a slot reused meanwhile alone)."""
        if self._fold_stale_fd is not None:
            for f in self._stale:
                with contextlib.suppress(OSError):
                    run_raw_tracepoint_program(self._fold_stale_fd, [int(f.sk), int(f.start_ns)])
        self._stale = []

    def _rtt_points(self) -> list[MetricPoint]:
        out = []
        for (lz, rz), hist in self._rtt.items():
            attrs = {sc.NETWORK_TRANSPORT: "tcp", **zone_attrs(lz, rz)}
            out.append(seconds_histogram(sc.EBPFTOOL_NETWORK_TCP_RTT,
                                         "Smoothed TCP round-trip time, sampled per connection at most every 10 ms",
                                         attrs, hist, sc.TCP_RTT_BUCKETS))
        return out

    def _top_flow_points(self, live: list[tuple[FlowGroup, Any]]) -> list[MetricPoint]:
        """--flows N: the N open connections with the most bytes, with their addresses and ports."""
        n = self.options.top_flows
        if n <= 0:
            return []
        top = sorted((x for x in live if x[1].has_addrs), key=lambda x: x[1].tx_bytes + x[1].rx_bytes, reverse=True)[:n]
        out = []
        for g, f in top:
            local, remote = str(address_from_bytes(f.family, f.laddr)), str(address_from_bytes(f.family, f.raddr))
            for transmit, nbytes in ((True, f.tx_bytes), (False, f.rx_bytes)):
                if not nbytes:
                    continue
                src, dst = (g.local_zone, g.remote_zone) if transmit else (g.remote_zone, g.local_zone)
                ends = ((local, f.sport), (remote, f.dport)) if transmit else ((remote, f.dport), (local, f.sport))
                attrs = {sc.NETWORK_TRANSPORT: "tcp", sc.NETWORK_TYPE: g.network_type,
                         sc.PROCESS_PID: g.pid, sc.PROCESS_EXECUTABLE_NAME: g.executable,
                         sc.SOURCE_ADDRESS: ends[0][0], sc.SOURCE_PORT: int(ends[0][1]),
                         sc.DESTINATION_ADDRESS: ends[1][0], sc.DESTINATION_PORT: int(ends[1][1]),
                         **zone_attrs(src, dst), **direction_attrs(transmit),
                         **k8s_attrs(g, transmit, self.options.node_name)}
                out.append(counter(sc.EBPFTOOL_NETWORK_CONNECTION_IO, "By",
                                   "Bytes of one open TCP connection (top N by bytes, --flows)", int(nbytes), attrs))
        return out

    # -- terminal ----------------------------------------------------------------------------
    def _update_view(self) -> None:
        now = time.monotonic()
        elapsed = max(now - self._last_collect, 1e-3)
        self._last_collect = now
        pairs: dict[tuple[str, str], PairView] = {
            key: PairView(r.inter_zone, r.total, 0.0, r.cost, r.retransmits) for key, r in self._retired_pairs.items()}
        for g, t in self._reported.items():
            pv = self._add_to_zone_pair(pairs, g, t)
            pv.processes[g.executable or str(g.pid)] += t.tx_bytes
        for key, pv in pairs.items():
            before = self._pairs.get(key)
            pv.rate = (pv.total - before.total) / elapsed if before else 0.0
        rtt = self._rtt_by_name()
        for key, hist in rtt.items():
            pv = pairs.get(key)
            if pv is not None:
                interval = rtt_since(hist, self._rtt_seen.get(key))
                pv.rtt_p50, pv.rtt_p99 = quantile(0.5, interval), quantile(0.99, interval)
        self._pairs, self._rtt_seen = pairs, rtt

    def _rtt_by_name(self) -> dict[tuple[str, str], Histogram]:
        """The run's RTT histograms per zone pair (source, destination names: the view's keys), in seconds."""
        by_name: dict[tuple[str, str], HistSum] = {}
        for (lz, rz), h in self._rtt.items():
            by_name.setdefault((lz.name, rz.name), HistSum()).add(h)
        return {key: rtt_histogram(h, sc.TCP_RTT_BUCKETS) for key, h in by_name.items()}

    def figures(self) -> NetView:
        rows = [ZonePairRow(src, dst, pv, top_processes(pv))
                for (src, dst), pv in sorted(self._pairs.items(), key=lambda kv: kv[1].total, reverse=True)
                if pv.total or pv.retransmits or pv.rtt_p50 is not None]
        return NetView(rows)

    def summary(self) -> NetSummary:
        rtt = self._rtt_by_name()
        return NetSummary(
            io_hooks=self.io_hooks or "-",
            bytes_sent=sum(pv.total for pv in self._pairs.values()),
            bytes_sent_across_zones=sum(pv.total for pv in self._pairs.values() if pv.inter_zone),
            cross_zone_cost_usd=sum(pv.cost for pv in self._pairs.values()),
            zone_pairs=len(self._pairs),
            series_retired=self.series_retired,
            bytes_lost=self._stats[DEFINES["NET_STAT_BYTES_LOST"]],
            map_full={map_name: self._stats[DEFINES[slot]] for map_name, slot in MAP_FULL_STATS.items()},
            connection_spans_sent=self.spans_sent if self.options.spans else None,
            pairs=[PairSummary.of(src, dst, pv, rtt.get((src, dst)))
                   for (src, dst), pv in sorted(self._pairs.items(), key=lambda kv: kv[1].total, reverse=True)],
        )
