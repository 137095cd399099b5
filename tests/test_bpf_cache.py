"""The compile cache (ebpftool.core.bpf_cache): a warm start behaves as a compiled one, a bad or refused entry
is deleted and compiled again, `off` disables it, and the folder and entries are private."""
from __future__ import annotations

import ctypes
import os
import stat
import struct

import pytest

from ebpftool.core import bpf_cache
from ebpftool.core.bpf import STAT_SPAN_BUDGET, BpfProgram
from ebpftool.core.cstruct import decode, load_header
from ebpftool.core.tracer import Tracer
from tests.conftest import ROOT
from tests.test_core_bpf import FIXTURE, HEADER



@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    where = tmp_path / "cache" / "bpf"
    monkeypatch.setenv(bpf_cache.ENV, str(where))
    return where


def probe(span_rate: int = 1_000_000) -> BpfProgram:
    return BpfProgram(FIXTURE, defines={"TARGET_PID": os.getpid(), "RINGBUF_PAGES": 64,
                                        "SPAN_RATE_PER_CPU": span_rate, "SPAN_BURST": span_rate}).load()


def exercise(prog: BpfProgram, calls: int = 50) -> tuple[list[int], int, list[int]]:
    """getppid() calls: the events' sequence numbers, the uprobe's count, the shared stats."""
    event_t = load_header(HEADER)[0]["probe_event"]
    got = []
    prog.open_ring_buffer("events", lambda data: got.append(decode(event_t, data).seq))
    prog.attach_uprobe("c", "getppid", "count_uprobe")   # a function loaded when asked, not at build
    libc = ctypes.CDLL(None)
    for _ in range(calls):
        libc.getppid()
    prog.poll(200)
    return got, int(prog["uprobe_calls"][ctypes.c_int(0)].value), prog.stats()


def entries(where) -> list:
    return sorted(where.glob(f"*{bpf_cache.SUFFIX}"))


@pytest.mark.bpf
def test_a_warm_start_loads_from_the_cache_and_behaves_as_the_compiled_program(cache_dir):
    cold = probe()
    try:
        assert cold.cache_state == "stored"
        cold_result = exercise(cold)
        cold_insns = cold.bpf.dump_func("count_uprobe")
    finally:
        cold.close()
    (entry,) = entries(cache_dir)
    assert stat.S_IMODE(os.stat(cache_dir).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(entry).st_mode) == 0o600

    warm = probe()
    try:
        assert warm.cache_state == "hit"
        assert isinstance(warm.bpf, bpf_cache.cached_bpf_class(__import__("bcc")))
        warm_result = exercise(warm)
        warm_insns = warm.bpf.dump_func("count_uprobe")
    finally:
        warm.close()
    assert cold_result == warm_result
    assert cold_result[0] == list(range(50)) and cold_result[1] == 50
    assert len(cold_insns) == len(warm_insns)   # the same code; only the maps' fds differ


@pytest.mark.bpf
def test_other_defines_are_another_entry(cache_dir):
    probe().close()
    budget = probe(span_rate=0)   # compiled with other parameters: not the first entry
    try:
        assert budget.cache_state == "stored"
        got, _calls, stats = exercise(budget, calls=10)
        assert got == [] and stats[STAT_SPAN_BUDGET] == 10
    finally:
        budget.close()
    assert len(entries(cache_dir)) == 2


@pytest.mark.bpf
def test_a_corrupt_entry_is_deleted_and_compiled_again(cache_dir):
    probe().close()
    (entry,) = entries(cache_dir)
    data = bytearray(entry.read_bytes())
    data[-10] ^= 0xFF
    entry.write_bytes(bytes(data))
    again = probe()
    try:
        assert again.cache_state == "stored"   # the SHA-256 did not match: compiled and stored anew
        assert exercise(again)[1] == 50
    finally:
        again.close()
    warm = probe()
    warm.close()
    assert warm.cache_state == "hit"


@pytest.mark.bpf
def test_an_entry_the_kernel_refuses_is_deleted_and_compiled_again(cache_dir):
    probe().close()
    (entry,) = entries(cache_dir)
    compiled = bpf_cache.Compiled.from_json(entry.read_bytes().partition(b"\n")[2])
    name = next(n for n in compiled.functions if n.startswith("tracepoint__"))
    fn = compiled.functions[name]
    fn.insns = struct.pack("<BBhi", 0x95, 0, 0, 0) * 2   # exit without setting r0: the verifier refuses it
    fn.relocs = []
    bpf_cache.BpfCache(cache_dir).store(entry.name[:-len(bpf_cache.SUFFIX)], compiled)
    again = probe()
    try:
        assert again.cache_state == "stored"
        assert exercise(again)[0] == list(range(50))
    finally:
        again.close()


