"""`ebpftool net` against real traffic between two namespace 'zones', asserted on what OTLP delivered."""
from __future__ import annotations

import json
import os
import math
import re
import socket
import struct
import subprocess
import time

import pytest

from ebpftool import semconv as sc
from ebpftool.ui import human_bytes
from tests.conftest import EbpftoolProcess, kernel_has_btf, kernel_has_kprobes, kernel_has_tracepoint, run_ebpftool
from tests.netns import ADDR_A, ADDR_A2, ADDR_B, TwoZones

pytestmark = [pytest.mark.bpf, pytest.mark.timeout(180)]

# Zone b's /32 lies inside zone a's /24: the most specific CIDR must win.
ZONES_YAML = f"""\
price_per_gb: 0.01
zones:
  zone-a: {{region: test-region, cidrs: [10.201.0.0/24]}}
  zone-b: {{region: test-region, cidrs: [{ADDR_B}/32], price_per_gb: 0.02}}
"""

# Accepts one connection, optionally waits DELAY seconds, peeks at its first bytes (MSG_PEEK: read again
# below, not received twice), reads until EOF, answers REPLY bytes, then closes.
TCP_SERVER = r"""
import os, socket, sys, time
addr, port, reply = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((addr, port)); s.listen(1)
print(os.getpid(), s.getsockname()[1], flush=True)
c, _ = s.accept()
time.sleep(float(sys.argv[4]) if len(sys.argv) > 4 else 0)
c.recv(16, socket.MSG_PEEK)
n = 0
while True:
    d = c.recv(65536)
    if not d:
        break
    n += len(d)
c.sendall(b"r" * reply)
c.close()
print(n, flush=True)
"""

# Connects from SRC, sends SIZE bytes, optionally waits for a line on stdin
# (so the connection stays open), then reads the answer until EOF.
TCP_CLIENT = r"""
import os, socket, sys
src, dst, port, size, hold = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "hold"
print(os.getpid(), flush=True)
c = socket.create_connection((dst, port), timeout=20, source_address=(src, 0))
c.sendall(b"x" * size)
if hold:
    print("sent", flush=True)
    sys.stdin.readline()
c.shutdown(socket.SHUT_WR)
n = 0
while True:
    d = c.recv(65536)
    if not d:
        break
    n += len(d)
c.close()
print(n, flush=True)
"""

# Sends COUNT datagrams of SIZE bytes to PEER:PORT, by MODE: "sendto" names the peer in each call on an
# unbound socket; "sendmsg" names it in each sendmsg() from a socket bound to LOCAL; "sendto6" from an
# unbound IPv6 socket to the v4-mapped peer; "sendto4on6" from an IPv6 socket with a plain sockaddr_in
# (the kernel accepts it; Python's socket module cannot build it, so libc's sendto is called);
# "connect" sends on a connected socket.
UDP_SENDER = r"""
import ctypes, os, socket, struct, sys
print(os.getpid(), flush=True)
peer, port, count, size, mode = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
data = b"u" * size
s = socket.socket(socket.AF_INET6 if mode.startswith("sendto") and "6" in mode else socket.AF_INET, socket.SOCK_DGRAM)
sockaddr_in = struct.pack("=HH4s8x", socket.AF_INET, socket.htons(port), socket.inet_aton(peer))
libc = ctypes.CDLL(None, use_errno=True)
if mode == "connect":
    s.connect((peer, port))
elif mode == "sendmsg":
    s.bind((sys.argv[6], 0))
for _ in range(count):
    if mode == "connect":
        s.send(data)
    elif mode == "sendmsg":
        s.sendmsg([data], [], 0, (peer, port))
    elif mode == "sendto6":
        s.sendto(data, ("::ffff:" + peer, port))
    elif mode == "sendto4on6":
        assert libc.sendto(s.fileno(), data, len(data), 0, sockaddr_in, len(sockaddr_in)) == len(data), ctypes.get_errno()
    else:
        s.sendto(data, (peer, port))
"""

# A bound, unconnected UDP socket (so datagrams to it raise no ICMP port-unreachable, which would fail the
# connected sender's next send with ECONNREFUSED): peeks at the first datagram (MSG_PEEK: not received
# twice), reads until 2 s pass without a datagram, then prints its pid and the bytes it read.
UDP_SINK = r"""
import os, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
print("ready", flush=True)
n = 0
try:
    s.recv(65536, socket.MSG_PEEK)
    s.settimeout(2)
    while True:
        n += len(s.recv(65536))
except socket.timeout:
    pass
print(os.getpid(), n, flush=True)
"""

CROSS_BYTES, CROSS_REPLY = 3_000_123, 200_000
INTRA_BYTES = 1_000_000
LOOP_BYTES = 500_000
UDP_COUNT, UDP_SIZE = 100, 1000


