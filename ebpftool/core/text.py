"""Text from outside ebpftool, made safe for a terminal: process and file names, paths, and messages that
quote what a user typed. Anyone on the node names their executables and files, and a name may hold escape
sequences a terminal acts on (clear the screen, set the title, write the clipboard). The rich-specific side
(markup) is ebpftool/ui/text.py."""
from __future__ import annotations

import re

# C0 controls, DEL and C1 controls: shown as \xNN, so that none reaches the terminal and the name stays legible;
# and the bytes of a name that are not UTF-8, which Python keeps as surrogates (os.readlink, procfs.read_text)
# and a terminal's encoder refuses
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\udc80-\udcff]")


def _shown(c: str) -> str:
    n = ord(c)
    return f"\\x{n - 0xdc00 if n >= 0xdc80 else n:02x}"


def printable(s: str) -> str:
    """s with each control character, and each byte that was not UTF-8, written as \\xNN."""
    return _CONTROL.sub(lambda m: _shown(m.group()), s)