@pytest.mark.bpf
def test_off_disables_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(bpf_cache.ENV, "off")
    monkeypatch.chdir(tmp_path)
    prog = probe()
    try:
        assert prog.cache_state == "off"
    finally:
        prog.close()
    assert list(tmp_path.iterdir()) == []


def test_a_folder_others_may_write_to_is_not_used(tmp_path):
    where = tmp_path / "shared"
    where.mkdir()
    os.chmod(where, 0o777)
    cache = bpf_cache.BpfCache(where)
    cache.store("k" * 64, bpf_cache.Compiled("GPL", 0, [], {}))
    assert cache.fetch("k" * 64) is None
    assert entries(where) == []
    assert "not this user's alone" in cache.notes[0]


def test_a_folder_inside_one_others_may_write_to_is_not_used(tmp_path):
    """Others could move the cache away and put theirs in its place: refused; a sticky folder (/tmp) is fine."""
    open_folder = tmp_path / "open"
    open_folder.mkdir()
    os.chmod(open_folder, 0o777)
    cache = bpf_cache.BpfCache(open_folder / "bpf")
    cache.store("k" * 64, bpf_cache.Compiled("GPL", 0, [], {}))
    assert cache.fetch("k" * 64) is None
    assert entries(open_folder / "bpf") == []
    assert "which others may change" in cache.notes[0], cache.notes
    os.chmod(open_folder, 0o1777)
    sticky = bpf_cache.BpfCache(open_folder / "bpf")
    sticky.store("k" * 64, bpf_cache.Compiled("GPL", 0, [], {}))
    assert sticky.fetch("k" * 64) is not None, sticky.notes


def test_an_entry_others_can_read_is_deleted(tmp_path):
    cache = bpf_cache.BpfCache(tmp_path / "bpf")
    cache.store("a" * 64, bpf_cache.Compiled("GPL", 0, [], {}))
    assert cache.fetch("a" * 64) is not None
    os.chmod(cache.path("a" * 64), 0o644)
    assert cache.fetch("a" * 64) is None
    assert not cache.path("a" * 64).exists()


def test_the_key_changes_with_the_text_the_cflags_and_the_headers(tmp_path):
    (tmp_path / "layout.h").write_text("#define A 1\n")
    flags = [f"-I{tmp_path}"]
    key = bpf_cache.cache_key("int x;", flags)
    assert key == bpf_cache.cache_key("int x;", flags)
    assert key != bpf_cache.cache_key("int y;", flags)
    assert key != bpf_cache.cache_key("int x;", [*flags, "-DX=1"])
    (tmp_path / "layout.h").write_text("#define A 2\n")
    assert key != bpf_cache.cache_key("int x;", flags)


def test_status_says_what_the_folder_holds_or_why_it_is_not_used(tmp_path):
    cache = bpf_cache.BpfCache(tmp_path / "bpf")
    assert cache.status() == (True, f"{tmp_path / 'bpf'}: 0 compiled programs (EBPFTOOL_BPF_CACHE=DIR|off)")
    os.chmod(tmp_path / "bpf", 0o777)
    ok, why = cache.status()
    assert not ok and "not this user's alone" in why


def test_only_map_references_are_relocated_other_pseudo_loads_are_not_cached():
    ld_map = struct.pack("<BBhi", 0x18, (1 << 4) | 1, 0, 7) + struct.pack("<BBhi", 0, 0, 0, 0)   # r1 = map fd 7
    plain = struct.pack("<BBhi", 0x18, 1, 0, 42) + struct.pack("<BBhi", 0, 0, 0, 0)            # r1 = 42 (64-bit)
    assert bpf_cache._insns_refs(plain + ld_map) == [(2, 7)]
    value = struct.pack("<BBhi", 0x18, (2 << 4) | 1, 0, 7) + struct.pack("<BBhi", 0, 0, 0, 0)  # a map value
    with pytest.raises(bpf_cache.CacheError):
        bpf_cache._insns_refs(value)