def _pid_line(proc) -> int:
    return int(proc.stdout.readline().split()[0])


def _finish(proc, timeout: float = 30) -> str:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    return out


def _final(receiver, metric: str) -> list:
    """Each series' newest point. The series of a process that exited ends after its final exports
    (it is retired), so the newest export may no longer carry it."""
    with receiver._lock:
        pts = [p for p in receiver._points if p.metric == metric]
    newest: dict = {}
    for p in pts:
        key = tuple(sorted((k, repr(v)) for k, v in p.attributes.items()))
        if key not in newest or p.time_ns >= newest[key].time_ns:
            newest[key] = p
    return list(newest.values())


def _points(receiver, metric: str, **match) -> list:
    return [p for p in _final(receiver, metric) if all(p.attributes.get(k) == v for k, v in match.items())]


def _one(receiver, metric: str, **match):
    pts = _points(receiver, metric, **match)
    assert len(pts) == 1, f"{metric} {match}: {len(pts)} points: {[p.attributes for p in _final(receiver, metric)]}"
    return pts[0]


def _within_1pct(got: float, want: float) -> bool:
    return abs(got - want) <= 0.01 * want


@pytest.fixture
def zones():
    z = TwoZones.create()
    yield z
    z.remove()


NODE_NAME = "test-node"


@pytest.fixture
def pod_cgroup(pod_cgroups):
    """(Pod UID, cgroup directory) of a made-up Pod's container (tests/conftest.py pod_cgroups)."""
    uid, _container_id, directory = pod_cgroups()
    return uid, directory


