"""Where a uprobe goes in a function (ebpftool.core.uprobe_points): fed real prologues' bytes.

The byte strings are copied from `objdump -d` of Debian 12's libssl.so.3 (OpenSSL 3.0) and of gcc's code;
the last tests read the libssl files of this machine, when there are any.
"""
from __future__ import annotations

import glob

import pytest

from ebpftool.core.elf import read_elf
from ebpftool.core.uprobe_points import (
    RAX, RCX, RDI, RDX, RSI, RSP, decode_one, forwarding_call, probe_point, straight_line,
)
from ebpftool.tracers.inference.tls_libs import probe_plan

# SSL_read: sub $0x18,%rsp; mov %fs:0x28,%rax; mov %rax,0x8(%rsp); xor %eax,%eax; test %edx,%edx; js +0x2f;
# mov %rsp,%rcx; movslq %edx,%rdx; call ssl_read_internal
SSL_READ = bytes.fromhex("4883ec18 64488b042528000000 4889442408 31c0 85d2 782f 4889e1 4863d2 e83dfeffff".replace(" ", ""))
# SSL_read_ex: sub $0x8,%rsp; call ssl_read_internal; xor %edx,%edx
SSL_READ_EX = bytes.fromhex("4883ec08 e8c7fdffff 31d2".replace(" ", ""))
# ssl_read_internal: push %r13; push %r12; push %rbp; push %rbx; sub $0x38,%rsp
SSL_READ_INTERNAL = bytes.fromhex("4155 4154 55 53 4883ec38".replace(" ", ""))
# SSL_accept: cmpq $0x0,0x30(%rdi); je +9; jmp SSL_do_handshake
SSL_ACCEPT = bytes.fromhex("48837f3000 7409 e9c488feff".replace(" ", ""))
# SSL_free: test %rdi,%rdi; je +0x397; push %r13
SSL_FREE = bytes.fromhex("4885ff 0f8497030000 4155".replace(" ", ""))
# a CET build's entry: endbr64; push %r13
ENDBR_PUSH = bytes.fromhex("f30f1efa 4155".replace(" ", ""))
# mov %rsi,%rdi first: the argument changes before anything emulated
CLOBBER = bytes.fromhex("4889f7 7402".replace(" ", ""))


def test_lengths_and_effects_of_prologue_instructions():
    insns = straight_line(SSL_READ)
    assert [i.length for i in insns] == [4, 9, 5, 2, 2, 2]
    assert insns[0].writes == {RSP}
    assert insns[1].writes == {RAX}              # the stack protector's load through %fs
    assert insns[2].writes == frozenset()        # a store to the stack
    assert insns[4].writes == frozenset()        # test
    assert insns[5].emulated and insns[5].conditional and insns[5].branch_target == 0x16 + 2 + 0x2F
    mov_rsp_rcx = decode_one(SSL_READ, 0x18)
    assert mov_rsp_rcx.length == 3 and mov_rsp_rcx.writes == {RCX}
    movslq = decode_one(SSL_READ, 0x1B)
    assert movslq.length == 3 and movslq.writes == {RDX}
    call = decode_one(SSL_READ, 0x1E)
    assert call.is_call and call.emulated and call.branch_target == 0x23 - 0x1C3


def test_entry_probe_goes_on_the_first_emulated_instruction_before_the_arguments_change():
    assert probe_point(SSL_READ, (RDI, RSI, RDX)).offset == 0x16       # the js
    assert probe_point(SSL_READ_EX, (RDI, RSI, RDX, RCX)).offset == 4  # the call
    assert probe_point(SSL_ACCEPT, (RDI,)).offset == 5                 # the je after a compare in memory
    assert probe_point(SSL_FREE, (RDI,)).offset == 3
    assert probe_point(ENDBR_PUSH, (RDI,)).offset == 4
    clobbered = probe_point(CLOBBER, (RDI,))
    assert clobbered.offset == 0 and not clobbered.emulated
    assert probe_point(CLOBBER, (RSI,)).offset == 3                  # only rdi changed


