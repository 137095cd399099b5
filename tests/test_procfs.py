"""ebpftool.core.procfs.executable_name: process.executable.name as the conventions define it (the base name
of /proc/PID/exe), on a fake /proc tree and on this process."""
from __future__ import annotations

import os
import sys

from ebpftool.core.procfs import executable_name


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
