"""Where in a function a uprobe costs least, on x86-64.

When a uprobe is hit the kernel either emulates the probed instruction or copies it out of line and
single-steps it: two traps instead of one, which costs an order of magnitude more on a virtual machine
(docs/performance.md has the figures). x86's uprobes emulate relative branches and calls (jcc, jmp, call),
`push` of a register and `nop`; a function's first instruction is often none of these (`sub $N,%rsp`,
`endbr64`). So a probe that only needs the function's arguments goes on the first emulated instruction
of its straight-line prologue, provided nothing before it changed those argument registers; a uretprobe
goes there too if the stack pointer has not moved yet (the kernel takes the return address at the stack
pointer of the hit).

This is a decoder of the few instruction forms compilers put in prologues: ModRM-based ALU, mov, lea,
test and cmp, movsxd, movzx, cmov, mov of an immediate, push, endbr64, the fs-relative stack-protector
load, relative branches and calls. Anything else ends the scan: the probe then stays at the entry, as
correct as before and as costly.
"""
from __future__ import annotations

from dataclasses import dataclass

# x86-64 register numbers (ModRM/REX encoding)
RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI = range(8)
R8, R9 = 8, 9
ARGUMENT_REGISTERS = (RDI, RSI, RDX, RCX, R8, R9)   # the System V ABI's first six integer arguments

# opcodes followed by ModRM: (destination operand: "rm", "reg" or None for compares/tests)
_MODRM_OPS = {
    0x01: "rm", 0x03: "reg", 0x09: "rm", 0x0B: "reg", 0x11: "rm", 0x13: "reg", 0x19: "rm", 0x1B: "reg",
    0x21: "rm", 0x23: "reg", 0x29: "rm", 0x2B: "reg", 0x31: "rm", 0x33: "reg", 0x39: None, 0x3B: None,
    0x63: "reg", 0x85: None, 0x84: None, 0x88: "rm", 0x89: "rm", 0x8A: "reg", 0x8B: "reg", 0x8D: "reg",
}
_PREFIXES = {0x64, 0x65, 0x66, 0x2E, 0x3E}           # fs, gs, operand size, segment overrides


@dataclass(frozen=True)
class Instruction:
    offset: int
    length: int
    emulated: bool              # the kernel emulates it at a uprobe hit (no single-step)
    writes: frozenset[int]      # registers it changes (RSP included when it moves the stack)
    branch_target: int | None   # a relative call's or jump's target offset (None: falls through)
    is_call: bool = False
    conditional: bool = False


def _modrm_length(code: bytes, i: int) -> int | None:
    """Bytes of the ModRM byte at i and what follows it (SIB, displacement)."""
    if i >= len(code):
        return None
    modrm = code[i]
    mod, rm = modrm >> 6, modrm & 7
    n = 1
    if mod != 3 and rm == 4:   # SIB
        if i + 1 >= len(code):
            return None
        n += 1
        if mod == 0 and (code[i + 1] & 7) == 5:
            n += 4
    if mod == 0 and rm == 5:   # RIP-relative disp32
        n += 4
    elif mod == 1:
        n += 1
    elif mod == 2:
        n += 4
    return n


