"""ebpftool.core.bpf_cache: a second load of the same program takes BCC's output from the cache, and it
works; a changed define, a corrupted entry or an unsafe directory never gives a cached program."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from ebpftool.core import bpf_cache
from ebpftool.core.bpf import STAT_RINGBUF_FULL, BpfProgram
from ebpftool.core.cstruct import cstring, decode, load_header

FIXTURE = str(Path(__file__).parent / "bpf" / "core_probe.bpf.c")
HEADER = str(Path(__file__).parent / "bpf" / "core_probe.h")


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    directory = tmp_path / "bpf-cache"
    monkeypatch.setenv(bpf_cache.ENV, str(directory))
    monkeypatch.setattr(bpf_cache, "counters", {"hits": 0, "misses": 0, "stored": 0, "rejected": 0})
    return directory


def load(tag_pid: int | None = None) -> BpfProgram:
    return BpfProgram(FIXTURE, defines={"TARGET_PID": tag_pid or os.getpid(), "RINGBUF_PAGES": 64,
                                        "SPAN_RATE_PER_CPU": 1_000_000, "SPAN_BURST": 1_000_000}).load()


def events_seen(prog: BpfProgram, calls: int = 50) -> list:
    structs, _defines = load_header(HEADER)
    got = []
    prog.open_ring_buffer("events", lambda data: got.append(decode(structs["probe_event"], data)))
    for _ in range(calls):
        os.getppid()
    prog.poll(200)
    return got


def entries(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.json"))


def test_a_second_load_comes_from_the_cache_and_works(cache):
    first = load()
    try:
        assert not first.from_cache
        assert len(events_seen(first)) == 50
    finally:
        first.close()
    assert bpf_cache.counters["misses"] == 1 and bpf_cache.counters["stored"] == 1
    [entry] = entries(cache)
    assert entry.stat().st_mode & 0o777 == 0o600 and cache.stat().st_mode & 0o777 == 0o700
    second = load()
    try:
        assert second.from_cache, second.cache_note
        got = events_seen(second)
        assert len(got) == 50 and [e.seq for e in got] == list(range(50))
        assert {cstring(e.tag) for e in got} == {"core-ok"} and {e.pid for e in got} == {os.getpid()}
        assert second.stats()[STAT_RINGBUF_FULL] == 0
        # the maps keep their BTF (bpftool shows their fields), as BCC's own do
        info = bpf_cache._map_info(second["stats"].map_fd)
        assert info["btf_id"] and info["btf_value_type_id"] and info["type"] == 6  # a per-CPU array
    finally:
        second.close()
    assert bpf_cache.counters == {"hits": 1, "misses": 1, "stored": 1, "rejected": 0}


def test_a_changed_define_is_compiled_not_taken_from_the_cache(cache):
    load().close()
    other = load(tag_pid=os.getppid())  # another program text: another key
    try:
        assert not other.from_cache
        assert events_seen(other) == []  # it watches another pid: this process's calls are not seen
    finally:
        other.close()
    assert bpf_cache.counters["hits"] == 0 and bpf_cache.counters["misses"] == 2
    assert len(entries(cache)) == 2


@pytest.mark.parametrize("damage", ["flip-a-byte", "truncate", "other-key"])
def test_a_corrupted_entry_is_rebuilt_never_loaded(cache, damage):
    load().close()
    [entry] = entries(cache)
    data = bytearray(entry.read_bytes())
    if damage == "flip-a-byte":
        data[len(data) // 2] ^= 0x01
    elif damage == "truncate":
        del data[len(data) // 3:]
    else:  # a sound entry (its checksum right) made for another key
        body = bytes(data).split(b"\n", 1)[1].replace(entry.stem.encode(), b"f" * 64)
        data = bytearray(hashlib.sha256(body).hexdigest().encode() + b"\n" + body)
    entry.write_bytes(bytes(data))
    prog = load()
    try:
        assert not prog.from_cache and "not used" in prog.cache_note
        assert len(events_seen(prog)) == 50
    finally:
        prog.close()
    assert bpf_cache.counters["rejected"] == 1 and bpf_cache.counters["hits"] == 0
    assert bpf_cache.read(cache, entry.stem) is not None  # rebuilt: sound again
    again = load()
    assert again.from_cache
    again.close()


@pytest.mark.parametrize("unsafe", ["group-writable", "not-root"])
def test_an_unsafe_cache_directory_is_not_used(cache, unsafe):
    cache.mkdir(mode=0o700)
    if unsafe == "group-writable":
        cache.chmod(0o770)
    else:
        os.chown(cache, 65534, 65534)
    prog = load()
    try:
        assert not prog.from_cache and str(cache) in prog.cache_note
    finally:
        prog.close()
    assert entries(cache) == [] and bpf_cache.counters["stored"] == 0


def test_an_entry_not_owned_by_root_only_is_not_read(cache):
    load().close()
    [entry] = entries(cache)
    entry.chmod(0o644)
    prog = load()
    try:
        assert not prog.from_cache and "root-only" in prog.cache_note
    finally:
        prog.close()


def test_the_least_recently_used_entries_go_beyond_the_limit(tmp_path):
    directory = tmp_path / "c"
    directory.mkdir(mode=0o700)
    for i in range(5):
        bpf_cache.store(directory, f"{i:064x}", {"format": bpf_cache.FORMAT})
        os.utime(directory / f"{i:064x}.json", ns=(i * 10**9, i * 10**9))
    assert bpf_cache.read(directory, f"{0:064x}") is not None  # used now: the most recent
    bpf_cache.prune(directory, keep=3)
    assert sorted(p.stem[-1] for p in entries(directory)) == ["0", "3", "4"]


def test_a_cached_program_the_kernel_refuses_is_compiled_anew_and_leaves_nothing_attached(cache):
    import base64
    import json

    from tests.kernel_state import perf_attachments

    load().close()
    [entry] = entries(cache)
    content = json.loads(entry.read_bytes().split(b"\n", 1)[1])
    autoloaded = [f for f in content["functions"] if f["name"].startswith("tracepoint__")]
    assert autoloaded, "the fixture has a TRACEPOINT_PROBE (BCC loads and attaches it while building the module)"
    for f in content["functions"]:  # every program: `exit` without setting r0, which the verifier refuses
        f["code"], f["relocs"] = base64.b64encode(b"\x95" + b"\0" * 7).decode(), []
    body = json.dumps(content).encode()
    entry.write_bytes(hashlib.sha256(body).hexdigest().encode() + b"\n" + body)
    prog = load()
    try:
        assert not prog.from_cache and "not used" in prog.cache_note
        assert len(events_seen(prog)) == 50
    finally:
        prog.close()
    assert bpf_cache.counters["rejected"] >= 1
    assert not [a for a in perf_attachments() if a["pid"] == os.getpid()]
    assert bpf_cache.read(cache, entry.stem)["functions"][0]["code"] != content["functions"][0]["code"]  # rebuilt