PEAK_RSS_OF_A_LOAD = """
import os, sys
sys.path.insert(0, os.getcwd())
from tests.test_bpf_cache import probe
probe().close()
print([l.split()[1] for l in open("/proc/self/status") if l.startswith("VmHWM:")][0])
"""


def _peak_rss_of_a_load_kb(env: dict) -> int:
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-c", PEAK_RSS_OF_A_LOAD], cwd=ROOT, env={**os.environ, **env},
                         capture_output=True, text=True, check=True).stdout
    return int(out.split()[-1])


@pytest.mark.bpf
def test_a_cold_start_compiles_in_a_child_and_compiles_ahead(cache_dir, tmp_path):
    """clang runs in a child process (ebpftool.core.bpf_compile): this process loads the result from the cache
    and never holds the compiler's memory; inside compiling_ahead() a load only starts that child, and the
    later load waits for it."""
    from ebpftool.core.bpf import CompiledAhead, compiling_ahead
    with compiling_ahead(), pytest.raises(CompiledAhead):
        probe()
    prog = probe()
    try:
        assert prog.cache_state == "stored" and prog.compiled_in_child
        events, uprobe_calls, _stats = exercise(prog)
        # the child attached nothing; this process attached what BCC attaches as it builds (the tracepoint)
        assert uprobe_calls == 50 and len(events) == 50
    finally:
        prog.close()
    assert len(entries(cache_dir)) == 1
    # a process that compiled in itself holds clang's memory for good; one whose child compiled does not
    in_child = _peak_rss_of_a_load_kb({bpf_cache.ENV: str(tmp_path / "fresh")})
    in_process = _peak_rss_of_a_load_kb({bpf_cache.ENV: "off"})
    assert in_process - in_child > 20_000, (in_child, in_process)


LOAD_FROM_THE_CACHE = """
import os, sys
sys.path.insert(0, os.getcwd())
from tests.test_bpf_cache import exercise, probe
from ebpftool.core import bpf_cache
bpf_cache._node_key()   # the keys first, as a start that compiles ahead computes them before any load
def compiler_here():
    return any(lib in open("/proc/self/maps").read() for lib in ("libLLVM", "libclang"))
for _ in range(2):   # compiled in a child into the cache, then taken from it
    prog = probe()
    _events, calls, _stats = exercise(prog)
    print(prog.cache_state, calls, compiler_here())
    prog.close()
os.environ["EBPFTOOL_BPF_CACHE"] = "off"   # then a compile in this process
prog = probe()
_events, calls, _stats = exercise(prog)
print(prog.cache_state, calls, compiler_here())
prog.close()
"""


@pytest.mark.bpf
def test_a_process_that_compiles_nothing_holds_no_compiler_and_can_still_compile(cache_dir):
    """A start whose programs come from the cache runs on BCC's runtime library (ebpftool.core.bcc_lib): its
    maps, uprobes and ring buffer work, and LLVM and clang are not in its memory; a compile in the same process
    later (the cache turned off) moves BCC onto libbcc.so.0, prototypes and all."""
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-c", LOAD_FROM_THE_CACHE], cwd=ROOT, env=dict(os.environ),
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["stored", "50", "False", "hit", "50", "False", "off", "50", "True"], out.stdout


NODE_KEY = """
import os, sys
sys.path.insert(0, os.getcwd())
from ebpftool.core.bpf import import_bcc
import_bcc(compiler=sys.argv[1] == "compiler")
from ebpftool.core import bpf_cache
print(bpf_cache._node_key())
"""


@pytest.mark.bpf
def test_the_node_key_is_the_same_with_bccs_runtime_library_and_with_its_compiler():
    """A process on BCC's runtime library computes the keys its compile children store under: they name the
    compiler's libraries (an LLVM update compiles again) though that process never loaded them."""
    import json
    import subprocess
    import sys
    keys = {mode: subprocess.run([sys.executable, "-c", NODE_KEY, mode], cwd=ROOT, capture_output=True, text=True,
                                 check=True, timeout=120).stdout for mode in ("runtime", "compiler")}
    assert keys["runtime"] == keys["compiler"]
    libs = [os.path.basename(stamp[0]) for stamp in json.loads(keys["runtime"])["libs"]]
    assert any(name.startswith("libLLVM") for name in libs) and any(name.startswith("libbcc.so") for name in libs)