def test_bytes_per_zone_pair_cost_rtt_spans_and_top_flows(zones, pod_cgroup, http_receiver, tmp_path):
    zone_file = tmp_path / "zones.yaml"
    zone_file.write_text(ZONES_YAML)
    r = http_receiver
    args = ["net", "--zones", str(zone_file), "--spans", "--flows", "5",
            "--otlp-endpoint", r.endpoint, "--interval", "1", "--no-ui"]
    pod_uid, pod_dir = pod_cgroup
    with EbpftoolProcess(args, env={"K8S_NODE_NAME": NODE_NAME}) as tool:
        # Cross-zone: a (10.201.0.1) -> b (10.201.0.2), and the answer back. The client runs in a Pod.
        server_b = zones.popen(zones.ns_b, TCP_SERVER, ADDR_B, "5301", str(CROSS_REPLY))
        server_b_pid = _pid_line(server_b)
        client_a = zones.popen(zones.ns_a, TCP_CLIENT, ADDR_A, ADDR_B, "5301", str(CROSS_BYTES), "go", cgroup=pod_dir)
        client_a_pid = _pid_line(client_a)
        # Intra-zone: 10.201.0.3 -> 10.201.0.1, both zone a; held open for the top-N export. The server
        # waits past two exports before its first read: established, but not yet any process's.
        server_a = zones.popen(zones.ns_a, TCP_SERVER, ADDR_A, "5302", "0", "2.5")
        server_a_pid = _pid_line(server_a)
        intra = zones.popen(zones.ns_a, TCP_CLIENT, ADDR_A2, ADDR_A, "5302", str(INTRA_BYTES), "hold")
        intra_pid = _pid_line(intra)
        # Loopback, in the root namespace.
        server_lo = zones.popen("", TCP_SERVER, "127.0.0.1", "0", "0")
        lo_port = server_lo.stdout.readline().split()[1]
        client_lo = zones.popen("", TCP_CLIENT, "127.0.0.1", "127.0.0.1", lo_port, str(LOOP_BYTES), "go")
        client_lo_pid = _pid_line(client_lo)
        # UDP from zone a to b: the peer named per call, or in the connected socket.
        sink = zones.popen(zones.ns_b, UDP_SINK, ADDR_B, "5303")
        assert sink.stdout.readline().strip() == "ready"
        udp = {mode: zones.popen(zones.ns_a, UDP_SENDER, ADDR_B, "5303", str(UDP_COUNT), str(UDP_SIZE), mode, ADDR_A)
               for mode in ("sendto", "sendmsg", "sendto6", "sendto4on6", "connect")}
        udp_pids = {mode: _pid_line(p) for mode, p in udp.items()}

        assert int(_finish(client_a).split()[-1]) == CROSS_REPLY
        assert int(_finish(server_b).split()[-1]) == CROSS_BYTES
        _finish(client_lo), _finish(server_lo), *map(_finish, udp.values())
        sink_pid, sink_bytes = map(int, _finish(sink).split()[-2:])
        assert intra.stdout.readline().strip() == "sent"

        # The open intra-zone connection shows up among the top flows, with its ports.
        def top_flow_seen():
            return any(p.attributes.get(sc.PROCESS_PID) == intra_pid and p.value == INTRA_BYTES
                       for p in r.latest(sc.EBPFTOOL_NETWORK_CONNECTION_IO))
        assert r.wait_for(top_flow_seen, timeout=15), r.latest(sc.EBPFTOOL_NETWORK_CONNECTION_IO)
        flow_pt = next(p for p in r.latest(sc.EBPFTOOL_NETWORK_CONNECTION_IO) if p.attributes[sc.PROCESS_PID] == intra_pid)
        assert flow_pt.attributes[sc.SOURCE_ADDRESS] == ADDR_A2 and flow_pt.attributes[sc.DESTINATION_ADDRESS] == ADDR_A
        assert flow_pt.attributes[sc.DESTINATION_PORT] == 5302

        intra.stdin.write("\n")
        intra.stdin.flush()
        assert _finish(intra).split()[-1] == "0"
        _finish(server_a)
        assert tool.stop() == 0, tool.stderr

    flow = sc.EBPFTOOL_NETWORK_FLOW_IO
    src, dst = sc.SOURCE_CLOUD_AVAILABILITY_ZONE, sc.DESTINATION_CLOUD_AVAILABILITY_ZONE
    pid, direction = sc.PROCESS_PID, sc.NETWORK_IO_DIRECTION

    # Cross-zone bytes, counted at the sender as egress from its zone, and at the receiver separately.
    sent = _one(r, flow, **{pid: client_a_pid, direction: "transmit"})
    assert _within_1pct(sent.value, CROSS_BYTES), sent.value
    assert sent.unit == "By" and sent.is_monotonic
    assert (sent.attributes[src], sent.attributes[dst]) == ("zone-a", "zone-b")
    assert sent.attributes[sc.NETWORK_FLOW_INTER_ZONE] is True
    assert sent.attributes[sc.SOURCE_CLOUD_REGION] == sent.attributes[sc.DESTINATION_CLOUD_REGION] == "test-region"
    assert sent.attributes[sc.NETWORK_TRANSPORT] == "tcp" and sent.attributes[sc.NETWORK_TYPE] == "ipv4"
    assert sent.attributes[sc.NETWORK_INTERFACE_DIRECTION] == "egress"
    assert sent.attributes[sc.NETWORK_LOCAL_ADDRESS] == ADDR_A
    got_back = _one(r, flow, **{pid: client_a_pid, direction: "receive"})
    assert _within_1pct(got_back.value, CROSS_REPLY)
    assert (got_back.attributes[src], got_back.attributes[dst]) == ("zone-b", "zone-a")
    server_sent = _one(r, flow, **{pid: server_b_pid, direction: "transmit"})
    assert _within_1pct(server_sent.value, CROSS_REPLY)
    assert (server_sent.attributes[src], server_sent.attributes[dst]) == ("zone-b", "zone-a")
    server_got = _one(r, flow, **{pid: server_b_pid, direction: "receive"})
    assert server_got.value == CROSS_BYTES  # exact: its peek is not counted
    assert (server_got.attributes[src], server_got.attributes[dst]) == ("zone-a", "zone-b")

    # Kubernetes: the node's name on the local end (both ends on loopback), the Pod from the process's cgroup.
    pod_of, node_of = sc.K8S_POD_UID_OF, sc.K8S_NODE_NAME_OF
    assert (sent.attributes[pod_of["source"]], sent.attributes[node_of["source"]]) == (pod_uid, NODE_NAME)
    assert (got_back.attributes[pod_of["destination"]], got_back.attributes[node_of["destination"]]) == (pod_uid, NODE_NAME)
    assert pod_of["destination"] not in sent.attributes and node_of["destination"] not in sent.attributes
    assert pod_of["source"] not in got_back.attributes and node_of["source"] not in got_back.attributes
    assert server_sent.attributes[node_of["source"]] == NODE_NAME and pod_of["source"] not in server_sent.attributes

    # Cost: zone a's bytes at the file's price, zone b's at its own.
    cost = sc.EBPFTOOL_NETWORK_CROSS_ZONE_COST
    assert math.isclose(_one(r, cost, **{pid: client_a_pid, direction: "transmit"}).value,
                        sent.value / 1e9 * 0.01, rel_tol=1e-9)
    assert math.isclose(_one(r, cost, **{pid: server_b_pid, direction: "transmit"}).value,
                        server_sent.value / 1e9 * 0.02, rel_tol=1e-9)

    # Intra-zone and loopback bytes are counted, but never as cross-zone, and cost nothing.
    intra_sent = _one(r, flow, **{pid: intra_pid, direction: "transmit"})
    assert _within_1pct(intra_sent.value, INTRA_BYTES)
    assert (intra_sent.attributes[src], intra_sent.attributes[dst]) == ("zone-a", "zone-a")
    assert intra_sent.attributes[sc.NETWORK_FLOW_INTER_ZONE] is False
    lo_sent = _one(r, flow, **{pid: client_lo_pid, direction: "transmit"})
    assert _within_1pct(lo_sent.value, LOOP_BYTES)
    assert (lo_sent.attributes[src], lo_sent.attributes[dst]) == ("local", "local")
    assert lo_sent.attributes[sc.NETWORK_FLOW_INTER_ZONE] is False
    assert lo_sent.attributes[node_of["source"]] == lo_sent.attributes[node_of["destination"]] == NODE_NAME
    assert not _points(r, cost, **{pid: intra_pid}) and not _points(r, cost, **{pid: client_lo_pid})

    # UDP: the destination comes from the socket when connected, else from each sendto()/sendmsg(); the
    # source zone from the bound address, and is this node's (unknown here: no --zone) for an unbound socket.
    expected_udp = {"connect": ("zone-a", ADDR_A), "sendmsg": ("zone-a", ADDR_A),
                    "sendto": ("unknown", None), "sendto6": ("unknown", None), "sendto4on6": ("unknown", None)}
    for mode, (source_zone, local_address) in expected_udp.items():
        udp_sent = _one(r, flow, **{pid: udp_pids[mode], direction: "transmit"})
        assert udp_sent.value == UDP_COUNT * UDP_SIZE, mode
        assert udp_sent.attributes[sc.NETWORK_TRANSPORT] == "udp", mode
        assert (udp_sent.attributes[src], udp_sent.attributes[dst]) == (source_zone, "zone-b"), mode
        assert udp_sent.attributes.get(sc.NETWORK_LOCAL_ADDRESS) == local_address, mode
        assert udp_sent.attributes[sc.NETWORK_FLOW_INTER_ZONE] is (source_zone == "zone-a"), mode
        priced = _points(r, cost, **{pid: udp_pids[mode], direction: "transmit"})
        assert [p.value for p in priced] == ([pytest.approx(UDP_COUNT * UDP_SIZE / 1e9 * 0.01, rel=1e-9)]
                                             if source_zone == "zone-a" else []), mode
    # What the unconnected sink received: its own end (bound to b's address) is known, the senders are not.
    assert sink_bytes >= UDP_COUNT * UDP_SIZE  # some datagrams may overflow its buffer; the rest is exact
    sink_got = _one(r, flow, **{pid: sink_pid, direction: "receive"})
    assert sink_got.value == sink_bytes and sink_got.attributes[sc.NETWORK_TRANSPORT] == "udp"
    assert (sink_got.attributes[src], sink_got.attributes[dst]) == ("unknown", "zone-b")
    assert sink_got.attributes[sc.NETWORK_LOCAL_ADDRESS] == ADDR_B

    # One connection, an RTT histogram for the zone pair, and one connection span. The connection whose
    # server read late is counted once, for that server: never for a process not yet known (pid 0).
    assert _one(r, sc.EBPFTOOL_NETWORK_TCP_CONNECTIONS, **{pid: client_a_pid}).value == 1
    assert _one(r, sc.EBPFTOOL_NETWORK_TCP_CONNECTIONS, **{pid: server_a_pid}).value == 1
    assert not _points(r, sc.EBPFTOOL_NETWORK_TCP_CONNECTIONS, **{pid: 0})
    # No kernel map ran full, and that is reported per map.
    assert {p.attributes[sc.EBPFTOOL_MAP]: p.value for p in r.latest(sc.EBPFTOOL_NETWORK_MAP_FULL)} == \
        {"flows": 0, "closed": 0, "rtt_peers": 0}
    rtt = _one(r, sc.EBPFTOOL_NETWORK_TCP_RTT, **{src: "zone-a", dst: "zone-b"})
    assert rtt.unit == "s" and rtt.count >= 1 and list(rtt.bounds) == list(sc.TCP_RTT_BUCKETS)
    assert 0 < rtt.sum / rtt.count < 1.0
    spans = [s for s in r.spans("tcp connection") if s.attributes.get(pid) == client_a_pid]
    assert len(spans) == 1, [s.attributes for s in r.spans("tcp connection")]
    span = spans[0]
    assert span.kind == "CLIENT" and span.end_ns > span.start_ns
    assert span.attributes[sc.NETWORK_PEER_ADDRESS] == ADDR_B and span.attributes[sc.NETWORK_PEER_PORT] == 5301
    assert span.attributes[sc.EBPFTOOL_NETWORK_CONNECTION_SENT_BYTES] == sent.value
    assert span.attributes[sc.EBPFTOOL_NETWORK_CONNECTION_RECEIVED_BYTES] == got_back.value
    assert span.attributes[dst] == "zone-b"
    assert span.attributes[pod_of["source"]] == pod_uid

    # What observability itself sent is reported too.
    assert any(p.value > 0 for p in r.latest(sc.EBPFTOOL_EXPORT_BYTES))
    assert "bytes sent across zones" in tool.stdout
    # With struct sock offsets from the kernel's BTF the raw path is taken; without BTF, the tracepoints;
    # before Linux 6.3 (no sock_recv_length), kprobes
    hooks = ("raw tracepoints" if kernel_has_btf() else "tracepoints") if kernel_has_tracepoint("sock:sock_recv_length") \
        else r"kprobes \(bytes\) \+ raw tcp_probe"
    assert re.search(rf"byte and RTT hooks\s*│\s*{hooks}\s*│", tool.stdout), tool.stdout


