#!/usr/bin/env python3
"""A CycloneDX 1.5 SBOM (JSON) of an installed ebpftool: the project, every Python distribution its virtual
environment installed, and every Debian package installed (dpkg-query; BCC and its Python binding are
Debian's python3-bpfcc, libbpfcc, bpfcc-tools). The image runs it at build time and ships the result at
/opt/ebpftool/sbom.cdx.json; scripts/test-image.sh copies it out beside the image.

    /opt/ebpftool/venv/bin/python scripts/sbom.py [--output FILE]

Written by hand (the format is small) rather than with cyclonedx-bom, so that building the image needs no
further package. Components carry package URLs (purl): pkg:pypi/NAME@VERSION, pkg:deb/debian/NAME@VERSION?arch=A.
"""
from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import re
import subprocess
import sys
import uuid
from pathlib import Path

PROJECT = "ebpftool"
DEBIAN_PYTHON = "/usr/lib/python3/dist-packages"   # Debian's packages' Python modules: listed as deb packages


def _pypi_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def python_components() -> tuple[dict | None, list[dict]]:
    """(the project's own component, the other distributions), from what this interpreter imports."""
    project, seen, out = None, set(), []
    for dist in importlib.metadata.distributions():
        name = dist.metadata.get("Name")
        if not name or _pypi_name(name) in seen:
            continue
        if str(dist.locate_file("")).startswith(DEBIAN_PYTHON):
            continue   # Debian's (python3-bpfcc's "bcc" among them: not PyPI's unrelated bcc): a deb component
        seen.add(_pypi_name(name))
        component = {
            "type": "application" if _pypi_name(name) == PROJECT else "library",
            "bom-ref": f"pkg:pypi/{_pypi_name(name)}@{dist.version}",
            "name": name,
            "version": dist.version,
            "purl": f"pkg:pypi/{_pypi_name(name)}@{dist.version}",
        }
        licence = dist.metadata.get("License-Expression") or dist.metadata.get("License")
        if licence and licence != "UNKNOWN" and len(licence) < 100 and "\n" not in licence:
            component["licenses"] = [{"license": {"name": licence}}]
        if _pypi_name(name) == PROJECT:
            project = component
        else:
            out.append(component)
    return project, sorted(out, key=lambda c: c["name"].lower())


def debian_components() -> list[dict]:
    """Installed Debian packages (none where dpkg is absent)."""
    try:
        listing = subprocess.run(["dpkg-query", "-W", "-f", "${db:Status-Abbrev}\t${Package}\t${Version}\t${Architecture}\n"],
                                 capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return []
    out = []
    for line in listing.splitlines():
        status, name, version, arch = (line.split("\t") + ["", "", "", ""])[:4]
        if not status.startswith("ii") or not name:
            continue
        purl = f"pkg:deb/debian/{name}@{version}?arch={arch}"
        out.append({"type": "library", "bom-ref": purl, "name": name, "version": version, "purl": purl})
    return out


def sbom() -> dict:
    project, python = python_components()
    if project is None:
        raise SystemExit("sbom: ebpftool is not installed in this Python environment")
    return {
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": f"urn:uuid:{uuid.uuid4()}",
        "version": 1,
        "metadata": {
            "timestamp": datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat(),
            "tools": {"components": [{"type": "application", "name": "ebpftool scripts/sbom.py"}]},
            "component": project,
        },
        "components": python + debian_components(),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--output", type=Path, help="write here (default: standard output)")
    args = ap.parse_args()
    text = json.dumps(sbom(), indent=1) + "\n"
    if args.output:
        args.output.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
