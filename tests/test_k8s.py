"""The Kubernetes facts a node agent reads without the API server: Pod UIDs from cgroup paths, names
from downward-API variables, and where they land on flow points."""
from __future__ import annotations

import os

import pytest

from ebpftool.enrich.k8s import CgroupPaths, cgroup2_mount, container_id_of_cgroup, node_name, pod_uid_of_cgroup
from ebpftool import semconv as sc
from ebpftool.tracers.net import FlowGroup, k8s_attrs
from ebpftool.tracers.net.zones import LOCAL_ZONE, Zone

UID = "0f1b5c7e-2c4d-4e8f-9a0b-1c2d3e4f5a6b"
CID = "4e8f9a0b" * 8


@pytest.mark.parametrize("text", [
    # cgroup v2, cgroupfs driver (Burstable)
    f"0::/kubepods/burstable/pod{UID}/{CID}\n",
    # cgroup v2, systemd driver, containerd: the UID's dashes become underscores
    f"0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID.replace('-', '_')}.slice/"
    f"cri-containerd-{CID}.scope\n",
    # Guaranteed Pods sit directly under kubepods
    f"0::/kubepods.slice/kubepods-pod{UID.replace('-', '_')}.slice/crio-{CID}.scope\n",
    # cgroup v1 hierarchies: any line that names the Pod will do
    f"12:pids:/kubepods/besteffort/pod{UID}/{CID}\n11:memory:/kubepods/besteffort/pod{UID}/{CID}\n0::/\n",
    # a kubelet that itself runs in a container (kind): the path is prefixed
    f"0::/system.slice/docker-{CID}.scope/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-burstable.slice/"
    f"kubelet-kubepods-burstable-pod{UID.replace('-', '_')}.slice/cri-containerd-{CID}.scope\n",
    # an agent in its own cgroup namespace sees other Pods' paths relative to its own
    f"0::/../../besteffort/pod{UID}/{CID}\n",
    # Pods nested in a Pod (a cluster run inside a Pod): the innermost, the process's own, wins
    f"0::/kubepods/burstable/pod11111111-2222-3333-4444-555555555555/{CID}/kubepods/besteffort/pod{UID}/{CID}\n",
    # the Pod's own cgroup (a process of the pause container's level)
    f"0::/kubepods/pod{UID}\n",
])
def test_pod_uid_from_every_cgroup_layout_the_kubelet_makes(text):
    assert pod_uid_of_cgroup(text) == UID


@pytest.mark.parametrize("text", [
    "0::/\n",
    "0::/system.slice/nginx.service\n",
    f"0::/system.slice/podman-{CID}.scope\n",                       # a container, not a Pod
    f"0::/kubepods/pod{UID.replace('-', '_', 1)}/{CID}\n",             # separators mixed
    f"0::/kubepods/xpod{UID}/{CID}\n",                                # not the kubelet's component
    f"0::/kubepods/burstable/pod{UID[:-1]}/{CID}\n",                 # not a whole UID
    "",
])
def test_no_pod_outside_kubepods(text):
    assert pod_uid_of_cgroup(text) is None


@pytest.mark.parametrize("path", [
    f"/kubepods/burstable/pod{UID}/{CID}",                                                  # cgroupfs driver
    f"/kubepods.slice/kubepods-pod{UID.replace('-', '_')}.slice/cri-containerd-{CID}.scope",  # systemd, containerd
    f"/kubepods.slice/kubepods-pod{UID.replace('-', '_')}.slice/crio-{CID}.scope",            # CRI-O
    f"/system.slice/docker-{CID}.scope",                                                    # Docker, systemd
    f"/docker/{CID}",                                                                       # Docker, cgroupfs
    f"/machine.slice/libpod-{CID}.scope/container",                                         # Podman's inner cgroup
    f"/system.slice/docker-{'0' * 64}.scope/kubelet.slice/kubelet-kubepods.slice/cri-containerd-{CID}.scope",  # kind
    f"0::/kubepods/besteffort/pod{UID}/{CID}\n",                                            # /proc/PID/cgroup text
])
def test_container_id_from_the_runtimes_cgroup_names(path):
    assert container_id_of_cgroup(path) == CID


@pytest.mark.parametrize("path", ["/", "/system.slice/nginx.service", f"/kubepods/pod{UID}",
                                  f"/docker/{CID[:-1]}", f"/system.slice/docker-{CID}x.scope", ""])
def test_no_container_id_outside_a_container(path):
    assert container_id_of_cgroup(path) is None


