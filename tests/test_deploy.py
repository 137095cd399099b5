"""Static checks of the deployment files (no container engine or cluster runs here)."""
from __future__ import annotations

import re
import subprocess

import yaml

from tests.conftest import ROOT


def _docs(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((ROOT / "deploy" / name).read_text()) if d]


def _env(container: dict) -> dict:
    return {e["name"]: e for e in container.get("env", [])}


def test_daemonset_has_what_tracing_a_node_needs():
    (ds,) = [d for d in _docs("daemonset.yaml") if d["kind"] == "DaemonSet"]
    spec = ds["spec"]["template"]["spec"]
    assert spec["hostPID"] is True
    (c,) = spec["containers"]
    assert c["securityContext"]["privileged"] is True
    assert {"BPF", "PERFMON", "SYS_ADMIN"} <= set(c["securityContext"]["capabilities"]["add"])
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    assert {"/sys/kernel/tracing", "/sys/kernel/debug", "/sys/fs/bpf", "/lib/modules", "/usr/src"} <= mounts
    host_paths = {v["hostPath"]["path"] for v in spec["volumes"] if "hostPath" in v}
    assert {"/sys/kernel/tracing", "/sys/fs/bpf", "/lib/modules", "/usr/src"} <= host_paths
    # The compile cache (ebpftool/core/bpf_cache.py) outlives the pod: a restart does not compile again.
    assert "/var/cache/ebpftool" in mounts and "/var/cache/ebpftool" in host_paths
    env = _env(c)
    # Node name and zone reach the resource attributes through the variables ebpftool reads.
    assert env["K8S_NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert "topology.kubernetes.io/zone" in env["EBPFTOOL_ZONE"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"]["value"].endswith(":4317")
    assert c["args"][0] == "trace"


