"""Zone files and CIDR -> zone lookup (pure functions, no BPF)."""
from __future__ import annotations

import ipaddress

import pytest

from ebpftool.tracers.net import ProcessIdentity, address_from_bytes, group_of
from ebpftool.tracers.net.zones import (
    LOCAL_ZONE, UNKNOWN_ZONE, ZoneFileError, build_zone_map, cost_usd, is_inter_zone, load_zone_file, parse_zones,
)

ip = ipaddress.ip_address


def zone_map(text: str, tmp_path, **kw):
    path = tmp_path / "zones.yaml"
    path.write_text(text)
    return build_zone_map(str(path), environ={}, **kw)


def test_most_specific_cidr_wins_whatever_the_order(tmp_path):
    zm = zone_map("zones:\n  small: [10.0.5.0/24]\n  big: [10.0.0.0/16]\n  host: [10.0.5.7/32]\n", tmp_path)
    assert zm.zone_of(ip("10.0.5.7")).name == "host"
    assert zm.zone_of(ip("10.0.5.8")).name == "small"
    assert zm.zone_of(ip("10.0.9.1")).name == "big"


def test_unlisted_addresses_loopback_and_ipv4_mapped(tmp_path):
    zm = zone_map("us-a: [10.0.0.0/16, 'fd00::/64']\n", tmp_path)   # the bare form: no 'zones:' key
    assert zm.zone_of(ip("8.8.8.8")).name == "external"
    assert zm.zone_of(ip("192.168.1.1")).name == "unknown"
    assert zm.zone_of(ip("127.0.0.1")) is LOCAL_ZONE and zm.zone_of(ip("::1")) is LOCAL_ZONE
    assert zm.zone_of(ip("::ffff:10.0.1.2")).name == "us-a"
    assert zm.zone_of(ip("fd00::5")).name == "us-a"
    # A flow to oneself, or over loopback, is local at both ends.
    assert zm.flow_zones(ip("10.0.0.1"), ip("10.0.0.1")) == (LOCAL_ZONE, LOCAL_ZONE)
    assert zm.flow_zones(ip("127.0.0.1"), ip("127.0.0.2")) == (LOCAL_ZONE, LOCAL_ZONE)
    assert zm.flow_zones(None, None) == (UNKNOWN_ZONE, UNKNOWN_ZONE)


def test_node_zone_is_the_zone_of_unlisted_local_addresses(tmp_path):
    zm = zone_map("zones:\n  z1: {region: r1, cidrs: [10.1.0.0/16]}\n  z2: [10.2.0.0/16]\n", tmp_path, node_zone="z1")
    local, remote = zm.flow_zones(ip("172.16.0.9"), ip("10.2.0.4"))
    assert (local.name, local.region, remote.name) == ("z1", "r1", "z2")
    assert is_inter_zone(local, remote)
    env_zm = build_zone_map(None, environ={"EBPFTOOL_ZONE": "from-env"})
    assert env_zm.flow_zones(ip("172.16.0.9"), ip("8.8.4.4"))[0].name == "from-env"
    assert not is_inter_zone(*env_zm.flow_zones(ip("172.16.0.9"), ip("8.8.4.4")))   # external is not priced
    # An unbound socket (UDP sendto() from 0.0.0.0) has no local address: its end is this node's zone.
    assert [z.name for z in zm.flow_zones(None, ip("10.2.0.4"))] == ["z1", "z2"]
    assert zm.flow_zones(None, ip("127.0.0.1")) == (LOCAL_ZONE, LOCAL_ZONE)
    assert [z.name for z in zone_map("z2: [10.2.0.0/16]\n", tmp_path).flow_zones(None, ip("10.2.0.4"))] == \
        ["unknown", "z2"]
    # No remote address (UDP received on an unconnected socket): the local end's zone still counts.
    assert [z.name for z in zm.flow_zones(ip("10.2.0.9"), None)] == ["z2", "unknown"]
    assert [z.name for z in zm.flow_zones(ip("172.16.0.9"), None)] == ["z1", "unknown"]
    assert zm.flow_zones(ip("127.0.0.1"), None) == (LOCAL_ZONE, LOCAL_ZONE)