def probe_in_parts(**extra) -> BpfProgram:
    """The fixture compiled as two parts, the tracepoint's and the uprobe's: they share the ring buffer, the
    stats and the uprobe's counter, which the test reads through the first part's maps."""
    return BpfProgram(FIXTURE, defines={"TARGET_PID": os.getpid(), "RINGBUF_PAGES": 64,
                                        "SPAN_RATE_PER_CPU": 1_000_000, "SPAN_BURST": 1_000_000},
                      parts=[{"UPROBE_PART": 0}, {"TRACEPOINT_PART": 0, **extra}]).load()


@pytest.mark.bpf
def test_a_program_in_parts_compiles_each_apart_and_loads_them_as_one_module(cache_dir):
    """Each part is compiled in a child of its own, side by side, and kept apart in the cache; the parts load
    as one module whose functions share one set of maps, cold as warm, and behave as the whole program."""
    from ebpftool.core.bpf import CompiledAhead, compiling_ahead
    with compiling_ahead() as keys, pytest.raises(CompiledAhead):
        probe_in_parts()
    assert len(keys) == 2   # both parts compiling at once
    results = []
    for state in ("stored", "hit"):
        prog = probe_in_parts()
        try:
            assert prog.cache_state == state and prog.compiled_in_child == (state == "stored")
            assert sorted(prog.bpf.compiled.functions) == ["count_uprobe", "tracepoint__syscalls__sys_enter_getppid"]
            results.append(exercise(prog))
        finally:
            prog.close()
        assert len(entries(cache_dir)) == 2
    whole = probe()
    try:
        results.append(exercise(whole))
    finally:
        whole.close()
    assert results[0] == results[1] == results[2]
    assert results[0][0] == list(range(50)) and results[0][1] == 50   # the uprobe's part counted in the shared map


@pytest.mark.bpf
def test_parts_that_declare_a_map_otherwise_are_compiled_whole_here(cache_dir):
    """A part whose maps differ from the first's cannot share them: the whole text is compiled in this process
    (and works), and the parts' entries are removed."""
    prog = probe_in_parts(RINGBUF_PAGES=128)
    try:
        assert prog.cache_state.startswith("compiled whole here")
        events, uprobe_calls, _stats = exercise(prog)
        assert uprobe_calls == 50 and len(events) == 50
    finally:
        prog.close()
    assert entries(cache_dir) == []


def test_merging_parts_keeps_the_first_parts_maps_and_every_function():
    def spec(name, value_size=8):
        return bpf_cache.MapSpec(name, 2, 4, value_size, 1, 0, 0, 0, 0, '"int"', '"unsigned long long"')

    def part(maps, functions):
        return bpf_cache.Compiled("GPL", 0, maps, {f: bpf_cache.Function(b"", [(0, m.name)]) for f, m in functions})

    a, b = spec("a"), spec("b")
    first, second = part([a, b], [("f", a)]), part([b], [("g", b)])
    both = bpf_cache.merged([first, second])
    assert both.maps == [a, b] and sorted(both.functions) == ["f", "g"]
    with pytest.raises(bpf_cache.CacheError, match="not declared alike"):
        bpf_cache.merged([first, part([spec("b", 16)], [("g", b)])])
    with pytest.raises(bpf_cache.CacheError, match="not declared alike"):
        bpf_cache.merged([first, part([spec("c")], [("g", b)])])
    with pytest.raises(bpf_cache.CacheError, match="in two parts"):
        bpf_cache.merged([first, part([a], [("f", a)])])


@pytest.mark.bpf
def test_a_compile_error_in_the_child_is_reported_as_before(cache_dir, tmp_path, capfd):
    """The child's failure sends the compile to this process, whose clang says what is wrong on stderr."""
    from ebpftool.errors import EbpftoolError
    broken = tmp_path / "broken.bpf.c"
    broken.write_text("int f(void *ctx) { return undefined_name; }\n")
    with pytest.raises(EbpftoolError, match="refused"):
        BpfProgram(str(broken), defines={}).load()
    assert capfd.readouterr().err.count("use of undeclared identifier 'undefined_name'") == 1
    assert entries(cache_dir) == []


