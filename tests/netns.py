"""Two 'zones' made of network namespaces joined by a veth pair, for the net tracer's tests.

    ns A (zone-a): 10.201.0.1/24 and 10.201.0.3/24 on one end of the veth
    ns B (zone-b): 10.201.0.2/24 on the other end

Traffic stays between these namespaces (and loopback); the tracer, in the root
namespace, sees all of it because tracepoints fire for every namespace. The
names carry the test process's pid so parallel runs do not collide, and
remove() deletes everything, also after a failure.
"""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass

ADDR_A = "10.201.0.1"
ADDR_A2 = "10.201.0.3"   # a second address in zone a, for intra-zone traffic
ADDR_B = "10.201.0.2"


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@dataclass
class TwoZones:
    ns_a: str
    ns_b: str
    veth_a: str
    veth_b: str

    @classmethod
    def create(cls) -> "TwoZones":
        tag = os.getpid() % 100000
        veth_a, veth_b = f"ebtna{tag}", f"ebtnb{tag}"
        zones = cls(f"ebt-net-a-{tag}", f"ebt-net-b-{tag}", veth_a, veth_b)
        zones.remove()
        try:
            _ip("netns", "add", zones.ns_a)
            _ip("netns", "add", zones.ns_b)
            _ip("link", "add", veth_a, "netns", zones.ns_a, "type", "veth", "peer", "name", veth_b, "netns", zones.ns_b)
            _ip("-n", zones.ns_a, "addr", "add", f"{ADDR_A}/24", "dev", veth_a)
            _ip("-n", zones.ns_a, "addr", "add", f"{ADDR_A2}/24", "dev", veth_a)
            _ip("-n", zones.ns_b, "addr", "add", f"{ADDR_B}/24", "dev", veth_b)
            for ns, dev in ((zones.ns_a, veth_a), (zones.ns_b, veth_b)):
                _ip("-n", ns, "link", "set", dev, "up")
                _ip("-n", ns, "link", "set", "lo", "up")
        except BaseException:
            zones.remove()
            raise
        return zones

    def set_link_b(self, up: bool) -> None:
        """Zone b's end of the veth up or down. While it is down, the kernel holds what zone a sends (and
        TCP's attempts to send it again fail with EBUSY: they are not retransmits)."""
        _ip("-n", self.ns_b, "link", "set", self.veth_b, "up" if up else "down")

    def drop_b_to(self, address: str, drop: bool) -> None:
        """Zone b's packets to this address dropped (a blackhole route in b), or delivered again. A lost
        ACK is loss as the sender sees it: it sends its segments again."""
        _ip("-n", self.ns_b, "route", "add" if drop else "del", "blackhole", f"{address}/32")

    def remove(self) -> None:
        for ns in (self.ns_a, self.ns_b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)

    def popen(self, ns: str, code: str, *args: str, cgroup: str | None = None) -> subprocess.Popen:
        """Run Python code in a namespace (ns: a name, or "" for the root namespace), in a cgroup
        (a cgroup directory) when one is given: a shell joins it, then execs, so the code runs there from
        its start."""
        prefix = ["ip", "netns", "exec", ns] if ns else []
        if cgroup:
            prefix = ["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', cgroup, *prefix]
        return subprocess.Popen([*prefix, sys.executable, "-c", code, *args],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