def test_prices_zone_then_flag_then_file_then_default(tmp_path):
    text = "price_per_gb: 0.05\nzones:\n  a: [10.1.0.0/16]\n  b: {cidrs: [10.2.0.0/16], price_per_gb: 0.02}\n"
    zm = zone_map(text, tmp_path)
    a, b = zm.zone_of(ip("10.1.0.1")), zm.zone_of(ip("10.2.0.1"))
    assert cost_usd(2e9, a, b, zm) == pytest.approx(0.10)
    assert cost_usd(2e9, b, a, zm) == pytest.approx(0.04)
    assert cost_usd(2e9, a, a, zm) == 0
    assert zone_map(text, tmp_path, price_per_gb=0.001).price_for(a) == 0.001
    assert build_zone_map(None, environ={}).price_per_gb == 0.01


@pytest.mark.parametrize("text, phrase", [
    ("", "expected a mapping"),
    ("- 10.0.0.0/8\n", "expected a mapping"),
    ("zones:\n  a: [10.0.0.1/24]\n", "host bits set"),
    ("zones:\n  a: [banana]\n", "is not a valid CIDR"),
    ("zones:\n  a: [10.0.0.0/8]\n  b: [10.0.0.0/8]\n", "is also listed in zone 'a'"),
    ("zones:\n  a: []\n", "non-empty list of CIDRs"),
    ("zones:\n  a: {cidrs: [10.0.0.0/8], colour: red}\n", "unknown key(s) ['colour']"),
    ("zones:\n  local: [10.0.0.0/8]\n", "reserved"),
    ("zones:\n  a: [10.0.0.0/8]\nprice_per_gb: -1\n", "price_per_gb must be a number >= 0"),
    ("zones:\n  a: [10.0.0.0/8]\nextra: 1\n", "unknown top-level key(s)"),
    ("zones: [oops\n", "not valid YAML at line"),
])
def test_malformed_zone_files_say_what_is_wrong(tmp_path, text, phrase):
    path = tmp_path / "zones.yaml"
    path.write_text(text)
    with pytest.raises(ZoneFileError) as err:
        load_zone_file(path)
    assert phrase in str(err.value) and str(path) in str(err.value)


def test_unreadable_zone_file(tmp_path):
    with pytest.raises(ZoneFileError, match="cannot read the zone file"):
        load_zone_file(tmp_path / "absent.yaml")
    (tmp_path / "bin.yaml").write_bytes(b"\xff\xfe\x00zones")
    with pytest.raises(ZoneFileError, match="not UTF-8"):
        load_zone_file(tmp_path / "bin.yaml")


def test_same_cidr_twice_in_one_zone_is_fine():
    entries, price = parse_zones({"zones": {"a": ["10.0.0.0/8", "10.0.0.0/8"]}})
    assert len(entries) == 1 and price is None


def test_kernel_address_fields_decode_to_zone_groups(tmp_path):
    zm = zone_map("zones:\n  a: [10.201.0.0/24]\n  b: [10.201.0.2/32]\n", tmp_path)
    v4 = bytes([10, 201, 0, 1]) + bytes(12)
    v4b = bytes([10, 201, 0, 2]) + bytes(12)
    assert address_from_bytes(2, v4) == ip("10.201.0.1")
    assert address_from_bytes(2, bytes(16)) is None
    mapped = ip("::ffff:10.201.0.2").packed
    g = group_of(zm, 10, 6, ip("::ffff:10.201.0.1").packed, mapped, 42, ProcessIdentity("srv", None))
    assert (g.local_zone.name, g.remote_zone.name, g.local_address, g.network_type) == ("a", "b", "10.201.0.1", "ipv6")
    g = group_of(zm, 2, 17, v4, v4b, 7, ProcessIdentity("udp-app", "0f1b5c7e-2c4d-4e8f-9a0b-1c2d3e4f5a6b"))
    assert (g.transport, g.pid, g.executable, g.pod_uid) == ("udp", 7, "udp-app", "0f1b5c7e-2c4d-4e8f-9a0b-1c2d3e4f5a6b")
