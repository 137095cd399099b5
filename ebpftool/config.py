"""Config files: YAML holding any command's flags (flags given on the command line win)."""
from __future__ import annotations

from typing import Any

import yaml

from ebpftool.errors import EbpftoolError


def load_config_file(path: str) -> dict[str, Any]:
    """Read a YAML mapping of flag names (dashes or underscores) to values."""
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except OSError as exc:
        raise EbpftoolError(f"cannot read config file {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise EbpftoolError(f"config file {path} is not UTF-8 text") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise EbpftoolError(f"config file {path} is not valid YAML{where}") from exc
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