class FixtureTracer(Tracer):
    """A tracer of the fixture program (its own text per tag: a program of its own in the cache), counting
    how often it was started."""

    def __init__(self, name: str, tag: int) -> None:
        super().__init__(None)
        self.name, self.tag, self.starts = name, tag, 0

    def start(self) -> None:
        self.starts += 1
        prog = BpfProgram(FIXTURE, defines={"TARGET_PID": os.getpid(), "RINGBUF_PAGES": 1, "SPAN_RATE_PER_CPU": 1,
                                            "SPAN_BURST": 1, "FIXTURE_TAG": self.tag})
        self.programs.append(prog.load())

    def collect(self) -> list:
        return []


@pytest.mark.bpf
def test_tracers_compile_side_by_side_once_and_a_warm_start_starts_each_once(cache_dir):
    """Cold: every tracer's compile starts first (each tracer tried once inside compiling_ahead), then each
    starts for real; warm: each starts once, its programs taken from the cache (no work done twice)."""
    from ebpftool.core.runner import RunResult, start_tracers, stop_tracers

    for expected_starts in (2, 1):   # cold, then warm
        tracers = [FixtureTracer("a", 1), FixtureTracer("b", 2)]
        result = RunResult()
        calls = []
        running = start_tracers(tracers, result, skip_failed=False, on_starting=lambda t: calls.append(t.name),
                                on_start=lambda t, _s: calls.append(f"{t.name} started"))
        started = [i for i, c in enumerate(calls) if c.endswith(" started")]
        assert len(started) == 2 and all(calls[i - 1] + " started" == calls[i] for i in started)
        try:
            assert sorted(t.name for t in running) == ["a", "b"] and not result.skipped
            assert [t.starts for t in tracers] == [expected_starts] * 2
            cold = expected_starts == 2
            assert all(p.cache_state == ("stored" if cold else "hit") and p.compiled_in_child == cold
                       for t in running for p in t.programs)
            assert exercise(running[0].programs[0])[1] == 50
        finally:
            stop_tracers(running)
    assert len(entries(cache_dir)) == 2


@pytest.mark.bpf
def test_a_stop_during_start_up_ends_and_reaps_every_compile_ahead(cache_dir, monkeypatch):
    from ebpftool.core import bpf_compile
    from ebpftool.core.runner import RunResult, StopFlag, start_tracers

    children = []
    real_start_child = bpf_compile.start_child

    def recorded(*args):
        children.append(real_start_child(*args))
        return children[-1]
    monkeypatch.setattr(bpf_compile, "start_child", recorded)
    stop = StopFlag()
    tracers = [FixtureTracer("a", 3), FixtureTracer("b", 4)]
    result = RunResult()
    running = start_tracers(tracers, result, skip_failed=False, stop=stop,
                            on_starting=lambda t: t.name == "b" and stop.set("SIGTERM"))
    assert running == [] and result.not_started == ["a", "b"] and not result.started
    assert len(children) == 2
    for child in children:   # ended and reaped: no process, no zombie
        assert child.returncode is not None
        with pytest.raises(ChildProcessError):
            os.waitpid(child.pid, os.WNOHANG)


@pytest.mark.bpf
def test_compiles_ahead_beyond_the_limit_wait_for_a_free_cpu_and_all_start(cache_dir, monkeypatch):
    """MAX_COMPILES children at once: the others are queued and started as children end; every tracer starts,
    each from its own child's compile."""
    from ebpftool.core import bpf as core_bpf
    from ebpftool.core import bpf_compile
    from ebpftool.core.runner import RunResult, start_tracers, stop_tracers

    children, alive_at_spawn = [], []
    real_start_child = bpf_compile.start_child

    def recorded(*args):
        alive_at_spawn.append(sum(1 for c in children if c.poll() is None))
        children.append(real_start_child(*args))
        return children[-1]
    monkeypatch.setattr(bpf_compile, "start_child", recorded)
    monkeypatch.setattr(core_bpf, "MAX_COMPILES", 1)
    tracers = [FixtureTracer("a", 5), FixtureTracer("b", 6), FixtureTracer("c", 7)]
    result = RunResult()
    running = start_tracers(tracers, result, skip_failed=False)
    try:
        assert sorted(t.name for t in running) == ["a", "b", "c"]
        assert all(p.compiled_in_child for t in running for p in t.programs)
        assert len(children) == 3 and alive_at_spawn == [0, 0, 0]   # one child at a time
    finally:
        stop_tracers(running)
    assert len(entries(cache_dir)) == 3
