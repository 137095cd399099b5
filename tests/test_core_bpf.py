"""The core against the real kernel: events arrive, losses are counted, detach leaves nothing."""
from __future__ import annotations

import bisect
import ctypes
import os
import subprocess
from pathlib import Path

import pytest

from ebpftool.core.bpf import (BPF_PROG_TYPE_KPROBE, STAT_RINGBUF_FULL, STAT_SPAN_BUDGET, BpfProgram, bucket_macro,
                               kernel_allows_uprobe_multi, seconds_to_ns)
from ebpftool.semconv import HTTP_DURATION_BUCKETS
from ebpftool.core.cstruct import cstring, decode, load_header
from tests.kernel_state import (bpf_ids_held_by, bpf_links_held_by, kernel_ids, perf_attachments, still_loaded,
                                uprobe_events)

FIXTURE = str(Path(__file__).parent / "bpf" / "core_probe.bpf.c")
HEADER = str(Path(__file__).parent / "bpf" / "core_probe.h")
CUDART = "/usr/local/cuda/lib64/libcudart.so.13"


def load_probe(pages: int, span_rate: int = 1_000_000) -> BpfProgram:
    return BpfProgram(
        FIXTURE,
        defines={"TARGET_PID": os.getpid(), "RINGBUF_PAGES": pages,
                 "SPAN_RATE_PER_CPU": span_rate, "SPAN_BURST": span_rate},
    ).load()


@pytest.mark.bpf
def test_events_arrive_decoded_with_the_header_layout():
    structs, defines = load_header(HEADER)
    event_t = structs["probe_event"]
    assert defines["PROBE_TAG_LEN"] == 8
    prog = load_probe(pages=64)
    got = []
    try:
        prog.open_ring_buffer("events", lambda data: got.append(decode(event_t, data)))
        for _ in range(100):
            os.getppid()
        prog.poll(200)
        stats = prog.stats()
    finally:
        prog.close()
    assert len(got) == 100
    assert [e.seq for e in got] == list(range(100))
    assert {e.pid for e in got} == {os.getpid()}
    assert {cstring(e.tag) for e in got} == {"core-ok"}
    assert stats[STAT_RINGBUF_FULL] == 0


@pytest.mark.bpf
def test_a_full_ring_buffer_counts_every_lost_event():
    prog = load_probe(pages=1)  # 4 KiB: room for ~100 records of 40 bytes
    received = []
    try:
        prog.open_ring_buffer("events", lambda data: received.append(1))
        sent = 5000
        for _ in range(sent):
            os.getppid()
        prog.poll(200)
        lost = prog.stats()[STAT_RINGBUF_FULL]
    finally:
        prog.close()
    assert 0 < len(received) < sent
    assert lost > 0
    assert len(received) + lost == sent  # nothing silently lost


def spans_through_budget(span_rate: int, calls: int) -> tuple[int, int]:
    """(events received, refusals counted) for `calls` getppid() calls under a span budget of span_rate."""
    prog = load_probe(pages=64, span_rate=span_rate)
    received = []
    try:
        prog.open_ring_buffer("events", lambda data: received.append(1))
        for _ in range(calls):
            os.getppid()
        prog.poll(200)
        refused = prog.stats()[STAT_SPAN_BUDGET]
    finally:
        prog.close()
    return len(received), refused


@pytest.mark.bpf
def test_span_budget_refuses_and_counts_beyond_its_rate():
    received, refused = spans_through_budget(span_rate=10, calls=1000)  # burst of 10, then ~10/s
    assert 10 <= received < 50
    assert received + refused == 1000


@pytest.mark.bpf
def test_a_span_rate_of_zero_sends_no_span_and_counts_each():
    assert spans_through_budget(span_rate=0, calls=100) == (0, 100)