# Echoes the pings ("p...") it reads on one connection until EOF; other bytes get no answer.
ECHO_SERVER = r"""
import os, socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(1)
print(os.getpid(), flush=True)
c, _ = s.accept()
while d := c.recv(65536):
    if d.startswith(b"p"):
        c.sendall(d)
"""

# Connects and exchanges a little, says "connected", waits for a line on stdin (the tracer starts then),
# ping-pongs every 15 ms and sends 30 unanswered messages, then prints its port, the kernel's smoothed RTT (TCP_INFO tcpi_rtt, us) and the
# segments it sent and received since the line (tcpi_segs_out / tcpi_segs_in), and waits for another line
# before closing.
PING_CLIENT = r"""
import os, socket, struct, sys, time
src, dst, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
print(os.getpid(), flush=True)
c = socket.create_connection((dst, port), timeout=20, source_address=(src, 0))
c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
def ping():
    c.sendall(b"p" * 100)
    got = 0
    while got < 100:
        got += len(c.recv(100 - got))
for _ in range(20):  # segments the tracer must not count: they precede it
    ping()
def info():  # struct tcp_info: tcpi_rtt after 8 bytes and 15 u32s; tcpi_segs_out/in after 24 u32s and 4 u64s
    raw = c.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 144)
    return struct.unpack_from("I", raw, 68)[0], struct.unpack_from("II", raw, 136)
print("connected", flush=True)
sys.stdin.readline()
_, (out0, in0) = info()
for _ in range(40):
    ping()
    time.sleep(0.015)
for _ in range(30):  # one-way: more segments out than in
    c.sendall(b"q" * 100)
    time.sleep(0.015)
rtt_us, (out1, in1) = info()
print(c.getsockname()[1], rtt_us, out1 - out0, in1 - in0, flush=True)
sys.stdin.readline()
c.close()
"""