def test_cgroup_ids_resolve_to_the_pod_and_container_and_new_cgroups_are_found(tmp_path):
    pod_dir = tmp_path / "kubepods.slice" / f"kubepods-pod{UID.replace('-', '_')}.slice"
    container = pod_dir / f"cri-containerd-{CID}.scope"
    container.mkdir(parents=True)
    service = tmp_path / "system.slice" / "nginx.service"
    service.mkdir(parents=True)
    paths = CgroupPaths(str(tmp_path), rewalk_s=0)
    assert paths.workload_attributes(container.stat().st_ino) == {sc.K8S_POD_UID: UID, sc.CONTAINER_ID: CID}
    assert paths.workload_attributes(pod_dir.stat().st_ino) == {sc.K8S_POD_UID: UID}
    assert paths.workload_attributes(service.stat().st_ino) == {}
    assert paths.path(tmp_path.stat().st_ino) == "/"
    assert paths.workload_attributes(0) == {} and paths.path(1) is None
    later = tmp_path / "docker" / ("ab" * 32)  # made after the first walk: found by the next
    later.mkdir(parents=True)
    assert paths.workload_attributes(later.stat().st_ino) == {sc.CONTAINER_ID: "ab" * 32}
    # Left to itself, it walks the node's hierarchy (here the same directory as this process's own mount).
    own = cgroup2_mount(open("/proc/self/mounts").read())
    assert os.stat(CgroupPaths().root).st_ino == os.stat(own).st_ino


def test_ids_no_walk_finds_are_not_looked_for_again_and_gone_cgroups_keep_their_names(tmp_path, monkeypatch):
    container = tmp_path / f"kubepods-pod{UID.replace('-', '_')}.slice" / f"cri-containerd-{CID}.scope"
    container.mkdir(parents=True)
    paths = CgroupPaths(str(tmp_path), rewalk_s=3600)
    walks = []
    real_walk = paths._walk
    monkeypatch.setattr(paths, "_walk", lambda: (walks.append(1), real_walk()))
    cid_ino = container.stat().st_ino
    assert paths.workload_attributes(cid_ino)[sc.CONTAINER_ID] == CID and len(walks) == 1
    # an id no walk can find (another cgroup namespace): one walk would look, then never again
    assert paths.path(987654321) is None and paths.path(987654321) is None
    assert len(walks) == 1  # the walk before it was asked for was too recent to walk again: it is only pending
    paths.rewalk_s = 0
    assert paths.path(987654321) is None and len(walks) == 2
    assert paths.path(987654321) is None and len(walks) == 2  # known unknown now: no more walks
    # a container gone keeps its name (its series keep their attributes) until forgotten
    container.rmdir()
    assert paths.is_gone(cid_ino) and paths.workload_attributes(cid_ino)[sc.CONTAINER_ID] == CID
    paths.forget(cid_ino)
    assert not paths.is_gone(cid_ino)


def test_the_unified_hierarchy_is_found_in_proc_mounts():
    mounts = "sysfs /sys sysfs rw 0 0\ncgroup /sys/fs/cgroup/pids cgroup rw,pids 0 0\ncgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n"
    assert cgroup2_mount(mounts) == "/sys/fs/cgroup/unified"
    assert cgroup2_mount("sysfs /sys sysfs rw 0 0\n") is None


def test_node_name_from_the_first_downward_api_variable_set():
    assert node_name({"NODE_NAME": "n2", "K8S_NODE_NAME": "n1"}) == "n1"
    assert node_name({"K8S_NODE_NAME": "", "NODE_NAME": "n2"}) == "n2"
    assert node_name({}) is None


def _group(local: Zone, remote: Zone, pod_uid: str | None) -> FlowGroup:
    return FlowGroup(local, remote, None, "tcp", "ipv4", 1, "app", pod_uid)


def test_the_local_end_carries_the_node_and_the_pod():
    a, b = Zone("a"), Zone("b")
    g = _group(a, b, UID)
    assert k8s_attrs(g, True, "node-1") == {sc.SOURCE_K8S_NODE_NAME: "node-1", sc.SOURCE_K8S_POD_UID: UID}
    assert k8s_attrs(g, False, "node-1") == {sc.DESTINATION_K8S_NODE_NAME: "node-1", sc.DESTINATION_K8S_POD_UID: UID}
    assert k8s_attrs(_group(a, b, None), True, None) == {}
    # Loopback: both ends are this node (the peer's Pod is not known: host-network Pods share loopback).
    lo = k8s_attrs(_group(LOCAL_ZONE, LOCAL_ZONE, UID), True, "node-1")
    assert lo == {sc.SOURCE_K8S_NODE_NAME: "node-1", sc.DESTINATION_K8S_NODE_NAME: "node-1", sc.SOURCE_K8S_POD_UID: UID}