def decode_one(code: bytes, offset: int) -> Instruction | None:
    """The instruction at offset, or None when it is not one this decoder knows."""
    i = offset
    while i < len(code) and code[i] in _PREFIXES:
        i += 1
    if code[i:i + 4] == b"\xf3\x0f\x1e\xfa" and i == offset:   # endbr64
        return Instruction(offset, 4, False, frozenset(), None)
    rex = 0
    if i < len(code) and 0x40 <= code[i] <= 0x4F:
        rex = code[i]
        i += 1
    if i >= len(code):
        return None
    op = code[i]
    rex_w, rex_r, rex_b = rex & 8, (rex >> 2) & 1, rex & 1

    def done(end: int, emulated: bool = False, writes=(), target=None, **kw) -> Instruction | None:
        if end > len(code):
            return None
        return Instruction(offset, end - offset, emulated, frozenset(writes), target, **kw)

    if 0x50 <= op <= 0x57 and not rex_w and i == offset + (1 if rex else 0):
        return done(i + 1, emulated=True, writes=(RSP,))                     # push reg
    if op == 0x90 and i == offset:
        return done(i + 1, emulated=True)                                    # nop
    if 0x70 <= op <= 0x7F and i + 2 <= len(code):                            # jcc rel8
        return done(i + 2, emulated=True, target=i + 2 + int.from_bytes(code[i + 1:i + 2], "little", signed=True),
                    conditional=True)
    if op == 0xEB and i + 2 <= len(code):                                    # jmp rel8
        return done(i + 2, emulated=True, target=i + 2 + int.from_bytes(code[i + 1:i + 2], "little", signed=True))
    if op in (0xE8, 0xE9) and i + 5 <= len(code):                            # call / jmp rel32
        target = i + 5 + int.from_bytes(code[i + 1:i + 5], "little", signed=True)
        if op == 0xE8:
            # a call changes every caller-saved register; what matters here is that it is emulated
            return done(i + 5, emulated=True, writes=(RAX, RCX, RDX, RSI, RDI, R8, R9, 10, 11), target=target,
                        is_call=True)
        return done(i + 5, emulated=True, target=target)
    if 0xB8 <= op <= 0xBF:                                                   # mov imm, reg
        return done(i + (9 if rex_w else 5), writes=((op - 0xB8) | (rex_b << 3),))
    if op in _MODRM_OPS or op in (0x81, 0x83, 0xC7, 0xF7):
        n = _modrm_length(code, i + 1)
        if n is None:
            return None
        modrm = code[i + 1]
        mod, reg, rm = modrm >> 6, ((modrm >> 3) & 7) | (rex_r << 3), (modrm & 7) | (rex_b << 3)
        end = i + 1 + n
        if op in _MODRM_OPS:
            dest = _MODRM_OPS[op]
        elif op == 0x83:
            end += 1
            dest = None if (modrm >> 3) & 7 == 7 else "rm"                   # /7 is cmp
        elif op == 0x81:
            end += 4
            dest = None if (modrm >> 3) & 7 == 7 else "rm"
        elif op == 0xC7:
            end += 4
            dest = "rm"
        else:                                                                # 0xF7: /0 test imm32, else unknown
            if (modrm >> 3) & 7 != 0:
                return None
            end += 4
            dest = None
        writes = ()
        if dest == "reg":
            writes = (reg,)
        elif dest == "rm" and mod == 3:
            writes = (rm,)
        return done(end, writes=writes)
    if op == 0x0F and i + 1 < len(code):
        op2 = code[i + 1]
        if 0x80 <= op2 <= 0x8F and i + 6 <= len(code):                       # jcc rel32
            return done(i + 6, emulated=True,
                        target=i + 6 + int.from_bytes(code[i + 2:i + 6], "little", signed=True), conditional=True)
        if op2 in (0xB6, 0xB7, 0xBE, 0xBF) or 0x40 <= op2 <= 0x4F:           # movzx / movsx / cmovcc
            n = _modrm_length(code, i + 2)
            if n is None:
                return None
            reg = ((code[i + 2] >> 3) & 7) | (rex_r << 3)
            return done(i + 2 + n, writes=(reg,))
        if op2 == 0x1F:                                                      # nopl (not emulated)
            n = _modrm_length(code, i + 2)
            return None if n is None else done(i + 2 + n)
    return None


def straight_line(code: bytes, limit: int = 16) -> list[Instruction]:
    """The function's first instructions in order, up to and including its first branch or call (or the
    first instruction this decoder does not know, which is left out)."""
    out: list[Instruction] = []
    offset = 0
    while len(out) < limit and offset < len(code):
        insn = decode_one(code, offset)
        if insn is None:
            break
        out.append(insn)
        if insn.branch_target is not None:
            break
        offset += insn.length
    return out


@dataclass(frozen=True)
class ProbePoint:
    offset: int         # from the function's start
    emulated: bool      # False: the entry, where nothing better was found


def probe_point(code: bytes, keep: tuple[int, ...] = ARGUMENT_REGISTERS, *, return_address: bool = False) -> ProbePoint:
    """Where to put a uprobe that reads the registers `keep` as they were at the function's entry: the first
    emulated instruction before any of them (or, with return_address, the stack pointer: a uretprobe's
    place) changes; the entry (offset 0) where there is none."""
    watched = set(keep) | ({RSP} if return_address else set())
    for insn in straight_line(code):
        if insn.emulated:
            return ProbePoint(insn.offset, True)
        if insn.writes & watched:
            break
    return ProbePoint(0, False)


def forwarding_call(code: bytes) -> tuple[int, frozenset[int]] | None:
    """A function that begins by calling another one (an exported wrapper around the library's own
    implementation, as OpenSSL's SSL_read around ssl_read_internal): the first call's target offset (from
    this function's start) and the argument registers changed before it; None when its first call comes
    after an instruction this decoder does not know. Conditional branches on the way (an argument check)
    are followed on their fall-through side."""
    changed: set[int] = set()
    offset = 0
    for _ in range(32):
        insn = decode_one(code, offset)
        if insn is None:
            return None
        if insn.is_call:
            return insn.branch_target, frozenset(changed & set(ARGUMENT_REGISTERS))
        if insn.branch_target is not None and not insn.conditional:
            return None   # an unconditional jump: not a straight wrapper
        changed |= insn.writes
        offset += insn.length
    return None