def test_connection_open_before_the_tracer_gets_addresses_and_rtt_and_segments_that_match_tcp_info(zones, http_receiver,
                                                                                           tmp_path):
    """Neither end of this connection is seen connecting: its flow gets its addresses from the socket
    itself at the first segment it receives (tcp_probe), and the smoothed RTT and segment counts read
    there agree with what the kernel tells the client through TCP_INFO."""
    zone_file = tmp_path / "zones.yaml"
    zone_file.write_text(ZONES_YAML)
    r = http_receiver
    server = zones.popen(zones.ns_b, ECHO_SERVER, ADDR_B, "5311")
    _pid_line(server)
    client = zones.popen(zones.ns_a, PING_CLIENT, ADDR_A, ADDR_B, "5311")
    client_pid = _pid_line(client)
    try:
        assert client.stdout.readline().strip() == "connected"
        args = ["net", "--zones", str(zone_file), "--flows", "5", "--otlp-endpoint", r.endpoint, "--interval", "1",
                "--no-ui"]
        with EbpftoolProcess(args) as tool:
            client.stdin.write("\n")
            client.stdin.flush()
            client_port, tcpi_rtt_us, segs_out, segs_in = map(int, client.stdout.readline().split())

            def client_flow():
                return _points(r, sc.EBPFTOOL_NETWORK_CONNECTION_IO, **{sc.PROCESS_PID: client_pid,
                                                                          sc.NETWORK_IO_DIRECTION: "transmit"})
            assert r.wait_for(lambda: client_flow() and _points(r, sc.EBPFTOOL_NETWORK_TCP_RTT), timeout=15), \
                r.latest(sc.EBPFTOOL_NETWORK_CONNECTION_IO)
            attrs = client_flow()[0].attributes
            assert (attrs[sc.SOURCE_ADDRESS], attrs[sc.SOURCE_PORT]) == (ADDR_A, client_port)
            assert (attrs[sc.DESTINATION_ADDRESS], attrs[sc.DESTINATION_PORT]) == (ADDR_B, 5311)
            client.stdin.write("\n")
            client.stdin.flush()
            _finish(client)
            # Closed: its segment counts were read from the socket a last time at its destruction.
            assert r.wait_for(lambda: _points(r, sc.EBPFTOOL_NETWORK_TCP_SEGMENTS, **{sc.PROCESS_PID: client_pid,
                                                                                   sc.NETWORK_IO_DIRECTION: "receive"}),
                              timeout=15)
            assert tool.stop() == 0, tool.stderr
        src, dst = sc.SOURCE_CLOUD_AVAILABILITY_ZONE, sc.DESTINATION_CLOUD_AVAILABILITY_ZONE
        rtt = _one(r, sc.EBPFTOOL_NETWORK_TCP_RTT, **{src: "zone-a", dst: "zone-b"})
        # The samples (at most one per 10 ms of the 40 pings) bracket the kernel's own figure; a field read
        # at a wrong offset, or srtt_us without its 3 fraction bits removed (8x), would not.
        assert rtt.count >= 5
        assert rtt.min / 2 <= tcpi_rtt_us / 1e6 <= rtt.max * 2, (rtt.min, rtt.max, tcpi_rtt_us)
        assert rtt.max < 0.05
        # Segments since the tracer first saw the flow (its first ping): the pings' as TCP_INFO counted them,
        # plus the close (FIN and ACKs: at most 3 more each way).
        out_pt = _one(r, sc.EBPFTOOL_NETWORK_TCP_SEGMENTS, **{sc.PROCESS_PID: client_pid, sc.NETWORK_IO_DIRECTION: "transmit"})
        in_pt = _one(r, sc.EBPFTOOL_NETWORK_TCP_SEGMENTS, **{sc.PROCESS_PID: client_pid, sc.NETWORK_IO_DIRECTION: "receive"})
        assert segs_out >= 70 and segs_out <= out_pt.value <= segs_out + 3, (out_pt.value, segs_out)
        assert segs_in >= 40 and segs_in <= in_pt.value <= segs_in + 3, (in_pt.value, segs_in)
        assert (out_pt.attributes[src], out_pt.attributes[dst]) == ("zone-a", "zone-b")
    finally:
        for proc in (client, server):
            proc.kill()
            proc.wait()


