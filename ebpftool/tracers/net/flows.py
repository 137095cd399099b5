"""What the net tracer exports, keyed: flows and closed aggregates grouped by zone pair, local address and
process, and the attributes of those groups (zones, direction, the Kubernetes ends this node knows)."""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Iterable

from ebpftool.core.cstruct import load_header
from ebpftool.core.netaddr import IPAddress, ip_from_bytes
from ebpftool import semconv as sc
from ebpftool.export.model import MetricPoint, counter
from ebpftool.tracers.net.zones import LOCAL_ZONE, Zone, ZoneMap, cost_usd, is_inter_zone, to_address

STRUCTS, DEFINES = load_header("net/net.h")
TRANSPORTS = {DEFINES["NET_PROTO_TCP"]: "tcp", DEFINES["NET_PROTO_UDP"]: "udp"}
NET_TYPES = {DEFINES["NET_AF_INET"]: "ipv4", DEFINES["NET_AF_INET6"]: "ipv6"}


def address_from_bytes(family: int, raw: Iterable[int]) -> IPAddress | None:
    """The address in a NET_ADDR_LEN byte field (IPv4 in the first 4 bytes); None if unset."""
    ip = ip_from_bytes(bytes(raw), family)
    return None if ip is None or ip.is_unspecified else ip


@dataclass(frozen=True)
class FlowGroup:
    """What the default export is keyed by: the zone pair, the local address, the process
    (and the Pod it runs in, which the process determines)."""

    local_zone: Zone
    remote_zone: Zone
    local_address: str | None
    transport: str
    network_type: str
    pid: int
    executable: str
    pod_uid: str | None = None


@dataclass(frozen=True)
class ProcessIdentity:
    executable: str
    pod_uid: str | None


@dataclass
class Totals:
    tx_bytes: int = 0
    rx_bytes: int = 0
    retransmits: int = 0
    connections: int = 0
    tx_segments: int = 0
    rx_segments: int = 0

    def add(self, other: Any) -> None:
        """Add a Totals or a struct agg_value (same field names)."""
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + int(getattr(other, f.name)))

    @classmethod
    def of_flow(cls, f: Any) -> "Totals":
        """The figures of one open socket (struct flow)."""
        return cls(int(f.tx_bytes), int(f.rx_bytes), int(f.retransmits), int(f.established), int(f.segs_out),
                   int(f.segs_in))

    def high_water(self, other: "Totals") -> None:
        """Keep the larger of each figure: cumulative counters never go back (see NetTracer.collect)."""
        for f in fields(self):
            setattr(self, f.name, max(getattr(self, f.name), getattr(other, f.name)))


def group_of(zones: ZoneMap, family: int, protocol: int, laddr, raddr, pid: int,
             process: ProcessIdentity) -> FlowGroup:
    """The export key of one flow (struct flow) or closed aggregate (struct agg_key)."""
    local = address_from_bytes(family, laddr)
    remote = address_from_bytes(family, raddr)
    lz, rz = zones.flow_zones(local, remote)
    return FlowGroup(lz, rz, str(to_address(local)) if local is not None else None,
                     TRANSPORTS.get(protocol, str(protocol)), NET_TYPES.get(family, str(family)),
                     int(pid), process.executable, process.pod_uid)


def k8s_attrs(g: FlowGroup, transmit: bool, node_name: str | None) -> dict[str, str]:
    """The flow proposal's source.k8s.* / destination.k8s.* that this node knows without the API
    server: its own node name, and the Pod of the local process (from its cgroup). The local end is
    the source of sent bytes and the destination of received ones; on loopback both ends are this node."""
    local, peer = ("source", "destination") if transmit else ("destination", "source")
    attrs: dict[str, str] = {}
    if node_name:
        attrs[sc.K8S_NODE_NAME_OF[local]] = node_name
        if g.local_zone.name == LOCAL_ZONE.name:
            attrs[sc.K8S_NODE_NAME_OF[peer]] = node_name
    if g.pod_uid:
        attrs[sc.K8S_POD_UID_OF[local]] = g.pod_uid
    return attrs


def zone_attrs(source: Zone, destination: Zone) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        sc.SOURCE_CLOUD_AVAILABILITY_ZONE: source.name,
        sc.DESTINATION_CLOUD_AVAILABILITY_ZONE: destination.name,
        sc.NETWORK_FLOW_INTER_ZONE: is_inter_zone(source, destination),
    }
    if source.region:
        attrs[sc.SOURCE_CLOUD_REGION] = source.region
    if destination.region:
        attrs[sc.DESTINATION_CLOUD_REGION] = destination.region
    return attrs


def direction_attrs(transmit: bool) -> dict[str, str]:
    """Both the accepted attribute (network.io.direction) and the flow proposal's (network.interface.direction)."""
    return {sc.NETWORK_IO_DIRECTION: "transmit" if transmit else "receive",
            sc.NETWORK_INTERFACE_DIRECTION: "egress" if transmit else "ingress"}


def group_points(zones: ZoneMap, groups: dict[FlowGroup, Totals], node_name: str | None = None) -> list[MetricPoint]:
    """Cumulative points of the default export (per zone pair, local address and process)."""
    points: list[MetricPoint] = []
    for g, t in groups.items():
        base: dict[str, Any] = {sc.NETWORK_TRANSPORT: g.transport, sc.NETWORK_TYPE: g.network_type,
                                sc.PROCESS_PID: g.pid, sc.PROCESS_EXECUTABLE_NAME: g.executable}
        if g.local_address:
            base[sc.NETWORK_LOCAL_ADDRESS] = g.local_address
        for transmit, nbytes in ((True, t.tx_bytes), (False, t.rx_bytes)):
            if not nbytes:
                continue
            src, dst = (g.local_zone, g.remote_zone) if transmit else (g.remote_zone, g.local_zone)
            attrs = {**base, **zone_attrs(src, dst), **direction_attrs(transmit), **k8s_attrs(g, transmit, node_name)}
            points.append(counter(sc.EBPFTOOL_NETWORK_FLOW_IO, "By",
                                  "Bytes sent (transmit, counted at the sender) or received by this node, "
                                  "per zone pair and process", nbytes, attrs))
            if is_inter_zone(src, dst):
                points.append(counter(sc.EBPFTOOL_NETWORK_CROSS_ZONE_COST, "USD",
                                      "Estimated cost of the cross-zone bytes (price per GB and direction)",
                                      cost_usd(nbytes, src, dst, zones), attrs))
        if g.transport == "tcp":
            for transmit, segments in ((True, t.tx_segments), (False, t.rx_segments)):
                if segments:
                    src, dst = (g.local_zone, g.remote_zone) if transmit else (g.remote_zone, g.local_zone)
                    points.append(counter(sc.EBPFTOOL_NETWORK_TCP_SEGMENTS, "{segment}",
                                          "TCP segments sent or received (pure ACKs and retransmits included)",
                                          segments, {**base, **zone_attrs(src, dst), **direction_attrs(transmit),
                                                     **k8s_attrs(g, transmit, node_name)}))
            attrs = {**base, **zone_attrs(g.local_zone, g.remote_zone), **k8s_attrs(g, True, node_name)}
            if t.retransmits:
                points.append(counter(sc.EBPFTOOL_NETWORK_TCP_RETRANSMITS, "{segment}",
                                      "TCP segments retransmitted", t.retransmits, attrs))
            if t.connections:
                points.append(counter(sc.EBPFTOOL_NETWORK_TCP_CONNECTIONS, "{connection}",
                                      "TCP connections established", t.connections, attrs))
    return points
