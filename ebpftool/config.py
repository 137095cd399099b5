"""Config files: YAML holding any command's flags (flags given on the command line win)."""
from __future__ import annotations

import os
import stat
from typing import Any

import yaml

from ebpftool.errors import EbpftoolError

# Bounds on the YAML files ebpftool reads (--config, --zones): they are small by nature.
MAX_FILE_BYTES = 1 << 20   # 1 MiB
MAX_YAML_DEPTH = 32        # nested mappings and lists


class _Refused(yaml.YAMLError):
    """YAML this loader does not accept (an alias, too deep a nesting): `reason` is said to the user."""

    def __init__(self, reason: str, mark) -> None:
        super().__init__(reason)
        self.reason = reason
        self.problem_mark = mark


class _BoundedLoader(yaml.SafeLoader):
    """yaml.SafeLoader without aliases (*name: a few lines could expand to gigabytes, "billion laughs")
    and with a bound on nesting (a deep one would exhaust Python's recursion)."""

    def __init__(self, stream) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            raise _Refused("uses a YAML alias (*name), which ebpftool does not accept", self.peek_event().start_mark)
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise _Refused(f"is nested deeper than {MAX_YAML_DEPTH} levels", self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def read_bounded(path: str | os.PathLike, what: str, error: type[EbpftoolError] = EbpftoolError,
                 limit: int = MAX_FILE_BYTES) -> str:
    """The UTF-8 text of a regular file of at most `limit` bytes; anything else is one `error` sentence
    naming `what` (e.g. "config file"). Opened without blocking: a FIFO or a device is refused, not read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise error(f"{what} {path} is not a regular file")
        too_big = f"{what} {path} is larger than {limit // 1024} KiB" if limit % (1 << 20) else \
            f"{what} {path} is larger than {limit >> 20} MiB"
        if st.st_size > limit:
            raise error(too_big)
        try:
            data = f.read(limit + 1)
        except OSError as exc:
            raise error(f"cannot read {what} {path}: {exc.strerror}") from None
    if len(data) > limit:
        raise error(too_big)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise error(f"{what} {path} is not UTF-8 text") from None


def load_yaml(text: str, path: str | os.PathLike, what: str, error: type[EbpftoolError] = EbpftoolError) -> Any:
    """Parse YAML with the bounded loader; every problem is one `error` sentence."""
    try:
        return yaml.load(text, Loader=_BoundedLoader)  # noqa: S506 (a SafeLoader subclass)
    except _Refused as exc:
        raise error(f"{what} {path} {exc.reason} (line {exc.problem_mark.line + 1})") from None
    except RecursionError:
        raise error(f"{what} {path} is nested too deeply") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise error(f"{what} {path} is not valid YAML{where}") from None


def load_config_file(path: str) -> dict[str, Any]:
    """Read a YAML mapping of flag names (dashes or underscores) to values."""
    data = load_yaml(read_bounded(path, "config file"), path, "config file")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise EbpftoolError(f"config file {path} must be a mapping of flag names to values, not a {type(data).__name__}")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def check_keys(path: str, data: dict[str, Any], known: set[str]) -> None:
    unknown = sorted(set(data) - known)
    if unknown:
        raise EbpftoolError(f"config file {path} has unknown keys: {', '.join(unknown)} (see `ebpftool config example`)")


def example_config(params) -> str:
    """A commented YAML example listing every option of a command (click parameters)."""
    lines = ["# ebpftool config: every key is a command-line flag (dashes or underscores);",
             "# flags given on the command line override these. Uncomment what you need.", ""]
    for p in params:
        if not getattr(p, "opts", None) or p.name in ("config", "help"):
            continue
        help_text = (getattr(p, "help", "") or "").strip()
        if help_text:
            lines.append(f"# {help_text}")
        default = p.default if p.default is not None and not callable(p.default) else None
        if isinstance(default, (list, tuple)):
            default = list(default) or None
        value = yaml.safe_dump(default, default_flow_style=True).strip().removesuffix("...").strip() if default is not None else ""
        lines.append(f"#{p.name.replace('_', '-')}: {value}".rstrip())
        lines.append("")
    return "\n".join(lines)