def test_env_names_in_manifests_are_the_ones_ebpftool_reads():
    from ebpftool.export.otel import K8S_ENV

    read = {n for names in K8S_ENV.values() for n in names} | {
        "EBPFTOOL_ZONE", "EBPFTOOL_REGION", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_RESOURCE_ATTRIBUTES", "OTEL_SERVICE_NAME", "NODE_IP"}
    for name in ("daemonset.yaml", "sidecar.yaml"):
        for doc in _docs(name):
            spec = doc.get("spec", {})
            spec = spec.get("template", {}).get("spec", spec)
            for c in spec.get("containers", []):
                if c["name"] == "ebpftool":
                    assert set(_env(c)) <= read, (name, set(_env(c)) - read)


def test_sidecar_shares_the_process_namespace_with_the_server():
    (pod,) = _docs("sidecar.yaml")
    assert pod["spec"]["shareProcessNamespace"] is True
    names = [c["name"] for c in pod["spec"]["containers"]]
    assert "ebpftool" in names and len(names) == 2


def test_collector_config_is_zone_aware_and_parses():
    docs = _docs("otel-collector.yaml")
    configs = {d["metadata"]["name"]: yaml.safe_load(d["data"]["config.yaml"]) for d in docs if d["kind"] == "ConfigMap"}
    agent, gateway = configs["otel-agent-config"], configs["otel-gateway-config"]
    assert "otlp" in agent["receivers"]
    assert set(agent["service"]["pipelines"]["metrics"]["exporters"]) == {"otlp/zone-gateway"}
    assert "victoria" in gateway["exporters"]["prometheusremotewrite/victoriametrics"]["endpoint"]
    (svc,) = [d for d in docs if d["kind"] == "Service"]
    assert svc["metadata"]["annotations"]["service.kubernetes.io/topology-mode"] == "Auto"


def test_dockerfile_installs_through_the_readme_script():
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM debian:bookworm", text, re.M)
    assert "scripts/install.sh" in text
    assert re.search(r'^ENTRYPOINT \["/opt/ebpftool/src/scripts/entrypoint.sh"\]', text, re.M)
    entry = (ROOT / "scripts" / "entrypoint.sh").read_text()
    assert "prepare-node.sh" in entry and "exec /usr/local/bin/ebpftool" in entry
    readme = (ROOT / "README.md").read_text()
    assert "scripts/install.sh" in readme
    for script in ("install.sh", "prepare-node.sh", "entrypoint.sh", "test.sh"):
        subprocess.run(["bash", "-n", str(ROOT / "scripts" / script)], check=True)


# --- what scripts/test-image.sh ran (podman) agrees with what the manifests ship --------------------------
def _image_flags() -> dict[str, list[str]]:
    """scripts/image-flags.sh's arrays, as bash reads them."""
    names = ("AGENT_MOUNTS", "SIDECAR_MOUNTS", "CAPS", "AGENT_ENV", "SIDECAR_ENV")
    script = f"source {ROOT / 'scripts' / 'image-flags.sh'}; " + "; ".join(
        f'printf "%s\\t" {n}; printf "%s\\t" "${{{n}[@]}}"; echo' for n in names)
    out = subprocess.run(["bash", "-c", script], check=True, capture_output=True, text=True).stdout
    flags = {}
    for line in out.splitlines():
        name, *values = [v for v in line.split("\t") if v]
        flags[name] = values
    assert set(flags) == set(names)
    return flags


def _ebpftool_container(name: str) -> tuple[dict, dict]:
    for doc in _docs(name):
        spec = doc.get("spec", {})
        spec = spec.get("template", {}).get("spec", spec)
        for c in spec.get("containers", []):
            if c["name"] == "ebpftool":
                return spec, c
    raise AssertionError(f"no ebpftool container in {name}")


def _host_mounts(spec: dict, container: dict) -> set[str]:
    """host:container[:ro] of the container's hostPath volumes, as podman's -v takes them."""
    host = {v["name"]: v["hostPath"]["path"] for v in spec["volumes"] if "hostPath" in v}
    return {f"{host[m['name']]}:{m['mountPath']}" + (":ro" if m.get("readOnly") else "")
            for m in container["volumeMounts"] if m["name"] in host}


def test_the_image_was_run_with_the_manifests_mounts_capabilities_and_env():
    flags = _image_flags()
    for manifest, prefix in (("daemonset.yaml", "AGENT"), ("sidecar.yaml", "SIDECAR")):
        spec, c = _ebpftool_container(manifest)
        assert set(flags[f"{prefix}_MOUNTS"]) == _host_mounts(spec, c), manifest
        assert set(flags["CAPS"]) == set(c["securityContext"]["capabilities"]["add"]), manifest
        assert set(flags[f"{prefix}_ENV"]) == set(_env(c)), manifest
    # the DaemonSet's other volume (the zones ConfigMap) is mounted where its args read it
    spec, c = _ebpftool_container("daemonset.yaml")
    (zones,) = [m for m in c["volumeMounts"] if m["name"] == "zones"]
    script = (ROOT / "scripts" / "test-image.sh").read_text()
    assert f'-v "$LOG/zones:{zones["mountPath"]}:ro"' in script
    # the DaemonSet's args, in the order it gives them, before the test's own (port, no GPU, interval)
    args = c["args"]
    assert " ".join(args[:4]) in " ".join(script.split()), args[:4]
    assert "--prometheus-port" in args and "--prometheus-address" in args
    # hostPID + hostNetwork: --pid=host --network=host; privileged, then the capabilities alone
    assert spec["hostPID"] is True and spec["hostNetwork"] is True
    assert "--pid=host --network=host" in script
    assert c["securityContext"]["privileged"] is True and "run_agent ebpftool-agent --privileged" in script
    assert 'cap_flags+=(--cap-add "$c")' in script
    # the sidecar: the server's process (and, as in a Pod, network) namespace
    (pod,) = _docs("sidecar.yaml")
    assert pod["spec"]["shareProcessNamespace"] is True
    assert '--pid "container:$server" --network "container:$server"' in script
    spec, c = _ebpftool_container("sidecar.yaml")
    assert c["args"][:2] == ["trace", "--no-ui"] and "--port" in c["args"] and "--no-net" in c["args"]
    # the flags the script gives are these lists, and the env values it sets have these names
    for used in ('mounts_of "${AGENT_MOUNTS[@]}"', 'mounts_of "${SIDECAR_MOUNTS[@]}"', "same_names AGENT_ENV",
                 "same_names SIDECAR_ENV", 'source "$ROOT/scripts/image-flags.sh"'):
        assert used in script, used
    for script_name in ("test-image.sh", "image-flags.sh"):
        subprocess.run(["bash", "-n", str(ROOT / "scripts" / script_name)], check=True)


def test_doctor_names_a_seccomp_filter_that_refuses_bpf(tmp_path):
    """podman's default seccomp profile refuses bpf() without CAP_SYS_ADMIN, even with CAP_BPF and CAP_PERFMON
    (scripts/test-image.sh's least-privilege step): BCC then fails with what reads like a compile error."""
    from ebpftool.core.privileges import bpf_refusal_hint, seccomp_mode

    status = tmp_path / "status"
    caps = {"CAP_BPF": True, "CAP_PERFMON": True, "CAP_SYS_ADMIN": False}
    status.write_text("Name:\tpython3\nSeccomp:\t2\nSeccomp_filters:\t1\n")
    assert seccomp_mode(str(status)) == 2
    assert "seccomp" in bpf_refusal_hint(caps, str(status)) and "CAP_SYS_ADMIN" in bpf_refusal_hint(caps, str(status))
    assert bpf_refusal_hint({**caps, "CAP_SYS_ADMIN": True}, str(status)) == ""
    status.write_text("Name:\tpython3\nSeccomp:\t0\n")
    assert bpf_refusal_hint(caps, str(status)) == ""


def test_the_sbom_names_bcc_the_otel_sdk_and_ebpftool_with_versions(tmp_path):
    """scripts/sbom.py, as the image runs it at build time (Dockerfile), on this machine's install: a
    CycloneDX document that scripts/sbom_check.py (which test-image.sh runs on the image's copy) accepts."""
    import json
    import sys
    assert "scripts/sbom.py --output /opt/ebpftool/sbom.cdx.json" in (ROOT / "Dockerfile").read_text()
    out = tmp_path / "sbom.cdx.json"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "sbom.py"), "--output", str(out)], check=True)
    bom = json.loads(out.read_text())
    sys.path.insert(0, str(ROOT / "scripts"))
    from sbom_check import problems
    assert problems(bom) == []
    purls = {c["purl"] for c in bom["components"]}
    assert not any(p.startswith("pkg:pypi/bcc@") for p in purls)   # Debian's binding, not PyPI's unrelated bcc
    assert len({c["bom-ref"] for c in bom["components"]}) == len(bom["components"])


def test_backstage_and_techdocs_cover_the_docs():
    catalog = yaml.safe_load((ROOT / "catalog-info.yaml").read_text())
    assert catalog["kind"] == "Component" and catalog["metadata"]["name"] == "ebpftool"
    assert catalog["metadata"]["annotations"]["backstage.io/techdocs-ref"] == "dir:."
    mkdocs = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    listed = {page for entry in mkdocs["nav"] for page in entry.values()}
    on_disk = {p.name for p in (ROOT / mkdocs["docs_dir"]).glob("*.md")}
    assert listed == on_disk, (listed ^ on_disk)