def test_return_probe_needs_the_stack_pointer_unmoved():
    # after `sub $N,%rsp` the return address is no longer at the stack pointer: the entry it is
    assert probe_point(SSL_READ, (), return_address=True) == probe_point(b"\x48\x83\xec\x18", ())
    assert not probe_point(SSL_READ, (), return_address=True).emulated
    internal = probe_point(SSL_READ_INTERNAL, (RDI, RSI, RDX, RCX), return_address=True)
    assert internal.offset == 0 and internal.emulated                 # push %r13: emulated, rsp not moved yet
    assert probe_point(ENDBR_PUSH, (), return_address=True).offset == 4


def test_unknown_instruction_keeps_the_entry():
    assert probe_point(bytes.fromhex("f0 0fc1 87e0090000 7402".replace(" ", "")), (RDI,)).offset == 0  # lock xadd
    assert probe_point(b"", (RDI,)).offset == 0
    assert probe_point(b"\x48", (RDI,)).offset == 0                   # cut short


def test_forwarding_call_of_the_wrappers():
    target, changed = forwarding_call(SSL_READ)
    assert target == 0x23 - 0x1C3 and changed == {RCX, RDX}
    target_ex, changed_ex = forwarding_call(SSL_READ_EX)
    assert target_ex == 9 - 0x239 and changed_ex == frozenset()
    assert forwarding_call(SSL_ACCEPT) is None                        # jumps away unconditionally


LIBSSL = sorted(set(glob.glob("/usr/lib/x86_64-linux-gnu/libssl.so.*")
                    + glob.glob("/opt/ebpftool/venv/lib/python3*/site-packages/*/bin/lib/libssl.so.*")))


@pytest.mark.skipif(not LIBSSL, reason="no libssl on this machine")
@pytest.mark.parametrize("path", LIBSSL)
def test_plan_of_a_real_libssl(path):
    elf = read_elf(path)
    plan = probe_plan(elf)
    programs = {p.program for p in plan}
    assert {"tls_read_ex_enter", "tls_read_exit", "tls_write_ex_enter", "tls_write_exit"} <= programs
    for probe in plan:
        insn = decode_one(elf.code_at(probe.vaddr, 16), 0)
        if probe.ret and "implementation" in probe.label:
            # a uretprobe on an emulated instruction where the stack pointer still holds the return address
            assert insn is not None and insn.emulated, probe
        assert elf.file_offset(probe.vaddr) == probe.file_offset


def test_openssl_is_found_in_bundled_copies_and_in_executables_that_export_it(tmp_path):
    """Where the TLS uprobes look (a /proc of our own making, pointing at this machine's real files): a
    libssl a wheel bundled under auditwheel's name, and a process's executable only where it exports
    SSL_read and SSL_write (Node.js's does; python's does not)."""
    import os
    import shutil
    import sys

    from ebpftool.tracers.inference.tls_libs import tls_library_candidates
    if not LIBSSL:
        pytest.skip("no libssl on this machine")
    exporting = str(tmp_path / "bin" / "server")            # an executable exporting SSL_read and SSL_write
    os.makedirs(os.path.dirname(exporting))
    shutil.copy(LIBSSL[0], exporting)                       # (libssl's code and symbols, under no libssl name)
    bundled = tmp_path / "site-packages" / "pkg.libs" / "libssl-57118d4e.so.3"
    bundled.parent.mkdir(parents=True)
    bundled.write_bytes(b"")
    proc = tmp_path / "proc"
    for pid, exe, mapped in ((10, exporting, ""), (11, os.path.realpath(sys.executable), str(bundled))):
        (proc / str(pid)).mkdir(parents=True)
        (proc / str(pid) / "root").symlink_to("/")
        (proc / str(pid) / "exe").symlink_to(exe)
        (proc / str(pid) / "maps").write_text(
            f"7f0000000000-7f0000001000 r--p 00000000 08:01 99 {mapped}\n" if mapped else "")
    found = tls_library_candidates(str(proc))
    assert exporting in found                       # pid 10's executable exports OpenSSL
    assert str(bundled) in found                    # pid 11 maps a bundled copy
    assert os.path.realpath(sys.executable) not in found
