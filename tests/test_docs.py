"""The reference in docs/ against the code: names listed must be the names exported (no BPF, no root)."""
from __future__ import annotations

import ast
import re
from pathlib import Path

from ebpftool import semconv

ROOT = Path(__file__).resolve().parents[1]
TELEMETRY = ROOT / "docs" / "telemetry.md"
# A telemetry name as written: lower-case words joined by dots (`http.server.request.duration`).
NAME = re.compile(r"[a-z][a-z0-9_]*(?:\.[a-z0-9_]+)+")
# Namespaces of what ebpftool exports (others in the page are code or fields: `tcp_sock.segs_out`).
EXPORTED_NAMESPACES = ("ebpftool.", "http.", "gen_ai.", "network.", "process.", "k8s.", "cloud.", "source.",
                       "destination.", "server.", "client.", "url.", "error.", "container.", "thread.", "service.",
                       "host.", "otel.")
# Named in the page but not exported, with why.
CITED_NOT_EXPORTED = {"network.flow.io": "the closed proposal's name, cited to say why ebpftool.network.flow.io"}


def semconv_names() -> dict[str, str]:
    """Constant -> name for every telemetry name in semconv.py (bucket bounds left out)."""
    out = {}
    for const, value in vars(semconv).items():
        if const.isupper() and isinstance(value, str):
            out[const] = value
        elif const.isupper() and isinstance(value, dict):
            out.update({f"{const}[{k!r}]": v for k, v in value.items() if isinstance(v, str)})
    return out


def code_outside_semconv() -> str:
    return "\n".join(p.read_text() for p in (ROOT / "ebpftool").rglob("*.py") if p.name != "semconv.py")


def string_literals_in_code() -> set[str]:
    """Every string constant in ebpftool/ (semconv.py included): the names the code can write."""
    found = set()
    for path in (ROOT / "ebpftool").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                found.add(node.value)
    return found


def documented() -> set[str]:
    """Names in backticks, also as `name=value`."""
    ticked = (t.split("=", 1)[0] for t in re.findall(r"`([^`\s]+)`", TELEMETRY.read_text()))
    return {t for t in ticked if NAME.fullmatch(t)}


def test_every_name_the_code_exports_is_in_docs_telemetry():
    code = code_outside_semconv()
    listed = documented()
    # Exported: the constant is used outside semconv.py (an unused constant is not exported).
    missing = {name for const, name in semconv_names().items()
               if re.search(rf"\b{re.escape(const.split('[')[0])}\b", code) and name not in listed}
    assert not missing, f"exported but not in docs/telemetry.md: {sorted(missing)}"


def test_every_name_in_docs_telemetry_is_one_the_code_writes():
    written = string_literals_in_code()
    unknown = {name for name in documented() if name.startswith(EXPORTED_NAMESPACES)
               and name not in written and name not in CITED_NOT_EXPORTED}
    assert not unknown, f"in docs/telemetry.md but written nowhere in ebpftool/: {sorted(unknown)}"


def test_bucket_bounds_named_in_docs_exist():
    for const in set(re.findall(r"`([A-Z_]+_BUCKETS)`", TELEMETRY.read_text())):
        assert isinstance(getattr(semconv, const.removeprefix("semconv."), None), tuple), const


def test_readme_is_a_front_door_and_keeps_its_two_commands():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.encode()) <= 12 * 1024
    assert "sudo scripts/install.sh && sudo ebpftool trace --duration 30\n" in readme
    assert "sudo scripts/test.sh\n" in readme


def test_relative_links_in_readme_and_docs_lead_to_files_that_exist():
    pages = [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]
    broken = []
    for page in pages:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if "://" in target or target.startswith("#"):
                continue
            if not (page.parent / target.split("#", 1)[0]).exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert not broken, broken