# Connects, says "connected", then sends 100 bytes every 20 ms for SECONDS (no Nagle: one segment each). When
# everything is acknowledged it prints the kernel's count of retransmitted segments (TCP_INFO
# tcpi_total_retrans, after 25 u32s) and closes.
TRICKLE_CLIENT = r"""
import os, socket, struct, sys, time
src, dst, port, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
print(os.getpid(), flush=True)
c = socket.create_connection((dst, port), timeout=20, source_address=(src, 0))
c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
print("connected", flush=True)
end = time.monotonic() + seconds
while time.monotonic() < end:
    c.sendall(b"t" * 100)
    time.sleep(0.02)
def info():
    raw = c.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    return struct.unpack_from("I", raw, 24)[0], struct.unpack_from("I", raw, 100)[0]  # tcpi_unacked, tcpi_total_retrans
deadline = time.monotonic() + 20
while info()[0] and time.monotonic() < deadline:
    time.sleep(0.05)
print(info()[1], flush=True)
c.close()
"""


def test_retransmits_are_counted_for_the_sending_process_and_zone_pair(zones, http_receiver, tmp_path):
    """Under a trickle of segments from zone a, zone b's link goes down for a while (the kernel holds the
    packets; TCP's attempts to send them again fail), then b's answers (its ACKs) are dropped for a while
    (the sender sends its segments again). The tracer counts those retransmitted segments for the sender,
    and not the failed attempts: the kernel's own count."""
    zone_file = tmp_path / "zones.yaml"
    zone_file.write_text(ZONES_YAML)
    r = http_receiver
    args = ["net", "--zones", str(zone_file), "--otlp-endpoint", r.endpoint, "--interval", "1", "--ui"]
    with EbpftoolProcess(args) as tool:
        server = zones.popen(zones.ns_b, TCP_SERVER, ADDR_B, "5321", "0")
        _pid_line(server)
        client = zones.popen(zones.ns_a, TRICKLE_CLIENT, ADDR_A, ADDR_B, "5321", "5")
        client_pid = _pid_line(client)
        try:
            assert client.stdout.readline().strip() == "connected"
            time.sleep(0.5)
            zones.set_link_b(False)  # attempts that fail (EBUSY): the tracepoint fires, nothing is retransmitted
            time.sleep(0.8)          # longer than the 200 ms minimum retransmission timeout
            zones.set_link_b(True)
            time.sleep(1.5)          # the timeout settles (the held packets' late ACKs raised it)
            zones.drop_b_to(ADDR_A, True)
            time.sleep(1.5)
            zones.drop_b_to(ADDR_A, False)
            total_retrans = int(_finish(client).split()[-1])
            _finish(server)
        finally:
            zones.set_link_b(True)
            for proc in (client, server):
                proc.kill()
                proc.wait()

        def counted():
            return _points(r, sc.EBPFTOOL_NETWORK_TCP_RETRANSMITS, **{sc.PROCESS_PID: client_pid})
        assert r.wait_for(counted, timeout=15), r.latest(sc.EBPFTOOL_NETWORK_TCP_RETRANSMITS)
        assert tool.stop() == 0, tool.stderr
    retrans = _one(r, sc.EBPFTOOL_NETWORK_TCP_RETRANSMITS, **{sc.PROCESS_PID: client_pid})
    # The socket's own count (tcp_sock.total_retrans, read at its destruction), as TCP_INFO gives it.
    assert total_retrans >= 1 and retrans.value == total_retrans, (retrans.value, total_retrans)
    assert retrans.unit == "{segment}" and retrans.is_monotonic
    attrs = retrans.attributes
    assert (attrs[sc.SOURCE_CLOUD_AVAILABILITY_ZONE], attrs[sc.DESTINATION_CLOUD_AVAILABILITY_ZONE]) == ("zone-a", "zone-b")
    assert attrs[sc.NETWORK_FLOW_INTER_ZONE] is True and attrs[sc.NETWORK_LOCAL_ADDRESS] == ADDR_A

    # The live table (--ui; drawn once at the end when stdout is not a terminal): the zone pair's row has
    # the sender's bytes, their cost at zone a's price, the process and the same retransmits.
    sent = _one(r, sc.EBPFTOOL_NETWORK_FLOW_IO, **{sc.PROCESS_PID: client_pid, sc.NETWORK_IO_DIRECTION: "transmit"})
    assert "ebpftool net: bytes sent, by zone pair" in tool.stdout, tool.stdout
    rows = [line for line in tool.stdout.splitlines() if line.startswith("zone-a -> zone-b")]
    assert rows, tool.stdout
    cells = re.split(r"\s{2,}", rows[-1].strip())  # columns: two blanks or more apart (200 columns: all of them)
    assert cells[0] == "zone-a -> zone-b" and cells[8] == str(retrans.value), cells
    assert cells[2] == human_bytes(sent.value) and cells[3] == f"{sent.value / 1e9 * 0.01:.6f}", (cells, sent.value)
    assert cells[9].startswith("python"), cells  # (cells 4, 5: $/hour, $/month at the last interval's rate)
    assert re.fullmatch(r"[\d.]+(µs|ms)|-", cells[6]), cells  # RTT p50 (7: p99), of the last interval's samples


