"""Outside text in rich's output: besides the control characters (ebpftool/core/text.py), rich reads markup
in strings, and a stray closing tag in a name (an executable called `x[/]y`) raises: the live view and the
summary would end in a traceback."""
from __future__ import annotations

from rich.markup import escape
from rich.text import Text

from ebpftool.core.text import printable


def plain(value) -> Text:
    """A table cell that rich draws as it is: no markup read in it, no control character."""
    return Text(printable(str(value)))


def markup_safe(s: str) -> str:
    """s to put inside a rich markup string (console.print(f"[yellow]{...}[/]")): printable, its brackets escaped."""
    return escape(printable(s))
