"""ebpftool.core.procfs.executable_name: process.executable.name as the conventions define it (the base name
of /proc/PID/exe), on a fake /proc tree and on this process; names and paths that are not UTF-8."""
from __future__ import annotations

import os
import sys

from ebpftool.core.procfs import executable_name, read_maps, read_text
from ebpftool.core.text import printable


def fake_process(proc, pid: int, comm: str, exe: str | None) -> None:
    d = proc / str(pid)
    d.mkdir(parents=True)
    (d / "comm").write_text(comm + "\n")
    if exe is not None:
        os.symlink(exe, d / "exe")


def test_the_executable_not_the_thread_name(tmp_path):
    fake_process(tmp_path, 10, "ray::IDLE", "/usr/bin/python3.11")
    assert executable_name(10, "ray::ProxyActor", proc=str(tmp_path)) == "python3.11"


def test_a_deleted_executable_keeps_its_name(tmp_path):
    fake_process(tmp_path, 11, "server", "/opt/app/server-v2 (deleted)")
    assert executable_name(11, proc=str(tmp_path)) == "server-v2"


def test_without_an_executable_the_recorded_name_then_the_comm(tmp_path):
    fake_process(tmp_path, 12, "kworker/0:1", None)   # a kernel thread: no exe link
    assert executable_name(12, "recorded", proc=str(tmp_path)) == "recorded"
    assert executable_name(12, proc=str(tmp_path)) == "kworker/0:1"


def test_a_process_gone_is_named_by_what_the_kernel_recorded(tmp_path):
    assert executable_name(13, "worker", proc=str(tmp_path)) == "worker"
    assert executable_name(13, proc=str(tmp_path)) == ""


def test_this_process():
    assert executable_name(os.getpid(), "ignored") == os.path.basename(os.path.realpath(sys.executable))


# --- names that are not UTF-8: a file name or a comm is whatever bytes its owner chose ---------------------
def test_names_that_are_not_utf8_can_be_exported_and_paths_still_opened(tmp_path):
    d = tmp_path / "20"
    d.mkdir()
    os.symlink(b"/opt/ev\xffil", bytes(d / "exe"))
    library = tmp_path.as_posix().encode() + b"/\xff\xfe-libssl.so.3"
    open(library, "wb").close()
    (d / "maps").write_bytes(b"7f00-7f10 r-xp 00000000 08:01 1 " + library + b"\n")
    (d / "comm").write_bytes(b"a\xffb\n")
    # the name goes into OTLP and Prometheus' text, which encode UTF-8: the byte replaced
    name = executable_name(20, proc=str(tmp_path))
    assert name == "ev\ufffdil" and name.encode("utf-8")
    # a path from maps opens as the file it names (before: UnicodeDecodeError out of read_maps)
    (mapping,) = read_maps(20, proc=str(tmp_path))
    assert os.path.exists(mapping.path) and os.fsencode(mapping.path) == library
    os.unlink(d / "exe")
    assert executable_name(20, proc=str(tmp_path)) == "a\ufffdb"   # the comm, when no executable
    assert read_text(str(d / "comm")).encode("utf-8", "surrogateescape") == b"a\xffb\n"


def test_printable_shows_controls_and_bytes_that_were_not_utf8():
    assert printable("a\x1b[2Jb\x07\x9b") == "a\\x1b[2Jb\\x07\\x9b"
    assert printable(os.fsdecode(b"ev\xffil")) == "ev\\xffil"
    assert printable("caf\u00e9 \u6a21\u578b") == "caf\u00e9 \u6a21\u578b"   # text that is printable stays
