"""Availability zones of IP addresses: the zone file, and which zone pair a flow's bytes cross.

Pure functions and data only (no BPF): the kernel sums bytes per address pair,
this module turns addresses into zones in user space, once per distinct pair.

Zone file (YAML), either form:

    zones:                              # or these zone entries at the top level
      us-east-1a: [10.0.0.0/20]         # zone -> list of CIDRs
      us-east-1b: {region: us-east-1, cidrs: [10.0.16.0/20], price_per_gb: 0.02}
    price_per_gb: 0.01                  # optional, USD per GB (10^9 bytes) per direction

Lookup rules:
- loopback addresses (127.0.0.0/8, ::1) are `local`, and so is traffic from an
  address to itself: bytes a node sends to itself are never cross-zone;
- otherwise the most specific listed CIDR wins (10.0.0.0/16 in zone a and
  10.0.5.0/24 in zone b put 10.0.5.7 in b); one CIDR in two zones is an error;
- an unlisted public address is `external` (internet egress), an unlisted
  private one `unknown`; an unlisted local address is in the node's own zone
  when that is known (--zone / $EBPFTOOL_ZONE).
"""
from __future__ import annotations

import ipaddress
import math
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping, Sequence, Union

from ebpftool.errors import EbpftoolError

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

DEFAULT_PRICE_PER_GB = 0.01  # USD per GB and direction: the common inter-AZ rate
BYTES_PER_GB = 10**9
LOCAL = "local"
EXTERNAL = "external"
UNKNOWN = "unknown"
RESERVED_NAMES = (LOCAL, EXTERNAL, UNKNOWN)
_TOP_KEYS = {"zones", "price_per_gb"}
_ZONE_KEYS = {"cidrs", "region", "price_per_gb"}


class ZoneFileError(EbpftoolError):
    """The zone file cannot be used; the message names the file and the entry."""


@dataclass(frozen=True)
class Zone:
    name: str
    region: str | None = None
    price_per_gb: float | None = None  # overrides the map's price for bytes leaving this zone

    @property
    def is_named(self) -> bool:
        """A real zone (listed, or the node's own), not local/external/unknown."""
        return self.name not in RESERVED_NAMES


LOCAL_ZONE = Zone(LOCAL)
EXTERNAL_ZONE = Zone(EXTERNAL)
UNKNOWN_ZONE = Zone(UNKNOWN)


def to_address(addr: IPAddress | str) -> IPAddress:
    """An address, with IPv4-mapped IPv6 (::ffff:a.b.c.d) turned into plain IPv4."""
    ip = ipaddress.ip_address(addr) if isinstance(addr, str) else addr
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


class ZoneMap:
    """CIDR -> zone with most-specific-match lookup, plus prices and the node's own zone."""

    def __init__(
        self,
        entries: Sequence[tuple[IPNetwork, Zone]] = (),
        *,
        price_per_gb: float = DEFAULT_PRICE_PER_GB,
        node_zone: Zone | None = None,
    ) -> None:
        # Longest prefix first, so the first match is the most specific one.
        self.entries = sorted(entries, key=lambda e: e[0].prefixlen, reverse=True)
        self.price_per_gb = price_per_gb
        self.node_zone = node_zone
        self.zones = {z.name: z for _n, z in self.entries}
        self.zone_of = lru_cache(maxsize=65536)(self._zone_of)

    def _zone_of(self, addr: IPAddress) -> Zone:
        """The zone of a (remote) address: local, listed, external or unknown."""
        ip = to_address(addr)
        if ip.is_loopback:
            return LOCAL_ZONE
        for net, zone in self.entries:
            if ip.version == net.version and ip in net:
                return zone
        return EXTERNAL_ZONE if ip.is_global else UNKNOWN_ZONE

    def local_zone_of(self, addr: IPAddress) -> Zone:
        """The zone of one of this node's addresses: unlisted ones are in the node's zone if known."""
        zone = self.zone_of(to_address(addr))
        if zone.is_named or zone is LOCAL_ZONE or self.node_zone is None:
            return zone
        return self.node_zone

    def flow_zones(self, local: IPAddress | None, remote: IPAddress | None) -> tuple[Zone, Zone]:
        """(zone of the local end, zone of the remote end) of a flow; addresses may be unknown.
        An unknown local address (a socket not bound to one, e.g. UDP sent with sendto()) is this
        node: the node's zone when known. An unknown remote address (UDP received on an unconnected
        socket) is an unknown zone, unless the local end is loopback, which only this node can reach."""
        local = to_address(local) if local is not None else None
        remote = to_address(remote) if remote is not None else None
        if (local is not None and (local.is_loopback or local == remote)) or (remote is not None and remote.is_loopback):
            return LOCAL_ZONE, LOCAL_ZONE
        local_zone = self.local_zone_of(local) if local is not None else (self.node_zone or UNKNOWN_ZONE)
        return local_zone, self.zone_of(remote) if remote is not None else UNKNOWN_ZONE

    def price_for(self, source: Zone) -> float:
        """USD per GB for bytes leaving `source`."""
        return source.price_per_gb if source.price_per_gb is not None else self.price_per_gb


def is_inter_zone(source: Zone, destination: Zone) -> bool:
    """True when both ends are in known zones and the zones differ (this is what is billed)."""
    return source.is_named and destination.is_named and source.name != destination.name


def cost_usd(nbytes: float, source: Zone, destination: Zone, zones: ZoneMap) -> float:
    """Estimated cost of bytes sent from source to destination: zero unless inter-zone."""
    if not is_inter_zone(source, destination):
        return 0.0
    return nbytes / BYTES_PER_GB * zones.price_for(source)


