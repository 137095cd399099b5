#!/usr/bin/env python3
"""Check a CycloneDX SBOM made by scripts/sbom.py: its format, and that it names what an auditor of a
privileged node agent looks for first, each with a version: BCC (Debian's python3-bpfcc and libbpfcc), the
OpenTelemetry SDK, and ebpftool itself. Exit 1 with what is missing.

    python3 scripts/sbom_check.py FILE
"""
from __future__ import annotations

import json
import sys

REQUIRED = {"python3-bpfcc": "deb", "libbpfcc": "deb", "opentelemetry-sdk": "pypi"}


def problems(bom: dict) -> list[str]:
    out = []
    if bom.get("bomFormat") != "CycloneDX" or not str(bom.get("specVersion", "")).startswith("1."):
        out.append("not a CycloneDX 1.x document")
    project = bom.get("metadata", {}).get("component", {})
    if project.get("name") != "ebpftool" or not project.get("version"):
        out.append("metadata.component is not ebpftool with a version")
    by_name = {c.get("name"): c for c in bom.get("components", [])}
    for name, kind in REQUIRED.items():
        c = by_name.get(name)
        if c is None or not c.get("version") or not str(c.get("purl", "")).startswith(f"pkg:{kind}/"):
            out.append(f"no {name} ({kind}) with a version and a purl")
    return out


def main() -> int:
    bom = json.load(open(sys.argv[1]))
    wrong = problems(bom)
    if wrong:
        print("sbom: " + "; ".join(wrong), file=sys.stderr)
        return 1
    by_name = {c["name"]: c["version"] for c in bom["components"]}
    print(f"sbom: {len(bom['components'])} components; ebpftool {bom['metadata']['component']['version']}, "
          + ", ".join(f"{n} {by_name[n]}" for n in REQUIRED))
    return 0


if __name__ == "__main__":
    sys.exit(main())