@pytest.mark.parametrize("content, phrase", [
    ("zones:\n  zone-a: [10.0.0.300/24]\n", "is not a valid CIDR"),
    ("zones: [oops\n", "not valid YAML"),
    ("zones:\n  a: [10.0.0.0/24]\n  b: [10.0.0.0/24]\n", "is also listed in zone 'a'"),
])
def test_malformed_zone_file_is_one_clear_error(tmp_path, content, phrase):
    path = tmp_path / "zones.yaml"
    path.write_text(content)
    res = run_ebpftool(["net", "--zones", str(path), "--duration", "1", "--no-ui"], timeout=60)
    assert res.returncode == 1
    assert phrase in res.stderr and str(path) in res.stderr.replace("\n", "")
    assert "Traceback" not in res.stderr + res.stdout


# --- kernels without sock_send_length / sock_recv_length (before 6.3) -----------------------------------------
@pytest.mark.skipif(not kernel_has_btf(), reason="the kprobe fallback reads struct sock at offsets from BTF; no BTF here")
def test_kprobe_fallback_programs_pass_the_verifier():
    """Whether or not this kernel has kprobes (the fallback runs only where they are and the socket tracepoints
    are not), its programs are compiled and each is loaded through the kernel's verifier as a kprobe program."""
    from ebpftool.core.bpf import import_bcc
    from ebpftool.core.btf import sock_field_offsets
    from ebpftool.tracers.net import KPROBE_FUNCTIONS, OPTIONAL_TRACEPOINTS, NetOptions, net_program

    prog = net_program(NetOptions(), {tp: True for tp in OPTIONAL_TRACEPOINTS},
                       {"NET_RAW_IO": 0, "NET_KPROBE_IO": 1, "NET_RECV_FLAGS_PARM": 4, **sock_field_offsets()})
    assert prog.defines["NET_UDP_DEST"] == 1  # the sendto()/sendmsg() destination read is verified too
    prog.load()
    try:
        bpf = import_bcc().BPF
        names = {name for _f, entry, ret, _req in KPROBE_FUNCTIONS for name in (entry, ret)}
        for name in sorted(names):
            assert prog.bpf.load_func(name, bpf.KPROBE).fd > 0, name
    finally:
        prog.close()