@pytest.mark.bpf
def test_close_detaches_programs_and_uprobes():
    before = kernel_ids("prog")
    prog = load_probe(pages=1)
    prog.attach_uprobe(CUDART, "cudaGetLastError", "count_uprobe", multi=False)   # the per-probe way
    loaded = (kernel_ids("prog") - before) & bpf_ids_held_by(os.getpid())[0]  # not other processes' programs
    assert loaded, "the programs should be listed by the kernel while loaded"
    mine = [a for a in perf_attachments() if a["pid"] == os.getpid()]
    assert {a["fd_type"] for a in mine} >= {"tracepoint", "uprobe"}
    lib = ctypes.CDLL(CUDART)
    for _ in range(7):
        lib.cudaGetLastError()
    assert prog["uprobe_calls"][ctypes.c_int(0)].value == 7
    prog.close()
    prog.close()  # idempotent
    assert not still_loaded(loaded, "prog"), "programs left in the kernel after close()"
    # BCC attaches through the perf uprobe PMU where it can, else through uprobe_events: check both.
    assert not [a for a in perf_attachments() if a["pid"] == os.getpid()]
    assert f"bcc_{os.getpid()}" not in uprobe_events()


@pytest.mark.bpf
def test_uprobe_multi_links_count_calls_and_close_leaves_no_link():
    prog = load_probe(pages=1)
    try:
        prog.attach_uprobe(CUDART, "cudaGetLastError", "count_uprobe")
        prog.attach_uprobe(CUDART, "cudaGetLastError", "count_uprobe", ret=True)
        assert kernel_allows_uprobe_multi(), "Linux 6.6+ has BPF_TRACE_UPROBE_MULTI links"
        assert prog.uprobe_multi_refused == 0
        links = [x for x in bpf_links_held_by(os.getpid()) if x["fd_type"] in ("uprobe_multi", "uretprobe_multi")]
        assert len(links) == 2
        assert f"bcc_{os.getpid()}" not in uprobe_events()   # no tracefs event made
        lib = ctypes.CDLL(CUDART)
        for _ in range(7):
            lib.cudaGetLastError()
        assert prog["uprobe_calls"][ctypes.c_int(0)].value == 14   # entry and return
        assert prog.probes[-2:] == [f"uprobe:{CUDART}:cudaGetLastError", f"uretprobe:{CUDART}:cudaGetLastError"]
    finally:
        prog.close()
    assert not still_loaded({x["link_id"] for x in links}, "link")


@pytest.mark.bpf
def test_a_refused_uprobe_multi_link_falls_back_to_a_per_probe_uprobe(monkeypatch):
    import ebpftool.core.bpf as core_bpf

    def refused(*_a, **_k):
        raise OSError(22, "Invalid argument")   # e.g. another tracer's uprobe there, with another ref_ctr_offset
    assert kernel_allows_uprobe_multi()   # asked (and remembered) before links are refused
    monkeypatch.setattr(core_bpf, "attach_uprobe_multi", refused)
    prog = load_probe(pages=1)
    try:
        prog.attach_uprobe(CUDART, "cudaGetLastError", "count_uprobe")
        assert prog.uprobe_multi_refused == 1 and not prog.uprobe_links
        assert any(a["fd_type"] == "uprobe" for a in perf_attachments() if a["pid"] == os.getpid())
        ctypes.CDLL(CUDART).cudaGetLastError()
        assert prog["uprobe_calls"][ctypes.c_int(0)].value == 1
    finally:
        prog.close()
    assert f"bcc_{os.getpid()}" not in uprobe_events()


