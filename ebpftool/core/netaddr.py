"""IP addresses as the kernel hands them over: an address family and a fixed-size byte field."""
from __future__ import annotations

import ipaddress
import socket
from functools import lru_cache

AF_INET = socket.AF_INET    # 2 on Linux, as in struct sock's skc_family
AF_INET6 = socket.AF_INET6  # 10 on Linux

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def ip_from_bytes(raw: bytes, family: int) -> IPAddress | None:
    """The address in raw (IPv4 in its first 4 bytes, IPv6 in its first 16); None for another family."""
    if family == AF_INET:
        return ipaddress.IPv4Address(bytes(raw[:4]))
    if family == AF_INET6:
        return ipaddress.IPv6Address(bytes(raw[:16]))
    return None


@lru_cache(maxsize=4096)  # a span's client: the same few addresses again and again
def format_address(raw: bytes, family: int) -> str:
    """The address as text, an IPv4-mapped IPv6 address as IPv4; '' for another family."""
    ip = ip_from_bytes(raw, family)
    if isinstance(ip, ipaddress.IPv6Address):
        return str(ip.ipv4_mapped or ip)
    return str(ip) if ip is not None else ""


def family_of(ip: IPAddress) -> int:
    return AF_INET if ip.version == 4 else AF_INET6