# --- loading ------------------------------------------------------------------------
def _price(where: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ZoneFileError(f"{where}: price_per_gb must be a number >= 0, not {value!r}")
    return float(value)


def _network(where: str, text: Any) -> IPNetwork:
    if not isinstance(text, str):
        raise ZoneFileError(f"{where}: {text!r} is not a CIDR string such as 10.0.0.0/20")
    try:
        return ipaddress.ip_network(text.strip(), strict=True)
    except ValueError as exc:
        raise ZoneFileError(f"{where}: '{text}' is not a valid CIDR ({exc})") from None


def parse_zones(data: Any, source: str = "zone file") -> tuple[list[tuple[IPNetwork, Zone]], float | None]:
    """(entries, file-wide price or None) from a parsed YAML document; ZoneFileError says what is wrong."""
    if not isinstance(data, Mapping) or not data:
        raise ZoneFileError(f"{source}: expected a mapping of zone name to a list of CIDRs")
    price = None
    zones_part: Any = data
    if "zones" in data:
        unknown = set(data) - _TOP_KEYS
        if unknown:
            raise ZoneFileError(f"{source}: unknown top-level key(s) {sorted(map(str, unknown))}; "
                                f"expected {sorted(_TOP_KEYS)}")
        zones_part = data["zones"]
        if "price_per_gb" in data:
            price = _price(source, data["price_per_gb"])
        if not isinstance(zones_part, Mapping) or not zones_part:
            raise ZoneFileError(f"{source}: 'zones' must map zone names to lists of CIDRs")
    elif "price_per_gb" in data:
        raise ZoneFileError(f"{source}: price_per_gb at the top level needs the zones under a 'zones:' key")
    entries: list[tuple[IPNetwork, Zone]] = []
    owner: dict[IPNetwork, str] = {}
    for name, spec in zones_part.items():
        if not isinstance(name, str) or not name.strip():
            raise ZoneFileError(f"{source}: zone name {name!r} is not a non-empty string")
        where = f"{source}: zone '{name}'"
        if name in RESERVED_NAMES:
            raise ZoneFileError(f"{where}: the names {', '.join(RESERVED_NAMES)} are reserved")
        region = zone_price = None
        if isinstance(spec, Mapping):
            unknown = set(spec) - _ZONE_KEYS
            if unknown:
                raise ZoneFileError(f"{where}: unknown key(s) {sorted(map(str, unknown))}; expected {sorted(_ZONE_KEYS)}")
            cidrs = spec.get("cidrs")
            if spec.get("region") is not None:
                if not isinstance(spec["region"], str):
                    raise ZoneFileError(f"{where}: region must be a string")
                region = spec["region"]
            if "price_per_gb" in spec:
                zone_price = _price(where, spec["price_per_gb"])
        else:
            cidrs = spec
        if isinstance(cidrs, str):
            cidrs = [cidrs]
        if not isinstance(cidrs, list) or not cidrs:
            raise ZoneFileError(f"{where}: expected a non-empty list of CIDRs (or {{cidrs: [...], region: ...}})")
        zone = Zone(name, region, zone_price)
        for text in cidrs:
            net = _network(where, text)
            if net in owner and owner[net] != name:
                raise ZoneFileError(f"{where}: {net} is also listed in zone '{owner[net]}'")
            if net not in owner:
                owner[net] = name
                entries.append((net, zone))
    return entries, price


def load_zone_file(path: str | os.PathLike) -> tuple[list[tuple[IPNetwork, Zone]], float | None]:
    """Read and validate a zone file; every problem is one ZoneFileError sentence."""
    from ebpftool.config import load_yaml, read_bounded

    p = Path(path)
    # Bounded: a regular file of at most 1 MiB, no YAML aliases, nesting at most 32 deep.
    data = load_yaml(read_bounded(p, "the zone file", ZoneFileError), p, "the zone file", ZoneFileError)
    return parse_zones(data, str(p))


def build_zone_map(
    zone_file: str | None,
    *,
    price_per_gb: float | None = None,
    node_zone: str | None = None,
    node_region: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> ZoneMap:
    """The zone map for a run.

    Price: a zone's own price_per_gb, else --price-per-gb, else the file's, else 0.01.
    Node zone: --zone, else $EBPFTOOL_ZONE (in Kubernetes, deploy/daemonset.yaml sets it from
    the topology.kubernetes.io/zone label through the downward API); its region from --region,
    $EBPFTOOL_REGION or the zone file.
    """
    env = os.environ if environ is None else environ
    entries, file_price = load_zone_file(zone_file) if zone_file else ([], None)
    price = price_per_gb if price_per_gb is not None else file_price
    if price is None:
        price = DEFAULT_PRICE_PER_GB
    if price < 0 or not math.isfinite(price):
        raise EbpftoolError(f"--price-per-gb must be a number >= 0, not {price}")
    name = node_zone or env.get("EBPFTOOL_ZONE") or None
    node = None
    if name:
        if name in RESERVED_NAMES:
            raise EbpftoolError(f"the node zone cannot be named '{name}' (reserved)")
        listed = next((z for _n, z in entries if z.name == name), None)
        region = node_region or env.get("EBPFTOOL_REGION") or (listed.region if listed else None)
        node = Zone(name, region, listed.price_per_gb if listed else None)
    return ZoneMap(entries, price_per_gb=price, node_zone=node)