def test_bucket_macro_matches_opentelemetry_bucket_rule(tmp_path):
    """The generated C, compiled for real: upper bounds inclusive, one overflow bucket."""
    src = tmp_path / "b.c"
    src.write_text(bucket_macro("B", [10, 20, 30]) + """
#include <stdio.h>
int main(void) { unsigned long long v[] = {0, 10, 11, 20, 30, 31, 1000};
  for (int i = 0; i < 7; i++) printf("%d ", B(v[i])); return 0; }
""")
    subprocess.run(["gcc", "-o", str(tmp_path / "b"), str(src)], check=True)
    out = subprocess.run([str(tmp_path / "b")], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["0", "0", "1", "1", "2", "3", "3"]
    # the exported bounds (15 of them: a search several levels deep), at, below and above each bound
    bounds = seconds_to_ns(HTTP_DURATION_BUCKETS)
    values = sorted({max(0, b + d) for b in bounds for d in (-1, 0, 1)} | {0, 10 * bounds[-1]})
    src.write_text(bucket_macro("B", bounds) + """
#include <stdio.h>
int main(void) { unsigned long long v[] = {%s};
  for (unsigned i = 0; i < sizeof(v) / sizeof(v[0]); i++) printf("%%d ", B(v[i])); return 0; }
""" % ", ".join(f"{v}ULL" for v in values))
    subprocess.run(["gcc", "-o", str(tmp_path / "b"), str(src)], check=True)
    out = subprocess.run([str(tmp_path / "b")], capture_output=True, text=True, check=True).stdout
    assert [int(i) for i in out.split()] == [bisect.bisect_left(bounds, v) for v in values]
    with pytest.raises(ValueError):
        bucket_macro("TOO_MANY", list(range(30)))


@pytest.mark.bpf
def test_a_program_s_parts_are_joined_in_place_once_with_their_own_line_numbers(tmp_path, capfd):
    """bpf/<tracer>/x.bpf.c includes its parts (`#include "part.bpf.h"`): the loader joins them into one text
    (BCC rewrites map calls only there), each once, and the compiler's message names the part and its line."""
    (tmp_path / "layout.h").write_text("struct point { int x; };\n")
    (tmp_path / "maps.bpf.h").write_text("BPF_ARRAY(counts, u64, 1);\n")
    (tmp_path / "count.bpf.h").write_text('#include "maps.bpf.h"\n'
                                          "static __always_inline void count(void)\n"
                                          "{\n"
                                          "    u32 zero = 0;\n"
                                          "    u64 *n = counts.lookup(&zero);\n"
                                          "    if (n)\n"
                                          "        __sync_fetch_and_add(n, 1);\n"
                                          "}\n")
    main = tmp_path / "main.bpf.c"
    main.write_text('#include "layout.h"\n#include "maps.bpf.h"\n#include "count.bpf.h"\n'
                    "int run(void *ctx) { count(); return 0; }\n")
    text = BpfProgram(str(main)).text()
    assert text.count("BPF_ARRAY(counts") == 1 and '#include "layout.h"' in text
    assert '#line 1 "count.bpf.h"' in text and '#line 4 "main.bpf.c"' in text
    prog = BpfProgram(str(main)).load()   # map calls of a part were rewritten: it compiles and loads
    prog.bpf.load_func("run", prog.bpf.RAW_TRACEPOINT)
    prog.close()

    (tmp_path / "count.bpf.h").write_text("static int broken(void)\n{\n    return nothing_here;\n}\n")
    from ebpftool.errors import EbpftoolError
    capfd.readouterr()
    with pytest.raises(EbpftoolError):
        BpfProgram(str(main)).load()
    assert "count.bpf.h:3:12: error: use of undeclared identifier" in capfd.readouterr().err  # clang, via BCC


def test_in_threads_runs_every_call_keeps_order_and_raises_the_first_failure():
    from ebpftool.core.bpf import in_threads

    ran = []
    assert in_threads([lambda i=i: ran.append(i) or i * i for i in range(40)], 4) == [i * i for i in range(40)]
    assert sorted(ran) == list(range(40))

    def fail(i):
        ran.append(i)
        raise ValueError(f"call {i}")
    for width in (3, 1):   # one thread: the calling one alone, the same rule
        ran.clear()
        with pytest.raises(ValueError, match="call 3"):
            in_threads([lambda i=i: fail(i) if i in (3, 7) else ran.append(i) for i in range(10)], width)
        assert sorted(ran) == list(range(10))   # the calls after a failure ran too


def test_in_threads_inside_in_threads_finishes_when_the_pool_is_full():
    """Every thread of the pool busy with a call that runs calls in threads itself: the callers take their
    own calls, so nothing waits for a thread that never comes (as the tracers' detaches do at stop)."""
    import threading

    from ebpftool.core.bpf import POOL_THREADS, in_threads

    outcome = []
    inner = lambda: sum(in_threads([lambda i=i: i for i in range(20)], 16))  # noqa: E731
    worker = threading.Thread(target=lambda: outcome.append(in_threads([inner] * (2 * POOL_THREADS), POOL_THREADS)),
                              daemon=True)
    worker.start()
    worker.join(120)   # a liveness bound, not a measurement: a deadlock never ends
    assert outcome == [[190] * (2 * POOL_THREADS)]


@pytest.mark.bpf
def test_a_refused_program_is_explained_only_when_asked():
    from ebpftool.core.bpf_cache import load_program

    exit_only = bytes([0x95, 0, 0, 0, 0, 0, 0, 0])   # exit, r0 never set: the verifier refuses it
    with pytest.raises(OSError) as told:
        load_program(BPF_PROG_TYPE_KPROBE, exit_only, "refused")
    assert told.value.errno == 13 and "R0 !read_ok" in told.value.strerror
    with pytest.raises(OSError) as short:
        load_program(BPF_PROG_TYPE_KPROBE, exit_only, "refused", explain=False)
    assert short.value.errno == 13 and "R0" not in short.value.strerror


@pytest.mark.bpf
def test_a_function_refused_for_uprobe_multi_links_is_tried_once_and_attaches_per_probe(monkeypatch):
    """The kernel refuses some programs as uprobe_multi ones (a tail call into another type): the refusal is
    remembered, so a second uprobe of the same function does not pay the verifier again."""
    import ebpftool.core.bpf as core_bpf

    tries = []
    real = core_bpf.load_program

    def refuse_multi(prog_type, insns, name, **kw):
        if kw.get("attach_type") == core_bpf.BPF_TRACE_UPROBE_MULTI and name == "count_uprobe":
            tries.append(name)
            raise OSError(22, "Invalid argument")
        return real(prog_type, insns, name, **kw)
    assert kernel_allows_uprobe_multi()
    monkeypatch.setattr(core_bpf, "load_program", refuse_multi)
    prog = load_probe(pages=1)
    try:
        prog.attach_uprobe(CUDART, "cudaGetLastError", "count_uprobe")
        prog.attach_uprobe(CUDART, "cudaGetLastError", "count_uprobe", ret=True)
        assert tries == ["count_uprobe"] and prog.uprobe_multi_refused == 2 and not prog.uprobe_links
        assert prog.load_uprobe_program("count_uprobe") == prog.bpf.funcs[b"count_uprobe"].fd   # the perf-event one
        ctypes.CDLL(CUDART).cudaGetLastError()
        assert prog["uprobe_calls"][ctypes.c_int(0)].value == 2
    finally:
        prog.close()


def test_a_field_reader_reads_what_decode_reads_in_the_order_named():
    from ebpftool.core.cstruct import field_reader
    from ebpftool.tracers.inference.records import STRUCTS

    capture_t = STRUCTS["capture_event"]
    record = bytes(capture_t(type=1, pid=4242, conn=(1 << 60) + 12345, seq=7, part=3, len=999))
    want = decode(capture_t, record)
    for names in (("conn", "seq", "part", "len"), ("len", "conn"), ("pid",), ("part", "type", "seq")):
        assert field_reader(capture_t, *names)(record) == tuple(getattr(want, n) for n in names)
    with pytest.raises(ValueError, match="record of 40 bytes"):
        field_reader(capture_t, "conn", "seq")(record[:40])  # a truncated record, as decode() refuses it
