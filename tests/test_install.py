"""The node install that scripts/install.sh makes (the README's first command; scripts/test.sh runs it before
the suite): a root-owned copy of the package and of bpf/ in the environment, run by a launcher that imports
nothing from the directory it is started in.

Where the suite runs with another environment's Python than install.sh's, or the launcher is not there
(`pytest` run by hand without the install), these tests skip and say so.
"""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.bpf

VENV = Path(os.environ.get("EBPFTOOL_VENV", "/opt/ebpftool/venv"))
LAUNCHER = Path(os.environ.get("EBPFTOOL_BIN", "/usr/local/bin/ebpftool"))


@pytest.fixture(scope="module")
def installed() -> dict:
    """What the environment's own copy says of itself, imported from / so that no checkout is on the path."""
    if Path(sys.prefix).resolve() != VENV.resolve():
        pytest.skip(f"the suite runs with {sys.prefix}'s Python, not install.sh's environment {VENV}")
    out = subprocess.run(
        [sys.executable, "-I", "-c",
         "import json, ebpftool, ebpftool.core.cstruct as c; "
         "print(json.dumps({'package': ebpftool.__file__, 'bpf_dir': str(c.BPF_DIR)}))"],
        cwd="/", capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def _files(top: Path) -> set[str]:
    return {str(p.relative_to(top)) for p in top.rglob("*") if p.is_file() and "__pycache__" not in p.parts}


def test_the_install_is_a_copy_in_the_environment_with_every_bpf_source(installed):
    package = Path(installed["package"]).resolve().parent
    assert package.is_relative_to(VENV.resolve()), f"ebpftool imported from {package}, outside {VENV}"
    direct_url = metadata.distribution("ebpftool").read_text("direct_url.json") or "{}"
    assert not json.loads(direct_url).get("dir_info", {}).get("editable"), "an editable install runs the checkout"
    bpf_dir = Path(installed["bpf_dir"])
    assert bpf_dir == VENV / "share" / "ebpftool" / "bpf"
    # pyproject.toml's data-files name each folder of bpf/: a folder left out there is missing here
    missing, extra = _files(ROOT / "bpf") - _files(bpf_dir), _files(bpf_dir) - _files(ROOT / "bpf")
    assert not missing and not extra, (f"the installed bpf/ lacks {sorted(missing)} and has {sorted(extra)} "
                                       "(pyproject.toml's data-files; or run scripts/install.sh again)")


def test_no_installed_file_is_writable_by_anyone_but_root(installed):
    for top in (Path(installed["package"]).parent, Path(installed["bpf_dir"])):
        for path in [top, *top.rglob("*")]:
            st = path.lstat()
            assert st.st_uid == 0, f"{path} belongs to uid {st.st_uid}"
            assert not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) or stat.S_ISLNK(st.st_mode), \
                f"{path} is writable by others ({stat.filemode(st.st_mode)})"


def test_the_launcher_runs_the_installed_copy_wherever_it_is_started(installed, tmp_path):
    if not LAUNCHER.exists():
        pytest.skip(f"no launcher at {LAUNCHER} (scripts/install.sh makes it)")
    # A directory holding a package of the same name: `python -m ebpftool` would import it and run it as root.
    planted = tmp_path / "ebpftool"
    planted.mkdir()
    marker = tmp_path / "planted-code-ran"
    (planted / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    (planted / "__main__.py").write_text("")
    # an empty compile cache of its own: the programs are compiled, by a child process (bpf_compile.py)
    env = {**os.environ, "EBPFTOOL_BPF_CACHE": str(tmp_path / "cache")}
    out = subprocess.run([str(LAUNCHER), "net", "--duration", "1", "--no-ui"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert not marker.exists(), "the launcher imported the ebpftool package of its current directory"
    # the installed copy compiled its programs from its own copy of bpf/ and attached them
    assert out.returncode == 0, out.stderr[-2000:]
    assert "probes attached" in out.stderr + out.stdout