@pytest.mark.parametrize("kprobes", [False, True])
def test_missing_socket_tracepoints_take_the_kprobe_path_or_say_why_not(monkeypatch, kprobes):
    """As on a 5.x kernel: the sock_*_length tracepoints are hidden from the tracer. Without kprobes one
    sentence says so; with kprobes claimed, the fallback loads and attaches where the kernel really has
    kprobes, and where it has none its refusal to attach is again one sentence."""
    from ebpftool.core.bpf import BpfProgram
    from ebpftool.errors import EbpftoolError
    from ebpftool.export.pipeline import Telemetry
    from ebpftool.export.otel import build_resource
    from ebpftool.tracers.net import IO_TRACEPOINTS, NetTracer

    if kprobes and not kernel_has_btf():
        pytest.skip("the kprobe fallback reads struct sock at offsets from BTF; no BTF here")
    real_exists = BpfProgram.tracepoint_exists
    monkeypatch.setattr(BpfProgram, "tracepoint_exists", staticmethod(lambda tp: tp not in IO_TRACEPOINTS and real_exists(tp)))
    monkeypatch.setattr(BpfProgram, "kprobes_available", staticmethod(lambda: kprobes))
    telemetry = Telemetry(build_resource(environ={}), [])
    tracer = NetTracer(telemetry)
    error = None
    try:
        tracer.start()
    except EbpftoolError as exc:
        error = str(exc)
    finally:
        tracer.stop()
        telemetry.shutdown()
    if kprobes and kernel_has_kprobes():
        assert error is None and tracer.io_hooks.startswith("kprobes"), error
        return
    assert error is not None and error.startswith(
        "this kernel lacks the tracepoint(s) sock:sock_send_length, sock:sock_recv_length"), error
    if kprobes:
        assert "the kprobe fallback could not attach to tcp_sendmsg" in error
    else:
        assert error.endswith("and has no kprobes for the fallback")


def test_a_raw_socket_opened_with_ipproto_tcp_gets_no_flow_entry():
    """Crafted TCP segments from a raw socket (nmap, hping) are not a connection: no state change or destroy
    would ever fold a flow entry made for them, so none is made (bpftool reads the kernel's map)."""
    segment = struct.pack("!HHIIBBHHH", 40000, 9, 1, 0, 5 << 4, 0x02, 1024, 0, 0) + b"x" * 20
    with EbpftoolProcess(["net", "--interval", "1", "--no-ui"]) as tool:
        with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP) as raw:
            for _ in range(5):
                raw.sendto(segment, ("127.0.0.1", 0))
        time.sleep(0.3)
        dump = subprocess.run(["bpftool", "map", "dump", "name", "flows", "-j"], capture_output=True, text=True,
                              check=True).stdout
        assert tool.stop() == 0, tool.stderr
    sent = [e["formatted"]["value"]["tx_bytes"] for e in json.loads(dump or "[]") if "formatted" in e]
    assert 5 * len(segment) not in sent, sent


def test_a_flow_closed_long_ago_and_never_destroyed_is_folded_once(monkeypatch):
    """A socket the peer reset is in CLOSE while its process keeps the descriptor: no destroy comes. Once it
    has been closed STALE_CLOSE_SECONDS (0 here) the tracer has the kernel fold it (fold_stale_flow) and its
    slot is free; the destroy at the descriptor's close then finds nothing, so its bytes count once."""
    from ebpftool.export.otel import build_resource
    from ebpftool.export.pipeline import Telemetry
    from ebpftool.tracers.net import NetTracer
    from ebpftool.tracers.net import tracer as net_tracer_module

    def received() -> int:
        return sum(p.value for p in tracer.collect() if p.name == sc.EBPFTOOL_NETWORK_FLOW_IO
                   and p.attributes.get("process.pid") == os.getpid()
                   and p.attributes.get("network.io.direction") == "receive")

    def server_flows() -> list:
        table = tracer.prog["flows"]
        return [f for f in (table[table.Key(s)] for s in tracer.prog.used_slots("flow_used"))
                if f.sk > 1 and f.sport == port]

    monkeypatch.setattr(net_tracer_module, "STALE_CLOSE_SECONDS", 0)
    telemetry = Telemetry(build_resource(environ={}), [])
    tracer = NetTracer(telemetry)
    tracer.start()
    try:
        with socket.create_server(("127.0.0.1", 0)) as listener:
            port = listener.getsockname()[1]
            client = socket.create_connection(("127.0.0.1", port))
            server, _ = listener.accept()
            client.sendall(b"x" * 1000)
            got = b""
            while len(got) < 1000:
                got += server.recv(4096)
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            client.close()                          # a reset: the server's socket goes to CLOSE
            with pytest.raises(ConnectionResetError):
                server.recv(4096)
            (flow,) = server_flows()
            assert flow.end_ns and flow.rx_bytes == 1000
            assert received() == 1000              # open: counted from the table; noted as stale
            tracer.tick()                          # folded by the kernel, its slot free
            assert server_flows() == []
            assert received() == 1000              # closed now: from the aggregate, once
            server.close()                         # the destroy, which finds no flow
            assert received() == 1000
    finally:
        tracer.stop()
        telemetry.shutdown()
